// Token sampling (temperature, top-k, top-p, greedy) and UTF-8-safe streaming.
#include <gtest/gtest.h>

#include <cmath>

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
