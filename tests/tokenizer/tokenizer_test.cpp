// Encoder/decoder behaviour beyond the reference set: round trips over arbitrary bytes,
// long pieces (the heap merge path) against a naive O(n^2) BPE written here, merge
// priorities that differ from ids, batch encoding, construction errors.
#include <gtest/gtest.h>

#include <chrono>
#include <map>

#include "aji/base/error.h"
#include "aji/base/rng.h"
#include "aji/base/io.h"
#include "aji/base/threads.h"
#include "tokenizer_test_util.h"

namespace aji::test {
namespace {

using tokenizer::SpecialPolicy;
using tokenizer::SplitPattern;
using tokenizer::TokenId;
using tokenizer::Tokenizer;

// Textbook BPE on one piece: repeatedly merge the adjacent pair whose concatenation
// has the lowest priority (leftmost on ties) until none is a token.
std::vector<TokenId> naive_bpe(const Tokenizer& tok, std::string_view piece) {
  std::vector<std::string> parts;
  for (char c : piece) parts.emplace_back(1, c);
  while (true) {
    uint64_t best = UINT64_MAX;
    size_t at = 0;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      auto id = tok.rank_of(parts[i] + parts[i + 1]);
      if (id && tok.merge_priority(*id) < best) {
        best = tok.merge_priority(*id);
        at = i;
      }
    }
    if (best == UINT64_MAX) break;
    parts[at] += parts[at + 1];
    parts.erase(parts.begin() + long(at) + 1);
  }
  std::vector<TokenId> ids;
  for (auto& p : parts) ids.push_back(*tok.rank_of(p));
  return ids;
}

std::string random_bytes(Rng& rng, size_t n) {
  std::string s(n, '\0');
  for (char& c : s) c = char(rng.next_u64());
  return s;
}

TEST(Tokenizer, RoundTripsArbitraryBytes) {
  Rng rng(2024);
  for (const Tokenizer* tok : {&cl100k(), &o200k()}) {
    for (int iter = 0; iter < 300; ++iter) {
      std::string text = random_bytes(rng, rng.next_u64() % 200);
      // Mix in valid multi-byte text, NULs and runs.
      if (iter % 3 == 0) text += "안녕하세요 \xF0\x9F\x98\x80 caf\xC3\xA9" + std::string(5, '\0');
      if (iter % 5 == 0) text += std::string(300, char('a' + iter % 26));
      auto ids = tok->encode(text, SpecialPolicy::kAsText);
      ASSERT_EQ(tok->decode(ids), text);
      for (TokenId id : ids) ASSERT_LT(id, tok->n_ranks());
    }
  }
}

TEST(Tokenizer, LongPiecesMatchNaiveBpe) {
  Rng rng(99);
  const Tokenizer& tok = cl100k();
  for (size_t len : {2u, 7u, 99u, 127u, 128u, 129u, 300u, 700u}) {
    for (int iter = 0; iter < 4; ++iter) {
      std::string piece;  // letters only: one pre-tokenizer piece
      for (size_t k = 0; k < len; ++k) piece += char("etaoinshrdlucmfwyp"[rng.next_u64() % 18]);
      std::vector<TokenId> got;
      tok.encode_ordinary(piece, got);
      EXPECT_EQ(got, naive_bpe(tok, piece)) << "len " << len;
    }
  }
  // Hangul (3-byte code points) through the heap path.
  std::string hangul;
  const char* syllables[] = {"한", "국", "어", "가", "나"};
  for (int k = 0; k < 80; ++k) hangul += syllables[rng.next_u64() % 5];
  std::vector<TokenId> got;
  tok.encode_ordinary(hangul, got);
  EXPECT_EQ(got, naive_bpe(tok, hangul));
}

TEST(Tokenizer, HugePiecesAreFast) {
  const Tokenizer& tok = o200k();
  Rng rng(5);
  std::string letters;  // 100 KB of random letters: a single piece, quadratic without the heap
  for (int k = 0; k < 100000; ++k) letters += char('a' + rng.next_u64() % 26);
  std::string digits;
  for (int k = 0; k < 100000; ++k) digits += char('0' + rng.next_u64() % 10);
  auto t0 = std::chrono::steady_clock::now();
  for (const std::string* s : {&letters, &digits}) {
    auto ids = tok.encode(*s);
    EXPECT_EQ(tok.decode(ids), *s);
  }
  auto a = tok.encode(std::string(5000, 'a'));
  EXPECT_EQ(tok.decode(a), std::string(5000, 'a'));
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(secs, 5.0);  // ~0.05 s in Release; generous for the sanitizer build
}

TEST(Tokenizer, MergePriorityDifferentFromIds) {
  // bytes 0..255 as ids 0..255, then "ab" (id 256) and "bc" (id 257). With ids as
  // priorities "ab" merges first; with bc given the lower priority, "bc" does.
  std::vector<std::string> toks;
  for (int b = 0; b < 256; ++b) toks.emplace_back(1, char(b));
  toks.push_back("ab");
  toks.push_back("bc");
  Tokenizer by_id = Tokenizer::from_ranks(toks, SplitPattern::kCl100k, {});
  EXPECT_EQ(by_id.encode("abc"), (std::vector<TokenId>{256, 'c'}));
  std::vector<uint32_t> prio(258);
  for (int i = 0; i < 256; ++i) prio[size_t(i)] = uint32_t(i);
  prio[256] = 1001;
  prio[257] = 1000;
  Tokenizer by_prio = Tokenizer::from_ranks(toks, SplitPattern::kCl100k, {}, prio);
  EXPECT_EQ(by_prio.encode("abc"), (std::vector<TokenId>{'a', 257}));
  EXPECT_EQ(by_prio.merge_priority(257), 1000u);
  std::string long_piece(300, 'a');
  for (size_t i = 1; i < long_piece.size(); i += 3) long_piece[i] = 'b', long_piece[i + 1] = 'c';
  std::vector<TokenId> got;
  by_prio.encode_ordinary(long_piece, got);
  EXPECT_EQ(got, naive_bpe(by_prio, long_piece));
}

TEST(Tokenizer, BatchMatchesSingleAtOneAndTwoThreads) {
  std::vector<std::string> texts;
  Rng rng(3);
  for (int i = 0; i < 64; ++i) texts.push_back("doc " + std::to_string(i) + " " + random_bytes(rng, 50) + " 안녕");
  std::vector<std::string_view> views(texts.begin(), texts.end());
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    auto batch = o200k().encode_batch(views, SpecialPolicy::kAsText);
    ASSERT_EQ(batch.size(), texts.size());
    for (size_t i = 0; i < texts.size(); ++i) EXPECT_EQ(batch[i], o200k().encode(texts[i], SpecialPolicy::kAsText));
  }
  set_num_threads(0);
  // An error inside the batch comes back as an aji::Error, not a crash.
  std::vector<std::string_view> bad = {"fine", "has <|endoftext|> in it"};
  EXPECT_THROW(o200k().encode_batch(bad), Error);
}

