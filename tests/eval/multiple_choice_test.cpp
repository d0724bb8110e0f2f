// Unit checks 27–28 of the post-training spec: scoring rules on a stub LM with fixed
// per-token log-probabilities, and finding the continuation span.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>

#include "aji/align/synthetic_tasks.h"
#include "aji/base/error.h"
#include "aji/eval/multiple_choice.h"

using namespace aji::eval;

namespace {
// Stub LM: every token of a continuation has a fixed log-probability given per choice.
ChoiceScore stub(const std::vector<double>& token_logprobs, int64_t chars) {
  ChoiceScore s;
  for (double lp : token_logprobs) s.sum_logprob += lp;
  s.n_tokens = static_cast<int64_t>(token_logprobs.size());
  s.n_chars = chars;
  return s;
}
}  // namespace

TEST(MultipleChoice, SumAndLengthNormalisedScoringDisagreeWhereTheyShould) {
  // Short choice: one token at −2.0 (sum −2.0, mean −2.0, 3 chars → −0.667/char).
  // Long choice: four tokens at −0.9 (sum −3.6, mean −0.9, 12 chars → −0.3/char).
  std::vector<ChoiceScore> choices{stub({-2.0}, 3), stub({-0.9, -0.9, -0.9, -0.9}, 12)};
  EXPECT_EQ(pick_choice(choices, McScoring::kSum), 0);       // lm-eval acc prefers the short one
  EXPECT_EQ(pick_choice(choices, McScoring::kPerToken), 1);  // CORE's mean prefers the long one
  EXPECT_EQ(pick_choice(choices, McScoring::kPerChar), 1);   // acc_norm divides by characters
  EXPECT_DOUBLE_EQ(choice_value(choices[1], McScoring::kPerToken), -0.9);
  EXPECT_DOUBLE_EQ(choice_value(choices[1], McScoring::kPerChar), -3.6 / 12);
  // acc_norm uses characters, not tokens: same tokens, different lengths flip the pick.
  std::vector<ChoiceScore> by_chars{stub({-1.0, -1.0}, 4), stub({-1.2, -1.2}, 10)};
  EXPECT_EQ(pick_choice(by_chars, McScoring::kPerToken), 0);
  EXPECT_EQ(pick_choice(by_chars, McScoring::kPerChar), 1);
  // Ties go to the first choice.
  EXPECT_EQ(pick_choice({stub({-1.0}, 1), stub({-1.0}, 1)}, McScoring::kSum), 0);
  EXPECT_THROW(pick_choice({}, McScoring::kSum), aji::Error);
  EXPECT_THROW(pick_choice({stub({}, 0)}, McScoring::kSum), aji::Error);
}

TEST(MultipleChoice, CenteredAccuracy) {
  EXPECT_DOUBLE_EQ(centered_accuracy(0.25, 0.25), 0.0);
  EXPECT_DOUBLE_EQ(centered_accuracy(1.0, 0.25), 1.0);
  EXPECT_NEAR(centered_accuracy(0.943, 0.25), 0.924, 1e-12);  // §8.1 G: (0.943 - 0.25) / 0.75
  EXPECT_NEAR(centered_accuracy(0.18, 0.25), -0.0933333333333333, 1e-12);  // -0.07 / 0.75: below chance
  EXPECT_NEAR(centered_accuracy(2.0 / 3, 1.0 / 3), 0.5, 1e-12);
  EXPECT_DOUBLE_EQ(centered_accuracy(0.5, 0.0), 0.5);
  EXPECT_THROW(centered_accuracy(0.5, 1.0), aji::Error);
}

TEST(MultipleChoice, ContinuationSpanByCommonPrefixAndSuffix) {
  namespace toy = aji::align::toy;
  auto item = toy::make_mc_item(3, 3, 7);
  std::vector<std::vector<uint32_t>> full;
  for (const auto& c : item.choices) {
    auto s = item.context;
    s.insert(s.end(), c.begin(), c.end());
    full.push_back(s);
  }
  // The shared prefix is the context plus the characters all four choices start with
  // (counted here by hand from the choice strings).
  size_t shared = 0;
  for (;; ++shared) {
    bool same = true;
    for (const auto& c : item.choices) same = same && shared < c.size() && c[shared] == item.choices[0][shared];
    if (!same) break;
  }
  EXPECT_EQ(common_prefix_length(full), item.context.size() + shared);
  // Known strings: "1+2=" then '5' vs '6' (4); "57;" vs "59;" share "5" too (5).
  EXPECT_EQ(common_prefix_length({toy::encode("1+2=57;"), toy::encode("1+2=59;"), toy::encode("1+2=61;")}), 4u);
  EXPECT_EQ(common_prefix_length({toy::encode("1+2=57;"), toy::encode("1+2=59;")}), 5u);
  EXPECT_EQ(common_prefix_length({toy::encode("1+2=57;"), toy::encode("1+2=57;")}), 7u);
  // Schema style: different contexts, same continuation → common suffix = continuation.
  std::vector<std::vector<uint32_t>> schema{toy::encode("1+2=3;"), toy::encode("11+2=3;"), toy::encode("2=3;")};
  EXPECT_EQ(common_suffix_length(schema), 4u);
  EXPECT_EQ(common_prefix_length({toy::encode("12"), toy::encode("13")}), 1u);
  EXPECT_EQ(common_prefix_length({}), 0u);
}
