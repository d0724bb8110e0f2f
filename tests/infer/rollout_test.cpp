// Batched rollouts (infer/rollout.h) against independent references: one-row-at-a-time
// infer::generate with the same per-row seed (tokens), Model::token_logprobs and a plain
// full forward pass (recorded log-probs, post-training spec §8.3 check 18), and the toy
// world's base model (sensible "a+b=c;" continuations).
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "aji/base/error.h"
#include "aji/base/threads.h"
#include "aji/infer/generate.h"
#include "aji/infer/rollout.h"
#include "aji/train/checkpoint.h"
#include "align/toy_base.h"
#include "test_util.h"

using aji::infer::Rollout;
using aji::infer::RolloutOptions;
using aji::test::source_path;

namespace {

aji::model::Model fixture_model(const std::string& name) {
  return aji::train::load_model(source_path("tests/fixtures/infer/hf-" + name));
}

// Ragged prompts: lengths 1, 3, 3, 5, 7 (two share a length, so one bucket holds two prompts).
std::vector<std::vector<int32_t>> ragged_prompts() {
  return {{5, 17, 33}, {9}, {40, 2, 90, 11, 3}, {1, 2, 3}, {70, 71, 72, 73, 74, 75, 76}};
}

// log softmax(logits / T)[next token] at every generated position, from a full forward pass
// over prompt + generated (no KV cache), in double.
std::vector<double> reference_logprobs(aji::model::Model& m, const std::vector<int32_t>& prompt,
                                       const std::vector<int32_t>& gen, double T) {
  std::vector<int32_t> seq = prompt;
  seq.insert(seq.end(), gen.begin(), gen.end());
  const int n = (int)seq.size();
  const int V = m.config().vocab_size, C = m.config().d_model;
  m.forward(seq.data(), 1, n);
  std::vector<float> logits((size_t)n * V);
  m.lm_logits(m.hidden(), n, logits.data());
  std::vector<double> out;
  for (size_t i = 0; i < gen.size(); ++i) {
    const float* row = logits.data() + (prompt.size() - 1 + i) * V;
    double mx = -1e300;
    for (int v = 0; v < V; ++v) mx = std::max(mx, (double)row[v] / T);
    double s = 0;
    for (int v = 0; v < V; ++v) s += std::exp((double)row[v] / T - mx);
    out.push_back((double)row[gen[i]] / T - mx - std::log(s));
  }
  (void)C;
  return out;
}

aji::infer::GenerateOptions generate_options_for(const RolloutOptions& o, int prompt_index, int sample_index) {
  aji::infer::GenerateOptions g;
  g.max_tokens = o.max_new_tokens;
  g.sampling.temperature = o.temperature;
  g.sampling.top_k = o.top_k;
  g.sampling.top_p = o.top_p;
  g.stop_tokens = o.stop_tokens;
  g.seed = aji::infer::rollout_row_seed(o.seed, prompt_index, sample_index);
  return g;
}

}  // namespace

TEST(Rollout, OrderedPromptMajorAndEachRowEqualsGenerateWithItsSeed) {
  aji::set_num_threads(1);
  for (std::string name : {"llama", "gpt2"}) {
    SCOPED_TRACE(name);
    auto m = fixture_model(name);
    auto prompts = ragged_prompts();
    RolloutOptions o;
    o.group_size = 3;
    o.max_new_tokens = 12;
    o.seed = 7;
    o.max_batch = 4;  // chunks split a prompt's group: its prefill is reused
    std::vector<Rollout> rs = aji::infer::rollout(m, prompts, o);
    ASSERT_EQ(rs.size(), prompts.size() * 3);
    for (size_t i = 0; i < rs.size(); ++i) {
      EXPECT_EQ(rs[i].prompt_index, (int)(i / 3));
      EXPECT_EQ(rs[i].sample_index, (int)(i % 3));
      const auto& r = rs[i];
      aji::infer::StopReason why;
      auto want = aji::infer::generate(m, prompts[r.prompt_index], generate_options_for(o, r.prompt_index, r.sample_index),
                                       nullptr, &why);
      EXPECT_EQ(r.tokens, want) << "row " << i;
      EXPECT_EQ(r.logprobs.size(), r.tokens.size());
      EXPECT_FALSE(r.stopped);
    }
    // The G samples of a prompt differ (independent seeds), with high probability on 12 tokens.
    EXPECT_NE(rs[0].tokens, rs[1].tokens);
  }
}

