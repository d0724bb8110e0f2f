// Continuation scoring with the engine on a tiny random model.
#include <gtest/gtest.h>

#include <cmath>

#include "aji/eval/lm_eval.h"

namespace {
aji::tokenizer::Tokenizer byte_tok() {
  std::vector<std::string> bytes;
  for (int b = 0; b < 256; ++b) bytes.push_back(std::string(1, static_cast<char>(b)));
  return aji::tokenizer::Tokenizer::from_ranks(bytes, aji::tokenizer::SplitPattern::kGpt2, {{"<|endoftext|>", 256}});
}
aji::model::Model tiny() {
  aji::model::ModelConfig c;
  c.vocab_size = 257; c.n_layer = 1; c.n_head = 2; c.n_kv_head = 2; c.d_model = 16; c.d_ff = 32; c.max_seq_len = 64;
  aji::model::Model m(c);
  m.init_weights(3);
  return m;
}
}  // namespace

TEST(LmEval, ContinuationScoreMatchesTokenLogprobsAndIsDeterministic) {
  auto tok = byte_tok();
  auto m = tiny();
  auto s = aji::eval::score_continuation(m, tok, "1+2=", "3;", 256);
  EXPECT_EQ(s.n_tokens, 2);
  EXPECT_EQ(s.n_chars, 2);
  std::vector<int32_t> ids = {256, '1', '+', '2', '=', '3', ';'};
  auto lp = m.token_logprobs(ids.data(), static_cast<int>(ids.size()));
  EXPECT_NEAR(s.sum_logprob, lp[4] + lp[5], 1e-5);
  auto s2 = aji::eval::score_continuation(m, tok, "1+2=", "3;", 256);
  EXPECT_EQ(s.sum_logprob, s2.sum_logprob);
}

// Accuracy and centered accuracy on items whose right answers are fixed here: the model's
// pick for each item is found with token_logprobs directly (one byte = one token), two
// items get it as gold and the third gets another choice. So accuracy = 2/3; the chance
// baseline is the mean of 1/choices = (1/4 + 1/4 + 1/2) / 3 = 1/3; centered accuracy =
// (2/3 - 1/3) / (1 - 1/3) = 0.5.
TEST(LmEval, AccuracyAndCenteredAccuracyOnItemsWithKnownAnswers) {
  auto tok = byte_tok();
  auto m = tiny();
  auto model_pick = [&](const std::string& context, const std::vector<std::string>& choices) {
    int best = -1;
    double best_lp = 0;
    for (size_t c = 0; c < choices.size(); ++c) {
      std::vector<int32_t> ids = {256};
      for (char ch : context + choices[c]) ids.push_back(static_cast<unsigned char>(ch));
      auto lp = m.token_logprobs(ids.data(), static_cast<int>(ids.size()));
      double sum = 0;
      for (size_t i = 1 + context.size(); i < ids.size(); ++i) sum += lp[i - 1];
      if (best < 0 || sum > best_lp) best = static_cast<int>(c), best_lp = sum;
    }
    return best;
  };
  std::vector<aji::eval::McItem> items = {{"1+2=", {"3", "4", "5", "6"}, 0},
                                          {"2+2=", {"3", "4", "5", "66"}, 0},
                                          {"7-5=", {"2", "12"}, 0}};
  items[0].gold = model_pick(items[0].context, items[0].choices);
  items[1].gold = model_pick(items[1].context, items[1].choices);
  items[2].gold = 1 - model_pick(items[2].context, items[2].choices);
  auto r = aji::eval::evaluate_mc(m, tok, items, aji::eval::McScoring::kSum, 256);
  EXPECT_EQ(r.n, 3);
  EXPECT_NEAR(r.accuracy, 2.0 / 3, 1e-12);
  EXPECT_NEAR(r.centered_accuracy, 0.5, 1e-12);
  // All right: 1 and 1; all wrong: (0 - 1/3) / (2/3) = -0.5.
  for (auto& it : items) it.gold = model_pick(it.context, it.choices);
  r = aji::eval::evaluate_mc(m, tok, items, aji::eval::McScoring::kSum, 256);
  EXPECT_NEAR(r.accuracy, 1.0, 1e-12);
  EXPECT_NEAR(r.centered_accuracy, 1.0, 1e-12);
  for (auto& it : items) it.gold = (it.gold + 1) % static_cast<int>(it.choices.size());
  r = aji::eval::evaluate_mc(m, tok, items, aji::eval::McScoring::kSum, 256);
  EXPECT_NEAR(r.accuracy, 0.0, 1e-12);
  EXPECT_NEAR(r.centered_accuracy, -0.5, 1e-12);
}
