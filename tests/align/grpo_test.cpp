// GRPO trainer (align/grpo.h) at trainer level on the toy SFT fixture: post-training spec
// §8.3 checks 20-22 through grpo_step, the smoke test (every tensor changes, the frozen
// reference is bit-identical), library resume == uninterrupted run, and bad input.
#include "aji/align/grpo.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <vector>

#include "aji/base/error.h"
#include "aji/base/threads.h"
#include "aji/kernels/backend.h"
#include "aji/kernels/cpu/bf16_gemm.h"
#include "grpo_toy.h"
#include "test_util.h"
#include "toy_base.h"

namespace aji {
namespace {

using namespace grpotoy;

align::GrpoOptions small_options() {
  align::GrpoOptions o;
  o.group_size = 4;
  o.prompts_per_step = 4;
  o.max_new_tokens = 6;
  o.stop_tokens = stop_tokens();
  o.lr = 1e-3f;
  o.steps = 3;
  o.seed = 5;
  return o;
}

std::vector<const align::GrpoTask*> ptrs(const std::vector<align::GrpoTask>& v) {
  std::vector<const align::GrpoTask*> p;
  for (const auto& t : v) p.push_back(&t);
  return p;
}

// AdamW without weight decay: a zero gradient on fresh moments then moves nothing.
train::AdamW make_opt(const model::Model& m) { return train::AdamW(m.num_params(), {0.9f, 0.95f, 1e-8f, 0.0f}); }

std::vector<float> params_of(const model::Model& m) { return {m.params(), m.params() + m.num_params()}; }

bool same_bits(const std::vector<float>& a, const model::Model& m) {
  return a.size() == m.num_params() && std::memcmp(a.data(), m.params(), a.size() * sizeof(float)) == 0;
}

// Independent advantages: r - mean (none) or (r - mean)/(Bessel std + 1e-4) (group).
std::vector<double> ref_advantages(const std::vector<double>& r, int G, bool scale) {
  std::vector<double> a(r.size());
  for (size_t g0 = 0; g0 < r.size(); g0 += G) {
    double m = 0;
    for (int i = 0; i < G; ++i) m += r[g0 + i];
    m /= G;
    double v = 0;
    for (int i = 0; i < G; ++i) v += (r[g0 + i] - m) * (r[g0 + i] - m);
    const double sd = G > 1 ? std::sqrt(v / (G - 1)) : 0.0;
    for (int i = 0; i < G; ++i) a[g0 + i] = scale ? (r[g0 + i] - m) / (sd + 1e-4) : r[g0 + i] - m;
  }
  return a;
}

// Check 20: all rewards equal -> zero-std groups, zero advantages, a gradient of exactly 0
// (beta 0) and, with a fresh optimizer, parameters unchanged.
TEST(Grpo, EqualRewardsGiveZeroGradient) {
  set_num_threads(1);
  model::Model policy = toybase::load_toy_sft();
  const std::vector<float> before = params_of(policy);
  const std::vector<align::GrpoTask> tasks = pick_tasks(4, 1);
  align::GrpoOptions o = small_options();
  for (align::fb::GrpoScale scale : {align::fb::GrpoScale::group, align::fb::GrpoScale::none}) {
    o.scale = scale;
    train::AdamW opt = make_opt(policy);
    auto constant = [](const align::GrpoTask&, const infer::Rollout&) { return 0.5; };
    const align::GrpoStepStats st = align::grpo_step(policy, nullptr, opt, ptrs(tasks), constant, o, 0, o.lr);
    EXPECT_EQ(st.frac_zero_std, 1.0);
    EXPECT_EQ(st.loss, 0.0);
    EXPECT_EQ(st.grad_norm, 0.0);
    for (size_t i = 0; i < policy.num_params(); ++i) ASSERT_EQ(policy.grads()[i], 0.0f) << i;
    EXPECT_TRUE(same_bits(before, policy));
    EXPECT_TRUE(std::isfinite(st.loss));
  }
}

// Check 21 at trainer level: the step's loss equals the aggregation formula of each loss
// type on its own completions (ratio 1, beta 0: token loss = -A), computed here from the
// returned rollouts and rewards; and splitting the update into chunks changes nothing.
TEST(Grpo, LossNormalisationsMatchFormulas) {
  set_num_threads(1);
  // Sums of 1, 2 and 3 digits: completions of unequal length.
  const std::vector<align::GrpoTask> tasks = {addition_task(3, 4), addition_task(45, 67), addition_task(20, 30),
                                              addition_task(99, 99)};
  // A reward that varies between samples whatever the model does.
  auto varied = [](const align::GrpoTask&, const infer::Rollout& r) {
    int64_t s = 0;
    for (int32_t t : r.tokens) s += t;
    return double(s % 3) / 2.0;
  };
  using LT = align::fb::GrpoLossType;
  for (LT lt : {LT::grpo, LT::bnpo, LT::dr_grpo, LT::dapo}) {
    std::vector<float> whole_grads;
    for (int chunk : {0, 3}) {
      model::Model policy = toybase::load_toy_sft();
      align::GrpoOptions o = small_options();
      o.loss_type = lt;
      o.scale = align::fb::GrpoScale::group;
      o.update_batch = chunk;
      train::AdamW opt = make_opt(policy);
      std::vector<infer::Rollout> outs;
      std::vector<double> rewards;
      const align::GrpoStepStats st =
          align::grpo_step(policy, nullptr, opt, ptrs(tasks), varied, o, 0, o.lr, &outs, &rewards);
      const std::vector<double> A = ref_advantages(rewards, o.group_size, true);
      const double B = (double)outs.size();
      double num = 0, tokens = 0, per_seq = 0;
      bool unequal = false;
      for (size_t i = 0; i < outs.size(); ++i) {
        const double n = (double)outs[i].tokens.size();
        num += -A[i] * n;
        tokens += n;
        per_seq += n > 0 ? -A[i] : 0.0;
        unequal |= outs[i].tokens.size() != outs[0].tokens.size();
      }
      EXPECT_TRUE(unequal) << "the batch should have completions of unequal length";
      double expect = 0;
      switch (lt) {
        case LT::grpo: expect = per_seq / B; break;
        case LT::bnpo:
        case LT::dapo: expect = num / tokens; break;
        case LT::dr_grpo: expect = num / (B * o.max_new_tokens); break;
      }
      EXPECT_NEAR(st.loss, expect, 1e-5) << "loss type " << int(lt) << " chunk " << chunk;
      EXPECT_LT(st.logprob_drift, 1e-4);
      // The (clipped) gradient of the step, whole batch vs chunks of 3 rows.
      std::vector<float> g(policy.grads(), policy.grads() + policy.num_params());
      if (chunk == 0) {
        whole_grads = g;
      } else {
        float gmax = 0;
        for (float x : whole_grads) gmax = std::max(gmax, std::fabs(x));
        ASSERT_GT(gmax, 0.0f);
        for (size_t i = 0; i < g.size(); ++i)
          ASSERT_NEAR(g[i], whole_grads[i], 1e-5f * gmax) << "chunked gradient differs at " << i;
      }
    }
  }
}

// Check 21: every completion truncated + mask_truncated -> loss 0, nothing trained, no
// parameter changes (TRL test_training_with_mask_truncated_completions_all_masked).
TEST(Grpo, AllTruncatedMaskedGivesNoUpdate) {
  set_num_threads(1);
  model::Model policy = toybase::load_toy_sft();
  const std::vector<float> before = params_of(policy);
  const std::vector<align::GrpoTask> tasks = pick_tasks(4, 3);
  align::GrpoOptions o = small_options();
  o.max_new_tokens = 1;  // a pick reply needs >= 2 digits before </a>
  o.mask_truncated = true;
  train::AdamW opt = make_opt(policy);
  int calls = 0;
  auto varying = [&](const align::GrpoTask&, const infer::Rollout&) { return double(calls++ % 2); };
  std::vector<infer::Rollout> outs;
  const align::GrpoStepStats st = align::grpo_step(policy, nullptr, opt, ptrs(tasks), varying, o, 0, o.lr, &outs);
  for (const infer::Rollout& r : outs) ASSERT_FALSE(r.stopped);
  EXPECT_LT(st.frac_zero_std, 1.0) << "advantages are non-zero, only the mask removes them";
  EXPECT_EQ(st.loss, 0.0);
  EXPECT_EQ(st.tokens, 0);
  EXPECT_EQ(opt.step_count(), 0);
  EXPECT_TRUE(same_bits(before, policy));
  // Without the mask the same step trains.
  o.mask_truncated = false;
  calls = 0;
  align::grpo_step(policy, nullptr, opt, ptrs(tasks), varying, o, 0, o.lr);
  EXPECT_FALSE(same_bits(before, policy));
}

// GRPO with the policy and the reference on a device with memory of their own (the CPU as
// such a device, kernels::make_separate_cpu_backend): the rollouts run over device KV caches
// (forward_infer, repeat_cache, forward_decode there), the step on the device (train_step);
// against the host run: the same completions, the loss and the weights to rounding (the
// rollouts' products take the device's GEMM where the host takes its one-row kernels).
TEST(Grpo, OnASeparateMemoryDeviceStepsMatchTheHost) {
  set_num_threads(1);
  const std::vector<align::GrpoTask> tasks = pick_tasks(4, 6);
  align::GrpoOptions o = small_options();
  o.beta = 0.04;
  model::Model a = toybase::load_toy_sft(), b = toybase::load_toy_sft();
  model::Model ref_a = toybase::load_toy_sft(), ref_b = toybase::load_toy_sft();
  const auto dev = kernels::make_separate_cpu_backend();
  b.set_device(dev);
  ref_b.set_device(dev);
  train::AdamW oa = make_opt(a), ob = make_opt(b);
  auto varied = [](const align::GrpoTask&, const infer::Rollout& r) {
    int64_t s = 0;
    for (int32_t t : r.tokens) s += t;
    return double(s % 3) / 2.0;
  };
  for (int step = 0; step < 3; ++step) {
    std::vector<infer::Rollout> ra, rb;
    const align::GrpoStepStats sa = align::grpo_step(a, &ref_a, oa, ptrs(tasks), varied, o, step, o.lr, &ra);
    const align::GrpoStepStats sb = align::grpo_step(b, &ref_b, ob, ptrs(tasks), varied, o, step, o.lr, &rb);
    ASSERT_EQ(ra.size(), rb.size());
    for (size_t i = 0; i < ra.size(); ++i) EXPECT_EQ(ra[i].tokens, rb[i].tokens) << "step " << step << " rollout " << i;
    EXPECT_NEAR(sa.loss, sb.loss, 1e-5 + 1e-4 * std::fabs(sa.loss)) << "step " << step;
    EXPECT_NEAR(sa.grad_norm, sb.grad_norm, 1e-4 * sa.grad_norm + 1e-7) << "step " << step;
  }
  const std::vector<float> pa = params_of(a), pb = params_of(b);
  double num = 0, den = 0;
  for (size_t i = 0; i < pa.size(); ++i) {
    num += double(pa[i] - pb[i]) * (pa[i] - pb[i]);
    den += double(pa[i]) * pa[i];
  }
  EXPECT_LE(std::sqrt(num / den), 1e-5);
  EXPECT_FALSE(same_bits(params_of(ref_a), b)) << "the policy did not train";
  EXPECT_TRUE(same_bits(params_of(ref_a), ref_b)) << "the frozen reference moved";
}

// Check 22 at trainer level: with policy == reference the k3 term and its gradient
// β(1 − π_ref/π) are exactly 0, so beta 0.04 and beta 0 give the same first step; once
// the policy has moved, zero advantages leave only the KL term: loss = β·mean k3 > 0 and
// a non-zero gradient.
TEST(Grpo, KlTermVanishesAtReferenceAndPullsBack) {
  set_num_threads(1);
  const std::vector<align::GrpoTask> tasks = pick_tasks(4, 4);
  align::GrpoOptions o = small_options();
  model::Model a = toybase::load_toy_sft(), b = toybase::load_toy_sft(), ref = toybase::load_toy_sft();
  train::AdamW oa = make_opt(a), ob = make_opt(b);
  o.beta = 0.0;
  const align::GrpoStepStats sa = align::grpo_step(a, &ref, oa, ptrs(tasks), even_reward, o, 0, o.lr);
  o.beta = 0.04;
  const align::GrpoStepStats sb = align::grpo_step(b, &ref, ob, ptrs(tasks), even_reward, o, 0, o.lr);
  EXPECT_EQ(sb.k3, 0.0);
  EXPECT_EQ(sb.kl, 0.0);
  EXPECT_EQ(sa.loss, sb.loss);
  EXPECT_TRUE(same_bits(params_of(a), b)) << "k3 at pi == pi_ref must add exactly nothing";
  EXPECT_FALSE(ref.has_grads()) << "the frozen reference must never allocate gradients";

  // Move the policy away (a few steps at a high lr), then a step with zero advantages.
  o.beta = 0.0;
  o.lr = 3e-3f;
  for (int s = 1; s < 4; ++s) align::grpo_step(b, &ref, ob, ptrs(tasks), even_reward, o, s, o.lr);
  o.beta = 0.5;
  o.lr = 1e-3f;
  auto constant = [](const align::GrpoTask&, const infer::Rollout&) { return 1.0; };
  std::vector<infer::Rollout> outs;
  train::AdamW fresh = make_opt(b);
  const align::GrpoStepStats kl1 = align::grpo_step(b, &ref, fresh, ptrs(tasks), constant, o, 10, o.lr, &outs);
  EXPECT_GT(kl1.k3, 0.0);
  EXPECT_NEAR(kl1.loss, o.beta * kl1.k3, 1e-6 + 1e-4 * kl1.loss);
  EXPECT_GT(kl1.grad_norm, 0.0);
  EXPECT_FALSE(ref.has_grads());
}

// Check 30 (smoke): a short run -> finite loss, every parameter tensor changed, the frozen
// reference bit-identical.
TEST(Grpo, SmokeEveryTensorChangesReferenceFrozen) {
  set_num_threads(2);
  model::Model policy = toybase::load_toy_sft(), ref = toybase::load_toy_sft();
  const std::vector<float> p0 = params_of(policy), r0 = params_of(ref);
  align::GrpoOptions o = small_options();
  o.beta = 0.04;
  o.steps = 3;
  const std::vector<align::GrpoTask> tasks = training_addition_tasks(50, 6);
  train::AdamW opt = make_opt(policy);
  const align::GrpoTrainResult r = align::grpo_train(policy, &ref, opt, tasks, exact_reward, o);
  ASSERT_EQ(r.step, 3);
  for (const align::GrpoStepStats& s : r.stats) {
    EXPECT_TRUE(std::isfinite(s.loss));
    EXPECT_TRUE(std::isfinite(s.kl));
  }
  for (const model::ParamTensor& t : policy.tensors()) {
    bool changed = false;
    for (size_t i = t.offset; i < t.offset + t.numel && !changed; ++i) changed = policy.params()[i] != p0[i];
    EXPECT_TRUE(changed) << t.name << " did not change";
  }
  EXPECT_TRUE(same_bits(r0, ref));
  EXPECT_FALSE(ref.has_grads());
}

// Resume: 2 steps, the weights and AdamW state through files, 2 more steps == 4 steps, every
// model from make_model (the policy's and the frozen reference's). Returns the 4-step policy.
model::Model check_resume_bit_identical(const std::function<model::Model()>& make_model) {
  set_num_threads(2);
  test::TempDir dir;
  align::GrpoOptions o = small_options();
  o.steps = 4;
  o.beta = 0.04;
  const std::vector<align::GrpoTask> tasks = pick_tasks(30, 7);
  model::Model ref = make_model();
  model::Model whole = make_model();
  train::AdamW ow = make_opt(whole);
  align::grpo_train(whole, &ref, ow, tasks, even_reward, o, 0);

  model::Model first = make_model();
  train::AdamW of = make_opt(first);
  align::GrpoHooks hooks;
  hooks.after_step = [](int64_t step) { return step == 2; };
  const align::GrpoTrainResult r1 = align::grpo_train(first, &ref, of, tasks, even_reward, o, 0, hooks);
  EXPECT_TRUE(r1.stopped_early);
  EXPECT_EQ(r1.step, 2);
  of.save(dir.path() / "optimizer.bin");
  model::Model second = make_model();
  std::copy(first.params(), first.params() + first.num_params(), second.params());
  train::AdamW os = make_opt(second);
  os.load(dir.path() / "optimizer.bin");
  const align::GrpoTrainResult r2 = align::grpo_train(second, &ref, os, tasks, even_reward, o, r1.step);
  EXPECT_EQ(r2.step, 4);
  EXPECT_TRUE(same_bits(params_of(whole), second));
  return whole;
}

TEST(Grpo, ResumeIsBitIdentical) { check_resume_bit_identical(toybase::load_toy_sft); }

// In bf16 mixed precision the rollouts decode with bf16 weights (infer::training_rollout_weights):
// still bit-identical on resume, the policy left in fp32 weights between steps, and the run
// differs from the fp32 one (so the bf16 path ran).
TEST(Grpo, Bf16ResumeIsBitIdenticalAndRolloutsLeaveFp32Weights) {
  if (!kernels::cpu::bf16_supported()) GTEST_SKIP() << "this CPU has no native bf16 (bf16 falls back to fp32 here)";
  const model::Model bf16 = check_resume_bit_identical([] {
    model::Model m = toybase::load_toy_sft();
    m.set_precision(model::Precision::kBf16);
    return m;
  });
  EXPECT_EQ(bf16.weights(), kernels::cpu::WeightType::kF32);
  const model::Model fp32 = check_resume_bit_identical(toybase::load_toy_sft);
  EXPECT_FALSE(same_bits(params_of(fp32), bf16));
}

TEST(Grpo, BadInput) {
  set_num_threads(1);
  model::Model policy = toybase::load_toy_sft();
  train::AdamW opt = make_opt(policy);
  align::GrpoOptions o = small_options();
  const std::vector<align::GrpoTask> tasks = pick_tasks(3, 8);
  auto nan_reward = [](const align::GrpoTask&, const infer::Rollout&) {
    return std::numeric_limits<double>::quiet_NaN();
  };
  try {
    align::grpo_train(policy, nullptr, opt, tasks, nan_reward, o);
    FAIL() << "a NaN reward must stop the run";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("pick"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("nan"), std::string::npos) << e.what();
  }
  EXPECT_THROW(align::grpo_train(policy, nullptr, opt, {}, even_reward, o), Error);
  o.beta = 0.04;
  EXPECT_THROW(align::grpo_train(policy, nullptr, opt, tasks, even_reward, o), Error);
  o.beta = 0;
  o.stop_tokens = {};
  EXPECT_THROW(align::grpo_train(policy, nullptr, opt, tasks, even_reward, o), Error);
  o.stop_tokens = {99};
  EXPECT_THROW(align::grpo_train(policy, nullptr, opt, tasks, even_reward, o), Error);
}

// Evaluation: pass@1 is the completion mean, pass@G the share of tasks with a pass; greedy
// gives one completion per task; the toy SFT model solves most held-out sums greedily.
TEST(Grpo, EvaluateCountsPassAtOneAndK) {
  set_num_threads(2);
  model::Model policy = toybase::load_toy_sft();
  const std::vector<align::GrpoTask> tasks = heldout_addition_tasks(40, 9);
  align::GrpoEvalOptions eo;
  eo.samples = 4;
  eo.max_new_tokens = 5;
  eo.stop_tokens = stop_tokens();
  const align::GrpoEval ev = align::grpo_evaluate(policy, &policy, tasks, exact_reward, eo);
  ASSERT_EQ(ev.completions.size(), 160u);
  double pass = 0;
  std::vector<int> any(40, 0);
  for (size_t i = 0; i < ev.completions.size(); ++i) {
    const double r = exact_reward(tasks[size_t(ev.completions[i].prompt_index)], ev.completions[i]);
    pass += r;
    if (r > 0) any[size_t(ev.completions[i].prompt_index)] = 1;
  }
  EXPECT_DOUBLE_EQ(ev.pass_at_1, pass / 160.0);
  double k = 0;
  for (int a : any) k += a;
  EXPECT_DOUBLE_EQ(ev.pass_at_k, k / 40.0);
  EXPECT_GE(ev.pass_at_k, ev.pass_at_1);
  EXPECT_NEAR(ev.kl, 0.0, 1e-4) << "KL of a model to itself";
  eo.temperature = 0;
  const align::GrpoEval g = align::grpo_evaluate(policy, nullptr, tasks, exact_reward, eo);
  EXPECT_EQ(g.completions.size(), 40u);
  EXPECT_GE(g.pass_at_1, 0.6);
  EXPECT_GE(g.stop_rate, 0.98);
}

}  // namespace
}  // namespace aji
