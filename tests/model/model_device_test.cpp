// The model's training path on a backend with memory of its own (Model::set_device).
//
// Without a GPU: a separate CPU backend (kernels::make_separate_cpu_backend) is such a device,
// so every upload of the weights, download of the gradients, device activation and int input
// is exercised, and the results must be the host path's bit for bit (the same CPU kernels
// run on other copies of the data): a missed synchronisation shows as a mismatch.
// With a GPU (skipped here with the reason): the CUDA backend against the CPU, fp32, within
// stated tolerances, over 20 training steps, and two CUDA runs bitwise equal.
// Generation (forward_infer over a device KV cache) the same way: bitwise on the separate CPU
// backend where the host runs the same kernels, within tolerances on CUDA.
#include <gtest/gtest.h>

#include <algorithm>
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
#include "kernels/counting_backend.h"
#include "model/tiny_configs.h"

namespace aji::model {
namespace {

using test::same_bits;
ModelConfig gpt2_config() { return test::tiny_gpt2_config(); }
ModelConfig llama_config() { return test::tiny_llama_config(); }

using test::Batch;
using test::make_batch;

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

// In fp32 and in bf16 precision (the device keeps the products' inputs in fp32 and rounds them
// as it reads them, and its own bf16 copy of the weights: the same bits as the host's kept bf16
// activations and copy).
TEST_P(ModelDevice, SeparateMemoryTrainsBitForBitAsTheHost) {
  const ModelConfig c = GetParam() ? llama_config() : gpt2_config();
  for (Precision precision : {Precision::kFp32, Precision::kBf16})
  for (bool packed : {false, true}) {
    SCOPED_TRACE(std::string(precision_name(precision)) + (packed ? " packed" : ""));
    Model host(c), dev(c);
    host.init_weights(5);
    dev.init_weights(5);
    host.set_precision(precision);
    dev.set_precision(precision);
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

// ---- generation: forward_infer over a KV cache in the device's memory ------------------------

struct Decoded {
  std::vector<std::vector<float>> logits;  // the prompt's, then each step's (B, V)
  std::vector<int32_t> tokens;             // greedy picks, step by step (B each)
};

// A prompt of `prompt` tokens for each of B sequences, then `steps` greedy tokens.
Decoded decode(Model& m, bool device_cache, int B, int prompt, int steps, test::CountingBackend* counting = nullptr) {
  const ModelConfig& c = m.config();
  const int V = c.vocab_size;
  std::mt19937 rng(17);
  std::vector<int32_t> toks((size_t)B * prompt);
  for (auto& t : toks) t = (int32_t)(rng() % V);
  KVCache cache = device_cache ? m.make_device_cache(B, prompt + steps) : m.make_cache(B, prompt + steps);
  Decoded d;
  std::vector<float> logits((size_t)B * V);
  m.forward_infer(toks.data(), B, prompt, cache, logits.data());
  d.logits.push_back(logits);
  std::vector<int32_t> next(B);
  for (int s = 0; s < steps; ++s) {
    for (int b = 0; b < B; ++b) {
      const float* row = logits.data() + (size_t)b * V;
      next[b] = (int32_t)(std::max_element(row, row + V) - row);
      d.tokens.push_back(next[b]);
    }
    const size_t up0 = counting ? counting->up : 0, down0 = counting ? counting->down : 0;
    m.forward_infer(next.data(), B, 1, cache, logits.data());
    if (counting) {
      // A decode step moves up its tokens and positions, the caches' table (each sequence
      // twice: for the append and for the attention) and the indices of the rows the head
      // reads; its logits down; nothing else (no weights, no cache).
      EXPECT_EQ(counting->up - up0, (3 * sizeof(int32_t) + 2 * sizeof(kernels::CachedSeq)) * B) << "step " << s;
      EXPECT_EQ(counting->down - down0, sizeof(float) * B * V) << "step " << s;
    }
    d.logits.push_back(logits);
  }
  EXPECT_EQ(cache.length, prompt + steps);
  return d;
}

TEST_P(ModelDevice, GenerationOnTheDeviceMatchesTheHost) {
  const ModelConfig c = GetParam() ? llama_config() : gpt2_config();
  Model host(c), dev(c);
  host.init_weights(21);
  dev.init_weights(21);
  auto counting = std::make_shared<test::CountingBackend>(kernels::make_separate_cpu_backend());
  dev.set_device(counting);
  for (int B : {1, 3}) {
    SCOPED_TRACE("batch " + std::to_string(B));
    const Decoded a = decode(host, false, B, 7, 8), b = decode(dev, true, B, 7, 8, counting.get());
    // The prompt: the same kernels in the same order, bit for bit.
    EXPECT_TRUE(same_bits(a.logits[0], b.logits[0])) << "prompt logits";
    // Decode steps: the host takes its one-row kernels, the backend the GEMM: to rounding.
    for (size_t s = 1; s < a.logits.size(); ++s) EXPECT_LE(test::rel_l2(b.logits[s], a.logits[s]), 1e-5) << "step " << s;
    EXPECT_EQ(a.tokens, b.tokens);
  }
}

// Serving's and evaluation's passes: ragged prompts prefilled in one forward_extend, then
// decode steps over per-sequence caches (continuous batching), and a shared prefix repeated
// with every new position scored (forward_extend with targets) — on the device against the host.
struct Served {
  std::vector<std::vector<float>> logits;
  std::vector<float> scored;
  std::vector<uint8_t> argmax;
};

Served serve_like(Model& m) {
  const ModelConfig& c = m.config();
  const int V = c.vocab_size;
  std::mt19937 rng(29);
  const std::vector<int> counts = {5, 2, 7};
  std::vector<int32_t> toks;
  for (int n : counts)
    for (int t = 0; t < n; ++t) toks.push_back((int32_t)(rng() % V));
  std::vector<KVCache> caches;
  for (int i = 0; i < 3; ++i) caches.push_back(m.make_cache(1, 20));
  std::vector<KVCache*> ptr = {&caches[0], &caches[1], &caches[2]};
  Served out;
  std::vector<float> logits(3 * (size_t)V);
  m.forward_extend(toks.data(), counts.data(), 3, ptr.data(), logits.data(), false);
  out.logits.push_back(logits);
  for (int s = 0; s < 4; ++s) {
    std::vector<int32_t> next(3);
    for (int i = 0; i < 3; ++i) next[i] = (int32_t)((s * 7 + i * 3) % V);
    m.forward_decode(next.data(), 3, ptr.data(), logits.data(), false);
    out.logits.push_back(logits);
  }
  EXPECT_EQ(caches[0].length, 9);
  EXPECT_EQ(caches[2].length, 11);
  // a prefix of 4 tokens, repeated into two rows, each extended by 3 scored tokens
  KVCache pre = m.make_cache(1, 4);
  std::vector<float> lp(V);
  m.forward_infer(toks.data(), 1, 4, pre, lp.data());
  KVCache r1 = m.repeat_cache(pre, 1, 12), r2 = m.repeat_cache(pre, 1, 12);
  std::vector<KVCache*> rp = {&r1, &r2};
  const std::vector<int> cn = {3, 3};
  const std::vector<int32_t> ext = {1, 2, 3, 4, 5, 6}, targets = {2, 3, -1, 5, 6, 0};
  out.scored.assign(6, -1.0f);
  out.argmax.assign(6, 9);
  m.forward_extend(ext.data(), cn.data(), 2, rp.data(), targets.data(), out.scored.data(), out.argmax.data());
  EXPECT_EQ(r1.length, 7);
  return out;
}

TEST_P(ModelDevice, ServingPassesOnTheDeviceMatchTheHost) {
  const ModelConfig c = GetParam() ? llama_config() : gpt2_config();
  Model host(c), dev(c);
  host.init_weights(31);
  dev.init_weights(31);
  dev.set_device(kernels::make_separate_cpu_backend());
  const Served a = serve_like(host), b = serve_like(dev);
  ASSERT_EQ(a.logits.size(), b.logits.size());
  for (size_t s = 0; s < a.logits.size(); ++s) EXPECT_LE(test::rel_l2(b.logits[s], a.logits[s]), 1e-5) << "pass " << s;
  EXPECT_LE(test::rel_l2(b.scored, a.scored), 1e-5);
  EXPECT_EQ(b.scored[2], 0.0f);  // no target there
  EXPECT_EQ(a.argmax, b.argmax);
}

// Continuous batching on a device: a decode step over sequences in caches of their own makes
// one attention call and one KV-append call per layer, however many sequences there are (it
// was one attention and two row copies per sequence per layer); a prompt of more than a few
// rows still gets the tiled attention on its own. Results equal the host's (above).
TEST_P(ModelDevice, DecodeOverSeparateCachesIsOneAttentionCallPerLayer) {
  const ModelConfig c = GetParam() ? llama_config() : gpt2_config();
  Model m(c);
  m.init_weights(37);
  auto counting = std::make_shared<test::CountingBackend>(kernels::make_separate_cpu_backend());
  m.set_device(counting);
  const int V = c.vocab_size, L = c.n_layer;
  for (const int n : {1, 3, 8}) {
    SCOPED_TRACE(std::to_string(n) + " sequences");
    std::vector<KVCache> caches;
    for (int i = 0; i < n; ++i) caches.push_back(m.make_cache(1, 24));
    std::vector<KVCache*> ptr;
    for (KVCache& kv : caches) ptr.push_back(&kv);
    std::vector<int> counts(static_cast<size_t>(n));
    std::vector<int32_t> toks;
    for (int i = 0; i < n; ++i) {
      counts[static_cast<size_t>(i)] = i % 2 == 0 ? 6 : 2;  // prompts of 6 (tiled) and 2 (few) rows
      for (int t = 0; t < counts[static_cast<size_t>(i)]; ++t) toks.push_back((int32_t)((i * 5 + t) % V));
    }
    std::vector<float> logits((size_t)n * V);
    counting->attention_calls = counting->append_calls = 0;
    m.forward_extend(toks.data(), counts.data(), n, ptr.data(), logits.data(), false);
    const int long_prompts = (n + 1) / 2, few = n / 2;
    EXPECT_EQ(counting->attention_calls, (int64_t)L * (long_prompts + (few > 0 ? 1 : 0)));
    EXPECT_EQ(counting->append_calls, (int64_t)L);
    for (int step = 0; step < 3; ++step) {
      std::vector<int32_t> next(static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) next[static_cast<size_t>(i)] = (int32_t)((step + i) % V);
      counting->attention_calls = counting->append_calls = 0;
      m.forward_decode(next.data(), n, ptr.data(), logits.data(), false);
      EXPECT_EQ(counting->attention_calls, (int64_t)L) << "step " << step;
      EXPECT_EQ(counting->append_calls, (int64_t)L) << "step " << step;
    }
    for (int i = 0; i < n; ++i) EXPECT_EQ(caches[static_cast<size_t>(i)].length, counts[static_cast<size_t>(i)] + 3);
  }
}

// After a step on the device wrote the weights, the host copy is stale: declaring host writes
// (params_updated) before params() brought it back is refused, so stale weights are never
// uploaded over trained ones; after params() it is fine.
TEST(ModelDeviceErrors, HostWritesDeclaredOverStaleWeightsAreRefused) {
  Model m(llama_config());
  m.init_weights(41);
  m.set_device(kernels::make_separate_cpu_backend());
  m.params_updated();  // the host copy is current: fine
  m.device_params_for_step();  // a step on the device will write the weights
  EXPECT_THROW(m.params_updated(), Error);
  m.params();  // brought back
  EXPECT_NO_THROW(m.params_updated());
}

TEST(ModelDeviceErrors, DeviceCachesAreRefusedWhereTheyAreNotBuilt) {
  const ModelConfig c = llama_config();
  Model m(c);
  m.init_weights(2);
  EXPECT_THROW(m.make_device_cache(1, 8), Error);  // the model is on the CPU
  auto counting = std::make_shared<test::CountingBackend>(kernels::make_separate_cpu_backend());
  m.set_device(counting);
  m.set_kv_cache(KVCacheType::kBF16);
  try {
    m.make_device_cache(1, 8);
    ADD_FAILURE() << "a bf16 device cache was made";
  } catch (const Error& e) {
    EXPECT_NE(e.how_to_fix().find("--kv-cache fp32"), std::string::npos) << e.describe();
  }
  m.set_kv_cache(KVCacheType::kF32);
  counting->fake_total = 1 << 20;
  counting->fake_free = 1 << 10;
  try {
    m.make_device_cache(4, 24);
    ADD_FAILURE() << "a cache larger than the free memory was made";
  } catch (const Error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("4 sequences x 24 positions"), std::string::npos) << w;
    EXPECT_NE(w.find("GiB is free"), std::string::npos) << w;
  }
  counting->fake_total = 0;
  KVCache kv = m.make_cache(1, 8);  // on a device, there
  ASSERT_TRUE(kv.on_device());
  Model other(c);  // a host model's cache does not mix with a device's in one pass
  KVCache host_kv = other.make_cache(1, 8);
  ASSERT_FALSE(host_kv.on_device());
  int32_t tok[2] = {3, 4};
  KVCache* mixed[] = {&kv, &host_kv};
  std::vector<float> logits(2 * (size_t)c.vocab_size);
  EXPECT_THROW(m.forward_decode(tok, 2, mixed, logits.data()), Error);
  EXPECT_THROW(m.repeat_cache(host_kv, 2), Error);
  m.forward_infer(tok, 1, 1, kv, logits.data());
  EXPECT_EQ(kv.length, 1);
}

TEST(ModelDeviceErrors, UnbuiltPathsOnADeviceAreClearErrors) {
  const ModelConfig c = llama_config();
  Model m(c);
  m.init_weights(1);
  m.set_device(kernels::make_separate_cpu_backend());
  const Batch b = make_batch(c, 1, false);
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

TEST_P(ModelDevice, CudaGenerationMatchesTheCpu) {
  AJI_CUDA_OR_SKIP(gpu);
  const ModelConfig c = GetParam() ? llama_config() : gpt2_config();
  std::shared_ptr<kernels::Backend> shared(&gpu, [](kernels::Backend*) {});
  Model cpu(c), cuda(c);
  cpu.init_weights(23);
  cuda.init_weights(23);
  cuda.set_device(shared);
  for (int B : {1, 4}) {
    SCOPED_TRACE("batch " + std::to_string(B));
    const Decoded a = decode(cpu, false, B, 9, 10), b = decode(cuda, true, B, 9, 10);
    for (size_t s = 0; s < a.logits.size(); ++s) EXPECT_LE(rel_l2(b.logits[s], a.logits[s]), 1e-5) << "step " << s;
    EXPECT_EQ(a.tokens, b.tokens);
    const Decoded b2 = decode(cuda, true, B, 9, 10);
    for (size_t s = 0; s < b.logits.size(); ++s) EXPECT_TRUE(same_bits(b.logits[s], b2.logits[s])) << "two CUDA runs";
  }
  const Served sa = serve_like(cpu), sb = serve_like(cuda);
  for (size_t s = 0; s < sa.logits.size(); ++s) EXPECT_LE(rel_l2(sb.logits[s], sa.logits[s]), 1e-5) << "pass " << s;
  EXPECT_LE(rel_l2(sb.scored, sa.scored), 1e-5);
  EXPECT_EQ(sa.argmax, sb.argmax);
}

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
