// Token sampling (temperature, top-k, top-p, min-p, repetition penalty, greedy), option
// checks, UTF-8-safe streaming and stop strings.
#include <gtest/gtest.h>

#include <cmath>

#include "aji/base/error.h"
#include "aji/infer/sampler.h"

using namespace aji::infer;

TEST(Sampler, GreedyAtZeroTemperatureAndTopK1) {
  std::vector<float> logits = {0.1f, 2.0f, -1.0f, 2.0f, 1.9f};
  std::vector<std::pair<float, int>> scratch;
  aji::Rng rng(1);
  EXPECT_EQ(sample_token(logits.data(), 5, {0.0f, 0, 1.0f}, rng, scratch), 1);  // first of the tie
  EXPECT_EQ(sample_token(logits.data(), 5, {1.0f, 1, 1.0f}, rng, scratch), 1);
}

TEST(Sampler, FrequenciesFollowSoftmaxOfScaledLogits) {
  std::vector<float> logits = {1.0f, 0.0f, -1.0f, 0.5f};
  const float temp = 0.7f;
  std::vector<double> p(4);
  double z = 0;
  for (int i = 0; i < 4; ++i) z += p[i] = std::exp(logits[i] / temp);
  std::vector<int> counts(4);
  std::vector<std::pair<float, int>> scratch;
  aji::Rng rng(7);
  const int n = 40000;
  for (int i = 0; i < n; ++i) ++counts[sample_token(logits.data(), 4, {temp, 0, 1.0f}, rng, scratch)];
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(counts[i] / double(n), p[i] / z, 0.01) << i;
}

TEST(Sampler, TopKAndTopPRestrictTheSupport) {
  std::vector<float> logits = {3.0f, 2.9f, 0.0f, -5.0f, 2.8f};
  std::vector<std::pair<float, int>> scratch;
  aji::Rng rng(3);
  std::vector<int> seen(5);
  for (int i = 0; i < 3000; ++i) ++seen[sample_token(logits.data(), 5, {1.0f, 2, 1.0f}, rng, scratch)];
  EXPECT_GT(seen[0], 0);
  EXPECT_GT(seen[1], 0);
  EXPECT_EQ(seen[2] + seen[3] + seen[4], 0);
  // top_p: the first three by probability hold ~97% of the mass; 0.5 keeps the top two.
  std::fill(seen.begin(), seen.end(), 0);
  for (int i = 0; i < 3000; ++i) ++seen[sample_token(logits.data(), 5, {1.0f, 0, 0.5f}, rng, scratch)];
  EXPECT_GT(seen[0], 0);
  EXPECT_GT(seen[1], 0);
  EXPECT_EQ(seen[2] + seen[3] + seen[4], 0);
  // Same seed, same draws.
  aji::Rng r1(9), r2(9);
  for (int i = 0; i < 50; ++i)
    EXPECT_EQ(sample_token(logits.data(), 5, {1.3f, 3, 0.9f}, r1, scratch),
              sample_token(logits.data(), 5, {1.3f, 3, 0.9f}, r2, scratch));
}

namespace {
// softmax over the ids in `keep` of the given (already processed) logits, 0 elsewhere:
// written out here, apart from the sampler's own code.
std::vector<double> softmax_over(const std::vector<double>& l, const std::vector<int>& keep) {
  std::vector<double> p(l.size(), 0.0);
  double z = 0.0;
  for (int i : keep) z += std::exp(l[i]);
  for (int i : keep) p[i] = std::exp(l[i]) / z;
  return p;
}
void expect_distribution(const std::vector<double>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-6) << "id " << i;
}
}  // namespace

