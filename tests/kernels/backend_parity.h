// Helpers of the CUDA-against-CPU op parity tests (tests/kernels/cuda_*_parity_test.cpp):
// the CUDA backend or the reason there is none (the test then reports itself skipped with
// it), device buffers filled from the host (or poisoned with NaN, so an element an op fails
// to write shows), and the relative L2 distance the tolerances are stated in.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "aji/base/error.h"
#include "aji/kernels/backend.h"

namespace aji::test {

#ifdef AJI_CUDA_EMU
// aji_cuda_emu_tests: the CUDA backend on a host emulator, not a GPU (tests/kernels/cuda_emu/).
std::shared_ptr<kernels::Backend> cuda_emu_backend(std::string* reason);
#endif

// The process's CUDA backend (device 0, or $AJI_TEST_CUDA_DEVICE), made once; null with
// *reason set where there is none (built without CUDA, no plugin, no driver, no GPU).
inline std::shared_ptr<kernels::Backend> cuda_backend(std::string* reason) {
  static std::shared_ptr<kernels::Backend> backend;
  static std::string why;
  static bool tried = false;
  if (!tried) {
    tried = true;
    try {
#ifdef AJI_CUDA_EMU
      backend = cuda_emu_backend(&why);
#else
#ifdef AJI_CUDA_PLUGIN_PATH
      setenv("AJI_CUDA_PLUGIN", AJI_CUDA_PLUGIN_PATH, /*overwrite=*/0);  // the build tree's plugin
#endif
      const char* dev = std::getenv("AJI_TEST_CUDA_DEVICE");
      backend = kernels::make_backend(kernels::parse_device(dev && *dev ? dev : "cuda", "AJI_TEST_CUDA_DEVICE"));
#endif
    } catch (const std::exception& e) {
      why = e.what();
    }
  }
  if (reason) *reason = why;
  return backend;
}

// In a test body: `AJI_CUDA_OR_SKIP(gpu);` declares `kernels::Backend& gpu` or skips the test
// with the reason (GTEST_SKIP), which ctest counts and prints as skipped.
#define AJI_CUDA_OR_SKIP(name)                                                          \
  std::string aji_cuda_skip_reason_;                                                    \
  auto aji_cuda_backend_ = ::aji::test::cuda_backend(&aji_cuda_skip_reason_);           \
  if (!aji_cuda_backend_) GTEST_SKIP() << "no CUDA device: " << aji_cuda_skip_reason_; \
  ::aji::kernels::Backend& name = *aji_cuda_backend_

// A buffer of n T's in a backend's memory, released with it.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer(kernels::Backend& be, size_t n) : be_(&be), n_(n) {
    p_ = static_cast<T*>(be.alloc(std::max<size_t>(1, n) * sizeof(T)));
  }
  // Filled with `host`.
  DeviceBuffer(kernels::Backend& be, const std::vector<T>& host) : DeviceBuffer(be, host.size()) {
    if (!host.empty()) be.to_device(p_, host.data(), host.size() * sizeof(T));
  }
  ~DeviceBuffer() { be_->release(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const { return p_; }
  operator T*() const { return p_; }
  size_t size() const { return n_; }
  std::vector<T> host() const {
    std::vector<T> out(n_);
    if (n_) be_->to_host(out.data(), p_, n_ * sizeof(T));
    return out;
  }

 private:
  kernels::Backend* be_;
  T* p_ = nullptr;
  size_t n_ = 0;
};

// Every float NaN: an output buffer poisoned before the op, so an element it does not write
// fails the comparison.
inline std::vector<float> nan_vector(size_t n) { return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN()); }

// ||a - ref|| / max(||ref||, tiny); infinity when a has a NaN or sizes differ.
inline double rel_l2(const std::vector<float>& a, const std::vector<float>& ref) {
  if (a.size() != ref.size()) return std::numeric_limits<double>::infinity();
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) && std::isfinite(ref[i])) return std::numeric_limits<double>::infinity();
    const double d = (double)a[i] - (double)ref[i];
    num += d * d;
    den += (double)ref[i] * ref[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

// fp32 CUDA (CUBLAS_COMPUTE_32F, no TF32) against the CPU: every op within this relative L2.
constexpr double kFp32ParityTol = 1e-5;

}  // namespace aji::test
