// The trainers' step (train/trainer_run.h train_step) on a device: zeroing, the gradient norm,
// clipping and AdamW run where the gradients are, and the weights, gradients and moments stay
// there between steps (the host copies are downloaded only when something reads them).
//
// Without a GPU: a separate CPU backend (kernels::make_separate_cpu_backend), wrapped to count
// every transfer, is such a device; the same CPU arithmetic runs on other copies of the data,
// so the results must be the host path's bit for bit, and a step must move no more than its
// inputs and per-token losses (a missed synchronisation shows as a mismatch; a stray
// download of the weights or gradients as bytes counted).
// With a GPU (skipped here with the reason; run on the CUDA emulator in every make test):
// CUDA against the CPU within stated tolerances, and two CUDA runs bitwise equal.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "aji/model/model.h"
#include "aji/train/optimizer.h"
#include "aji/train/trainer_run.h"
#include "kernels/backend_parity.h"
#include "model/tiny_configs.h"
#include "kernels/counting_backend.h"

namespace aji::train {
namespace {

using model::Model;
using model::ModelConfig;
using test::same_bits;
ModelConfig gpt2_config() { return test::tiny_gpt2_config(); }
ModelConfig llama_config() { return test::tiny_llama_config(); }

using test::Batch;
// Two packed rows (segments of 5 and 7 tokens), one ignored target (tests/model/tiny_configs.h).
Batch make_batch(const ModelConfig& c, uint32_t seed) { return test::make_batch(c, seed, /*packed=*/true); }

std::vector<float> plain(const AlignedFloats& x) { return {x.begin(), x.end()}; }

std::vector<float> host_params(const Model& m) {
  const float* p = m.params();
  return {p, p + m.num_params()};
}

// One train_step of `groups` on model m: forward on a batch drawn from `seed`, the LM loss,
// backward; clipping at max_norm (low enough that it clips).
StepStats step(Model& m, const std::vector<ParamGroup>& groups, uint32_t seed, int64_t index, double max_norm = 0.5) {
  const Batch b = make_batch(m.config(), seed);
  return train_step(groups, 3e-3f, max_norm, "Test", {}, [&] {
    m.forward(b.tokens.data(), b.B, b.T, b.positions.data(), b.key_start.data());
    const double loss = m.lm_head_loss(b.targets.data());
    m.backward_from_head();  // the trainers' call: the head's gradient stays on the device
    return loss;
  }, index);
}

class TrainStepDevice : public ::testing::TestWithParam<bool> {};  // param: llama (else gpt2)

// In bf16 precision too: the host's AdamW rounds the weights it writes into the bf16 copy as
// it goes, the device rounds its weights again before the next forward (Backend::round_to_bf16,
// on the device: no upload), the same bits either way.
void steps_bit_for_bit_and_moves_only_the_inputs(bool llama, model::Precision precision) {
  const ModelConfig c = llama ? llama_config() : gpt2_config();
  Model host(c), dev(c);
  host.init_weights(3);
  dev.init_weights(3);
  host.set_precision(precision);
  dev.set_precision(precision);
  auto counting = std::make_shared<test::CountingBackend>(kernels::make_separate_cpu_backend());
  dev.set_device(counting);
  AdamW opt_h(host.num_params(), AdamWConfig{}), opt_d(dev.num_params(), AdamWConfig{});
  const std::vector<ParamGroup> gh = {ParamGroup::whole_model(host, opt_h)},
                                gd = {ParamGroup::whole_model(dev, opt_d)};
  const size_t weight_bytes = dev.num_params() * sizeof(float);
  bool clipped = false;
  for (int s = 0; s < 6; ++s) {
    const size_t up0 = counting->up, down0 = counting->down;
    const StepStats a = step(host, gh, 10 + s, s), b = step(dev, gd, 10 + s, s);
    EXPECT_EQ(a.loss, b.loss) << "step " << s;
    EXPECT_EQ(a.grad_norm, b.grad_norm) << "step " << s;
    clipped = clipped || a.grad_norm > 0.5;
    if (s >= 1) {
      // After the first step (which uploads the weights and AdamW's moments) a step moves its
      // inputs (tokens, positions, key_start, targets: 16 bytes a token) and little else: not
      // the weights, gradients or moments, nor the head's gradient (d_model floats a token).
      const size_t tokens = size_t(make_batch(c, 0).B * make_batch(c, 0).T), budget = 32 * tokens;
      EXPECT_LE(counting->up - up0, budget) << "step " << s << " uploaded " << counting->up - up0 << " bytes";
      EXPECT_LE(counting->down - down0, budget) << "step " << s << " downloaded " << counting->down - down0 << " bytes";
      ASSERT_LT(budget, weight_bytes / 8);
    }
    EXPECT_EQ(opt_d.device(), counting.get());
    EXPECT_EQ(opt_h.device(), nullptr);
  }
  EXPECT_TRUE(clipped) << "the test meant to clip";
  // Reading the weights and moments downloads them: the host path's bits.
  EXPECT_TRUE(same_bits(host_params(host), host_params(dev)));
  EXPECT_TRUE(same_bits(opt_h.m(), opt_d.m()));
  EXPECT_TRUE(same_bits(opt_h.v(), opt_d.v()));
  EXPECT_EQ(opt_h.step_count(), opt_d.step_count());
  const float* gh_ = static_cast<const Model&>(host).grads();
  const float* gd_ = static_cast<const Model&>(dev).grads();
  EXPECT_EQ(std::memcmp(gh_, gd_, weight_bytes), 0) << "the last step's clipped gradients";
  // ...and training goes on from there (the reads left both copies valid).
  for (int s = 6; s < 9; ++s) {
    const StepStats a = step(host, gh, 10 + s, s), b = step(dev, gd, 10 + s, s);
    EXPECT_EQ(a.loss, b.loss) << "step " << s;
  }
  EXPECT_TRUE(same_bits(host_params(host), host_params(dev)));
  // Inference after device training reads the downloaded weights.
  const Batch b = make_batch(c, 99);
  EXPECT_TRUE(same_bits(host.token_logprobs(b.tokens.data(), b.T), dev.token_logprobs(b.tokens.data(), b.T)));
}

TEST_P(TrainStepDevice, SeparateMemoryStepsBitForBitAsTheHostAndMovesOnlyTheInputs) {
  steps_bit_for_bit_and_moves_only_the_inputs(GetParam(), model::Precision::kFp32);
}

TEST_P(TrainStepDevice, Bf16OnSeparateMemoryStepsBitForBitAsTheHost) {
  steps_bit_for_bit_and_moves_only_the_inputs(GetParam(), model::Precision::kBf16);
}

// A model that leaves the device mid-run (set_device(nullptr)) takes its weights along, and
// the optimizer its moments: the run goes on on the host exactly as if it had been there.
TEST_P(TrainStepDevice, LeavingTheDeviceMidRunKeepsEverything) {
  const ModelConfig c = GetParam() ? llama_config() : gpt2_config();
  Model host(c), dev(c);
  host.init_weights(7);
  dev.init_weights(7);
  dev.set_device(kernels::make_separate_cpu_backend());
  AdamW opt_h(host.num_params(), AdamWConfig{}), opt_d(dev.num_params(), AdamWConfig{});
  const std::vector<ParamGroup> gh = {ParamGroup::whole_model(host, opt_h)},
                                gd = {ParamGroup::whole_model(dev, opt_d)};
  for (int s = 0; s < 3; ++s) step(host, gh, 30 + s, s), step(dev, gd, 30 + s, s);
  dev.set_device(nullptr);
  for (int s = 3; s < 6; ++s) {
    const StepStats a = step(host, gh, 30 + s, s), b = step(dev, gd, 30 + s, s);
    EXPECT_EQ(a.loss, b.loss) << "step " << s;
  }
  EXPECT_EQ(opt_d.device(), nullptr);
  EXPECT_TRUE(same_bits(host_params(host), host_params(dev)));
  EXPECT_TRUE(same_bits(opt_h.v(), opt_d.v()));
}

// A checkpoint mid-run (the weights and AdamW's state saved from the device) resumes into a
// fresh model and optimizer on a device and continues exactly as the uninterrupted run.
TEST_P(TrainStepDevice, ACheckpointFromTheDeviceResumesExactly) {
  const ModelConfig c = GetParam() ? llama_config() : gpt2_config();
  const auto dir = std::filesystem::temp_directory_path() / ("aji_step_dev_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  Model a(c);
  a.init_weights(4);
  a.set_device(kernels::make_separate_cpu_backend());
  AdamW opt_a(a.num_params(), AdamWConfig{});
  const std::vector<ParamGroup> ga = {ParamGroup::whole_model(a, opt_a)};
  for (int s = 0; s < 3; ++s) step(a, ga, 20 + s, s);
  const std::vector<float> saved = host_params(a);
  opt_a.save(dir / "optimizer.bin");
  for (int s = 3; s < 6; ++s) step(a, ga, 20 + s, s);

  Model r(c);
  std::memcpy(r.params(), saved.data(), saved.size() * sizeof(float));
  r.set_device(kernels::make_separate_cpu_backend());
  AdamW opt_r(r.num_params(), AdamWConfig{});
  opt_r.load(dir / "optimizer.bin");
  const std::vector<ParamGroup> gr = {ParamGroup::whole_model(r, opt_r)};
  for (int s = 3; s < 6; ++s) step(r, gr, 20 + s, s);
  EXPECT_TRUE(same_bits(host_params(a), host_params(r)));
  EXPECT_TRUE(same_bits(opt_a.m(), opt_r.m()));
  std::filesystem::remove_all(dir);
}

// Two groups as the classifier and reward-model trainers build them: a subset of the trunk's
// tensors (the others frozen) on the device, a head on the host; one gradient norm over both.
TEST_P(TrainStepDevice, APartialTrunkOnTheDeviceAndAHostHeadMatchTheHost) {
  const ModelConfig c = GetParam() ? llama_config() : gpt2_config();
  Model host(c), dev(c);
  host.init_weights(6);
  dev.init_weights(6);
  dev.set_device(kernels::make_separate_cpu_backend());
  std::vector<DecayRange> ranges;
  for (const auto& t : host.tensors())
    if (t.name.find(".0.") == std::string::npos) ranges.push_back({t.offset, t.numel, t.decay});  // layer 0 frozen
  struct Run {
    Model* m;
    AdamW trunk, head;
    std::vector<float> w, g;
  };
  const int C = c.d_model;
  auto run = [&](Model& m) {
    Run r{&m, AdamW(m.num_params(), AdamWConfig{}), AdamW(size_t(C), AdamWConfig{}), std::vector<float>(C, 0.1f),
          std::vector<float>(C, 0.0f)};
    const std::vector<ParamGroup> groups = {{r.w.data(), r.g.data(), &r.head, {{0, size_t(C), true}}},
                                            {m.params(), m.grads(), &r.trunk, ranges, &m}};
    const std::vector<float> before = host_params(m);
    std::vector<double> norms;
    for (int s = 0; s < 4; ++s) {
      const Batch b = make_batch(c, 40 + s);
      norms.push_back(train_step(groups, 3e-3f, 0.5, "Test", {}, [&] {
        m.forward(b.tokens.data(), b.B, b.T);
        const double loss = m.lm_head_loss(b.targets.data());
        float* dh = m.d_hidden_buffer();
        const float* h = m.hidden();
        double head = 0;  // a scalar head on the last hidden state of each row: sum(w . h)
        for (int row = 0; row < b.B; ++row) {
          const size_t at = size_t(row * b.T + b.T - 1) * C;
          for (int j = 0; j < C; ++j) {
            head += double(r.w[j]) * h[at + j];
            r.g[j] += h[at + j] * 1e-2f;
            dh[at + j] += r.w[j] * 1e-2f;
          }
        }
        m.backward(dh);
        return loss + 1e-2 * head;
      }, s).grad_norm);
    }
    // the frozen tensors are where they were
    const std::vector<float> after = host_params(m);
    for (const auto& t : m.tensors()) {
      if (t.name.find(".0.") == std::string::npos) continue;
      EXPECT_EQ(std::memcmp(before.data() + t.offset, after.data() + t.offset, t.numel * sizeof(float)), 0) << t.name;
    }
    return std::make_pair(norms, std::make_pair(after, r.w));
  };
  const auto a = run(host), b = run(dev);
  EXPECT_EQ(a.first, b.first) << "gradient norms";
  EXPECT_TRUE(same_bits(a.second.first, b.second.first)) << "trunk weights";
  EXPECT_TRUE(same_bits(a.second.second, b.second.second)) << "head weights";
}

// ---- with a GPU: CUDA against the CPU (skipped with the reason where there is none) -------------

TEST_P(TrainStepDevice, CudaStepsMatchTheCpuAndTwoRunsAreEqual) {
  AJI_CUDA_OR_SKIP(gpu);
  const ModelConfig c = GetParam() ? llama_config() : gpt2_config();
  std::shared_ptr<kernels::Backend> shared(&gpu, [](kernels::Backend*) {});
  Model cpu(c), cuda(c), cuda2(c);
  for (Model* m : {&cpu, &cuda, &cuda2}) m->init_weights(8);
  cuda.set_device(shared);
  cuda2.set_device(shared);
  AdamW o1(cpu.num_params(), AdamWConfig{}), o2(cpu.num_params(), AdamWConfig{}), o3(cpu.num_params(), AdamWConfig{});
  const std::vector<ParamGroup> g1 = {ParamGroup::whole_model(cpu, o1)}, g2 = {ParamGroup::whole_model(cuda, o2)},
                                g3 = {ParamGroup::whole_model(cuda2, o3)};
  for (int s = 0; s < 10; ++s) {
    const StepStats a = step(cpu, g1, 60 + s, s), b = step(cuda, g2, 60 + s, s), d = step(cuda2, g3, 60 + s, s);
    EXPECT_NEAR(a.loss, b.loss, 1e-4 * std::fabs(a.loss)) << "step " << s;
    EXPECT_NEAR(a.grad_norm, b.grad_norm, 1e-4 * a.grad_norm) << "step " << s;
    EXPECT_EQ(b.loss, d.loss) << "two CUDA runs, step " << s;
    EXPECT_EQ(b.grad_norm, d.grad_norm) << "two CUDA runs, step " << s;
  }
  EXPECT_LE(test::rel_l2(host_params(cuda), host_params(cpu)), 1e-4);
  EXPECT_LE(test::rel_l2(plain(o2.v()), plain(o1.v())), 1e-3);
  EXPECT_TRUE(same_bits(host_params(cuda), host_params(cuda2))) << "two CUDA runs' weights differ";
}

// The CPU as CUDA computes bf16 precision: bf16 matrix products, attention in fp32 (the CUDA
// attention kernel's products are fp32; AttnDims::bf16_products is a request a backend may
// decline). The reference for CUDA's bf16 steps.
class Fp32AttentionCpu : public test::CountingBackend {
 public:
  Fp32AttentionCpu() : CountingBackend(kernels::make_separate_cpu_backend()) {}
  void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                         const kernels::AttnDims& d) override {
    kernels::AttnDims f = d;
    f.bf16_products = false;
    CountingBackend::attention_forward(out, lse, q, k, v, f);
  }
  void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                          const float* v, const float* out, const float* lse, const kernels::AttnDims& d) override {
    kernels::AttnDims f = d;
    f.bf16_products = false;
    CountingBackend::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, f);
  }
};

