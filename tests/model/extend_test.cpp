// Model::forward_extend, the scoring form (rows of different lengths after a shared prefix,
// each in its own copy of the prefix's cache, every new position scored) against the model's
// own full-sequence path, token_logprobs (one forward over prefix + row, no cache), for the
// Llama family (RoPE at positions past the prefix, GQA, QK-norm) and GPT-2 (learned
// positions); a row may have no target at some positions (0 there).
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "aji/base/error.h"
#include "aji/model/model.h"

using aji::model::Model;
using aji::model::ModelConfig;

namespace {

Model make(aji::model::Arch arch) {
  ModelConfig c;
  c.arch = arch;
  c.vocab_size = 61;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = arch == aji::model::Arch::kLlama ? 2 : 4;
  c.d_model = 32;
  c.d_ff = 36;
  c.max_seq_len = 40;
  c.qk_norm = arch == aji::model::Arch::kLlama;
  c.tied_embeddings = c.bias = arch == aji::model::Arch::kGpt2;  // GPT-2: tied LM head, biases
  c.init_std = 0.3f;  // peaked distributions: argmax ties are unlikely
  Model m(c);
  m.init_weights(7);
  return m;
}

void check_extend(Model& m) {
  const std::vector<int32_t> prefix = {3, 14, 15, 9, 26, 5, 35};
  const std::vector<std::vector<int32_t>> rows = {{8, 9, 7, 9, 3}, {2, 38}, {46, 26, 43, 3}, {50}};
  const int B = static_cast<int>(rows.size()), V = m.config().vocab_size;
  auto one = m.make_cache(1, static_cast<int>(prefix.size()));
  std::vector<float> last(V);
  m.forward_infer(prefix.data(), 1, static_cast<int>(prefix.size()), one, last.data());
  // row b feeds rows[b] into its own copy of the prefix cache and scores the next token of
  // rows[b] at every position but its last (no target there)
  std::vector<aji::model::KVCache> caches;
  std::vector<aji::model::KVCache*> ptrs;
  std::vector<int32_t> toks, targets;
  std::vector<int> counts;
  for (int b = 0; b < B; ++b) {
    caches.push_back(m.repeat_cache(one, 1, static_cast<int>(prefix.size() + rows[b].size())));
    ASSERT_EQ(caches.back().length, static_cast<int>(prefix.size()));
    counts.push_back(static_cast<int>(rows[b].size()));
    for (size_t t = 0; t < rows[b].size(); ++t) {
      toks.push_back(rows[b][t]);
      targets.push_back(t + 1 < rows[b].size() ? rows[b][t + 1] : -1);
    }
  }
  for (auto& c : caches) ptrs.push_back(&c);
  std::vector<float> lp(toks.size(), -1.0f);
  std::vector<uint8_t> top(toks.size(), 7);
  m.forward_extend(toks.data(), counts.data(), B, ptrs.data(), targets.data(), lp.data(), top.data());
  int checked_argmax = 0;
  size_t i = 0;
  for (int b = 0; b < B; ++b) {
    SCOPED_TRACE(b);
    EXPECT_EQ(caches[b].length, static_cast<int>(prefix.size() + rows[b].size()));
    std::vector<int32_t> all = prefix;
    all.insert(all.end(), rows[b].begin(), rows[b].end());
    const auto ref = m.token_logprobs(all.data(), static_cast<int>(all.size()));
    for (size_t t = 0; t < rows[b].size(); ++t, ++i) {
      if (targets[i] < 0) {
        EXPECT_EQ(lp[i], 0.0f);
        EXPECT_EQ(top[i], 0);
        continue;
      }
      EXPECT_NEAR(lp[i], ref[prefix.size() + t], 2e-5);
      // the argmax flag against an independent full forward + LM head over the same prefix
      std::vector<int32_t> upto(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(prefix.size() + t + 1));
      m.forward(upto.data(), 1, static_cast<int>(upto.size()));
      std::vector<float> logits(V);
      m.lm_logits(m.hidden() + (upto.size() - 1) * m.config().d_model, 1, logits.data());
      const int32_t arg = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      EXPECT_EQ(top[i] != 0, arg == targets[i]);
      checked_argmax += arg == targets[i];
    }
  }
  // A row that is the model's own greedy continuation is flagged as the argmax everywhere.
  std::vector<int32_t> greedy = {prefix.back()};
  {
    auto c = m.make_cache(1);
    std::vector<float> l(V);
    m.forward_infer(prefix.data(), 1, static_cast<int>(prefix.size()), c, l.data());
    for (int k = 0; k < 3; ++k) {
      const int32_t id = static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
      greedy.push_back(id);
      m.forward_infer(&id, 1, 1, c, l.data());
    }
  }
  auto pre = m.make_cache(1, static_cast<int>(prefix.size()));
  m.forward_infer(prefix.data(), 1, static_cast<int>(prefix.size()) - 1, pre, last.data());
  auto g = m.repeat_cache(pre, 1, static_cast<int>(prefix.size()) + 3);
  std::vector<int32_t> gt(greedy.begin() + 1, greedy.end()), gi(greedy.begin(), greedy.end() - 1);
  std::vector<float> glp(3);
  std::vector<uint8_t> gtop(3);
  const int three = 3;
  aji::model::KVCache* gp = &g;
  m.forward_extend(gi.data(), &three, 1, &gp, gt.data(), glp.data(), gtop.data());
  for (int k = 0; k < 3; ++k) EXPECT_EQ(gtop[k], 1) << k;
}

}  // namespace

TEST(ModelExtend, EveryNewPositionMatchesTokenLogprobsLlama) {
  Model m = make(aji::model::Arch::kLlama);
  check_extend(m);
}

TEST(ModelExtend, EveryNewPositionMatchesTokenLogprobsGpt2) {
  Model m = make(aji::model::Arch::kGpt2);
  check_extend(m);
}

TEST(ModelExtend, BadInputIsAClearError) {
  Model m = make(aji::model::Arch::kGpt2);
  auto one = m.make_cache(2);
  EXPECT_THROW(m.repeat_cache(one, 3), aji::Error);  // the prefix must be a batch-1 cache
  auto c = m.make_cache(1, 4);
  aji::model::KVCache* cp = &c;
  const int32_t toks[5] = {1, 2, 3, 4, 5}, targets[5] = {2, 3, 4, 5, 6};
  const int five = 5, two = 2;
  float lp[5];
  EXPECT_THROW(m.forward_extend(toks, &five, 1, &cp, targets, lp), aji::Error);  // longer than the cache
  EXPECT_EQ(c.length, 0);
  auto d = m.make_cache(1, 8);
  aji::model::KVCache* dp = &d;
  const int32_t bad[2] = {1, 61};
  EXPECT_THROW(m.forward_extend(toks, &two, 1, &dp, bad, lp), aji::Error);  // target outside the vocabulary
  EXPECT_EQ(d.length, 0);
}