TEST(Tokenizer, DecodeRejectsUnknownIds) {
  EXPECT_THROW(cl100k().decode({100256}), Error);  // a gap in cl100k's ids
  EXPECT_THROW(cl100k().decode({100277}), Error);
  EXPECT_THROW(cl100k().token_bytes(4000000000u), Error);
  EXPECT_EQ(cl100k().decode({100257}), "<|endoftext|>");
  EXPECT_EQ(cl100k().token_bytes(0), "!");  // rank 0 is '!', not byte 0
  EXPECT_EQ(cl100k().decode(std::vector<TokenId>{}), "");
  EXPECT_TRUE(cl100k().encode("").empty());
}

TEST(Tokenizer, ConstructionErrors) {
  std::vector<std::string> toks;
  for (int b = 0; b < 256; ++b) toks.emplace_back(1, char(b));
  auto missing = toks;
  missing.erase(missing.begin() + 'x');
  missing.push_back("zz");
  EXPECT_THROW(Tokenizer::from_ranks(missing, SplitPattern::kCl100k, {}), Error);  // no token for 'x'
  auto dup = toks;
  dup.push_back("ab");
  dup.push_back("ab");
  EXPECT_THROW(Tokenizer::from_ranks(dup, SplitPattern::kCl100k, {}), Error);
  auto empty = toks;
  empty.push_back("");
  EXPECT_THROW(Tokenizer::from_ranks(empty, SplitPattern::kCl100k, {}), Error);
  EXPECT_THROW(Tokenizer::from_ranks(toks, SplitPattern::kCl100k, {{"<s>", 5}}), Error);  // clashes with a byte
  EXPECT_THROW(Tokenizer::from_ranks(toks, SplitPattern::kCl100k, {{"<s>", 300}, {"</s>", 300}}), Error);
  EXPECT_THROW(Tokenizer::from_ranks(toks, SplitPattern::kCl100k, {}, {1, 2, 3}), Error);
  Tokenizer ok = Tokenizer::from_ranks(toks, SplitPattern::kGpt2, {{"<s>", 300}});
  EXPECT_EQ(ok.vocab_size(), 301u);
  EXPECT_EQ(ok.encode("hi<s>", SpecialPolicy::kAllow), (std::vector<TokenId>{'h', 'i', 300}));
}

}  // namespace
}  // namespace aji::test

