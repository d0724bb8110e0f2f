// BPE training: the merge sequence against the independent Python reference
// (tests/reference/bpe_reference.py -> tests/fixtures/tokenizer/bpe_reference_*.json),
// determinism across thread counts, safe chunk cuts, and the rank-model tokenizer built
// from the result.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "aji/tokenizer/trainer.h"
#include "test_util.h"

namespace aji::tokenizer {
namespace {

using aji::test::source_path;

std::string hex(std::string_view s) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += d[c >> 4];
    out += d[c & 15];
  }
  return out;
}

struct ThreadsGuard {
  int saved = num_threads();
  ~ThreadsGuard() { set_num_threads(saved); }
};

class ReferenceMerges : public ::testing::TestWithParam<const char*> {};

TEST_P(ReferenceMerges, MatchesPythonReferenceTrainer) {
  const std::string name = GetParam();
  const auto fixture =
      nlohmann::json::parse(read_file(source_path("tests/fixtures/tokenizer/bpe_reference_" + name + ".json")));
  const std::string text = read_file(source_path("tests/fixtures/tokenizer/train_tiny.txt"));
  const SplitPattern pattern = *parse_split_pattern(name);

  // In memory and through the file reader: both must give the reference's pieces and merges.
  PieceCounts in_memory = count_pieces_in_texts({text}, pattern);
  TrainOptions opt;
  opt.pattern = pattern;
  opt.progress = false;
  PieceCounts from_file = count_pieces({source_path("tests/fixtures/tokenizer/train_tiny.txt")}, opt);
  for (const PieceCounts* pc : {&in_memory, &from_file}) {
    EXPECT_EQ(pc->size(), fixture["unique_pieces"].get<size_t>());
    EXPECT_EQ(pc->total_pieces, fixture["total_pieces"].get<int64_t>());
  }
  ASSERT_EQ(in_memory.arena, from_file.arena);
  ASSERT_EQ(in_memory.counts, from_file.counts);

  const size_t n_tokens = fixture["n_tokens"].get<size_t>();
  TrainResult r = train_bpe(in_memory, n_tokens);
  const auto& want = fixture["merges"];
  ASSERT_EQ(r.merges.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE("merge " + std::to_string(i));
    EXPECT_EQ(r.merges[i].left, want[i][0].get<uint32_t>());
    EXPECT_EQ(r.merges[i].right, want[i][1].get<uint32_t>());
    EXPECT_EQ(r.merges[i].result, want[i][2].get<uint32_t>());
    EXPECT_EQ(r.merges[i].count, want[i][3].get<int64_t>());
  }
  ASSERT_EQ(r.token_bytes.size(), n_tokens);
  const auto& want_hex = fixture["new_tokens_hex"];
  for (size_t i = 0; i < want_hex.size(); ++i) EXPECT_EQ(hex(r.token_bytes[256 + i]), want_hex[i].get<std::string>());
}

INSTANTIATE_TEST_SUITE_P(Patterns, ReferenceMerges, ::testing::Values("gpt2", "cl100k", "o200k"));

TEST(TrainBpe, HandBuiltPiecesAndTieBreak) {
  // Words "ab" x3 and "cd" x3 tie at count 3: the smaller pair (a,b) = (97,98) goes first.
  PieceCounts pc;
  pc.offsets = {0};
  for (auto [w, c] : std::vector<std::pair<std::string, int64_t>>{{"ab", 3}, {"cd", 3}, {"abcd", 1}}) {
    pc.arena += w;
    pc.offsets.push_back(pc.arena.size());
    pc.counts.push_back(c);
  }
  TrainResult r = train_bpe(pc, 259);
  ASSERT_EQ(r.merges.size(), 3u);
  EXPECT_EQ(r.token_bytes[256], "ab");
  EXPECT_EQ(r.merges[0].count, 4);
  EXPECT_EQ(r.token_bytes[257], "cd");
  EXPECT_EQ(r.token_bytes[258], "abcd");
  EXPECT_EQ(r.merges[2].left, 256u);
  EXPECT_EQ(r.merges[2].right, 257u);
  EXPECT_FALSE(r.stopped_early);
  // Asking for more than the corpus can give stops early instead of looping.
  TrainResult more = train_bpe(pc, 300);
  EXPECT_TRUE(more.stopped_early);
  EXPECT_EQ(more.token_bytes.size(), 259u);
}

TEST(TrainBpe, OverlappingRunsCountCorrectly) {
  // "aaaaa": (a,a) x4 -> "AA a" -> (A,A) x1, (A,a) x1 -> ...; checked by hand.
  PieceCounts pc;
  pc.arena = "aaaaa";
  pc.offsets = {0, 5};
  pc.counts = {2};
  TrainResult r = train_bpe(pc, 259);
  ASSERT_EQ(r.merges.size(), 3u);
  EXPECT_EQ(r.merges[0].count, 8);  // 4 pairs x 2
  EXPECT_EQ(r.token_bytes[256], "aa");
  // After: [aa, aa, a]: pairs (aa,aa)=2, (aa,a)=2 -> tie, smaller right id: (256,97) "aaa".
  EXPECT_EQ(r.token_bytes[257], "aaa");
  EXPECT_EQ(r.merges[1].left, 256u);
  EXPECT_EQ(r.merges[1].right, 97u);
  // [aa, aaa] -> "aaaaa".
  EXPECT_EQ(r.token_bytes[258], "aaaaa");
}

