// Per-token log-probabilities and their signed-weight backward (Model::lm_head_logprobs,
// Model::lm_head_logprob_backward; issue #14 groundwork 1 and 3, post-training spec §8.3
// checks 18, 22, 25, 26):
//   - against Model::token_logprobs (per sequence) and a direct full-softmax computation in
//     double from lm_logits(), at temperature 1 and 0.7, entropy included;
//   - the backward against central finite differences of L = sum_i c_i logp_i with random
//     signed c (negative and zero sums, which lm_head_loss refuses) for embedding, block,
//     final-norm and LM-head parameters, at temperature 1 and 0.7;
//   - equivalence with lm_head_loss when c_i = -w_i / sum w;
//   - a frozen reference model loaded from a model dir never allocates gradients.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "aji/base/error.h"
#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "aji/model/model.h"
#include "aji/train/checkpoint.h"
#include "test_util.h"

using aji::model::Model;
using aji::model::ModelConfig;

namespace {

constexpr int kB = 3, kT = 7, kV = 41;

ModelConfig small_config(bool gpt2) {
  ModelConfig c;
  c.arch = gpt2 ? aji::model::Arch::kGpt2 : aji::model::Arch::kLlama;
  c.vocab_size = kV;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_kv_head = gpt2 ? 2 : 1;
  c.d_model = 16;
  c.d_ff = 32;
  c.max_seq_len = 16;
  c.tied_embeddings = gpt2;  // gpt2: tied wte; llama: its own lm_head.weight
  c.bias = gpt2;
  c.init_std = 0.3f;         // large enough that the distributions are far from uniform
  return c;
}

struct Batch {
  std::vector<int32_t> tokens, targets;
};

// Next-token targets; the last position of every row and a few others are ignored (-1).
Batch make_batch(uint64_t seed) {
  aji::Rng rng(seed);
  Batch b;
  b.tokens.resize(kB * kT);
  for (auto& t : b.tokens) t = (int32_t)rng.below(kV);
  b.targets.assign(kB * kT, -1);
  for (int r = 0; r < kB; ++r)
    for (int t = 0; t + 1 < kT; ++t) b.targets[r * kT + t] = b.tokens[r * kT + t + 1];
  b.targets[1] = -1;
  b.targets[kT + 3] = -1;
  return b;
}

// The reference: log softmax(z / tau)[target] and the entropy, in double, from the full
// (N,V) logits of lm_logits().
void direct_logprobs(Model& m, const std::vector<int32_t>& targets, double tau, std::vector<double>* lp,
                     std::vector<double>* ent) {
  const int N = kB * kT;
  std::vector<float> logits((size_t)N * kV);
  m.lm_logits(m.hidden(), N, logits.data());
  lp->assign(N, 0.0);
  ent->assign(N, 0.0);
  for (int i = 0; i < N; ++i) {
    if (targets[i] < 0) continue;
    const float* z = logits.data() + (size_t)i * kV;
    double mx = -1e300;
    for (int v = 0; v < kV; ++v) mx = std::max(mx, z[v] / tau);
    double s = 0;
    for (int v = 0; v < kV; ++v) s += std::exp(z[v] / tau - mx);
    const double logZ = mx + std::log(s);
    (*lp)[i] = z[targets[i]] / tau - logZ;
    double h = 0;
    for (int v = 0; v < kV; ++v) {
      const double logp = z[v] / tau - logZ;
      h -= std::exp(logp) * logp;
    }
    (*ent)[i] = h;
  }
}

class Logprob : public testing::TestWithParam<bool> {  // param: gpt2 (tied) or llama (untied)
 protected:
  void SetUp() override {
    saved_threads_ = aji::num_threads();
    aji::set_num_threads(1);  // a 10k-parameter model: one thread is fastest
  }
  void TearDown() override { aji::set_num_threads(saved_threads_); }
  int saved_threads_ = 0;
};

TEST_P(Logprob, MatchesTokenLogprobsAndDirectSoftmax) {
  Model m(small_config(GetParam()));
  m.init_weights(7);
  const Batch b = make_batch(11);
  // per-sequence reference first: token_logprobs runs its own forward(tokens, 1, T)
  std::vector<std::vector<float>> per_row;
  for (int r = 0; r < kB; ++r) per_row.push_back(m.token_logprobs(b.tokens.data() + r * kT, kT));

  m.forward(b.tokens.data(), kB, kT);
  std::vector<float> lp(kB * kT, 123.0f), ent(kB * kT, 123.0f);
  m.lm_head_logprobs(b.targets.data(), lp.data(), 1.0f, ent.data());
  double spread = 0;
  for (int r = 0; r < kB; ++r)
    for (int t = 0; t < kT; ++t) {
      const int i = r * kT + t;
      if (b.targets[i] < 0) {
        EXPECT_EQ(lp[i], 0.0f) << i;
        EXPECT_EQ(ent[i], 0.0f) << i;
        continue;
      }
      EXPECT_NEAR(lp[i], per_row[r][t], 2e-6) << "row " << r << " pos " << t;
      spread = std::max(spread, std::fabs(lp[i] + std::log((double)kV)));
    }
  EXPECT_GT(spread, 0.1) << "the test model is too close to uniform to tell anything apart";

  for (double tau : {1.0, 0.7, 2.5}) {
    std::vector<double> ref_lp, ref_ent;
    direct_logprobs(m, b.targets, tau, &ref_lp, &ref_ent);
    m.lm_head_logprobs(b.targets.data(), lp.data(), (float)tau, ent.data());
    for (int i = 0; i < kB * kT; ++i) {
      EXPECT_NEAR(lp[i], ref_lp[i], 2e-6 * (1 + std::fabs(ref_lp[i]))) << "tau " << tau << " i " << i;
      EXPECT_NEAR(ent[i], ref_ent[i], 2e-6 * (1 + ref_ent[i])) << "tau " << tau << " i " << i;
    }
    // entropy alone (no log-prob output) gives the same numbers
    std::vector<float> ent2(kB * kT);
    m.lm_head_logprobs(b.targets.data(), lp.data(), (float)tau, nullptr);
    m.lm_head_logprobs(b.targets.data(), lp.data(), (float)tau, ent2.data());
    EXPECT_EQ(ent, ent2);
  }
  EXPECT_FALSE(m.has_grads()) << "lm_head_logprobs must not allocate gradients";
}

// L(params) = sum_i c_i logp_i(params) at temperature tau, in double over float log-probs.
double objective(Model& m, const Batch& b, const std::vector<float>& c, float tau) {
  m.forward(b.tokens.data(), kB, kT);
  std::vector<float> lp(kB * kT);
  m.lm_head_logprobs(b.targets.data(), lp.data(), tau);
  double L = 0;
  for (int i = 0; i < kB * kT; ++i) L += (double)c[i] * lp[i];
  return L;
}

std::vector<float> analytic_grads(Model& m, const Batch& b, const std::vector<float>& c, float tau) {
  m.zero_grads();
  m.forward(b.tokens.data(), kB, kT);
  m.lm_head_logprob_backward(b.targets.data(), c.data(), tau);
  m.backward(m.d_hidden_buffer());
  return std::vector<float>(m.grads(), m.grads() + m.num_params());
}

// Central differences at the `per_tensor` entries of each named tensor with the largest
// analytic gradient (clear of float noise); returns the worst relative error.
double fd_check(Model& m, const Batch& b, const std::vector<float>& c, float tau, const std::vector<float>& g,
                const std::vector<std::string>& names, int per_tensor = 3) {
  double worst = 0;
  for (const auto& name : names) {
    const auto* t = m.find_tensor(name);
    EXPECT_NE(t, nullptr) << name;
    if (!t) continue;
    std::vector<size_t> idx(t->numel);
    std::iota(idx.begin(), idx.end(), t->offset);
    std::partial_sort(idx.begin(), idx.begin() + per_tensor, idx.end(),
                      [&](size_t x, size_t y) { return std::fabs(g[x]) > std::fabs(g[y]); });
    for (int k = 0; k < per_tensor; ++k) {
      const size_t p = idx[k];
      const float saved = m.params()[p];
      const float h = 1e-2f * std::max(1.0f, std::fabs(saved));
      m.params()[p] = saved + h;
      const double lp = objective(m, b, c, tau);
      m.params()[p] = saved - h;
      const double lm = objective(m, b, c, tau);
      m.params()[p] = saved;
      const double fd = (lp - lm) / (2.0 * h);
      const double err = std::fabs(fd - g[p]) / std::max(1e-3, std::fabs(fd));
      EXPECT_LT(err, 2e-2) << name << "[" << p - t->offset << "] fd " << fd << " analytic " << g[p] << " tau " << tau;
      worst = std::max(worst, err);
    }
  }
  return worst;
}

std::vector<std::string> checked_tensors(bool gpt2) {
  if (gpt2)
    return {"transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.attn.c_attn.weight",
            "transformer.h.1.mlp.c_fc.weight", "transformer.ln_f.weight", "transformer.ln_f.bias"};
  return {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight",
          "model.norm.weight", "lm_head.weight"};
}

TEST_P(Logprob, SignedWeightBackwardMatchesFiniteDifferences) {
  const bool gpt2 = GetParam();
  Model m(small_config(gpt2));
  m.init_weights(3);
  const Batch b = make_batch(5);
  aji::Rng rng(99);
  // c1: random signed, negative sum; c2: random signed, zero sum (to float precision)
  std::vector<float> c1(kB * kT), c2(kB * kT);
  for (auto& x : c1) x = (float)(rng.normal() - 0.6);
  for (auto& x : c2) x = (float)rng.normal();
  double s1 = 0, s2 = 0;
  int last = -1;
  for (int i = 0; i < kB * kT; ++i)
    if (b.targets[i] >= 0) {
      s1 += c1[i];
      s2 += c2[i];
      last = i;
    }
  c2[last] -= (float)s2;
  s2 = 0;
  for (int i = 0; i < kB * kT; ++i)
    if (b.targets[i] >= 0) s2 += c2[i];
  ASSERT_LT(s1, 0.0);
  ASSERT_NEAR(s2, 0.0, 1e-5);

  // lm_head_loss with these as loss weights refuses them (weight sum <= 0): loss 0, no gradient
  m.zero_grads();
  m.forward(b.tokens.data(), kB, kT);
  EXPECT_EQ(m.lm_head_loss(b.targets.data(), c1.data()), 0.0f);

  for (float tau : {1.0f, 0.7f})
    for (const auto* c : {&c1, &c2}) {
      const std::vector<float> g = analytic_grads(m, b, *c, tau);
      double gmax = 0;
      for (float x : g) gmax = std::max(gmax, (double)std::fabs(x));
      EXPECT_GT(gmax, 1e-2) << "the signed objective must have a gradient";
      fd_check(m, b, *c, tau, g, checked_tensors(gpt2));
    }
}

TEST_P(Logprob, IgnoredAndZeroCoefficientPositionsContributeNothing) {
  Model m(small_config(GetParam()));
  m.init_weights(4);
  Batch b = make_batch(6);
  aji::Rng rng(1);
  std::vector<float> c(kB * kT);
  for (auto& x : c) x = (float)rng.normal();
  // reference: only positions 0..2 of row 0 count
  std::vector<float> c_only(kB * kT, 0.0f);
  for (int t = 0; t < 3; ++t) c_only[t] = c[t];
  const std::vector<float> g_ref = analytic_grads(m, b, c_only, 1.0f);
  // same coefficients, but every other position is ignored by target -1 instead of c = 0
  Batch b2 = b;
  for (int i = 3; i < kB * kT; ++i) b2.targets[i] = -1;
  const std::vector<float> g2 = analytic_grads(m, b2, c, 1.0f);
  ASSERT_EQ(g_ref.size(), g2.size());
  for (size_t i = 0; i < g2.size(); ++i) ASSERT_EQ(g_ref[i], g2[i]) << i;
}

TEST_P(Logprob, EqualsLmHeadLossWithNormalisedNegativeWeights) {
  Model m(small_config(GetParam()));
  m.init_weights(8);
  const Batch b = make_batch(9);
  aji::Rng rng(4);
  std::vector<float> w(kB * kT);
  for (auto& x : w) x = 0.2f + (float)rng.uniform();
  double sw = 0;
  for (int i = 0; i < kB * kT; ++i)
    if (b.targets[i] >= 0) sw += w[i];
  std::vector<float> c(kB * kT);
  for (int i = 0; i < kB * kT; ++i) c[i] = (float)(-w[i] / sw);

  m.zero_grads();
  m.forward(b.tokens.data(), kB, kT);
  const float loss = m.lm_head_loss(b.targets.data(), w.data());
  m.backward(m.d_hidden_buffer());
  const std::vector<float> g_loss(m.grads(), m.grads() + m.num_params());

  const std::vector<float> g_lp = analytic_grads(m, b, c, 1.0f);
  std::vector<float> lp(kB * kT);
  m.lm_head_logprobs(b.targets.data(), lp.data());
  double L = 0;
  for (int i = 0; i < kB * kT; ++i) L += (double)c[i] * lp[i];
  EXPECT_NEAR(loss, L, 1e-5 * std::fabs(L));
  double num = 0, den = 0;
  for (size_t i = 0; i < g_lp.size(); ++i) {
    num = std::max(num, (double)std::fabs(g_lp[i] - g_loss[i]));
    den = std::max(den, (double)std::fabs(g_loss[i]));
  }
  EXPECT_GT(den, 1e-3);
  EXPECT_LT(num / den, 1e-5) << "max |difference| " << num << " of max |grad| " << den;
}

TEST_P(Logprob, BadTemperatureTargetOrCoefficientIsAClearError) {
  Model m(small_config(GetParam()));
  m.init_weights(1);
  Batch b = make_batch(2);
  std::vector<float> lp(kB * kT), c(kB * kT, 1.0f);
  EXPECT_THROW(m.lm_head_logprobs(b.targets.data(), lp.data()), aji::Error) << "before forward";
  m.forward(b.tokens.data(), kB, kT);
  EXPECT_THROW(m.lm_head_logprobs(b.targets.data(), lp.data(), 0.0f), aji::Error);
  EXPECT_THROW(m.lm_head_logprobs(b.targets.data(), lp.data(), -1.0f), aji::Error);
  EXPECT_THROW(m.lm_head_logprobs(b.targets.data(), lp.data(), NAN), aji::Error);
  c[2] = NAN;
  EXPECT_THROW(m.lm_head_logprob_backward(b.targets.data(), c.data()), aji::Error);
  c[2] = 1.0f;
  b.targets[4] = kV;
  EXPECT_THROW(m.lm_head_logprobs(b.targets.data(), lp.data()), aji::Error);
  EXPECT_THROW(m.lm_head_logprob_backward(b.targets.data(), c.data()), aji::Error);
}

// A vocabulary large enough that the LM head runs in several row chunks (<= 8M logits per
// chunk: 64 rows at V = 131072): a batch of 5 rows (80 positions, 2 chunks) gives the
// log-probs, entropies and gradients of the rows run one at a time (16 positions, 1 chunk).
TEST_F(Logprob, SeveralVocabularyChunksEqualOneRowAtATime) {
  ModelConfig c;
  c.arch = aji::model::Arch::kLlama;
  c.vocab_size = 131072;
  c.n_layer = 1;
  c.n_head = 2;
  c.n_kv_head = 1;
  c.d_model = 8;
  c.d_ff = 16;
  c.max_seq_len = 16;
  c.tied_embeddings = true;
  c.init_std = 0.5f;
  Model m(c);
  m.init_weights(17);
  const int B = 5, T = 16, N = B * T;
  aji::Rng rng(23);
  std::vector<int32_t> tokens(N), targets(N);
  for (auto& t : tokens) t = (int32_t)rng.below(c.vocab_size);
  for (int i = 0; i < N; ++i) targets[i] = (i % T == T - 1 || i % 7 == 3) ? -1 : tokens[i + 1];
  std::vector<float> coef(N);
  for (auto& x : coef) x = (float)rng.normal();

  std::vector<float> lp(N), ent(N);
  m.zero_grads();
  m.forward(tokens.data(), B, T);
  m.lm_head_logprobs(targets.data(), lp.data(), 0.7f, ent.data());
  m.lm_head_logprob_backward(targets.data(), coef.data(), 0.7f);
  m.backward(m.d_hidden_buffer());
  const std::vector<float> g_batch(m.grads(), m.grads() + m.num_params());

  m.zero_grads();
  std::vector<float> lp1(T), ent1(T);
  for (int r = 0; r < B; ++r) {
    m.forward(tokens.data() + r * T, 1, T);
    m.lm_head_logprobs(targets.data() + r * T, lp1.data(), 0.7f, ent1.data());
    for (int t = 0; t < T; ++t) {
      EXPECT_NEAR(lp[r * T + t], lp1[t], 1e-5 * (1 + std::fabs(lp1[t]))) << r << "," << t;
      EXPECT_NEAR(ent[r * T + t], ent1[t], 1e-5 * (1 + ent1[t])) << r << "," << t;
    }
    m.lm_head_logprob_backward(targets.data() + r * T, coef.data() + r * T, 0.7f);
    m.backward(m.d_hidden_buffer());
  }
  double num = 0, den = 0;
  for (size_t i = 0; i < g_batch.size(); ++i) {
    num = std::max(num, (double)std::fabs(g_batch[i] - m.grads()[i]));
    den = std::max(den, (double)std::fabs(m.grads()[i]));
  }
  EXPECT_GT(den, 1e-3);
  EXPECT_LT(num / den, 1e-5) << "max |difference| " << num << " of max |grad| " << den;
}

INSTANTIATE_TEST_SUITE_P(Arch, Logprob, testing::Values(false, true),
                         [](const testing::TestParamInfo<bool>& i) { return i.param ? "Gpt2Tied" : "LlamaUntied"; });

// Spec §8.3 check 26 and issue #14 groundwork 3: a frozen reference is a second Model loaded
// from the same dir, used only through forward + lm_head_logprobs. It never allocates
// gradients, gives the policy's log-probs exactly, and is untouched by the policy's update.
TEST(LogprobReference, FrozenReferenceHasNoGradsAndMatchesThePolicy) {
  const int saved = aji::num_threads();
  aji::set_num_threads(1);
  aji::test::TempDir dir;
  {
    Model m(small_config(false));
    m.init_weights(21);
    aji::train::save_model_dir(dir.path() / "sft", m, {});
  }
  Model policy = aji::train::load_model(dir.path() / "sft");
  Model ref = aji::train::load_model(dir.path() / "sft");
  EXPECT_FALSE(ref.has_grads());
  const Batch b = make_batch(3);
  std::vector<float> lp_ref(kB * kT), lp_pol(kB * kT), ent(kB * kT);
  ref.forward(b.tokens.data(), kB, kT);
  ref.lm_head_logprobs(b.targets.data(), lp_ref.data(), 0.7f, ent.data());
  EXPECT_FALSE(ref.has_grads()) << "a reference model must cost no gradient memory";
  const std::vector<float> ref_params(ref.params(), ref.params() + ref.num_params());

  policy.forward(b.tokens.data(), kB, kT);
  policy.lm_head_logprobs(b.targets.data(), lp_pol.data(), 0.7f);
  EXPECT_EQ(lp_ref, lp_pol);
  // a policy step: signed backward, then plain SGD
  std::vector<float> c(kB * kT, 0.5f);
  c[0] = -2.0f;
  policy.zero_grads();
  policy.lm_head_logprob_backward(b.targets.data(), c.data(), 0.7f);
  policy.backward(policy.d_hidden_buffer());
  EXPECT_TRUE(policy.has_grads());
  for (size_t i = 0; i < policy.num_params(); ++i) policy.params()[i] += 0.1f * policy.grads()[i];
  policy.forward(b.tokens.data(), kB, kT);
  policy.lm_head_logprobs(b.targets.data(), lp_pol.data(), 0.7f);
  EXPECT_NE(lp_ref, lp_pol) << "the policy moved";
  EXPECT_FALSE(ref.has_grads());
  EXPECT_TRUE(std::equal(ref_params.begin(), ref_params.end(), ref.params())) << "reference parameters changed";
  aji::set_num_threads(saved);
}

}  // namespace
