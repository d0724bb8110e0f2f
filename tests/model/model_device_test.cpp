// The model's training path on a backend with memory of its own (Model::set_device).
//
// Without a GPU: a separate CPU backend (kernels::make_separate_cpu_backend) is such a device,
// so every upload of the weights, download of the gradients, device activation and int input
// is exercised, and the results must be the host path's bit for bit (the same CPU kernels
// run on other copies of the data): a missed synchronisation shows as a mismatch.
// With a GPU (skipped here with the reason): the CUDA backend against the CPU, fp32, within
// stated tolerances, over 20 training steps, and two CUDA runs bitwise equal.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "aji/base/error.h"
#include "aji/model/model.h"
#include "aji/train/optimizer.h"
#include "kernels/backend_parity.h"
#include "model/tiny_configs.h"

namespace aji::model {
namespace {

using test::same_bits;
ModelConfig gpt2_config() { return test::tiny_gpt2_config(); }
ModelConfig llama_config() { return test::tiny_llama_config(); }

struct Batch {
  int B = 2, T = 12;
  std::vector<int32_t> tokens, targets, positions, key_start;
  std::vector<float> weights;
};

// Two packed rows (segments of 5 and 7 tokens), an ignored target, varied loss weights.
Batch make_batch(const ModelConfig& c, uint32_t seed, bool packed) {
  Batch b;
  std::mt19937 rng(seed);
  const int N = b.B * b.T;
  b.tokens.resize(N);
  b.targets.resize(N);
  b.weights.resize(N);
  for (int i = 0; i < N; ++i) {
    b.tokens[i] = (int32_t)(rng() % c.vocab_size);
    b.targets[i] = (int32_t)(rng() % c.vocab_size);
    b.weights[i] = 0.5f + (float)(rng() % 4) * 0.25f;
  }
  b.targets[3] = -1;
  if (packed) {
    b.positions.resize(N);
    b.key_start.resize(N);
    for (int r = 0; r < b.B; ++r)
      for (int t = 0; t < b.T; ++t) {
        const int seg0 = t < 5 ? 0 : 5;
        b.positions[r * b.T + t] = t - seg0;
        b.key_start[r * b.T + t] = seg0;
      }
  }
  return b;
}

struct StepOut {
  std::vector<float> losses, per_token, hidden, grads, params;
};

// `steps` training steps: forward, weighted LM loss, backward, clipping and AdamW on the host
// (through grads()/params()), as train_step does; the last step's hidden states, gradients and
// per-token losses, and the weights after every step.
StepOut train(Model& m, const ModelConfig& c, int steps, bool packed) {
  StepOut out;
  train::AdamW opt(m.num_params(), train::AdamWConfig{});
  const auto ranges = train::all_parameter_ranges(m);
  for (int s = 0; s < steps; ++s) {
    const Batch b = make_batch(c, 100, packed);  // the same batch: the loss must fall
    const int N = b.B * b.T;
    m.zero_grads();
    m.forward(b.tokens.data(), b.B, b.T, packed ? b.positions.data() : nullptr,
              packed ? b.key_start.data() : nullptr);
    out.per_token.assign(N, -1.0f);
    out.losses.push_back(m.lm_head_loss(b.targets.data(), b.weights.data(), 1.0f, out.per_token.data()));
    m.backward(m.d_hidden_buffer());
    float* g = m.grads();
    train::clip_grad_norm(g, m.num_params(), 1.0);
    opt.step(m.params(), g, ranges, 1e-2f);
    m.params_updated();
    if (s + 1 == steps) {
      const float* h = m.hidden();
      out.hidden.assign(h, h + (size_t)N * c.d_model);
      const float* gc = static_cast<const Model&>(m).grads();
      out.grads.assign(gc, gc + m.num_params());
    }
  }
  const float* p = static_cast<const Model&>(m).params();
  out.params.assign(p, p + m.num_params());
  return out;
}

class ModelDevice : public ::testing::TestWithParam<bool> {};  // param: llama (else gpt2)

TEST_P(ModelDevice, SeparateMemoryTrainsBitForBitAsTheHost) {
  const ModelConfig c = GetParam() ? llama_config() : gpt2_config();
  for (bool packed : {false, true}) {
    Model host(c), dev(c);
    host.init_weights(5);
    dev.init_weights(5);
    dev.set_device(kernels::make_separate_cpu_backend());
    ASSERT_TRUE(dev.on_device());
    const StepOut a = train(host, c, 3, packed), b = train(dev, c, 3, packed);
    ASSERT_EQ(a.losses.size(), b.losses.size());
    for (size_t i = 0; i < a.losses.size(); ++i) EXPECT_EQ(a.losses[i], b.losses[i]) << "step " << i;
    EXPECT_TRUE(same_bits(a.per_token, b.per_token)) << "per-token losses";
    EXPECT_TRUE(same_bits(a.hidden, b.hidden)) << "hidden states";
    EXPECT_TRUE(same_bits(a.grads, b.grads)) << "gradients";
    EXPECT_TRUE(same_bits(a.params, b.params)) << "weights after the steps";
    EXPECT_GT(a.losses.front(), a.losses.back()) << "the steps did not train";
  }
}

// The RL passes: per-token log-probs (picked on the host from the device's logits), their
// signed backward, a head adding to d_hidden on the host, and inference afterwards on the CPU.
TEST_P(ModelDevice, LogprobPassesAndHostHeadsMatchTheHost) {
  const ModelConfig c = GetParam() ? llama_config() : gpt2_config();
  Model host(c), dev(c);
  host.init_weights(9);
  dev.init_weights(9);
  dev.set_device(kernels::make_separate_cpu_backend());
  const Batch b = make_batch(c, 7, false);
  const int N = b.B * b.T;
  std::vector<float> coef(N);
  for (int i = 0; i < N; ++i) coef[i] = (i % 3 == 0) ? -0.5f : 0.25f * (float)(i % 5);
  std::vector<std::vector<float>> grads;
  std::vector<std::vector<float>> lps, ents;
  for (Model* m : {&host, &dev}) {
    m->zero_grads();
    m->forward(b.tokens.data(), b.B, b.T);
    std::vector<float> lp(N), ent(N);
    m->lm_head_logprobs(b.targets.data(), lp.data(), 0.8f, ent.data());
    lps.push_back(lp);
    ents.push_back(ent);
    m->lm_head_logprob_backward(b.targets.data(), coef.data(), 0.8f);
    float* dh = m->d_hidden_buffer();
    for (int i = 0; i < N * c.d_model; ++i) dh[i] += 1e-3f * (float)((i * 7) % 11 - 5);  // a host head's +=
    m->backward(dh);
    const float* g = static_cast<const Model*>(m)->grads();
    grads.emplace_back(g, g + m->num_params());
  }
  EXPECT_TRUE(same_bits(lps[0], lps[1]));
  EXPECT_TRUE(same_bits(ents[0], ents[1]));
  EXPECT_TRUE(same_bits(grads[0], grads[1]));
  // Scoring after training runs on the host weights, the same either way.
  std::vector<int32_t> seq(b.tokens.begin(), b.tokens.begin() + b.T);
  EXPECT_TRUE(same_bits(host.token_logprobs(seq.data(), b.T), dev.token_logprobs(seq.data(), b.T)));
}

INSTANTIATE_TEST_SUITE_P(Arch, ModelDevice, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "llama" : "gpt2"; });

TEST(ModelDeviceErrors, UnbuiltPathsOnADeviceAreClearErrors) {
  const ModelConfig c = llama_config();
  Model m(c);
  m.init_weights(1);
  m.set_device(kernels::make_separate_cpu_backend());
  const Batch b = make_batch(c, 1, false);
  m.set_precision(Precision::kBf16);
  try {
    m.forward(b.tokens.data(), b.B, b.T);
    ADD_FAILURE() << "bf16 on a device ran";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bf16"), std::string::npos) << e.what();
    EXPECT_NE(e.how_to_fix().find("fp32"), std::string::npos);
  }
  m.set_precision(Precision::kFp32);
  m.forward(b.tokens.data(), b.B, b.T);
  m.lm_head_loss(b.targets.data());
  m.on_layer_backward = [](int) {};
  EXPECT_THROW(m.backward(m.d_hidden_buffer()), Error);
  // Back on the CPU the model trains as before, the device's gradients kept.
  m.on_layer_backward = nullptr;
  m.set_device(nullptr);
  EXPECT_FALSE(m.on_device());
  m.forward(b.tokens.data(), b.B, b.T);
  EXPECT_TRUE(std::isfinite(m.lm_head_loss(b.targets.data())));
  m.backward(m.d_hidden_buffer());
}

// ---- with a GPU: CUDA against the CPU (skipped with the reason where there is none) -------------

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) { return test::rel_l2(a, b); }

