// Loading Hugging Face model dirs, scoring against transformers' log-probabilities
// (fixtures from tests/reference/hf_model_fixtures.py), and KV-cache generation against
// full recomputation.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/threads.h"
#include "aji/infer/generate.h"
#include "aji/train/checkpoint.h"
#include "test_util.h"

using aji::test::source_path;

namespace {
nlohmann::json hf_fixture() {
  return nlohmann::json::parse(aji::read_file(source_path("tests/fixtures/infer/hf_logprobs.json")));
}
void expect_logprobs_match(aji::model::Model& m, const nlohmann::json& fx, const std::string& which) {
  std::vector<int32_t> ids = fx[which];
  std::vector<double> want = fx[which + "_logprobs"];
  auto r = aji::infer::score_tokens(m, ids, 100);
  ASSERT_EQ(r.logprobs.size(), want.size());
  double max_err = 0, nll = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    max_err = std::max(max_err, std::fabs(r.logprobs[i] - want[i]));
    nll -= want[i];
  }
  // fp32 against transformers' fp32 forward (log-softmax in float64): rounding only.
  EXPECT_LT(max_err, 2e-4) << which;
  EXPECT_NEAR(r.total_nll, nll, 1e-3 * nll);
  EXPECT_NEAR(r.perplexity, std::exp(nll / want.size()), 1e-3 * r.perplexity);
  EXPECT_NEAR(r.bits_per_byte, nll / std::log(2.0) / 100, 1e-3);
}
}  // namespace

TEST(HfModelDir, Gpt2AndLlamaScoreLikeTransformers) {
  aji::set_num_threads(1);  // tiny shapes: one thread is fastest and steadiest
  auto fx = hf_fixture();
  for (std::string name : {"gpt2", "llama"}) {
    SCOPED_TRACE(name);
    auto m = aji::train::load_model(source_path("tests/fixtures/infer/hf-" + name));
    EXPECT_EQ(aji::model::arch_name(m.config().arch), name);
    expect_logprobs_match(m, fx[name], "short");
    expect_logprobs_match(m, fx[name], "long");  // longer than the context: windows
  }
}

TEST(HfModelDir, Gpt2HubLayoutWithoutPrefixLoadsTheSameWeights) {
  aji::set_num_threads(1);  // tiny shapes: one thread is fastest and steadiest
  auto a = aji::train::load_model(source_path("tests/fixtures/infer/hf-gpt2"));
  auto b = aji::train::load_model(source_path("tests/fixtures/infer/hf-gpt2-hub-layout"));
  ASSERT_EQ(a.num_params(), b.num_params());
  EXPECT_TRUE(std::equal(a.params(), a.params() + a.num_params(), b.params()));
}

TEST(Generate, KvCacheEqualsRecomputationGreedyAndSampled) {
  aji::set_num_threads(1);  // tiny shapes: one thread is fastest and steadiest
  auto m = aji::train::load_model(source_path("tests/fixtures/infer/hf-llama"));
  std::vector<int32_t> prompt = {5, 17, 33, 2, 90};
  aji::infer::GenerateOptions o;
  o.max_tokens = 24;
  o.sampling.temperature = 0.0f;
  std::vector<int32_t> streamed;
  auto cached = aji::infer::generate(m, prompt, o, [&](int32_t id) {
    streamed.push_back(id);
    return true;
  });
  auto full = aji::infer::generate_recompute(m, prompt, o);
  EXPECT_EQ(cached.size(), 24u);
  EXPECT_EQ(cached, full);
  EXPECT_EQ(streamed, cached);
  o.sampling = {1.0f, 20, 0.9f};
  o.seed = 11;
  EXPECT_EQ(aji::infer::generate(m, prompt, o), aji::infer::generate_recompute(m, prompt, o));
  // Stop token: generation ends right after producing it.
  o.sampling.temperature = 0.0f;
  o.stop_tokens = {full[3]};
  auto stopped = aji::infer::generate(m, prompt, o);
  EXPECT_LE(stopped.size(), 4u);
  EXPECT_EQ(stopped.back(), full[3]);
  // The context bounds generation; a prompt as long as the context is an error.
  o.stop_tokens.clear();
  o.max_tokens = 1000;
  EXPECT_EQ(aji::infer::generate(m, prompt, o).size(), static_cast<size_t>(m.config().max_seq_len) - prompt.size());
  std::vector<int32_t> too_long(static_cast<size_t>(m.config().max_seq_len), 1);
  EXPECT_THROW(aji::infer::generate(m, too_long, o), aji::Error);
  EXPECT_THROW(aji::infer::generate(m, {}, o), aji::Error);
  EXPECT_THROW(aji::infer::generate(m, {1000}, o), aji::Error);
}