// Hugging Face's RepetitionPenaltyLogitsProcessor: score = score < 0 ? score * penalty :
// score / penalty for each distinct id of the context, on the raw logits (before the
// temperature). The expected logits are worked out by hand below.
TEST(Sampler, RepetitionPenaltyDividesPositiveMultipliesNegativeLogitsOncePerId) {
  const std::vector<float> logits = {2.0f, 1.9f, -0.5f, -0.4f, 0.3f};
  const std::vector<int32_t> context = {0, 0, 3, 0};  // id 0 three times: penalised once
  aji::infer::SamplingParams p;
  p.repetition_penalty = 1.5f;
  // penalised: id 0: 2.0 / 1.5 = 1.3333; id 3: -0.4 * 1.5 = -0.6; the rest as they are.
  const std::vector<double> l = {2.0 / 1.5, 1.9, -0.5, -0.6, 0.3};
  expect_distribution(sampling_distribution(logits.data(), 5, p, context), softmax_over(l, {0, 1, 2, 3, 4}));
  // The temperature divides the penalised logits.
  p.temperature = 0.5f;
  std::vector<double> l2 = l;
  for (double& x : l2) x /= 0.5;
  expect_distribution(sampling_distribution(logits.data(), 5, p, context), softmax_over(l2, {0, 1, 2, 3, 4}));
  // Greedy sees the penalty: without it id 0 (2.0) wins, with it id 1 (1.9 > 1.333).
  std::vector<std::pair<float, int>> scratch;
  aji::Rng rng(1);
  p.temperature = 0.0f;
  EXPECT_EQ(sample_token(logits.data(), 5, p, rng, scratch, context), 1);
  EXPECT_EQ(sample_token(logits.data(), 5, p, rng, scratch, {}), 0);
  // A window of the last token ({0}) and of all three ({3, 1, 0}); a penalty below 1
  // favours repeats: 2.0 / 0.5 = 4.0.
  p.temperature = 1.0f;
  p.repetition_window = 1;
  const std::vector<int32_t> ctx2 = {3, 1, 0};
  expect_distribution(sampling_distribution(logits.data(), 5, p, ctx2),
                      softmax_over({2.0 / 1.5, 1.9, -0.5, -0.4, 0.3}, {0, 1, 2, 3, 4}));
  p.repetition_window = 3;
  expect_distribution(sampling_distribution(logits.data(), 5, p, ctx2),
                      softmax_over({2.0 / 1.5, 1.9 / 1.5, -0.5, -0.6, 0.3}, {0, 1, 2, 3, 4}));
  p.repetition_window = 0;
  p.repetition_penalty = 0.5f;
  expect_distribution(sampling_distribution(logits.data(), 5, p, ctx2),
                      softmax_over({4.0, 3.8, -0.5, -0.2, 0.3}, {0, 1, 2, 3, 4}));
}

// Hugging Face's MinPLogitsWarper, after the temperature: tokens with p < min_p * p_max
// are removed, i.e. those with logit/T < max/T + ln(min_p).
TEST(Sampler, MinPKeepsTokensWithinAFractionOfTheMostLikelyAfterTemperature) {
  const std::vector<float> logits = {3.0f, 2.0f, 1.0f, 0.0f, -1.0f};
  aji::infer::SamplingParams p;
  p.min_p = 0.2f;  // ln 0.2 = -1.609: at T=1 ids 0 (0) and 1 (-1) pass, id 2 (-2) does not
  expect_distribution(sampling_distribution(logits.data(), 5, p), softmax_over({3, 2, 1, 0, -1}, {0, 1}));
  p.min_p = 0.1f;  // ln 0.1 = -2.303: ids 0..2
  expect_distribution(sampling_distribution(logits.data(), 5, p), softmax_over({3, 2, 1, 0, -1}, {0, 1, 2}));
  p.temperature = 0.5f;  // logits/T = 6, 4, 2, ...: at min_p 0.1 ids 0 and 1 (4 - 6 = -2 > -2.303)
  expect_distribution(sampling_distribution(logits.data(), 5, p), softmax_over({6, 4, 2, 0, -2}, {0, 1}));
  p.temperature = 2.0f;  // 1.5, 1, 0.5, 0, -0.5: differences 0, -.5, -1, -1.5, -2 all > -2.303
  expect_distribution(sampling_distribution(logits.data(), 5, p),
                      softmax_over({1.5, 1, 0.5, 0, -0.5}, {0, 1, 2, 3, 4}));
  p.min_p = 1.0f;  // only the most likely token
  expect_distribution(sampling_distribution(logits.data(), 5, p), softmax_over({1.5, 1, 0.5, 0, -0.5}, {0}));
  // With top-k first (HF order: top-k, top-p, min-p): top_k 4 at T=2 leaves 4 ids, min_p
  // 0.3 (ln = -1.204) then removes ids 3 (-1.5).
  p.min_p = 0.3f;
  p.top_k = 4;
  expect_distribution(sampling_distribution(logits.data(), 5, p),
                      softmax_over({1.5, 1, 0.5, 0, -0.5}, {0, 1, 2}));
  // The draws follow that distribution.
  std::vector<std::pair<float, int>> scratch;
  aji::Rng rng(5);
  std::vector<int> counts(5);
  const int n = 30000;
  for (int i = 0; i < n; ++i) ++counts[sample_token(logits.data(), 5, p, rng, scratch)];
  const auto want = softmax_over({1.5, 1, 0.5, 0, -0.5}, {0, 1, 2});
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(counts[i] / double(n), want[i], 0.01) << i;
}

