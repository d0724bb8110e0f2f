// Experiment C of post-training spec §8.1: a reward model learns a hidden rule.
// Hidden rule "even": a pick-a-number reply is good iff it is an even number followed by
// </a>. 600 prompts × K=4 replies sampled from the toy SFT fixture, scored by the rule; every
// ordered pair of distinct score (ties dropped); one prompt = one batch element (K forwards,
// loss = mean over its pairs); zero-initialised scalar head on the SFT trunk read at the last
// non-pad token; 8 prompts per step, AdamW lr 1e-3, 3 epochs. Held-out: 300 fresh prompts
// with fresh samples.
// Pass: held-out pairwise accuracy >= 0.95 (ties 0.5); training loss at step 0 = ln 2 (zero
// head: every pair a tie); after training the chosen replies score 0 on average (the offset).
// Negative control: the same run with each prompt's preferences shuffled (labels no longer
// follow the rule) must FAIL the criterion (held-out accuracy near 0.5).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "aji/align/reward_model.h"
#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "rm_toy.h"
#include "toy_base.h"

using namespace aji::align;

namespace {

struct Outcome {
  double step0_loss = 0, final_loss = 0;
  RmEval heldout;
  double chosen_mean_after_offset = 0;
  int64_t steps = 0;
  double seconds = 0;
};

Outcome run_c(const std::vector<RmGroup>& train, const std::vector<std::vector<float>>& scores,
              const std::vector<RmGroup>& heldout, double epochs = 3) {
  RewardModel rm(aji::toybase::load_toy_sft(), int32_t(toy::kPad));
  RmOptions o;
  o.batch = 8;
  o.epochs = epochs;
  o.lr = 1e-3f;
  o.weight_decay = 0.0f;
  o.seed = 11;
  const auto t0 = std::chrono::steady_clock::now();
  const RmTrainResult r = rm_train(rm, train, {}, o);
  Outcome out;
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  out.steps = r.steps_done;
  out.step0_loss = r.first_step.loss;
  out.final_loss = r.step_losses.back();
  out.heldout = rm_evaluate(rm, heldout);
  // The offset: the training groups' best replies now score 0 on average.
  // The good replies (rule score 1) of the prompts that have pairs.
  std::vector<std::vector<int32_t>> best;
  for (size_t j = 0; j < train.size(); ++j)
    if (!train[j].pairs.empty())
      for (size_t k = 0; k < scores[j].size(); ++k)
        if (scores[j][k] == 1.0f) best.push_back(train[j].sequences[k]);
  double s = 0;
  for (float x : rm.scores(best)) s += x;
  out.chosen_mean_after_offset = s / double(best.size());
  return out;
}

}  // namespace

TEST(ExperimentC, RewardModelLearnsTheHiddenEvenRule) {
  aji::set_num_threads(2);
  aji::model::Model policy = aji::toybase::load_toy_sft();
  const aji::rmtoy::ToyPrefs train = aji::rmtoy::toy_preferences(policy, 600, 4, 1001);
  const aji::rmtoy::ToyPrefs held = aji::rmtoy::toy_preferences(policy, 300, 4, 2002);
  std::printf("  train: 600 prompts x 4, %lld with pairs, %.2f pairs per such prompt, rule true on %.2f of replies\n",
              (long long)train.prompts_with_pairs, double(train.pairs) / double(train.prompts_with_pairs),
              train.rule_mean);
  std::printf("  held-out: 300 fresh prompts x 4, %lld with pairs (%lld pairs)\n", (long long)held.prompts_with_pairs,
              (long long)held.pairs);
  ASSERT_GT(train.prompts_with_pairs, 400);
  ASSERT_GT(held.pairs, 300);

  // Before training: a zero head ties every pair.
  {
    RewardModel rm0(aji::toybase::load_toy_sft(), int32_t(toy::kPad));
    const RmEval e0 = rm_evaluate(rm0, held.groups);
    EXPECT_EQ(e0.accuracy, 0.5);
    EXPECT_NEAR(e0.loss, std::log(2.0), 1e-12);
  }

  const Outcome c = run_c(train.groups, train.scores, held.groups);
  std::printf("  experiment C: %lld steps in %.1f s; step-0 loss %.6f (ln 2 = %.6f), final loss %.4f\n",
              (long long)c.steps, c.seconds, c.step0_loss, std::log(2.0), c.final_loss);
  std::printf("  held-out: pairwise accuracy %.4f, loss %.4f, margin %.2f, reward min/mean/max %.2f/%.2f/%.2f\n",
              c.heldout.accuracy, c.heldout.loss, c.heldout.margin, c.heldout.reward_min, c.heldout.reward_mean,
              c.heldout.reward_max);
  std::printf("  chosen replies after the offset: mean score %.2e\n", c.chosen_mean_after_offset);
  EXPECT_NEAR(c.step0_loss, std::log(2.0), 1e-6);
  EXPECT_GE(c.heldout.accuracy, 0.95);
  EXPECT_LT(c.final_loss, 0.2);
  EXPECT_NEAR(c.chosen_mean_after_offset, 0.0, 1e-3);

  // Negative control: preferences shuffled within each prompt -> the rule is not learnable.
  std::vector<RmGroup> shuffled;
  std::vector<std::vector<float>> shuffled_scores;
  aji::Rng rng(77);
  for (size_t j = 0; j < train.groups.size(); ++j) {
    std::vector<float> sc = train.scores[j];
    for (size_t i = sc.size(); i > 1; --i) std::swap(sc[i - 1], sc[size_t(rng.below(i))]);
    shuffled.push_back(rm_group_from_scores(train.groups[j].sequences, sc));
    shuffled_scores.push_back(sc);
  }
  const Outcome neg = run_c(shuffled, shuffled_scores, held.groups, 1);  // one epoch (the real run is at 1.00 by then)
  std::printf("  negative control (preferences shuffled, 1 epoch): held-out accuracy %.4f (must fail >= 0.95), %.1f s\n",
              neg.heldout.accuracy, neg.seconds);
  EXPECT_LT(neg.heldout.accuracy, 0.75) << "shuffled labels must not reach the pass criterion";
}