TEST(Rollout, RecordedLogprobsEqualTokenLogprobsOfTheFullSequence) {
  // Spec §8.3 check 18: log-probs recomputed by a full forward pass equal those stored at
  // sampling time, for ragged prompts decoded as a batch.
  aji::set_num_threads(1);
  for (std::string name : {"llama", "gpt2"}) {
    SCOPED_TRACE(name);
    auto m = fixture_model(name);
    auto prompts = ragged_prompts();
    RolloutOptions o;
    o.group_size = 4;
    o.max_new_tokens = 16;
    o.seed = 3;
    std::vector<Rollout> rs = aji::infer::rollout(m, prompts, o);
    double worst = 0;
    for (const auto& r : rs) {
      std::vector<int32_t> seq = prompts[r.prompt_index];
      const size_t P = seq.size();
      seq.insert(seq.end(), r.tokens.begin(), r.tokens.end());
      std::vector<float> lp = m.token_logprobs(seq.data(), (int)seq.size());
      ASSERT_EQ(lp.size(), seq.size() - 1);
      ASSERT_EQ(r.logprobs.size(), r.tokens.size());
      for (size_t i = 0; i < r.tokens.size(); ++i) worst = std::max(worst, (double)std::fabs(lp[P - 1 + i] - r.logprobs[i]));
    }
    EXPECT_LT(worst, 1e-4);
    // At temperature 0.7 with top-k 5 sampling: the record is still the FULL softmax of logits / 0.7.
    o.temperature = 0.7f;
    o.top_k = 5;
    rs = aji::infer::rollout(m, prompts, o);
    worst = 0;
    for (const auto& r : rs) {
      auto want = reference_logprobs(m, prompts[r.prompt_index], r.tokens, 0.7);
      for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::fabs(want[i] - r.logprobs[i]));
    }
    EXPECT_LT(worst, 1e-4);
  }
}

TEST(Rollout, SameSeedSameOutputWhateverTheBatchingOrThreads) {
  auto m = fixture_model("llama");
  auto prompts = ragged_prompts();
  RolloutOptions o;
  o.group_size = 5;
  o.max_new_tokens = 20;
  o.seed = 42;
  o.stop_tokens = {7, 13};  // some rows stop early, so compaction is exercised
  aji::set_num_threads(1);
  o.max_batch = 64;
  auto base = aji::infer::rollout(m, prompts, o);
  auto again = aji::infer::rollout(m, prompts, o);
  int stopped = 0;
  for (size_t i = 0; i < base.size(); ++i) {
    EXPECT_EQ(base[i].tokens, again[i].tokens);
    EXPECT_EQ(base[i].logprobs, again[i].logprobs);  // bit-identical
    stopped += base[i].stopped;
  }
  EXPECT_GT(stopped, 0);
  EXPECT_LT(stopped, (int)base.size());
  struct Variant {
    int max_batch;
    int threads;
  };
  // Every row is computed as it would be alone (forward_decode's batch-invariant path), so
  // tokens AND log-probs are the same bits whatever the batching or the thread count.
  for (Variant v : {Variant{1, 1}, Variant{3, 1}, Variant{7, 2}, Variant{64, 2}}) {
    SCOPED_TRACE("max_batch " + std::to_string(v.max_batch) + " threads " + std::to_string(v.threads));
    aji::set_num_threads(v.threads);
    RolloutOptions ov = o;
    ov.max_batch = v.max_batch;
    auto rs = aji::infer::rollout(m, prompts, ov);
    ASSERT_EQ(rs.size(), base.size());
    for (size_t i = 0; i < rs.size(); ++i) {
      EXPECT_EQ(rs[i].tokens, base[i].tokens) << "row " << i;
      EXPECT_EQ(rs[i].stopped, base[i].stopped) << "row " << i;
      EXPECT_EQ(rs[i].logprobs, base[i].logprobs) << "row " << i;
    }
  }
  aji::set_num_threads(1);
  // A different seed gives different samples.
  o.seed = 43;
  auto other = aji::infer::rollout(m, prompts, o);
  int differ = 0;
  for (size_t i = 0; i < other.size(); ++i) differ += other[i].tokens != base[i].tokens;
  EXPECT_GT(differ, (int)other.size() / 2);
}