// Before: `--temperature nan` printed nothing and exited 0 (every probability NaN).
TEST(Sampler, OutOfRangeOptionsAreErrorsNamingTheFlag) {
  auto message = [](aji::infer::SamplingParams p) -> std::string {
    try {
      aji::infer::check_sampling_params(p);
    } catch (const aji::Error& e) {
      return e.what();
    }
    return "";
  };
  using P = aji::infer::SamplingParams;
  EXPECT_EQ(message(P{}), "");
  P p;
  p.temperature = NAN;
  EXPECT_NE(message(p).find("--temperature nan"), std::string::npos) << message(p);
  p.temperature = INFINITY;
  EXPECT_NE(message(p).find("--temperature"), std::string::npos);
  p.temperature = -0.1f;
  EXPECT_NE(message(p).find("--temperature"), std::string::npos);
  p = {};
  p.temperature = 0.0f;  // greedy is fine
  EXPECT_EQ(message(p), "");
  p = {};
  p.top_k = -1;
  EXPECT_NE(message(p).find("--top-k"), std::string::npos);
  for (float bad : {0.0f, -0.5f, 1.01f, NAN}) {
    p = {};
    p.top_p = bad;
    EXPECT_NE(message(p).find("--top-p"), std::string::npos) << bad;
  }
  for (float bad : {-0.01f, 1.01f, NAN}) {
    p = {};
    p.min_p = bad;
    EXPECT_NE(message(p).find("--min-p"), std::string::npos) << bad;
  }
  for (float bad : {0.0f, -1.0f, NAN, INFINITY}) {
    p = {};
    p.repetition_penalty = bad;
    EXPECT_NE(message(p).find("--repetition-penalty"), std::string::npos) << bad;
  }
  p = {};
  p.repetition_window = -1;
  EXPECT_NE(message(p).find("--repeat-window"), std::string::npos);
  p = {};
  p.top_p = 1.0f;
  p.min_p = 1.0f;
  EXPECT_EQ(message(p), "");
}

TEST(StopStrings, HoldsBackPossibleStartsAndCutsBeforeTheStop) {
  StopStrings s({"\n\n", "END"});
  EXPECT_EQ(s.push("Hello"), "Hello");
  EXPECT_EQ(s.push(" wor"), " wor");
  EXPECT_EQ(s.push("ld\n"), "ld");  // "\n" may start "\n\n": held back
  EXPECT_EQ(s.push("x E"), "\nx ");  // it did not; "E" may start "END"
  EXPECT_EQ(s.push("N"), "");
  EXPECT_FALSE(s.stopped());
  EXPECT_EQ(s.push("Dtail"), "");  // "END" found: nothing from it on is returned
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(s.which(), "END");
  EXPECT_EQ(s.push("more"), "");
  EXPECT_EQ(s.flush(), "");
  // A stop inside one piece; the earlier of two stops wins.
  StopStrings t({"b", "ab"});
  EXPECT_EQ(t.push("xxabyy"), "xx");
  EXPECT_EQ(t.which(), "ab");
  // No stop: the held-back tail comes out at the end.
  StopStrings u({"STOP"});
  EXPECT_EQ(u.push("a ST"), "a ");
  EXPECT_EQ(u.flush(), "ST");
  EXPECT_FALSE(u.stopped());
  StopStrings none({});
  EXPECT_EQ(none.push("abc"), "abc");
}