TEST_P(ModelDevice, CudaGradientsAndTwentyStepsMatchTheCpu) {
  AJI_CUDA_OR_SKIP(gpu);
  const ModelConfig c = GetParam() ? llama_config() : gpt2_config();
  std::shared_ptr<kernels::Backend> shared(&gpu, [](kernels::Backend*) {});
  for (bool packed : {false, true}) {
    Model cpu(c), cuda(c), cuda2(c);
    for (Model* m : {&cpu, &cuda, &cuda2}) m->init_weights(5);
    cuda.set_device(shared);
    cuda2.set_device(shared);
    // one step: loss, hidden states and every gradient (stage 2 of docs/cuda.md's check)
    const StepOut a1 = train(cpu, c, 1, packed), b1 = train(cuda, c, 1, packed);
    EXPECT_NEAR(a1.losses[0], b1.losses[0], 1e-5 * std::fabs(a1.losses[0]) + 1e-6);
    EXPECT_LE(rel_l2(b1.hidden, a1.hidden), 1e-5);
    EXPECT_LE(rel_l2(b1.per_token, a1.per_token), 1e-5);
    for (const auto& t : cpu.tensors()) {
      const std::vector<float> ga(a1.grads.begin() + t.offset, a1.grads.begin() + t.offset + t.numel),
          gb(b1.grads.begin() + t.offset, b1.grads.begin() + t.offset + t.numel);
      EXPECT_LE(rel_l2(gb, ga), 1e-5) << t.name;
    }
    // 19 more steps (stage 3): the loss curves within 1e-4, and two CUDA runs bitwise equal
    const StepOut a = train(cpu, c, 19, packed), b = train(cuda, c, 19, packed);
    cuda2.init_weights(5);
    const StepOut b0 = train(cuda2, c, 1, packed), b2 = train(cuda2, c, 19, packed);
    for (size_t i = 0; i < a.losses.size(); ++i) EXPECT_NEAR(a.losses[i], b.losses[i], 1e-4) << "step " << i + 1;
    EXPECT_TRUE(same_bits(b1.grads, b0.grads)) << "two CUDA runs' first-step gradients differ";
    EXPECT_TRUE(same_bits(b.params, b2.params)) << "two CUDA runs' weights differ after 20 steps";
  }
}

}  // namespace
}  // namespace aji::model
