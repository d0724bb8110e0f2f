// Tokenizer files: aji's own format (round trip, corruption, truncation, versions) and
// Hugging Face tokenizer.json (files written by HF `tokenizers` must give HF's own ids,
// fixtures from tests/reference/hf_tokenizer_reference.py; aji's export must load back).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/tokenizer/tokenizer_files.h"
#include "aji/tokenizer/trainer.h"
#include "test_util.h"

namespace aji::tokenizer {
namespace {

using aji::test::source_path;
using aji::test::TempDir;
using nlohmann::json;

Tokenizer tiny_trained(SplitPattern pattern = SplitPattern::kCl100k, size_t merges = 300) {
  const std::string text = read_file(source_path("tests/fixtures/tokenizer/train_tiny.txt"));
  TrainResult r = train_bpe(count_pieces_in_texts({text}, pattern), 256 + merges);
  return tokenizer_from_training(r, pattern, {"<|endoftext|>", "<|im_start|>", "<|im_end|>"});
}

std::vector<std::string> sample_texts() {
  const json fx = json::parse(read_file(source_path("tests/fixtures/tokenizer/hf_trained_ids.json")));
  return fx["texts"].get<std::vector<std::string>>();
}

void expect_same_tokenizer(const Tokenizer& a, const Tokenizer& b) {
  ASSERT_EQ(a.n_ranks(), b.n_ranks());
  for (TokenId id = 0; id < a.n_ranks(); ++id) ASSERT_EQ(a.token_bytes(id), b.token_bytes(id)) << id;
  EXPECT_EQ(a.pattern(), b.pattern());
  ASSERT_EQ(a.specials().size(), b.specials().size());
  for (size_t i = 0; i < a.specials().size(); ++i) {
    EXPECT_EQ(a.specials()[i].text, b.specials()[i].text);
    EXPECT_EQ(a.specials()[i].id, b.specials()[i].id);
  }
  for (const std::string& t : sample_texts()) ASSERT_EQ(a.encode(t, SpecialPolicy::kAllow), b.encode(t, SpecialPolicy::kAllow));
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.describe();
  }
  return "";
}

TEST(AjiFile, SaveLoadRoundTrip) {
  TempDir dir;
  Tokenizer tok = tiny_trained(SplitPattern::kO200k);
  tok.metadata["name"] = "tiny";
  const auto path = dir.path() / "tok.json";
  save_aji_tokenizer_file(tok, path);
  Tokenizer back = load_aji_tokenizer_file(path);
  expect_same_tokenizer(tok, back);
  EXPECT_EQ(back.metadata.at("name"), "tiny");
  // Tokenizer::load recognises the format from the content.
  expect_same_tokenizer(tok, Tokenizer::load(path));
  // Saving again gives the same bytes (deterministic output).
  save_aji_tokenizer_file(back, dir.path() / "again.json");
  EXPECT_EQ(read_file(path), read_file(dir.path() / "again.json"));
}

TEST(AjiFile, Cl100kThroughAjiFileKeepsTiktokenIds) {
  TempDir dir;
  Tokenizer cl = Tokenizer::load(source_path("data/tokenizer/cl100k_base.tiktoken"));
  save_aji_tokenizer_file(cl, dir.path() / "cl100k.json");
  Tokenizer back = Tokenizer::load(dir.path() / "cl100k.json");
  expect_same_tokenizer(cl, back);
  EXPECT_EQ(back.encode("Hello <|endoftext|> World", SpecialPolicy::kAllow),
            (std::vector<TokenId>{9906, 220, 100257, 4435}));
}

TEST(AjiFile, TruncatedCorruptAndNewerFilesFailClearly) {
  TempDir dir;
  const auto good = dir.path() / "tok.json";
  save_aji_tokenizer_file(tiny_trained(), good);
  const std::string text = read_file(good);

  const auto truncated = dir.path() / "truncated.json";
  write_file_atomic(truncated, text.substr(0, text.size() / 2));
  std::string msg = error_of([&] { load_aji_tokenizer_file(truncated); });
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("fix:"), std::string::npos) << msg;
  // Through the generic loader too.
  EXPECT_NE(error_of([&] { Tokenizer::load(truncated); }).find("truncated"), std::string::npos);

