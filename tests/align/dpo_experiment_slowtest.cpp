// Experiment F of the post-training spec (§8.1): DPO on the hidden "even" rule, from the toy
// SFT fixture. Pairs: for fresh pick-a-number prompts, 4 samples from the SFT policy; chosen =
// the first even reply, rejected = the first violating one; 2,000 training pairs and 300
// held-out; log π(y|x) summed over the reply's tokens; frozen SFT reference (log-probs
// precomputed once); batch 32 pairs, 3 epochs (189 steps).
//   plain DPO, β 0.5, lr 5e-5:           step-0 loss = ln 2 (1e-6), held-out implicit-reward
//                                         accuracy >= 0.85, satisfaction +0.15 or more;
//   DPO + NLL (RPO), β 0.1, α 1, lr 1e-4: accuracy >= 0.90, satisfaction >= 0.75, KL <= 1.5
//                                         nats, in-format >= 0.95;
//   both: reference parameters bit-identical, and it never allocates gradients.
// Negative controls (run, each must fail its criterion): chosen and rejected swapped -> the
// satisfaction falls below the SFT model's; the DPO+NLL settings without the NLL term -> KL
// and/or in-format fail (the policy leaves the data distribution).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numbers>

#include "aji/align/dpo.h"
#include "aji/base/threads.h"
#include "align/dpo_toy.h"
#include "align/toy_base.h"

namespace align = aji::align;
using aji::model::Model;

