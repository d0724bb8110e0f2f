// The backend seam's host side (kernels/backend.h): device names, the CPU backend's memory
// and optimizer ops, and what `--device cuda` does on this machine: a CUDA backend where a
// GPU is present, else an aji::Error that says what is missing. Runs everywhere.
#include "aji/kernels/backend.h"

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "aji/base/error.h"
#include "aji/train/optimizer.h"
#include "kernels/backend_parity.h"

namespace aji::kernels {
namespace {

TEST(Backend, ParsesDeviceNames) {
  EXPECT_EQ(parse_device("cpu").kind, DeviceKind::kCpu);
  const DeviceSpec c = parse_device("cuda");
  EXPECT_EQ(c.kind, DeviceKind::kCuda);
  EXPECT_EQ(c.index, 0);
  const DeviceSpec c3 = parse_device("cuda:3");
  EXPECT_EQ(c3.kind, DeviceKind::kCuda);
  EXPECT_EQ(c3.index, 3);
  EXPECT_EQ(c3.text(), "cuda:3");
  EXPECT_EQ(parse_device("cpu").text(), "cpu");
  EXPECT_TRUE(parse_device("cpu").host());
  // the CPU as a device of its own (tests of the device path without a GPU)
  const DeviceSpec sep = parse_device("cpu:separate");
  EXPECT_EQ(sep.kind, DeviceKind::kCpu);
  EXPECT_FALSE(sep.host());
  EXPECT_EQ(sep.text(), "cpu:separate");
  const auto be = make_backend(sep);
  EXPECT_NE(be.get(), &cpu_backend());
  EXPECT_EQ(be->describe().rfind("cpu:separate", 0), 0u) << be->describe();
  EXPECT_EQ(make_backend(parse_device("cpu")).get(), &cpu_backend());
  for (const char* bad : {"", "CPU", "gpu", "cuda:", "cuda:-1", "cuda:x", "cuda:1a", "tpu", "cuda:99999", "cpu:",
                          "cpu:1", "cpu:Separate"}) {
    try {
      parse_device(bad, "--device");
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("unknown device"), std::string::npos) << e.what();
      EXPECT_EQ(e.file(), "--device");
      EXPECT_NE(e.how_to_fix().find("cuda:N"), std::string::npos);
    }
  }
}

TEST(Backend, CpuMemoryRoundTripsAndIsAligned) {
  Backend& cpu = cpu_backend();
  EXPECT_EQ(cpu.kind(), DeviceKind::kCpu);
  EXPECT_NE(cpu.describe().find("cpu"), std::string::npos);
  std::vector<float> host(1000);
  for (size_t i = 0; i < host.size(); ++i) host[i] = 0.5f * (float)i - 7.0f;
  test::DeviceBuffer<float> a(cpu, host), b(cpu, host.size());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.get()) % 256, 0u);
  cpu.copy(b, a, host.size() * sizeof(float));
  EXPECT_EQ(b.host(), host);
  cpu.zero(b, 10 * sizeof(float));
  std::vector<float> back = b.host();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(back[i], 0.0f);
  EXPECT_EQ(back[10], host[10]);
  cpu.scale(a, -2.0f, host.size());
  back = a.host();
  for (size_t i = 0; i < host.size(); ++i) ASSERT_EQ(back[i], -2.0f * host[i]);
}

// The CPU backend's AdamW (the form the CUDA kernel mirrors operation for operation) gives the
// trainers' AdamW::step bits on every element, decayed range or not, over several steps.
TEST(Backend, CpuAdamWUpdateIsTheTrainersAdamWBitForBit) {
  const size_t n = 70001;  // past the parallel threshold, not a multiple of any vector width
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> p0(n), g(n);
  for (auto& x : p0) x = nd(rng);
  for (auto& x : g) x = 0.01f * nd(rng);
  train::AdamWConfig cfg;
  cfg.weight_decay = 0.1f;
  for (bool decay : {true, false}) {
    train::AdamW ref(n, cfg);
    std::vector<float> pr = p0;
    std::vector<float> pb = p0, m(n, 0.0f), v(n, 0.0f);
    const float lr = 3e-3f;
    for (int t = 1; t <= 3; ++t) {
      ref.step(pr.data(), g.data(), {{0, n, decay}}, lr);
      AdamWScalars s;
      s.beta1 = cfg.beta1;
      s.beta2 = cfg.beta2;
      s.eps = cfg.eps;
      s.one_minus_beta1 = 1.0f - cfg.beta1;
      s.one_minus_beta2 = 1.0f - cfg.beta2;
      const double bc1 = 1.0 - std::pow((double)cfg.beta1, (double)t);
      const double bc2 = 1.0 - std::pow((double)cfg.beta2, (double)t);
      s.step_size = static_cast<float>(lr / bc1);
      s.bc2_sqrt = static_cast<float>(std::sqrt(bc2));
      s.decay_mul = decay ? static_cast<float>(1.0 - (double)lr * cfg.weight_decay) : 1.0f;
      cpu_backend().adamw_update(pb.data(), g.data(), m.data(), v.data(), n, s);
    }
    ASSERT_EQ(std::memcmp(pr.data(), pb.data(), n * sizeof(float)), 0) << "decay " << decay;
    ASSERT_EQ(std::memcmp(ref.m().data(), m.data(), n * sizeof(float)), 0);
    ASSERT_EQ(std::memcmp(ref.v().data(), v.data(), n * sizeof(float)), 0);
  }
}