  // A changed token that keeps the JSON valid: caught by the checksum.
  json j = json::parse(text);
  j["tokens"][300] = "QUJD";  // "ABC"
  const auto edited = dir.path() / "edited.json";
  write_file_atomic(edited, j.dump());
  msg = error_of([&] { load_aji_tokenizer_file(edited); });
  EXPECT_NE(msg.find("checksum"), std::string::npos) << msg;

  // A dropped token: the count no longer matches.
  j = json::parse(text);
  j["tokens"].erase(j["tokens"].size() - 1);
  write_file_atomic(edited, j.dump());
  msg = error_of([&] { load_aji_tokenizer_file(edited); });
  EXPECT_NE(msg.find("n_ranks"), std::string::npos) << msg;

  j = json::parse(text);
  j["version"] = 99;
  write_file_atomic(edited, j.dump());
  msg = error_of([&] { load_aji_tokenizer_file(edited); });
  EXPECT_NE(msg.find("newer"), std::string::npos) << msg;

  j = json::parse(text);
  j["tokens"][5] = "not base64!";
  j.erase("checksum");
  write_file_atomic(edited, j.dump());
  msg = error_of([&] { load_aji_tokenizer_file(edited); });
  EXPECT_NE(msg.find("base64"), std::string::npos) << msg;

  j = json::parse(text);
  j["pattern"] = "gpt5";
  write_file_atomic(edited, j.dump());
  msg = error_of([&] { load_aji_tokenizer_file(edited); });
  EXPECT_NE(msg.find("unknown split pattern"), std::string::npos) << msg;

  write_file_atomic(edited, "");
  EXPECT_NE(error_of([&] { load_aji_tokenizer_file(edited); }).find("empty"), std::string::npos);
  EXPECT_NE(error_of([&] { load_aji_tokenizer_file(dir.path() / "missing.json"); }).find("missing.json"),
            std::string::npos);
}

class HfTrained : public ::testing::TestWithParam<const char*> {};

TEST_P(HfTrained, LoadsAndMatchesHfIds) {
  const std::string style = GetParam();
  const json fx = json::parse(read_file(source_path("tests/fixtures/tokenizer/hf_trained_ids.json")));
  const auto path = source_path("tests/fixtures/tokenizer/hf_trained_" + style + ".json");
  Tokenizer tok = Tokenizer::load(path);
  EXPECT_EQ(tok.pattern(), style == "gpt2" ? SplitPattern::kGpt2 : SplitPattern::kCl100k);
  EXPECT_EQ(tok.vocab_size(), 1200u);
  EXPECT_EQ(tok.special_id("<|im_end|>"), std::optional<TokenId>(1199));
  const auto& texts = fx["texts"];
  const auto& want = fx[style];
  ASSERT_EQ(texts.size(), want.size());
  size_t same = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string t = texts[i].get<std::string>();
    const std::vector<TokenId> ids = tok.encode(t, SpecialPolicy::kAllow);
    EXPECT_EQ(ids, want[i].get<std::vector<TokenId>>()) << "text " << i << ": " << json(t).dump();
    same += ids == want[i].get<std::vector<TokenId>>();
    EXPECT_EQ(tok.decode(ids), t);
  }
  EXPECT_EQ(same, texts.size());

  // Saving it again as tokenizer.json and loading gives the same ids.
  TempDir dir;
  save_hf_tokenizer_json(tok, dir.path() / "tokenizer.json");
  Tokenizer again = load_hf_tokenizer_json(dir.path() / "tokenizer.json");
  for (size_t i = 0; i < texts.size(); ++i)
    ASSERT_EQ(again.encode(texts[i].get<std::string>(), SpecialPolicy::kAllow), want[i].get<std::vector<TokenId>>());
}

INSTANTIATE_TEST_SUITE_P(Styles, HfTrained, ::testing::Values("gpt2", "cl100k"));