namespace {

struct FRun {
  double step0_loss = 0, step0_dpo_loss = 0, last_loss = 0;
  align::DpoEval heldout;
  aji::dpotoy::SampleScore after;
  bool reference_unchanged = false;
  double seconds = 0;
};

struct FData {
  std::vector<align::PreferenceIds> train, heldout, train_swapped;
};

const FData& data() {
  static const FData d = [] {
    Model sft = aji::toybase::load_toy_sft();
    FData f;
    f.train = aji::dpotoy::even_rule_pairs(sft, 2000, 101);
    f.heldout = aji::dpotoy::even_rule_pairs(sft, 300, 202);
    f.train_swapped = f.train;
    for (auto& p : f.train_swapped) std::swap(p.chosen, p.rejected);
    return f;
  }();
  return d;
}

constexpr uint64_t kEvalSeed = 303;

FRun run_f(const std::vector<align::PreferenceIds>& train, double beta, double nll, float lr, const char* name) {
  const auto t0 = std::chrono::steady_clock::now();
  Model policy = aji::toybase::load_toy_sft();
  Model reference = aji::toybase::load_toy_sft();
  const std::vector<float> ref_before(reference.params(), reference.params() + reference.num_params());
  align::DpoOptions o;
  o.beta = beta;
  o.nll_weight = nll;
  o.batch = 32;
  o.epochs = 3;
  o.lr = lr;
  o.pad_id = (int32_t)aji::align::toy::kPad;
  o.seed = 7;
  const align::ReferenceLogps ref = align::dpo_reference_logps(reference, train, 64, o.pad_id);
  const align::ReferenceLogps ref_heldout = align::dpo_reference_logps(reference, data().heldout, 64, o.pad_id);
  aji::train::AdamW opt(policy.num_params(), {o.beta1, o.beta2, o.eps, o.weight_decay});
  const align::DpoResult r = align::dpo_train(policy, opt, train, ref, o, {});
  FRun f;
  f.step0_loss = r.steps.front().loss;
  f.step0_dpo_loss = r.steps.front().dpo_loss;
  f.last_loss = r.steps.back().loss;
  f.heldout = align::dpo_evaluate(policy, data().heldout, ref_heldout, o);
  f.after = aji::dpotoy::score_samples(policy, reference, 100, kEvalSeed);
  f.reference_unchanged = !reference.has_grads() &&
                          std::memcmp(reference.params(), ref_before.data(), ref_before.size() * sizeof(float)) == 0;
  f.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Memory of the two models (the frozen reference: weights + a forward arena, no gradients,
  // no AdamW moments; its log-probs were precomputed once, so it runs no forward per step).
  std::printf("F memory: reference %.0f KB weights + %.0f KB activations (grads: %s) | policy %.0f KB weights+grads+AdamW + %.0f KB activations\n",
              reference.num_params() * 4 / 1024.0, reference.activation_bytes() / 1024.0,
              reference.has_grads() ? "yes" : "none", policy.num_params() * 16 / 1024.0,
              policy.activation_bytes() / 1024.0);
  std::printf(
      "F %-28s %zu steps | loss %.6f -> %.4f | held-out acc %.3f margin %.2f (chosen %+.2f rejected %+.2f) | "
      "satisfaction %.3f in-format %.3f single-digit %.3f distinct %d KL %.2f | %.1f s\n",
      name, r.steps.size(), f.step0_loss, f.last_loss, f.heldout.accuracy, f.heldout.margin,
      f.heldout.chosen_logratio, f.heldout.rejected_logratio, f.after.satisfaction, f.after.in_format,
      f.after.single_digit, f.after.distinct, f.after.kl, f.seconds);
  std::fflush(stdout);
  return f;
}

aji::dpotoy::SampleScore before() {
  Model sft = aji::toybase::load_toy_sft();
  Model ref = aji::toybase::load_toy_sft();
  const aji::dpotoy::SampleScore s = aji::dpotoy::score_samples(sft, ref, 100, kEvalSeed);
  std::printf("F SFT model: satisfaction %.3f in-format %.3f distinct %d KL %.2f\n", s.satisfaction, s.in_format,
              s.distinct, s.kl);
  return s;
}

void plain_dpo_beta05(const aji::dpotoy::SampleScore& s0) {
  SCOPED_TRACE("plain DPO, beta 0.5");
  ASSERT_EQ(data().train.size(), 2000u);
  ASSERT_EQ(data().heldout.size(), 300u);
  const FRun f = run_f(data().train, 0.5, 0.0, 5e-5f, "plain, beta 0.5, lr 5e-5");
  EXPECT_NEAR(f.step0_loss, std::numbers::ln2, 1e-6);
  EXPECT_GE(f.heldout.accuracy, 0.85);
  EXPECT_GE(f.after.satisfaction, s0.satisfaction + 0.15);
  EXPECT_TRUE(f.reference_unchanged);
}

void rpo_beta01_nll1() {
  SCOPED_TRACE("DPO + NLL, beta 0.1");
  const FRun f = run_f(data().train, 0.1, 1.0, 1e-4f, "DPO+NLL, beta 0.1, lr 1e-4");
  EXPECT_NEAR(f.step0_dpo_loss, std::numbers::ln2, 1e-6);  // the DPO part; the NLL part adds to it
  EXPECT_GE(f.heldout.accuracy, 0.90);
  EXPECT_GE(f.after.satisfaction, 0.75);
  EXPECT_LE(f.after.kl, 1.5);
  EXPECT_GE(f.after.in_format, 0.95);
  EXPECT_TRUE(f.reference_unchanged);
}

// Negative control: the same plain run on swapped pairs teaches the opposite rule.
void swapped_pairs_lower_satisfaction(const aji::dpotoy::SampleScore& s0) {
  SCOPED_TRACE("control: swapped pairs");
  const FRun f = run_f(data().train_swapped, 0.5, 0.0, 5e-5f, "NEG swapped, beta 0.5");
  EXPECT_LT(f.after.satisfaction, s0.satisfaction) << "the swapped control must push satisfaction down";
  EXPECT_LT(f.after.satisfaction, s0.satisfaction + 0.15) << "so the pass criterion fails on it";
}

// Second control: the DPO+NLL run's settings without the NLL term (β 0.1 is weak for 3-token
// replies with summed log-probs, spec §8.1 F): it must fail at least one of that run's criteria,
// which shows the NLL term is what keeps the policy in distribution there.
void without_nll_fails_rpo_criteria() {
  SCOPED_TRACE("control: no NLL at beta 0.1");
  const FRun f = run_f(data().train, 0.1, 0.0, 1e-4f, "NEG no NLL, beta 0.1, lr 1e-4");
  const bool passes = f.heldout.accuracy >= 0.90 && f.after.satisfaction >= 0.75 && f.after.kl <= 1.5 &&
                      f.after.in_format >= 0.95;
  EXPECT_FALSE(passes) << "plain DPO at beta 0.1 was expected to leave the data distribution";
}

}  // namespace

// One test (one process under ctest): the pairs are sampled once for the four runs.
TEST(DpoExperimentF, PassesAndControlsFail) {
  aji::set_num_threads(2);
  const aji::dpotoy::SampleScore s0 = before();
  plain_dpo_beta05(s0);
  rpo_beta01_nll1();
  swapped_pairs_lower_satisfaction(s0);
  without_nll_fails_rpo_criteria();
}
