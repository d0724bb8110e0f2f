// PPO-RLHF at trainer level on the toy SFT fixture (post-training spec §4.1, §8.3 checks
// 16, 18, 19 and smoke test 30; the pure-math checks 14, 15, 17 live in feedback_math_test).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <numeric>

#include "aji/align/ppo.h"
#include "aji/base/error.h"
#include "aji/base/threads.h"
#include "align/ppo_toy.h"

namespace al = aji::align;
namespace fb = aji::align::fb;
using aji::ppotoy::ToyPpo;

namespace {

al::PpoOptions small_options() {
  al::PpoOptions o = aji::ppotoy::toy_ppo_options();
  o.prompts_per_step = 4;
  o.group_size = 4;
  o.ppo_epochs = 2;
  o.minibatches = 2;
  o.lr = 1e-3f;  // large, so one short run moves every parameter visibly
  o.value_lr = 1e-3f;
  o.seed = 7;
  return o;
}

std::vector<float> params_of(const aji::model::Model& m) { return std::vector<float>(m.params(), m.params() + m.num_params()); }

// Names of tensors none of whose elements changed.
std::vector<std::string> unchanged_tensors(const aji::model::Model& m, const std::vector<float>& before) {
  std::vector<std::string> out;
  for (const auto& t : m.tensors()) {
    bool changed = false;
    for (size_t i = t.offset; i < t.offset + t.numel && !changed; ++i) changed = m.params()[i] != before[i];
    if (!changed) out.push_back(t.name);
  }
  return out;
}

}  // namespace

// Check 18: the log-prob recorded at sampling time (left-aligned KV-cache decoding) equals
// the one the training forward recomputes on the right-padded batch, at T = 1 and T = 0.7.
TEST(Ppo, SamplingLogprobsEqualTrainingForward) {
  aji::set_num_threads(1);
  for (float temp : {1.0f, 0.7f}) {
    al::PpoOptions o = small_options();
    o.temperature = temp;
    aji::model::Model policy = aji::toybase::load_toy_sft();
    al::PpoBatch b = al::ppo_rollout(policy, aji::ppotoy::pick_prompts(), o, 0);
    ASSERT_EQ(b.N, 16);
    const std::vector<float> lp = al::ppo_reply_logprobs(policy, b, temp);
    int64_t n = 0;
    for (size_t i = 0; i < lp.size(); ++i) {
      if (!b.mask[i]) continue;
      ++n;
      EXPECT_NEAR(lp[i], b.sample_logp[i], 1e-5) << "token " << i << " at T=" << temp;
    }
    EXPECT_GT(n, 16);
  }
}

// Check 19 + the step-0 identities: before any update the policy equals the reference (KL of
// every token exactly 0) and the first minibatch has ratio 1 and approx-KL 0.
TEST(Ppo, FirstMinibatchRatioIsOneAndKlZero) {
  aji::set_num_threads(1);
  al::PpoOptions o = small_options();
  ToyPpo t(o);
  al::PpoModels m = t.models();
  al::PpoBatch b;
  const al::PpoStepStats st = al::ppo_step(m, aji::ppotoy::pick_prompts(), o, 0, aji::ppotoy::even_rule, {}, &b);
  EXPECT_NEAR(st.first_ratio_mean, 1.0, 1e-7);
  EXPECT_NEAR(st.first_approx_kl, 0.0, 1e-12);
  EXPECT_EQ(st.kl, 0.0);
  for (size_t i = 0; i < b.logp.size(); ++i) EXPECT_EQ(b.logp[i], b.ref_logp[i]);
  EXPECT_LT(st.logprob_mismatch, 1e-5);
}

