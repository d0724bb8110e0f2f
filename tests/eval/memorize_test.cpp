// The memorization probe (eval/memorize.h): bucketing and rates against a direct
// computation, duplicate counting against a corpus whose copy counts are known by
// construction (exact copies and one-word-edited near-duplicates), and the batched greedy
// probe against one-prompt-at-a-time infer::generate on a small model.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <fstream>
#include <map>
#include <optional>

#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/rng.h"
#include "aji/eval/memorize.h"
#include "aji/infer/generate.h"
#include "aji/train/checkpoint.h"
#include "test_util.h"

using aji::eval::DocResult;

namespace {

TEST(Memorize, BucketsArePowersOfTwo) {
  for (int64_t c = 1; c <= 5000; ++c) {
    const int b = aji::eval::duplication_bucket(c);
    EXPECT_EQ(b, static_cast<int>(std::floor(std::log2(static_cast<double>(c)) + 1e-9))) << c;
    EXPECT_LE(int64_t{1} << b, c);
    EXPECT_GT(int64_t{1} << (b + 1), c);
  }
  EXPECT_EQ(aji::eval::bucket_label(0), "1");
  EXPECT_EQ(aji::eval::bucket_label(1), "2-3");
  EXPECT_EQ(aji::eval::bucket_label(5), "32-63");
  EXPECT_THROW(aji::eval::duplication_bucket(0), aji::Error);
}

TEST(Memorize, MatchLength) {
  EXPECT_EQ(aji::eval::match_length({1, 2, 3}, {1, 2, 3}), 3);
  EXPECT_EQ(aji::eval::match_length({1, 2, 3}, {1, 5, 3}), 1);
  EXPECT_EQ(aji::eval::match_length({7}, {1}), 0);
  EXPECT_EQ(aji::eval::match_length({1, 2}, {1, 2, 3}), 2);
  EXPECT_EQ(aji::eval::match_length({}, {1}), 0);
}

TEST(Memorize, BucketRatesAndBinomialStderr) {
  // Random per-document outcomes; the reference tallies them directly per floor(log2).
  aji::Rng rng(3);
  std::vector<DocResult> docs;
  std::map<int, std::array<double, 3>> ref;  // n, exact, match sum
  for (int i = 0; i < 500; ++i) {
    DocResult d;
    d.document = i;
    d.copies = 1 + static_cast<int64_t>(rng.next_u64() % 40);
    d.match_tokens = static_cast<int>(rng.next_u64() % 9);
    d.exact = d.match_tokens == 8;
    docs.push_back(d);
    auto& r = ref[static_cast<int>(std::log2(static_cast<double>(d.copies)) + 1e-9)];
    r[0] += 1;
    r[1] += d.exact;
    r[2] += d.match_tokens;
  }
  const auto buckets = aji::eval::bucket_results(docs);
  ASSERT_EQ(buckets.size(), ref.size());
  size_t k = 0;
  for (const auto& [b, r] : ref) {
    const auto& got = buckets[k++];
    EXPECT_EQ(got.bucket, b);
    EXPECT_EQ(got.documents, static_cast<int64_t>(r[0]));
    EXPECT_EQ(got.exact, static_cast<int64_t>(r[1]));
    const double p = r[1] / r[0];
    EXPECT_DOUBLE_EQ(got.rate, p);
    EXPECT_NEAR(got.stderr_, std::sqrt(p * (1 - p) / r[0]), 1e-12);
    EXPECT_NEAR(got.mean_match, r[2] / r[0], 1e-12);
  }
}

std::string random_words(aji::Rng& rng, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) {
    if (i) s += ' ';
    const int len = 3 + static_cast<int>(rng.next_u64() % 6);
    for (int c = 0; c < len; ++c) s += static_cast<char>('a' + rng.next_u64() % 26);
  }
  return s;
}

TEST(Memorize, CountDuplicatesFindsCopiesAndNearCopies) {
  aji::test::TempDir tmp;
  aji::Rng rng(11);
  // Document d has want[d] copies; every other copy is a near-duplicate (one word changed).
  const std::vector<int64_t> want = {1, 2, 3, 5, 8, 1, 16, 1};
  std::vector<std::string> base;
  for (size_t d = 0; d < want.size(); ++d) base.push_back(random_words(rng, 120));
  std::vector<std::pair<size_t, std::string>> lines;
  for (size_t d = 0; d < want.size(); ++d)
    for (int64_t c = 0; c < want[d]; ++c) {
      std::string t = base[d];
      if (c % 2 == 1) t = t.substr(0, t.rfind(' ')) + " zzzedited";
      lines.push_back({d, t});
    }
  // Shuffle so copies are spread through the file; remember each document's first line.
  for (size_t i = lines.size() - 1; i > 0; --i) std::swap(lines[i], lines[rng.next_u64() % (i + 1)]);
  std::map<size_t, std::string> first_text;
  std::vector<size_t> order;
  {
    std::ofstream f(tmp.path() / "train.jsonl");
    for (const auto& [d, t] : lines) {
      f << nlohmann::json{{"text", t}}.dump() << "\n";
      if (!first_text.count(d)) {
        first_text[d] = t;
        order.push_back(d);
      }
    }
  }
  const auto docs = aji::eval::count_duplicates({tmp.path() / "train.jsonl"}, tmp.path() / "work");
  ASSERT_EQ(docs.size(), want.size());
  for (size_t k = 0; k < docs.size(); ++k) {
    EXPECT_EQ(docs[k].text, first_text[order[k]]) << k;  // the cluster's first document, input order
    EXPECT_EQ(docs[k].copies, want[order[k]]) << k;
  }
  // A second run in the same work folder would resume stale files: refused.
  EXPECT_THROW(aji::eval::count_duplicates({tmp.path() / "train.jsonl"}, tmp.path() / "work"), aji::Error);
}