// A rank of a data-parallel job rolls out a share of the step's prompts (every other one)
// with seed_index = their indices in the whole list: its rows are the whole rollout's rows
// of those prompts, bit for bit; a wrong number of seed indices is a clear error.
TEST(Rollout, ASharedOutPromptSampledWithItsSeedIndexIsTheWholeRolloutsRow) {
  auto m = fixture_model("llama");
  const auto prompts = ragged_prompts();
  RolloutOptions o;
  o.group_size = 3;
  o.max_new_tokens = 12;
  o.seed = 7;
  aji::set_num_threads(1);
  const auto whole = aji::infer::rollout(m, prompts, o);
  for (int rank = 0; rank < 2; ++rank) {
    std::vector<std::vector<int32_t>> share;
    RolloutOptions os = o;
    for (size_t p = size_t(rank); p < prompts.size(); p += 2) {
      share.push_back(prompts[p]);
      os.seed_index.push_back(int(p));
    }
    const auto part = aji::infer::rollout(m, share, os);
    ASSERT_EQ(part.size(), share.size() * 3);
    for (const auto& r : part) {
      const auto& w = whole[size_t(os.seed_index[size_t(r.prompt_index)]) * 3 + size_t(r.sample_index)];
      EXPECT_EQ(r.tokens, w.tokens) << "rank " << rank << " prompt " << r.prompt_index;
      EXPECT_EQ(r.logprobs, w.logprobs);
    }
    if (rank == 1) {  // without seed_index the share samples other tokens
      const auto unseeded = aji::infer::rollout(m, share, o);
      int differ = 0;
      for (size_t i = 0; i < part.size(); ++i) differ += unseeded[i].tokens != part[i].tokens;
      EXPECT_GT(differ, 0);
    }
  }
  RolloutOptions bad = o;
  bad.seed_index = {0};
  EXPECT_THROW(aji::infer::rollout(m, prompts, bad), aji::Error);
}

TEST(Rollout, Bf16KvCacheSameOutputWhateverTheBatching) {
  // The same with the model's caches in bf16: the prefix copies move bf16 rows.
  auto m = fixture_model("llama");
  m.set_kv_cache(aji::model::KVCacheType::kBF16);
  auto prompts = ragged_prompts();
  RolloutOptions o;
  o.group_size = 5;
  o.max_new_tokens = 20;
  o.seed = 42;
  o.stop_tokens = {7, 13};
  aji::set_num_threads(1);
  o.max_batch = 64;
  auto base = aji::infer::rollout(m, prompts, o);
  int stopped = 0;
  for (const auto& r : base) stopped += r.stopped;
  EXPECT_GT(stopped, 0);
  for (int max_batch : {1, 3}) {
    RolloutOptions ov = o;
    ov.max_batch = max_batch;
    auto rs = aji::infer::rollout(m, prompts, ov);
    ASSERT_EQ(rs.size(), base.size());
    for (size_t i = 0; i < rs.size(); ++i) {
      EXPECT_EQ(rs[i].tokens, base[i].tokens) << "max_batch " << max_batch << " row " << i;
      ASSERT_EQ(rs[i].logprobs.size(), base[i].logprobs.size());
      for (size_t t = 0; t < rs[i].logprobs.size(); ++t) EXPECT_NEAR(rs[i].logprobs[t], base[i].logprobs[t], 1e-4);
    }
  }
}