// bf16 precision on CUDA (Backend::matmul_forward_bf16 / matmul_backward_bf16 over the device's
// bf16 copy of the weights): the CPU's bf16 steps with fp32 attention to fp32 summation order
// (the products' operands are the same bf16 values), far from the fp32 steps' bits, and two
// CUDA runs bitwise equal.
TEST_P(TrainStepDevice, CudaBf16StepsMatchTheCpusBf16AndTwoRunsAreEqual) {
  AJI_CUDA_OR_SKIP(gpu);
  const ModelConfig c = GetParam() ? llama_config() : gpt2_config();
  std::shared_ptr<kernels::Backend> shared(&gpu, [](kernels::Backend*) {});
  ASSERT_TRUE(gpu.bf16_products());
  Model cpu(c), cuda(c), cuda2(c), cuda32(c);
  for (Model* m : {&cpu, &cuda, &cuda2, &cuda32}) m->init_weights(8);
  for (Model* m : {&cpu, &cuda, &cuda2}) m->set_precision(model::Precision::kBf16);
  cpu.set_device(std::make_shared<Fp32AttentionCpu>());
  cuda.set_device(shared);
  cuda2.set_device(shared);
  cuda32.set_device(shared);
  AdamW o1(cpu.num_params(), AdamWConfig{}), o2(cpu.num_params(), AdamWConfig{}), o3(cpu.num_params(), AdamWConfig{}),
      o4(cpu.num_params(), AdamWConfig{});
  const std::vector<ParamGroup> g1 = {ParamGroup::whole_model(cpu, o1)}, g2 = {ParamGroup::whole_model(cuda, o2)},
                                g3 = {ParamGroup::whole_model(cuda2, o3)}, g4 = {ParamGroup::whole_model(cuda32, o4)};
  double fp32_gap = 0, loss_gap = 0, norm_gap = 0;
  for (int s = 0; s < 8; ++s) {
    const StepStats a = step(cpu, g1, 60 + s, s), b = step(cuda, g2, 60 + s, s), d = step(cuda2, g3, 60 + s, s),
                    f = step(cuda32, g4, 60 + s, s);
    EXPECT_NEAR(a.loss, b.loss, 1e-4 * std::fabs(a.loss)) << "step " << s;
    EXPECT_NEAR(a.grad_norm, b.grad_norm, 1e-3 * a.grad_norm) << "step " << s;
    EXPECT_EQ(b.loss, d.loss) << "two CUDA runs, step " << s;
    EXPECT_EQ(b.grad_norm, d.grad_norm) << "two CUDA runs, step " << s;
    fp32_gap = std::max(fp32_gap, std::fabs(f.loss - b.loss) / std::fabs(f.loss));
    loss_gap = std::max(loss_gap, std::fabs(a.loss - b.loss) / std::fabs(a.loss));
    norm_gap = std::max(norm_gap, std::fabs(a.grad_norm - b.grad_norm) / a.grad_norm);
  }
  const double weight_gap = test::rel_l2(host_params(cuda), host_params(cpu));
  std::printf("bf16, CUDA vs the CPU over 8 steps: loss %.2e, gradient norm %.2e, weights %.2e (relative); "
              "CUDA bf16 vs CUDA fp32 loss %.2e\n",
              loss_gap, norm_gap, weight_gap, fp32_gap);
  EXPECT_LE(weight_gap, 5e-4);  // AdamW turns tiny gradient differences into step-sized ones
  EXPECT_TRUE(same_bits(host_params(cuda), host_params(cuda2))) << "two CUDA runs' weights differ";
  EXPECT_GT(fp32_gap, 1e-5) << "the bf16 steps were fp32 steps";
}

INSTANTIATE_TEST_SUITE_P(Arch, TrainStepDevice, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "llama" : "gpt2"; });

}  // namespace
}  // namespace aji::train
