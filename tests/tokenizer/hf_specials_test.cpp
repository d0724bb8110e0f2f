// Hugging Face tokenizer.json files whose special tokens sit inside the ordinary id range
// (<|endoftext|> at 0 and <|pad|> at 1, as `tokenizers`' trainer puts special_tokens=[...]),
// against HF's own ids, decodes and a transformers model's log-probabilities, all written
// by tests/reference/hf_specials_reference.py (tokenizers 0.23, transformers 5.25).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/tokenizer/tokenizer_files.h"
#include "tokenizer_test_util.h"

namespace aji::test {
namespace {

using nlohmann::json;
using tokenizer::SpecialPolicy;
using tokenizer::TokenId;
using tokenizer::Tokenizer;

const char* kFile = "tests/fixtures/tokenizer/hf_specials_inside.json";

json fixture() { return json::parse(read_file(source_path("tests/fixtures/tokenizer/hf_specials_inside_ids.json"))); }

void expect_hf_ids(const Tokenizer& tok, const json& fx) {
  const auto& texts = fx["texts"];
  ASSERT_GE(texts.size(), 20u);
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string text = texts[i].get<std::string>();
    const std::vector<TokenId> want = ids_of(fx["ids"][i]);
    EXPECT_EQ(tok.encode(text, SpecialPolicy::kAllow), want) << text;  // HF splits added tokens out
    EXPECT_EQ(tok.decode(want), fx["decoded"][i].get<std::string>()) << text;
  }
}

TEST(HfSpecialsInside, EncodesAndDecodesAsHf) {
  const Tokenizer tok = Tokenizer::load(source_path(kFile));
  const json fx = fixture();
  EXPECT_EQ(tok.vocab_size(), fx["vocab_size"].get<size_t>());
  EXPECT_EQ(tok.special_id("<|endoftext|>"), std::optional<TokenId>(0));
  EXPECT_EQ(tok.special_id("<|pad|>"), std::optional<TokenId>(1));
  EXPECT_EQ(tok.special_id("<|im_end|>"), std::optional<TokenId>(600));
  EXPECT_EQ(tok.n_ranks(), 598u);
  EXPECT_EQ(tok.token_bytes(0), "<|endoftext|>");
  expect_hf_ids(tok, fx);
  // Every ordinary id of the file maps back to its vocab entry's bytes.
  const json file = json::parse(read_file(source_path(kFile)));
  for (auto& [text, id] : file["model"]["vocab"].items()) {
    const TokenId t = id.get<TokenId>();
    if (t <= 1) continue;
    const std::string_view bytes = tok.token_bytes(t);
    EXPECT_EQ(tok.rank_of(bytes), std::optional<TokenId>(t)) << text;
  }
}

TEST(HfSpecialsInside, OrdinaryEncodingNeverGivesSpecialIds) {
  const Tokenizer tok = Tokenizer::load(source_path(kFile));
  const std::vector<TokenId> ids = tok.encode("<|endoftext|> and <|pad|>", SpecialPolicy::kAsText);
  for (TokenId id : ids) {
    EXPECT_GT(id, 1u);
    EXPECT_LT(id, 600u);
  }
  EXPECT_EQ(tok.decode(ids), "<|endoftext|> and <|pad|>");
  EXPECT_THROW(tok.encode("x<|pad|>", SpecialPolicy::kDisallow), Error);
  EXPECT_THROW(tok.merge_priority(0), Error);  // a special has no merge priority
  EXPECT_NO_THROW(tok.merge_priority(2));
}

TEST(HfSpecialsInside, SurvivesAjiAndHfFileRoundTrips) {
  const Tokenizer tok = Tokenizer::load(source_path(kFile));
  const json fx = fixture();
  TempDir dir;
  tokenizer::save_aji_tokenizer_file(tok, dir.path() / "aji.json");
  expect_hf_ids(Tokenizer::load(dir.path() / "aji.json"), fx);
  tokenizer::save_hf_tokenizer_json(tok, dir.path() / "tokenizer.json");
  expect_hf_ids(Tokenizer::load(dir.path() / "tokenizer.json"), fx);
  // The written vocab keeps HF's ids, and the merges are "A B" strings.
  const json orig = json::parse(read_file(source_path(kFile)));
  const json back = json::parse(read_file(dir.path() / "tokenizer.json"));
  json want_vocab = json::object();
  for (auto& [text, id] : orig["model"]["vocab"].items())
    if (id.get<int>() > 1) want_vocab[text] = id;
  EXPECT_EQ(back["model"]["vocab"], want_vocab);
  ASSERT_EQ(back["added_tokens"].size(), 3u);
  EXPECT_EQ(back["added_tokens"][0]["id"], 0);
  EXPECT_EQ(back["added_tokens"][0]["content"], "<|endoftext|>");
  EXPECT_EQ(back["model"]["merges"].size(), orig["model"]["merges"].size());
  for (const json& m : back["model"]["merges"]) {
    ASSERT_TRUE(m.is_string()) << m;
    const std::string s = m.get<std::string>();
    EXPECT_EQ(std::count(s.begin(), s.end(), ' '), 1) << s;
  }
  // Editing an ordinary id in aji's file is caught by its checksum.
  json aji = json::parse(read_file(dir.path() / "aji.json"));
  ASSERT_TRUE(aji.contains("ordinary_ids"));
  aji["ordinary_ids"][5] = aji["ordinary_ids"][5].get<int>() + 1000;
  write_file_atomic(dir.path() / "edited.json", aji.dump());
  EXPECT_THROW(Tokenizer::load(dir.path() / "edited.json"), Error);
}

TEST(HfSpecialsInside, HolesThatNoSpecialFillsAreStillRefused) {
  json j = json::parse(read_file(source_path(kFile)));
  j["added_tokens"].erase(j["added_tokens"].begin() + 1);  // <|pad|> (id 1) no longer a special
  j["model"]["vocab"].erase("<|pad|>");
  TempDir dir;
  write_file_atomic(dir.path() / "tokenizer.json", j.dump());
  try {
    Tokenizer::load(dir.path() / "tokenizer.json");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no token with id 1"), std::string::npos) << e.what();
  }
  // A special whose id an ordinary token also has is refused.
  EXPECT_THROW(
      tokenizer::Tokenizer::from_ranks([] {
        std::vector<std::string> b;
        for (int i = 0; i < 256; ++i) b.push_back(std::string(1, char(i)));
        return b;
      }(), tokenizer::SplitPattern::kGpt2, {{"<s>", 5}}, {}, [] {
        std::vector<TokenId> ids;
        for (TokenId i = 0; i < 256; ++i) ids.push_back(i + 1);
        return ids;
      }()),
      Error);
}

// `aji score` on a Hugging Face GPT-2 directory whose tokenizer has <|endoftext|> at id 0:
// the same tokens and (within float rounding) the same log-probabilities as transformers.
TEST(HfSpecialsInside, ScoreMatchesTransformers) {
  const auto dir = source_path("tests/fixtures/tokenizer/hf-specials-model");
  const json ref = json::parse(read_file(dir / "logprobs.json"));
  TempDir tmp;
  write_file_atomic(tmp.path() / "text.txt", ref["text"].get<std::string>());
  std::string out;
  ASSERT_EQ(run_command(std::string(AJI_BINARY) + " score --model " + dir.string() + " --input " +
                            (tmp.path() / "text.txt").string() + " --json",
                        &out),
            0)
      << out;
  const json got = json::parse(out);
  EXPECT_EQ(got["tokens"], ref["tokens"]);
  ASSERT_EQ(got["logprobs"].size(), ref["logprobs"].size());
  for (size_t i = 0; i < ref["logprobs"].size(); ++i)
    EXPECT_NEAR(got["logprobs"][i].get<double>(), ref["logprobs"][i].get<double>(), 2e-4) << i;
}

}  // namespace
}  // namespace aji::test