// RolloutOptions::weights: the rollout decodes with bf16 matrices (what a bf16 trainer samples
// with) and leaves the model in fp32 after; its rows equal a rollout from the model converted
// beforehand, bit for bit, whatever the batching (more than 16 rows take the packed kernel in
// groups of 16, each row computed as alone), and its log-probs stay near the fp32 forward's.
TEST(Rollout, Bf16WeightsForTheRolloutOnlyThenRestored) {
  auto m = fixture_model("llama");
  auto converted = fixture_model("llama");
  converted.use_weights(aji::kernels::cpu::WeightType::kBF16, false);
  const auto prompts = ragged_prompts();
  RolloutOptions o;
  o.group_size = 5;  // 25 rows
  o.max_new_tokens = 16;
  o.seed = 3;
  o.stop_tokens = {7, 13};
  aji::set_num_threads(1);
  RolloutOptions ob = o;
  ob.weights = aji::kernels::cpu::WeightType::kBF16;
  const auto base = aji::infer::rollout(m, prompts, ob);
  EXPECT_EQ(m.weights(), aji::kernels::cpu::WeightType::kF32);
  const auto want = aji::infer::rollout(converted, prompts, o);
  ASSERT_EQ(base.size(), want.size());
  double worst = 0, sum_abs = 0;
  int differ_from_fp32 = 0, n_tok = 0;
  const auto fp32 = aji::infer::rollout(m, prompts, o);
  for (size_t i = 0; i < base.size(); ++i) {
    EXPECT_EQ(base[i].tokens, want[i].tokens) << "row " << i;
    EXPECT_EQ(base[i].logprobs, want[i].logprobs) << "row " << i;
    differ_from_fp32 += base[i].logprobs != fp32[i].logprobs;
    const auto ref = reference_logprobs(m, prompts[size_t(base[i].prompt_index)], base[i].tokens, 1.0);
    for (size_t t = 0; t < ref.size(); ++t, ++n_tok) {
      worst = std::max(worst, std::fabs(ref[t] - base[i].logprobs[t]));
      sum_abs += std::fabs(ref[t] - base[i].logprobs[t]);
    }
  }
  EXPECT_GT(differ_from_fp32, 0);  // it did decode in bf16
  // bf16 products (8 significant bits): near the fp32 forward's log-probs
  EXPECT_LT(worst, 0.25);
  EXPECT_LT(sum_abs / std::max(n_tok, 1), 0.03) << "worst " << worst;
  for (auto [max_batch, threads] : {std::pair{1, 1}, std::pair{7, 2}, std::pair{20, 2}}) {
    aji::set_num_threads(threads);
    RolloutOptions ov = ob;
    ov.max_batch = max_batch;
    const auto rs = aji::infer::rollout(m, prompts, ov);
    for (size_t i = 0; i < rs.size(); ++i) {
      EXPECT_EQ(rs[i].tokens, base[i].tokens) << "max_batch " << max_batch << " row " << i;
      EXPECT_EQ(rs[i].logprobs, base[i].logprobs) << "max_batch " << max_batch << " row " << i;
    }
  }
  aji::set_num_threads(1);
  // An option the model cannot take leaves it as it was.
  RolloutOptions bad = ob;
  bad.max_new_tokens = -1;
  EXPECT_THROW(aji::infer::rollout(m, prompts, bad), aji::Error);
  EXPECT_EQ(m.weights(), aji::kernels::cpu::WeightType::kF32);
}

