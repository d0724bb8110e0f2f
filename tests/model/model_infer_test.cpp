// Incremental decoding with the KV cache against full recomputation, token log-probs
// against the full logits, and the model's input checks.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "aji/base/error.h"
#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "aji/model/model.h"
#include "test_util.h"

using aji::model::KVCache;
using aji::model::Model;
using aji::model::ModelConfig;

namespace {

ModelConfig small(const std::string& arch, bool qk_norm = false) {
  ModelConfig c;
  c.vocab_size = 97;
  c.n_layer = 2;
  c.n_head = 4;
  c.d_model = 48;
  c.max_seq_len = 40;
  if (arch == "gpt2") {
    c.arch = aji::model::Arch::kGpt2;
    c.n_kv_head = 4;
    c.tied_embeddings = true;
    c.bias = true;
  } else {
    c.arch = aji::model::Arch::kLlama;
    c.n_kv_head = 2;
    c.d_ff = 96;
    c.qk_norm = qk_norm;
  }
  c.init_std = 0.2f;  // larger than usual so that logits differ clearly between tokens
  return c;
}

std::vector<float> full_logits(Model& m, const std::vector<int32_t>& seq) {
  const int T = (int)seq.size(), V = m.config().vocab_size;
  m.forward(seq.data(), 1, T);
  std::vector<float> out((size_t)T * V);
  m.lm_logits(m.hidden(), T, out.data());
  return out;
}

int argmax(const float* x, int n) { return (int)(std::max_element(x, x + n) - x); }

class Infer : public testing::TestWithParam<std::string> {};

ModelConfig param_config(const std::string& p) {
  if (p == "llama_qknorm") return small("llama", true);
  return small(p);
}

TEST_P(Infer, CachedLogitsEqualFullRecomputation) {
  ModelConfig c = param_config(GetParam());
  Model m(c);
  m.init_weights(7);
  const int V = c.vocab_size;
  aji::Rng rng(3);
  std::vector<int32_t> seq(30);
  for (auto& t : seq) t = (int32_t)rng.below(V);
  std::vector<float> ref = full_logits(m, seq);

  KVCache cache = m.make_cache(1);
  std::vector<float> logits(V);
  const int prompt = 11;
  m.forward_infer(seq.data(), 1, prompt, cache, logits.data());
  EXPECT_EQ(cache.length, prompt);
  auto check_row = [&](int pos) {
    float err = 0, scale = 1e-3f;
    for (int v = 0; v < V; ++v) {
      err = std::max(err, std::fabs(logits[v] - ref[(size_t)pos * V + v]));
      scale = std::max(scale, std::fabs(ref[(size_t)pos * V + v]));
    }
    EXPECT_LT(err / scale, 1e-5) << "position " << pos;
  };
  check_row(prompt - 1);
  for (int pos = prompt; pos < (int)seq.size(); ++pos) {
    m.forward_infer(&seq[pos], 1, 1, cache, logits.data());
    check_row(pos);
  }
  // a chunk of several tokens after single steps
  cache.reset();
  m.forward_infer(seq.data(), 1, 5, cache, logits.data());
  m.forward_infer(seq.data() + 5, 1, 1, cache, logits.data());
  m.forward_infer(seq.data() + 6, 1, 9, cache, logits.data());
  check_row(14);
}

TEST_P(Infer, GreedyWithCacheEqualsGreedyByRecomputation) {
  ModelConfig c = param_config(GetParam());
  Model m(c);
  m.init_weights(11);
  const int V = c.vocab_size;
  std::vector<int32_t> prompt = {5, 17, 42, 3, 88, 9};
  const int n_gen = 25;

  std::vector<int32_t> recompute = prompt;
  for (int i = 0; i < n_gen; ++i) {
    std::vector<float> lg = full_logits(m, recompute);
    recompute.push_back(argmax(lg.data() + (recompute.size() - 1) * V, V));
  }
  std::vector<int32_t> cached = prompt;
  KVCache cache = m.make_cache(1);
  std::vector<float> logits(V);
  m.forward_infer(prompt.data(), 1, (int)prompt.size(), cache, logits.data());
  for (int i = 0; i < n_gen; ++i) {
    int32_t next = argmax(logits.data(), V);
    cached.push_back(next);
    if (i + 1 < n_gen) m.forward_infer(&next, 1, 1, cache, logits.data());
  }
  EXPECT_EQ(cached, recompute);
  // the generated continuation is not a constant token (the test would be weak otherwise)
  std::set<int32_t> distinct(cached.begin() + prompt.size(), cached.end());
  EXPECT_GT(distinct.size(), 1u);
}

TEST_P(Infer, BatchedCacheEqualsSingleSequences) {
  ModelConfig c = param_config(GetParam());
  Model m(c);
  m.init_weights(5);
  const int V = c.vocab_size, B = 3, P = 7;
  aji::Rng rng(9);
  std::vector<int32_t> prompts(B * P);
  for (auto& t : prompts) t = (int32_t)rng.below(V);
  KVCache cb = m.make_cache(B);
  std::vector<float> lb((size_t)B * V);
  m.forward_infer(prompts.data(), B, P, cb, lb.data());
  std::vector<int32_t> next = {1, 2, 3};
  m.forward_infer(next.data(), B, 1, cb, lb.data());
  for (int b = 0; b < B; ++b) {
    KVCache c1 = m.make_cache(1);
    std::vector<float> l1(V);
    m.forward_infer(prompts.data() + b * P, 1, P, c1, l1.data());
    m.forward_infer(&next[b], 1, 1, c1, l1.data());
    for (int v = 0; v < V; ++v) EXPECT_NEAR(lb[(size_t)b * V + v], l1[v], 1e-4) << "seq " << b;
  }
}

TEST_P(Infer, TokenLogprobsMatchFullLogits) {
  ModelConfig c = param_config(GetParam());
  Model m(c);
  m.init_weights(2);
  const int V = c.vocab_size;
  aji::Rng rng(4);
  std::vector<int32_t> seq(33);
  for (auto& t : seq) t = (int32_t)rng.below(V);
  std::vector<float> lg = full_logits(m, seq);
  std::vector<float> lp = m.token_logprobs(seq.data(), (int)seq.size());
  ASSERT_EQ(lp.size(), seq.size() - 1);
  for (size_t i = 0; i + 1 < seq.size(); ++i) {
    const float* row = lg.data() + i * V;
    double mx = *std::max_element(row, row + V), s = 0;
    for (int v = 0; v < V; ++v) s += std::exp((double)row[v] - mx);
    const double expect = row[seq[i + 1]] - mx - std::log(s);
    EXPECT_NEAR(lp[i], expect, 1e-5) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Archs, Infer, testing::Values("gpt2", "llama", "llama_qknorm"));

TEST(ModelErrors, SequenceTooLongTokenOutOfRangeContextFull) {
  Model m(small("llama"));
  m.init_weights(1);
  std::vector<int32_t> seq(41, 1);
  try {
    m.forward(seq.data(), 1, 41);
    FAIL();
  } catch (const aji::Error& e) {
    EXPECT_THAT(e.describe(), testing::HasSubstr("longer than the model's context (40)"));
  }
  seq[3] = 97;
  try {
    m.forward(seq.data(), 1, 10);
    FAIL();
  } catch (const aji::Error& e) {
    EXPECT_THAT(e.describe(), testing::HasSubstr("outside the vocabulary"));
  }
  seq[3] = 1;
  KVCache cache = m.make_cache(1, 8);
  std::vector<float> logits(97);
  m.forward_infer(seq.data(), 1, 8, cache, logits.data());
  EXPECT_THROW(m.forward_infer(seq.data(), 1, 1, cache, logits.data()), aji::Error);
  std::vector<int32_t> bad_targets(10, 200);
  m.forward(seq.data(), 1, 10);
  EXPECT_THROW(m.lm_head_loss(bad_targets.data()), aji::Error);
}

TEST(ModelErrors, AllTargetsIgnoredGivesZeroLossAndGradient) {
  Model m(small("gpt2"));
  m.init_weights(1);
  std::vector<int32_t> seq(10, 4), targets(10, -1);
  m.forward(seq.data(), 1, 10);
  m.zero_grads();
  EXPECT_EQ(m.lm_head_loss(targets.data()), 0.0f);
  m.backward(m.d_hidden_buffer());
  for (size_t i = 0; i < m.num_params(); ++i) ASSERT_EQ(m.grads()[i], 0.0f);
}

TEST(ModelInit, DeterministicAndScaled) {
  ModelConfig c = small("llama");
  c.init_std = 0.02f;
  Model a(c), b(c);
  a.init_weights(42);
  b.init_weights(42);
  ASSERT_TRUE(std::equal(a.params(), a.params() + a.num_params(), b.params()));
  b.init_weights(43);
  EXPECT_FALSE(std::equal(a.params(), a.params() + a.num_params(), b.params()));
  // std of the embedding ~0.02, of down_proj ~0.02/sqrt(2L)
  auto stddev = [&](const std::string& name) {
    const auto* t = a.find_tensor(name);
    const float* p = a.params() + t->offset;
    double s = 0;
    for (size_t i = 0; i < t->numel; ++i) s += (double)p[i] * p[i];
    return std::sqrt(s / t->numel);
  };
  EXPECT_NEAR(stddev("model.embed_tokens.weight"), 0.02, 0.001);
  EXPECT_NEAR(stddev("model.layers.0.mlp.down_proj.weight"), 0.01, 0.0007);
  EXPECT_EQ(a.params()[a.find_tensor("model.norm.weight")->offset], 1.0f);
}

}  // namespace

namespace {

// `--resume` must continue bit-identically, so a training step must give the same bits
// on every run with the same thread count (weight-gradient partials are summed in thread
// order, never in arrival order).
TEST(ModelDeterminism, GradientsBitIdenticalAcrossRunsWithTwoThreads) {
  const int keep = aji::num_threads();
  aji::set_num_threads(2);
  for (const char* arch : {"gpt2", "llama"}) {
    ModelConfig c = small(arch, std::string(arch) == "llama");
    c.d_model = 128;
    c.n_head = 4;
    c.max_seq_len = 64;
    c.n_layer = 1;
    c.vocab_size = 512;
    if (!c.is_gpt2()) c.d_ff = 256;
    Model m(c);
    m.init_weights(3);
    aji::Rng rng(8);
    const int B = 4, T = 64;  // N*C = 32768: every op takes its parallel path
    std::vector<int32_t> tok(B * T), tgt(B * T);
    for (auto& t : tok) t = (int32_t)rng.below(c.vocab_size);
    for (auto& t : tgt) t = (int32_t)rng.below(c.vocab_size);
    std::vector<float> first;
    float first_loss = 0;
    for (int run = 0; run < 2; ++run) {
      m.zero_grads();
      m.forward(tok.data(), B, T);
      const float loss = m.lm_head_loss(tgt.data());
      m.backward(m.d_hidden_buffer());
      std::vector<float> g(m.grads(), m.grads() + m.num_params());
      if (run == 0) {
        first = g;
        first_loss = loss;
      } else {
        EXPECT_EQ(std::memcmp(&loss, &first_loss, sizeof loss), 0) << arch;
        EXPECT_EQ(std::memcmp(g.data(), first.data(), g.size() * sizeof(float)), 0) << arch << " run " << run;
      }
    }
  }
  aji::set_num_threads(keep);
}

}  // namespace

namespace {

// The head seam: a scalar head (reward/value style: w . hidden of the last token, squared
// error) written outside the model, backpropagated with backward(d_hidden). Checked
// against finite differences of the same loss through the whole model.
TEST(ModelHeads, ScalarHeadThroughBackwardMatchesFiniteDifferences) {
  for (const char* arch : {"gpt2", "llama"}) {
    ModelConfig c = small(arch, std::string(arch) == "llama");
    c.init_std = 0.1f;
    Model m(c);
    m.init_weights(21);
    const int B = 2, T = 7, C = c.d_model;
    std::vector<int32_t> tok = {3, 9, 27, 1, 0, 55, 8, 12, 4, 4, 90, 31, 6, 2};
    std::vector<float> w(C), target = {0.5f, -1.0f};
    aji::Rng rng(5);
    for (auto& x : w) x = (float)rng.normal() * 0.3f;
    auto head_loss = [&](std::vector<float>* d_hidden) {
      m.forward(tok.data(), B, T);
      const float* h = m.hidden();
      double loss = 0;
      if (d_hidden) d_hidden->assign((size_t)B * T * C, 0.0f);
      for (int b = 0; b < B; ++b) {
        const float* last = h + ((size_t)b * T + T - 1) * C;
        double v = 0;
        for (int i = 0; i < C; ++i) v += (double)w[i] * last[i];
        const double err = v - target[b];
        loss += 0.5 * err * err;
        if (d_hidden)
          for (int i = 0; i < C; ++i) (*d_hidden)[((size_t)b * T + T - 1) * C + i] = (float)(err * w[i]);
      }
      return loss;
    };
    std::vector<float> d_hidden;
    head_loss(&d_hidden);
    m.zero_grads();
    m.backward(d_hidden.data());
    std::vector<float> analytic(m.grads(), m.grads() + m.num_params());
    // a sample of parameters from every tensor
    int significant = 0;
    for (const auto& t : m.tensors()) {
      for (size_t k = 0; k < 3; ++k) {
        const size_t i = t.offset + (k * 7919) % t.numel;
        float* p = m.params() + i;
        const float keep = *p, h = 1e-2f;
        *p = keep + h;
        const double lp = head_loss(nullptr);
        *p = keep - h;
        const double lm = head_loss(nullptr);
        *p = keep;
        const double numeric = (lp - lm) / (2 * h);
        significant += std::fabs(numeric) > 1e-3;
        EXPECT_NEAR(analytic[i], numeric, 2e-3 + 2e-2 * std::fabs(numeric)) << arch << " " << t.name << "[" << i - t.offset << "]";
      }
    }
    EXPECT_GT(significant, 20) << arch << ": the check must see real gradients";
  }
}

}  // namespace