TEST(HfFile, AjiTrainedExportLoadsBack) {
  TempDir dir;
  for (SplitPattern p : {SplitPattern::kGpt2, SplitPattern::kCl100k, SplitPattern::kO200k}) {
    Tokenizer tok = tiny_trained(p);
    save_hf_tokenizer_json(tok, dir.path() / "tokenizer.json");
    const json j = json::parse(read_file(dir.path() / "tokenizer.json"));
    EXPECT_EQ(j["model"]["type"], "BPE");
    EXPECT_EQ(j["model"]["merges"].size(), 300u);
    EXPECT_EQ(j["added_tokens"].size(), 3u);
    Tokenizer back = Tokenizer::load(dir.path() / "tokenizer.json");
    expect_same_tokenizer(tok, back);
  }
}

TEST(HfFile, UnsupportedFilesFailClearly) {
  TempDir dir;
  const json base = json::parse(read_file(source_path("tests/fixtures/tokenizer/hf_trained_cl100k.json")));
  const auto path = dir.path() / "tokenizer.json";
  auto msg_for = [&](const json& j) {
    write_file_atomic(path, j.dump());
    return error_of([&] { load_hf_tokenizer_json(path); });
  };
  json j = base;
  j["model"]["type"] = "WordPiece";
  EXPECT_NE(msg_for(j).find("WordPiece"), std::string::npos);
  j = base;
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\w+|\\s+";
  EXPECT_NE(msg_for(j).find("regex aji does not know"), std::string::npos);
  j = base;
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  EXPECT_NE(msg_for(j).find("add_prefix_space"), std::string::npos);
  j = base;
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  EXPECT_NE(msg_for(j).find("Whitespace"), std::string::npos);
  j = base;
  j["model"]["merges"][5] = "nospace";
  EXPECT_NE(msg_for(j).find("merge 5"), std::string::npos);
  j = base;
  j["model"]["merges"][7] = json::array({"zzz", "q"});
  EXPECT_NE(msg_for(j).find("merge 7"), std::string::npos);
  // HF's trainer with special_tokens puts them at ids 0..2, inside the ordinary range.
  j = base;
  j["added_tokens"][0]["id"] = 0;
  std::string msg = msg_for(j);
  EXPECT_NE(msg.find("<|endoftext|>"), std::string::npos) << msg;
  EXPECT_NE(msg.find("add_special_tokens"), std::string::npos) << msg;
  // Truncated.
  const std::string text = base.dump();
  write_file_atomic(path, text.substr(0, text.size() - 100));
  msg = error_of([&] { load_hf_tokenizer_json(path); });
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
}

// fuzz_tokenizer_files: a vocab id of 377777777774 (cut to 32 bits) sized the token table
// to ~2^32 strings (out of memory). An id past the entry count, or over 32 bits, is now a
// clear error before anything is allocated; the fuzz input is kept in fuzz/corpus/.
TEST(HfFile, VocabIdsBeyondTheEntryCountFailBeforeAllocating) {
  TempDir dir;
  const auto path = dir.path() / "tokenizer.json";
  const std::string fuzzed = read_file(source_path("fuzz/corpus/tokenizer_files/oom-hf-vocab-id-3.8e11"));
  ASSERT_FALSE(fuzzed.empty());
  write_file_atomic(path, fuzzed.substr(1));  // byte 0 picks the harness's loader
  std::string msg = error_of([&] { load_hf_tokenizer_json(path); });
  EXPECT_NE(msg.find("ids must be contiguous"), std::string::npos) << msg;  // (it has several such ids)
  const json base = json::parse(read_file(source_path("tests/fixtures/tokenizer/hf_trained_cl100k.json")));
  const size_t entries = base["model"]["vocab"].size();
  for (const uint64_t id : {uint64_t(entries) + 5, uint64_t(3000000000), uint64_t(1) << 40}) {  // not a special id
    json j = base;
    j["model"]["vocab"]["Q"] = id;  // "Q" is a byte-level token; its old id is now missing
    write_file_atomic(path, j.dump());
    msg = error_of([&] { load_hf_tokenizer_json(path); });
    EXPECT_NE(msg.find(std::to_string(id)), std::string::npos) << msg;
    EXPECT_NE(msg.find("tokenizer.json"), std::string::npos) << msg;
  }
  write_file_atomic(path, base.dump());  // the fixture itself still loads
  EXPECT_NO_THROW(load_hf_tokenizer_json(path));
}

}  // namespace
}  // namespace aji::tokenizer