// stop_when (a stop string, as `aji eval`'s generative tasks use) ends a row where it says so,
// marked stopped; the other rows, and the row up to that point, are what they are without it.
TEST(Rollout, StopWhenEndsARowThereAndLeavesTheOthers) {
  aji::set_num_threads(1);
  auto m = fixture_model("llama");
  auto prompts = ragged_prompts();
  RolloutOptions o;
  o.group_size = 2;
  o.max_new_tokens = 12;
  o.seed = 3;
  o.max_batch = 3;
  const auto base = aji::infer::rollout(m, prompts, o);
  RolloutOptions os = o;
  os.stop_when = [](const Rollout& r) { return r.prompt_index == 1 && r.tokens.size() == 5; };
  const auto rs = aji::infer::rollout(m, prompts, os);
  ASSERT_EQ(rs.size(), base.size());
  for (size_t i = 0; i < rs.size(); ++i) {
    if (rs[i].prompt_index == 1) {
      ASSERT_EQ(rs[i].tokens.size(), 5u) << "row " << i;
      EXPECT_TRUE(rs[i].stopped);
      EXPECT_EQ(rs[i].tokens, std::vector<int32_t>(base[i].tokens.begin(), base[i].tokens.begin() + 5));
      EXPECT_EQ(rs[i].logprobs, std::vector<float>(base[i].logprobs.begin(), base[i].logprobs.begin() + 5));
    } else {
      EXPECT_EQ(rs[i].tokens, base[i].tokens) << "row " << i;
      EXPECT_EQ(rs[i].stopped, base[i].stopped) << "row " << i;
    }
  }
}

TEST(Rollout, RowStopsAtTheStopTokenAndIncludesItOthersContinue) {
  aji::set_num_threads(1);
  auto m = fixture_model("gpt2");
  auto prompts = ragged_prompts();
  RolloutOptions o;
  o.group_size = 4;
  o.max_new_tokens = 15;
  o.seed = 5;
  auto free_run = aji::infer::rollout(m, prompts, o);
  // A stop token that some rows produce and others never do.
  int32_t stop = -1;
  for (int32_t cand : free_run[0].tokens) {
    int with = 0;
    for (const auto& r : free_run) with += std::count(r.tokens.begin(), r.tokens.end(), cand) > 0;
    if (with < (int)free_run.size()) {
      stop = cand;
      break;
    }
  }
  ASSERT_GE(stop, 0);
  o.stop_tokens = {stop};
  auto rs = aji::infer::rollout(m, prompts, o);
  int stopped = 0, ran_on = 0;
  for (size_t i = 0; i < rs.size(); ++i) {
    const auto& full = free_run[i].tokens;
    auto it = std::find(full.begin(), full.end(), stop);
    if (it == full.end()) {
      EXPECT_EQ(rs[i].tokens, full) << "row " << i;  // never met the stop token: the full budget
      EXPECT_FALSE(rs[i].stopped);
      ++ran_on;
    } else {
      std::vector<int32_t> want(full.begin(), it + 1);  // up to and including the stop token
      EXPECT_EQ(rs[i].tokens, want) << "row " << i;
      EXPECT_TRUE(rs[i].stopped);
      ASSERT_EQ(rs[i].logprobs.size(), want.size());
      for (size_t t = 0; t < want.size(); ++t) EXPECT_NEAR(rs[i].logprobs[t], free_run[i].logprobs[t], 1e-4);
      ++stopped;
    }
  }
  EXPECT_GT(stopped, 0);
  EXPECT_GT(ran_on, 0);
}

