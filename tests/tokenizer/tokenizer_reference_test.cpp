// Token-id parity with tiktoken on the reference set: 2,216 strings (scripts, whitespace
// traps, contractions, long runs...) for cl100k_base and o200k_base, the special-token
// cases, and the strings where other peers disagree with tiktoken.
#include <gtest/gtest.h>

#include "aji/base/error.h"
#include "tokenizer_test_util.h"

namespace aji::test {
namespace {

using tokenizer::SpecialPolicy;
using tokenizer::TokenId;

TEST(TokenizerReference, EveryReferenceStringMatchesTiktoken) {
  auto rows = read_jsonl("data/tokenizer/reference_encodings.jsonl");
  ASSERT_EQ(rows.size(), 2216u);
  int mismatches = 0;
  for (const auto& row : rows) {
    const std::string text = row["text"].get<std::string>();
    for (const char* enc : {"cl100k_base", "o200k_base"}) {
      const auto& tok = std::string(enc) == "cl100k_base" ? cl100k() : o200k();
      std::vector<TokenId> got;
      tok.encode_ordinary(text, got);
      auto want = ids_of(row[enc]);
      if (got != want && ++mismatches <= 10)
        ADD_FAILURE() << enc << " [" << row["category"].get<std::string>() << "] " << row.dump();
      EXPECT_EQ(tok.decode(got), text);
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(TokenizerReference, SpecialTokenCases) {
  auto rows = read_jsonl("data/tokenizer/special_token_encodings.jsonl");
  ASSERT_GE(rows.size(), 30u);
  for (const auto& row : rows) {
    const std::string text = row["text"].get<std::string>();
    ASSERT_EQ(row["allowed_special"], "all");
    for (const char* enc : {"cl100k_base", "o200k_base"}) {
      const auto& tok = std::string(enc) == "cl100k_base" ? cl100k() : o200k();
      EXPECT_EQ(tok.encode(text, SpecialPolicy::kAllow), ids_of(row[enc])) << enc << " " << row.dump();
      if (row[std::string(enc) + "_default_raises"].get<bool>())
        EXPECT_THROW(tok.encode(text), Error) << enc << " " << row.dump();
      else
        EXPECT_EQ(tok.encode(text), ids_of(row[enc])) << enc << " " << row.dump();
      // As text: special text is ordinary bytes, so decode gives the text back.
      EXPECT_EQ(tok.decode(tok.encode(text, SpecialPolicy::kAsText)), text);
    }
  }
}

TEST(TokenizerReference, PeerDisagreementsFollowTiktoken) {
  auto rows = read_jsonl("data/tokenizer/reference_peer_disagreements.jsonl");
  ASSERT_GE(rows.size(), 40u);
  for (const auto& row : rows) {
    const std::string enc = row["encoding"].get<std::string>();
    const auto& tok = enc == "cl100k_base" ? cl100k() : o200k();
    std::vector<TokenId> got;
    tok.encode_ordinary(row["text"].get<std::string>(), got);
    EXPECT_EQ(got, ids_of(row["tiktoken_wasm_ids"])) << enc << " peer " << row["peer"] << ": " << row["text"];
  }
}

TEST(TokenizerReference, SpecialTokenRules) {
  const auto& tok = cl100k();
  // tiktoken: "Hello <|endoftext|> World" -> [9906, 220, 100257, 4435] with allowed_special="all".
  EXPECT_EQ(tok.encode("Hello <|endoftext|> World", SpecialPolicy::kAllow),
            (std::vector<TokenId>{9906, 220, 100257, 4435}));
  try {
    tok.encode("x <|fim_prefix|> y");
    FAIL() << "disallowed special text must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("<|fim_prefix|>"), std::string::npos);
    EXPECT_NE(e.how_to_fix().find("--allow-special"), std::string::npos);
  }
  // Only the listed specials are allowed; others still throw.
  EXPECT_EQ(tok.encode_allowing("a<|endoftext|>", {"<|endoftext|>"}), (std::vector<TokenId>{64, 100257}));
  EXPECT_THROW(tok.encode_allowing("a<|endoftext|><|fim_middle|>", {"<|endoftext|>"}), Error);
  EXPECT_EQ(tok.special_id("<|endofprompt|>"), std::optional<TokenId>(100276));
  EXPECT_EQ(tok.vocab_size(), 100277u);
  EXPECT_EQ(o200k().vocab_size(), 200019u);
}

TEST(TokenizerReference, ChatMlSpecialsAreUserDefined) {
  tokenizer::Tokenizer tok = cl100k();  // copy: add_special must not touch the shared one
  EXPECT_FALSE(tok.special_id("<|im_start|>"));
  tok.add_special("<|im_start|>", 100264);
  tok.add_special("<|im_end|>", 100265);
  EXPECT_EQ(tok.encode("<|im_start|>user\nhi<|im_end|>", SpecialPolicy::kAllow).front(), 100264u);
  EXPECT_EQ(tok.decode({100264, 882, 100265}), "<|im_start|>user<|im_end|>");
  EXPECT_FALSE(cl100k().special_id("<|im_start|>"));
  // An id of an ordinary token, or one already taken, is refused (and nothing changes).
  EXPECT_THROW(tok.add_special("<|bad|>", 42), Error);
  EXPECT_THROW(tok.add_special("<|bad|>", 100257), Error);
  EXPECT_FALSE(tok.special_id("<|bad|>"));
  tok.add_special("<|new|>");  // next free id
  EXPECT_EQ(tok.special_id("<|new|>"), std::optional<TokenId>(100277));
  EXPECT_EQ(tok.vocab_size(), 100278u);
}

}  // namespace
}  // namespace aji::test