// Greedy decoding with a repetition penalty against a loop written here: the full forward
// pass over prompt + output so far, Hugging Face's penalty (positive logits divided,
// negative multiplied, once per distinct id of the whole context), then the argmax.
TEST(Generate, RepetitionPenaltyCoversPromptAndOutput) {
  aji::set_num_threads(1);
  auto m = aji::train::load_model(source_path("tests/fixtures/infer/hf-llama"));
  const int V = m.config().vocab_size, C = m.config().d_model;
  const std::vector<int32_t> prompt = {5, 17, 33, 2, 90};
  aji::infer::GenerateOptions o;
  o.max_tokens = 40;
  o.sampling.temperature = 0.0f;
  const auto plain = aji::infer::generate(m, prompt, o);
  o.sampling.repetition_penalty = 1.3f;
  aji::infer::StopReason why = aji::infer::StopReason::kCallback;
  const auto got = aji::infer::generate(m, prompt, o, nullptr, &why);
  EXPECT_EQ(why, aji::infer::StopReason::kMaxTokens);
  std::vector<int32_t> seq = prompt;
  std::vector<float> logits(static_cast<size_t>(V));
  for (int i = 0; i < o.max_tokens; ++i) {
    const int T = static_cast<int>(seq.size());
    m.forward(seq.data(), 1, T);
    m.lm_logits(m.hidden() + static_cast<size_t>(T - 1) * C, 1, logits.data());
    std::vector<bool> seen(static_cast<size_t>(V), false);
    for (int32_t id : seq) {
      if (seen[id]) continue;
      seen[id] = true;
      logits[id] = logits[id] > 0 ? logits[id] / 1.3f : logits[id] * 1.3f;
    }
    int best = 0;
    for (int v = 1; v < V; ++v)
      if (logits[v] > logits[best]) best = v;
    seq.push_back(best);
  }
  const std::vector<int32_t> want(seq.begin() + static_cast<long>(prompt.size()), seq.end());
  EXPECT_EQ(got, want);
  EXPECT_NE(got, plain);  // the penalty changed the text (else this test would show nothing)
  EXPECT_EQ(aji::infer::generate_recompute(m, prompt, o), got);
}

TEST(Generate, SaysWhyItStopped) {
  aji::set_num_threads(1);
  auto m = aji::train::load_model(source_path("tests/fixtures/infer/hf-llama"));
  const std::vector<int32_t> prompt = {5, 17, 33, 2, 90};
  aji::infer::GenerateOptions o;
  o.sampling.temperature = 0.0f;
  o.max_tokens = 6;
  using R = aji::infer::StopReason;
  R why = R::kCallback;
  const auto full = aji::infer::generate(m, prompt, o, nullptr, &why);
  EXPECT_EQ(full.size(), 6u);
  EXPECT_EQ(why, R::kMaxTokens);
  o.stop_tokens = {full[2]};
  auto out = aji::infer::generate(m, prompt, o, nullptr, &why);
  EXPECT_EQ(why, R::kStopToken);
  EXPECT_EQ(out.back(), full[2]);
  o.stop_tokens.clear();
  int calls = 0;
  out = aji::infer::generate(m, prompt, o, [&](int32_t) { return ++calls < 3; }, &why);
  EXPECT_EQ(why, R::kCallback);
  EXPECT_EQ(out.size(), 3u);
  const int room = m.config().max_seq_len - static_cast<int>(prompt.size());
  o.max_tokens = room + 1;
  out = aji::infer::generate(m, prompt, o, nullptr, &why);
  EXPECT_EQ(why, R::kContextLimit);
  EXPECT_EQ(static_cast<int>(out.size()), room);
  EXPECT_EQ(aji::infer::generate_recompute(m, prompt, o, nullptr, &why).size(), static_cast<size_t>(room));
  EXPECT_EQ(why, R::kContextLimit);
  o.max_tokens = room;  // exactly filling the context is what was asked for
  aji::infer::generate(m, prompt, o, nullptr, &why);
  EXPECT_EQ(why, R::kMaxTokens);
  o.max_tokens = 0;
  EXPECT_TRUE(aji::infer::generate(m, prompt, o, nullptr, &why).empty());
  EXPECT_EQ(why, R::kMaxTokens);
}