// Documents built so that the one-prompt-at-a-time greedy continuation of their prefix
// departs from the document at a known token (or never): the batched probe must report
// exactly that match length, with and without BOS and at an offset.
void check_probe(std::optional<int32_t> bos, int offset) {
  aji::model::Model model = aji::train::load_model(aji::test::source_path("tests/fixtures/infer/hf-llama"));
  const int V = model.config().vocab_size;
  const int P = 6, S = 10;
  aji::Rng rng(5 + static_cast<uint64_t>(offset));
  std::vector<std::vector<int32_t>> docs;
  std::vector<int64_t> copies;
  std::vector<int> expect_match;
  for (int i = 0; i < 12; ++i) {
    std::vector<int32_t> doc;
    for (int k = 0; k < offset + P; ++k) doc.push_back(static_cast<int32_t>(rng.next_u64() % V));
    std::vector<int32_t> prompt;
    if (bos && offset == 0) prompt.push_back(*bos);
    for (size_t k = static_cast<size_t>(offset); k < doc.size(); ++k) prompt.push_back(doc[k]);
    aji::infer::GenerateOptions g;
    g.max_tokens = S;
    g.sampling.temperature = 0.0f;
    std::vector<int32_t> cont = aji::infer::generate(model, prompt, g);
    ASSERT_EQ(static_cast<int>(cont.size()), S);
    const int cut = i % 3 == 0 ? S : static_cast<int>(rng.next_u64() % S);  // where the document departs
    if (cut < S) cont[cut] = (cont[cut] + 1) % V;
    doc.insert(doc.end(), cont.begin(), cont.end());
    doc.push_back(3);  // past the suffix: never compared
    docs.push_back(doc);
    copies.push_back(1 + i);
    expect_match.push_back(cut);
  }
  docs.push_back({1, 2, 3});  // too short
  copies.push_back(4);
  aji::eval::MemorizeOptions o;
  o.prefix_tokens = P;
  o.suffix_tokens = S;
  o.offset = offset;
  o.bos = bos;
  o.max_batch = 5;
  const aji::eval::MemorizeResult r = aji::eval::memorize_probe_tokens(model, docs, copies, o);
  EXPECT_EQ(r.documents, 13);
  EXPECT_EQ(r.too_short, 1);
  ASSERT_EQ(r.docs.size(), 12u);
  int64_t exact = 0;
  for (size_t i = 0; i < r.docs.size(); ++i) {
    EXPECT_EQ(r.docs[i].document, static_cast<int64_t>(i));
    EXPECT_EQ(r.docs[i].copies, copies[i]);
    EXPECT_EQ(r.docs[i].match_tokens, expect_match[i]) << i;
    EXPECT_EQ(r.docs[i].exact, expect_match[i] == S) << i;
    exact += expect_match[i] == S;
  }
  int64_t total_exact = 0;
  for (const auto& b : r.buckets) total_exact += b.exact;
  EXPECT_EQ(total_exact, exact);
}

TEST(Memorize, BatchedProbeMatchesOneAtATimeGreedy) {
  check_probe(std::nullopt, 0);
  check_probe(std::optional<int32_t>(7), 0);
  check_probe(std::nullopt, 3);
}

TEST(Memorize, MaxPerBucketSamplesAndCounts) {
  aji::model::Model model = aji::train::load_model(aji::test::source_path("tests/fixtures/infer/hf-llama"));
  std::vector<std::vector<int32_t>> docs(20, std::vector<int32_t>(8, 5));
  std::vector<int64_t> copies(20, 1);
  for (int i = 15; i < 20; ++i) copies[i] = 2;
  aji::eval::MemorizeOptions o;
  o.prefix_tokens = 4;
  o.suffix_tokens = 4;
  o.max_per_bucket = 3;
  const auto r = aji::eval::memorize_probe_tokens(model, docs, copies, o);
  ASSERT_EQ(r.buckets.size(), 2u);
  EXPECT_EQ(r.buckets[0].documents, 3);
  EXPECT_EQ(r.buckets[1].documents, 3);
  EXPECT_EQ(r.not_sampled, 12 + 2);
  o.prefix_tokens = 61;  // 61 + 4 tokens do not fit the context of 64
  EXPECT_THROW(aji::eval::memorize_probe_tokens(model, docs, copies, o), aji::Error);
  o.prefix_tokens = 0;
  EXPECT_THROW(aji::eval::memorize_probe_tokens(model, docs, copies, o), aji::Error);
}

}  // namespace