// Check 16 at trainer level: the score sits on the last reply token (the stop token when the
// row stopped), every reply token carries −β·k1, tokens past the reply get reward,
// advantage and return 0; GAE with λ = 1, γ = 1 and whitening off gives reward-to-go − V.
TEST(Ppo, RewardsOnStopTokenAndGaeRewardToGo) {
  aji::set_num_threads(1);
  al::PpoOptions o = small_options();
  o.lambda = 1.0;
  o.whiten_advantages = false;
  o.kl_coef = 0.3;
  ToyPpo t(o);
  // Make the policy differ from the reference so the KL term is not zero.
  for (size_t i = 0; i < t.policy.num_params(); i += 7) t.policy.params()[i] *= 1.05f;
  al::PpoModels m = t.models();
  al::PpoBatch b = al::ppo_rollout(t.policy, aji::ppotoy::pick_prompts(), o, 3);
  al::ppo_score(b, aji::ppotoy::even_rule, {}, o);
  al::ppo_advantages(m, b, o);
  int stopped = 0;
  for (int i = 0; i < b.N; ++i) {
    const int n = int(b.replies[size_t(i)].size());
    stopped += b.stopped[size_t(i)];
    if (b.stopped[size_t(i)]) {
      EXPECT_EQ(b.replies[size_t(i)].back(), o.stop_token);
    }
    double to_go = 0;
    for (int t2 = b.R - 1; t2 >= 0; --t2) {
      const size_t k = size_t(i) * b.R + size_t(t2);
      if (t2 >= n) {
        EXPECT_EQ(b.mask[k], 0);
        EXPECT_EQ(b.rewards[k], 0.0f);
        EXPECT_EQ(b.advantages[k], 0.0f);
        EXPECT_EQ(b.returns[k], 0.0f);
        continue;
      }
      const double k1 = double(b.logp[k]) - double(b.ref_logp[k]);
      const double expect = -o.kl_coef * k1 + (t2 == n - 1 ? b.scores[size_t(i)] : 0.0);
      EXPECT_NEAR(b.rewards[k], expect, 1e-5);
      to_go += b.rewards[k];
      EXPECT_NEAR(b.advantages[k], to_go - b.values[k], 1e-4);
      EXPECT_NEAR(b.returns[k], to_go, 1e-4);
    }
  }
  EXPECT_GT(stopped, 0);
}

// Missing stop token: the score gets missing_stop_penalty (replies cut at 1 token never stop).
TEST(Ppo, MissingStopPenalty) {
  aji::set_num_threads(1);
  al::PpoOptions o = small_options();
  o.max_new_tokens = 1;
  aji::model::Model policy = aji::toybase::load_toy_sft();
  al::PpoBatch b = al::ppo_rollout(policy, aji::ppotoy::pick_prompts(), o, 0);
  al::ppo_score(b, [](const auto&, const auto&) { return 0.25f; }, {}, o);
  for (int i = 0; i < b.N; ++i) {
    EXPECT_EQ(b.stopped[size_t(i)], 0);
    EXPECT_FLOAT_EQ(b.scores[size_t(i)], 0.25f - 1.0f);
  }
}

// A NaN reward stops the run with an aji::Error naming the rollout.
TEST(Ppo, NonFiniteRewardIsAnError) {
  aji::set_num_threads(1);
  al::PpoOptions o = small_options();
  ToyPpo t(o);
  al::PpoModels m = t.models();
  auto nan_reward = [](const auto&, const auto&) { return std::numeric_limits<float>::quiet_NaN(); };
  try {
    al::ppo_step(m, aji::ppotoy::pick_prompts(), o, 0, nan_reward);
    FAIL() << "expected an aji::Error";
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("rollout 0"), std::string::npos) << e.what();
  }
}

// Smoke test 30: a short run gives finite losses, every trainable parameter tensor of the
// policy, value trunk and value head changed, and the frozen reference is bit-identical and
// never allocated gradients.
TEST(Ppo, SmokeEveryTrainableParameterChangesReferenceFrozen) {
  aji::set_num_threads(2);
  al::PpoOptions o = small_options();
  ToyPpo t(o);
  const std::vector<float> p0 = params_of(t.policy), r0 = params_of(t.ref), v0 = params_of(t.value);
  al::PpoModels m = t.models();
  for (int64_t s = 0; s < 3; ++s) {
    const al::PpoStepStats st = al::ppo_step(m, aji::ppotoy::pick_prompts(), o, s, aji::ppotoy::even_rule);
    EXPECT_TRUE(std::isfinite(st.pg_loss) && std::isfinite(st.value_loss)) << s;
    EXPECT_GT(st.grad_norm, 0.0);
  }
  EXPECT_TRUE(unchanged_tensors(t.policy, p0).empty()) << ::testing::PrintToString(unchanged_tensors(t.policy, p0));
  EXPECT_TRUE(unchanged_tensors(t.value, v0).empty()) << ::testing::PrintToString(unchanged_tensors(t.value, v0));
  int head_nonzero = 0;
  for (float w : t.head.w) head_nonzero += w != 0.0f;
  EXPECT_EQ(head_nonzero, t.head.d_model);
  EXPECT_EQ(params_of(t.ref), r0);
  EXPECT_FALSE(t.ref.has_grads());
}