namespace aji::test {
namespace {

// Big inputs are cut at "\n" + ASCII non-space (not '/') and encoded in parallel: the ids
// must equal one serial pass, for every split pattern, on text made of the characters
// that could break that rule (spaces and newlines of all kinds, '/', punctuation, marks).
TEST(Tokenizer, ChunkedParallelEncodeEqualsSerial) {
  std::vector<std::string> cl_tokens;
  for (size_t id = 0; id < cl100k().n_ranks(); ++id) cl_tokens.emplace_back(cl100k().token_bytes(TokenId(id)));
  std::vector<Tokenizer> toks;
  toks.push_back(cl100k());
  toks.push_back(o200k());
  toks.push_back(Tokenizer::from_ranks(cl_tokens, SplitPattern::kGpt2, {}));
  toks.push_back(Tokenizer::from_ranks(cl_tokens, SplitPattern::kQwen2, {}));
  const char* pool[] = {"\n", "\n", "\n", "\r", " ", "  ", "\t", "/", ".", "a", "B", "7", "'s", "\xC2\xA0", "\xC2\x85",
                        "\xCC\x81", "\xEA\xB0\x80", "x", "\n\n", "//", "-", "\xFF"};
  Rng rng(11);
  std::string text;
  for (int i = 0; i < 12000; ++i) text += pool[rng.next_u64() % (sizeof pool / sizeof pool[0])];
  text += read_file(source_path("tests/fixtures/tokenizer/parity/korean_chatbot.csv.gz")).substr(0, 30000);
  set_num_threads(2);
  for (const Tokenizer& tok : toks) {
    std::vector<TokenId> serial, chunked;
    set_num_threads(1);  // the reference: one serial pass
    tok.encode_ordinary(text, serial);
    set_num_threads(2);
    for (size_t chunk : {1u, 64u, 1000u}) {
      chunked.clear();
      tok.encode_ordinary_chunked(text, chunk, chunked);
      if (chunked != serial) {
        size_t d = 0;
        while (d < std::min(chunked.size(), serial.size()) && chunked[d] == serial[d]) ++d;
        std::string before = tok.decode(serial.data(), d);
        std::string ctx = text.substr(before.size() >= 20 ? before.size() - 20 : 0, 40);
        std::string hex;
        for (unsigned char c : ctx) hex += std::to_string(c) + " ";
        FAIL() << split_pattern_name(tok.pattern()) << " chunk " << chunk << " differs at token " << d << " byte "
               << before.size() << ": " << hex;
      }
    }
  }
  set_num_threads(0);
}

}  // namespace
}  // namespace aji::test