TEST(Rollout, ContextLimitEmptyInputsAndBadOptions) {
  aji::set_num_threads(1);
  auto m = fixture_model("llama");  // context 64
  const int ctx = m.config().max_seq_len;
  RolloutOptions o;
  o.group_size = 2;
  o.max_new_tokens = 10;
  // Prompt + max_new_tokens beyond the context: clipped, stopped = false.
  std::vector<int32_t> longp(ctx - 3, 4);
  auto rs = aji::infer::rollout(m, {longp, {1, 2}}, o);
  ASSERT_EQ(rs.size(), 4u);
  EXPECT_EQ(rs[0].tokens.size(), 3u);
  EXPECT_EQ(rs[1].tokens.size(), 3u);
  EXPECT_FALSE(rs[0].stopped);
  EXPECT_EQ(rs[2].tokens.size(), 10u);
  // Empty prompt list: empty result. max_new_tokens 0: empty rows.
  EXPECT_TRUE(aji::infer::rollout(m, {}, o).empty());
  o.max_new_tokens = 0;
  rs = aji::infer::rollout(m, {{1, 2}}, o);
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_TRUE(rs[0].tokens.empty());
  o.max_new_tokens = 4;
  // An empty prompt, one that fills the context, an id outside the vocabulary: aji::Error naming the prompt.
  auto expect_error = [&](const std::vector<std::vector<int32_t>>& ps, const RolloutOptions& oo, const std::string& part) {
    try {
      aji::infer::rollout(m, ps, oo);
      ADD_FAILURE() << "no error for " << part;
    } catch (const aji::Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expect_error({{1, 2}, {}}, o, "prompt 1 is empty");
  expect_error({std::vector<int32_t>(ctx, 3)}, o, "prompt 0 has 64 tokens");
  expect_error({{1, 96}}, o, "prompt 0, token 1");
  RolloutOptions bad = o;
  bad.group_size = 0;
  expect_error({{1}}, bad, "group_size");
  bad = o;
  bad.max_batch = 0;
  expect_error({{1}}, bad, "max_batch");
  bad = o;
  bad.temperature = -1;
  expect_error({{1}}, bad, "temperature");
  bad = o;
  bad.max_new_tokens = -1;
  expect_error({{1}}, bad, "max_new_tokens");
}

TEST(Rollout, ToyBaseModelSamplesTheSumAtTemperatureOne) {
  // The toy world's base model (spec §8.0; greedy zero-shot EM 0.96) continues "<bos>a+b="
  // with the digits of a+b and ';'. Sampling at temperature 1, most rows should be right.
  aji::set_num_threads(1);
  auto m = aji::toybase::load_toy_base();
  namespace toy = aji::align::toy;
  aji::Rng rng(2024);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int> sums;
  for (int i = 0; i < 12; ++i) {
    const int a = (int)rng.below(100), b = (int)rng.below(100);  // ragged: "3+5=" to "45+67="
    std::vector<int32_t> p = {(int32_t)toy::kBos};
    for (uint32_t id : toy::encode(std::to_string(a) + "+" + std::to_string(b) + "=")) p.push_back((int32_t)id);
    prompts.push_back(p);
    sums.push_back(a + b);
  }
  RolloutOptions o;
  o.group_size = 16;
  o.max_new_tokens = 5;
  o.stop_tokens = {(int32_t)toy::char_id(';')};
  o.seed = 9;
  auto rs = aji::infer::rollout(m, prompts, o);
  ASSERT_EQ(rs.size(), prompts.size() * 16);
  int right = 0, stopped = 0;
  for (const auto& r : rs) {
    std::vector<uint32_t> ids(r.tokens.begin(), r.tokens.end());
    right += toy::decode(ids) == std::to_string(sums[r.prompt_index]) + ";";
    stopped += r.stopped;
    // Log-probs are log-probabilities: <= 0, and the right answer's digits are likely.
    for (float lp : r.logprobs) EXPECT_LE(lp, 1e-6f);
  }
  const double frac = double(right) / rs.size();
  RecordProperty("fraction_right", std::to_string(frac));
  EXPECT_GT(frac, 0.7) << right << " of " << rs.size();
  EXPECT_GT(stopped, (int)rs.size() * 9 / 10);
}