TEST(Backend, CpuSumOfSquaresIsTheDoubleSumAndRepeatable) {
  const size_t n = 300007;
  std::vector<float> x(n);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> ud(-2.0f, 2.0f);
  for (auto& e : x) e = ud(rng);
  double want = 0;
  for (float e : x) want += (double)e * e;
  const double got = cpu_backend().sum_squares(x.data(), n);
  EXPECT_NEAR(got, want, 1e-10 * want);
  EXPECT_EQ(got, cpu_backend().sum_squares(x.data(), n));
  EXPECT_EQ(cpu_backend().sum_squares(x.data(), 0), 0.0);
}

TEST(Backend, CpuDeviceIsTheSharedCpuBackend) {
  auto b = make_backend(parse_device("cpu"));
  EXPECT_EQ(b.get(), &cpu_backend());
}

// --device cuda: a backend that works, or an error that says what is missing and what to do.
TEST(Backend, CudaIsABackendOrAClearError) {
  std::string reason;
  auto gpu = test::cuda_backend(&reason);
  if (gpu) {
    EXPECT_EQ(gpu->kind(), DeviceKind::kCuda);
    EXPECT_EQ(gpu->describe().rfind("cuda:", 0), 0u) << gpu->describe();
    return;
  }
  EXPECT_NE(reason.find("is not available"), std::string::npos) << reason;
  const bool names_what =
      reason.find("driver") != std::string::npos || reason.find("plugin") != std::string::npos ||
      reason.find("GPU") != std::string::npos || reason.find(".so") != std::string::npos;
  EXPECT_TRUE(names_what) << reason;
  // And the fix is part of the aji::Error.
  try {
    make_backend(parse_device("cuda"));
    ADD_FAILURE() << "make_backend(cuda) succeeded on the second call after failing on the first";
  } catch (const Error& e) {
    EXPECT_NE(e.how_to_fix().find("--device cpu"), std::string::npos) << e.how_to_fix();
  }
  std::cout << "[ SKIPPED-GPU ] no CUDA device here: " << reason << "\n";
}

#ifdef AJI_CUDA_PLUGIN_PATH
// The plugin built here loads (its CUDA libraries resolve), exports the entry points at this
// interface version, and without a driver its start-up fails with a message, not a crash.
TEST(Backend, CudaPluginLoadsAndReportsAMissingDriver) {
  void* h = dlopen(AJI_CUDA_PLUGIN_PATH, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(h, nullptr) << dlerror();
  auto version = reinterpret_cast<BackendAbiVersionFn>(dlsym(h, "aji_backend_abi_version"));
  auto create = reinterpret_cast<CudaBackendCreateFn>(dlsym(h, "aji_cuda_backend_create"));
  ASSERT_NE(version, nullptr);
  ASSERT_NE(create, nullptr);
  EXPECT_EQ(version(), kBackendAbiVersion);
  EXPECT_EQ(dlsym(h, "_ZN3aji7kernels4cuda14matmul_forwardERNS1_7ContextEPfPKfS6_S6_liiNS0_12WeightLayoutEb"), nullptr)
      << "internal symbols are exported";
  char error[512] = {0};
  Backend* b = create(0, error, sizeof error);
  if (b) {  // a GPU is here
    EXPECT_EQ(b->kind(), DeviceKind::kCuda);
    delete b;
  } else {
    EXPECT_GT(std::strlen(error), 10u);
    std::cout << "plugin start-up without a GPU: " << error << "\n";
  }
  char error2[512] = {0};
  Backend* none = create(4096, error2, sizeof error2);  // no machine has this GPU
  EXPECT_EQ(none, nullptr);
  EXPECT_GT(std::strlen(error2), 10u);
  delete none;
}
#endif

}  // namespace
}  // namespace aji::kernels