// Resume: 1 step, save, load into fresh models, 2 more steps == 3 uninterrupted steps, bit for bit.
TEST(Ppo, ResumeIsBitIdentical) {
  aji::set_num_threads(2);
  al::PpoOptions o = small_options();
  const auto pool = aji::ppotoy::pick_prompts();
  ToyPpo a(o);
  al::PpoModels ma = a.models();
  std::vector<al::PpoStepStats> sa;
  for (int64_t s = 0; s < 3; ++s) sa.push_back(al::ppo_step(ma, pool, o, s, aji::ppotoy::even_rule));

  const std::filesystem::path dir = std::filesystem::path(testing::TempDir()) / "aji_ppo_resume";
  std::filesystem::remove_all(dir);
  {
    ToyPpo b(o);
    al::PpoModels mb = b.models();
    al::ppo_step(mb, pool, o, 0, aji::ppotoy::even_rule);
    al::save_ppo_state(dir, mb, 1);
  }
  ToyPpo c(o);
  // Start c from different weights to prove the load replaces them.
  c.policy.params()[0] += 1.0f;
  al::PpoModels mc = c.models();
  const int64_t step = al::load_ppo_state(dir, mc);
  ASSERT_EQ(step, 1);
  std::vector<al::PpoStepStats> sc;
  for (int64_t s = step; s < 3; ++s) sc.push_back(al::ppo_step(mc, pool, o, s, aji::ppotoy::even_rule));
  EXPECT_EQ(params_of(a.policy), params_of(c.policy));
  EXPECT_EQ(params_of(a.value), params_of(c.value));
  EXPECT_EQ(a.head.w, c.head.w);
  EXPECT_EQ(sa[2].score, sc[1].score);
  EXPECT_EQ(sa[2].pg_loss, sc[1].pg_loss);
  EXPECT_EQ(sa[2].kl, sc[1].kl);
  std::filesystem::remove_all(dir);
}

// The reward-hacking guard: warns when the score keeps rising while the true metric falls,
// not when both rise or when the true metric is absent.
TEST(Ppo, RewardHackWatch) {
  al::RewardHackWatch w;
  w.window = 3;
  std::string warn;
  for (int i = 0; i < 6; ++i) warn = w.add(0.1 * i, 0.5 + 0.05 * i);
  EXPECT_EQ(warn, "");
  for (int i = 0; i < 6; ++i) warn = w.add(1.0 + 0.2 * i, 0.7 - 0.1 * i);
  EXPECT_NE(warn.find("reward hacking"), std::string::npos);
  al::RewardHackWatch none;
  for (int i = 0; i < 10; ++i) EXPECT_EQ(none.add(i, -1), "");
}

// Rollouts per step must split into the minibatches; the stop token is required.
TEST(Ppo, BadOptionsAreErrors) {
  aji::model::Model policy = aji::toybase::load_toy_sft();
  al::PpoOptions o = small_options();
  o.minibatches = 3;
  EXPECT_THROW(al::ppo_rollout(policy, aji::ppotoy::pick_prompts(), o, 0), aji::Error);
  o = small_options();
  o.stop_token = -1;
  EXPECT_THROW(al::ppo_rollout(policy, aji::ppotoy::pick_prompts(), o, 0), aji::Error);
  o = small_options();
  EXPECT_THROW(al::ppo_rollout(policy, {}, o, 0), aji::Error);
}