TEST(Utf8Streamer, HoldsSplitCharactersUntilComplete) {
  Utf8Streamer s;
  const std::string han = "\xED\x95\x9C";  // 한 (U+D55C)
  EXPECT_EQ(s.push("a"), "a");
  EXPECT_EQ(s.push(han.substr(0, 1)), "");
  EXPECT_EQ(s.push(han.substr(1, 1)), "");
  EXPECT_EQ(s.push(han.substr(2) + "b"), han + "b");
  EXPECT_EQ(s.flush(), "");
  // Bytes that can never be valid become U+FFFD at once; an unfinished tail at the end too.
  EXPECT_EQ(s.push("\xFF" "x"), "\xEF\xBF\xBD" "x");
  EXPECT_EQ(s.push("\xE2\x82"), "");
  EXPECT_EQ(s.flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(s.push("\xE2(" ), "\xEF\xBF\xBD(");  // lead byte followed by a non-continuation
  EXPECT_EQ(s.push("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");  // 4-byte emoji
}

// sample_token_logprob: the same draws as sample_token from the same rng state (pure sampling,
// which takes the vectorised exp pass, and filtered sampling), and the log-probability of the
// drawn id under the FULL softmax at the temperature (temperature 0: at 1), against a double
// computation written out here. A vocabulary of 1000 spans the kernels' vector and tail parts.
TEST(Sampler, SampleTokenLogprobDrawsAsSampleTokenAndGivesTheFullSoftmaxLogprob) {
  const int V = 1003;
  std::vector<float> logits(V);
  aji::Rng gen(11);
  for (auto& l : logits) l = float(gen.uniform() * 12.0 - 6.0);
  auto ref = [&](int id, double T) {
    const double a = T > 0 ? 1.0 / T : 1.0;
    double mx = -1e300, s = 0;
    for (float l : logits) mx = std::max(mx, a * l);
    for (float l : logits) s += std::exp(a * l - mx);
    return a * logits[id] - mx - std::log(s);
  };
  std::vector<std::pair<float, int>> scratch;
  for (SamplingParams p : {SamplingParams{1.0f, 0, 1.0f}, SamplingParams{0.6f, 0, 1.0f}, SamplingParams{1.3f, 40, 0.9f},
                           SamplingParams{0.0f, 0, 1.0f}}) {
    SCOPED_TRACE("temperature " + std::to_string(p.temperature) + " top_k " + std::to_string(p.top_k));
    aji::Rng r1(21), r2(21);
    std::vector<int> seen(V);
    for (int i = 0; i < 200; ++i) {
      float lp = 1.0f;
      const int a = sample_token(logits.data(), V, p, r1, scratch);
      const int b = sample_token_logprob(logits.data(), V, p, r2, scratch, &lp);
      ASSERT_EQ(a, b) << "draw " << i;
      EXPECT_NEAR(lp, ref(b, p.temperature), 2e-5 * std::max(1.0, std::fabs(ref(b, p.temperature))));
      ++seen[b];
    }
    int distinct = 0;
    for (int c : seen) distinct += c > 0;
    if (p.temperature > 0) {
      EXPECT_GT(distinct, 20);  // it samples, not argmax
    }
  }
}

// The pure-sampling path's draws follow the softmax over a vocabulary with vector and tail parts.
TEST(Sampler, PureSamplingFrequenciesOverALargerVocabulary) {
  const int V = 37;
  std::vector<float> logits(V);
  for (int i = 0; i < V; ++i) logits[i] = float((i * 7) % 11) * 0.3f - 1.0f;
  const double T = 0.8;
  std::vector<double> p(V);
  double z = 0;
  for (int i = 0; i < V; ++i) z += p[i] = std::exp(logits[i] / T);
  const auto dist = sampling_distribution(logits.data(), V, {float(T), 0, 1.0f});
  std::vector<int> counts(V);
  std::vector<std::pair<float, int>> scratch;
  aji::Rng rng(3);
  const int n = 60000;
  for (int i = 0; i < n; ++i) ++counts[sample_token(logits.data(), V, {float(T), 0, 1.0f}, rng, scratch)];
  for (int i = 0; i < V; ++i) {
    EXPECT_NEAR(dist[i], p[i] / z, 1e-6) << i;
    EXPECT_NEAR(counts[i] / double(n), p[i] / z, 0.006) << i;
  }
}