TEST(TrainBpe, SameResultWithOneAndTwoThreads) {
  ThreadsGuard guard;
  TrainOptions opt;
  opt.pattern = SplitPattern::kCl100k;
  opt.vocab_size = 256 + 300 + 3;
  opt.progress = false;
  // Shakespeare (1.1 MB) is read in several chunks, so this also exercises the cuts.
  const std::vector<std::filesystem::path> files = {source_path("data/corpus/train/en_shakespeare.txt"),
                                                    source_path("data/corpus/train/ko_news.txt")};
  set_num_threads(1);
  TrainResult one;
  TrainStats s1;
  Tokenizer t1 = train_tokenizer(files, opt, &s1, &one);
  set_num_threads(2);
  TrainResult two;
  TrainStats s2;
  Tokenizer t2 = train_tokenizer(files, opt, &s2, &two);
  EXPECT_EQ(one.token_bytes, two.token_bytes);
  ASSERT_EQ(one.merges.size(), two.merges.size());
  for (size_t i = 0; i < one.merges.size(); ++i) {
    EXPECT_EQ(one.merges[i].left, two.merges[i].left);
    EXPECT_EQ(one.merges[i].right, two.merges[i].right);
    EXPECT_EQ(one.merges[i].count, two.merges[i].count);
  }
  EXPECT_EQ(s1.unique_pieces, s2.unique_pieces);
  EXPECT_EQ(s1.total_pieces, s2.total_pieces);
  EXPECT_EQ(s1.input_bytes, 1115394 + 322388);
  EXPECT_EQ(t1.n_ranks(), 556u);
  EXPECT_EQ(t1.vocab_size(), 559u);
  EXPECT_EQ(t1.special_id("<|im_end|>"), std::optional<TokenId>(558));

  // Whole-file counting equals splitting the texts in memory (the cuts change nothing).
  std::string a = read_file(files[0]), b = read_file(files[1]);
  PieceCounts whole = count_pieces_in_texts({a, b}, opt.pattern);
  EXPECT_EQ(static_cast<int64_t>(whole.size()), s1.unique_pieces);
  EXPECT_EQ(whole.total_pieces, s1.total_pieces);
}

// Splitting at last_safe_cut gives the same pieces as splitting whole, for all patterns.
TEST(TrainBpe, SafeCutsDoNotChangePieces) {
  Rng rng(7);
  const std::vector<std::string> atoms = {"a",  "b",  "Z",   " ",   "\n",  "\r\n", "\t", "/",  ".",  "'s", "1",
                                          "한", "글", "\xc2\xa0", "\xe3\x80\x80", "  ", "\n\n", "é", "x\n", "?"};
  int cuts_found = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string text;
    const int n = 2 + static_cast<int>(rng.next_u64() % 40);
    for (int i = 0; i < n; ++i) text += atoms[rng.next_u64() % atoms.size()];
    const size_t cut = detail::last_safe_cut(text);
    if (cut == 0) continue;
    ++cuts_found;
    ASSERT_LT(cut, text.size());
    for (SplitPattern p : {SplitPattern::kGpt2, SplitPattern::kCl100k, SplitPattern::kO200k}) {
      std::vector<std::string_view> whole, left, right;
      split_into(p, text, whole);
      split_into(p, std::string_view(text).substr(0, cut), left);
      split_into(p, std::string_view(text).substr(cut), right);
      std::vector<std::string> w(whole.begin(), whole.end()), lr(left.begin(), left.end());
      lr.insert(lr.end(), right.begin(), right.end());
      ASSERT_EQ(w, lr) << "pattern " << split_pattern_name(p) << " cut " << cut << " in " << nlohmann::json(text).dump();
    }
  }
  EXPECT_GT(cuts_found, 1000);
}

TEST(TrainBpe, TokenizerFromTrainingEncodesWithLearnedTokens) {
  const std::string text = read_file(source_path("tests/fixtures/tokenizer/train_tiny.txt"));
  TrainResult r = train_bpe(count_pieces_in_texts({text}, SplitPattern::kCl100k), 256 + 400);
  Tokenizer tok = tokenizer_from_training(r, SplitPattern::kCl100k, {"<|endoftext|>"});
  const std::string sample = "First Citizen:\nBefore we proceed any further, hear me speak.";
  std::vector<TokenId> ids = tok.encode(sample);
  EXPECT_EQ(tok.decode(ids), sample);
  EXPECT_LT(ids.size(), sample.size() / 2);  // merges learned on this very text compress it
  EXPECT_EQ(tok.special_id("<|endoftext|>"), std::optional<TokenId>(656));
}

}  // namespace
}  // namespace aji::tokenizer
