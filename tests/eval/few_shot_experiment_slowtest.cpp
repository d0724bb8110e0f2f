// Experiment G (post-training spec §8.1 G): 4-way multiple choice on the toy a+b= task.
#include <gtest/gtest.h>

#include "aji/align/synthetic_tasks.h"
#include "aji/eval/lm_eval.h"
#include "../align/toy_base.h"

namespace {
double centered_mc(aji::model::Model& m, int shots) {
  int correct = 0, n = 300;
  for (int i = 0; i < n; ++i) {
    auto it = aji::align::toy::make_mc_item(i, shots, 7);
    std::vector<aji::eval::ChoiceScore> cs;
    for (const auto& c : it.choices) cs.push_back(aji::eval::score_continuation_ids(m, it.context, c));
    correct += aji::eval::pick_choice(cs, aji::eval::McScoring::kSum) == it.gold;
  }
  double acc = static_cast<double>(correct) / n;
  return aji::eval::centered_accuracy(acc, 0.25);
}
}  // namespace

TEST(ExperimentG, BaseAboveChanceRandomAtChance) {
  auto base = aji::toybase::load_toy_base();
  for (int shots : {0, 3}) {
    double c = centered_mc(base, shots);
    std::printf("base %d-shot centered MC accuracy %.3f\n", shots, c);
    EXPECT_GE(c, 0.7) << shots;
    if (shots == 0) {  // scoring the choices never does worse than generating the answer
      const double em = aji::toybase::toy_zero_shot_em(base, 300, 7);
      std::printf("base 0-shot greedy generative EM %.3f\n", em);
      EXPECT_GE(0.25 + 0.75 * c, em - 0.05);
    }
  }
  aji::model::Model rnd(aji::toybase::toy_config());
  rnd.init_weights(1);
  double c = centered_mc(rnd, 3);
  std::printf("random-init 3-shot centered MC accuracy %.3f\n", c);
  EXPECT_GE(c, -0.15);
  EXPECT_LE(c, 0.15);
  auto a = aji::align::toy::make_mc_item(5, 3, 7), b = aji::align::toy::make_mc_item(5, 3, 7);
  EXPECT_EQ(a.context, b.context);
}
