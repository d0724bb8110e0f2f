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
  std::vector<aji::eval::McItem> items = {{"1+2=", {"3", "4", "5", "6"}, 0}, {"2+2=", {"3", "4", "5", "6"}, 1}};
  auto r = aji::eval::evaluate_mc(m, tok, items, aji::eval::McScoring::kSum, 256);
  EXPECT_EQ(r.n, 2);
  EXPECT_NEAR(r.centered_accuracy, (r.accuracy - 0.25) / 0.75, 1e-9);
}
