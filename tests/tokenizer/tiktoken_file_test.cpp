// tiktoken rank files: recognition of the known encodings by their published SHA-256
// (encodings_meta.json), and line-numbered errors for broken files.
#include <gtest/gtest.h>

#include <fstream>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/tokenizer/sha256.h"
#include "aji/tokenizer/tokenizer_files.h"
#include "tokenizer_test_util.h"

namespace aji::test {
namespace {

using tokenizer::Tokenizer;

TEST(Sha256, KnownVectors) {  // FIPS 180-4 examples (values checked with coreutils sha256sum)
  EXPECT_EQ(tokenizer::sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(tokenizer::sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(tokenizer::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(tokenizer::sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(TiktokenFile, KnownEncodingsAreRecognisedByTheirPublishedHash) {
  auto meta = nlohmann::json::parse(read_file(source_path("data/tokenizer/encodings_meta.json")));
  EXPECT_EQ(cl100k().metadata.at("sha256"), meta["cl100k_base"]["sha256"]);
  EXPECT_EQ(o200k().metadata.at("sha256"), meta["o200k_base"]["sha256"]);
  EXPECT_EQ(cl100k().metadata.at("name"), "cl100k_base");
  EXPECT_EQ(cl100k().n_ranks(), meta["cl100k_base"]["mergeable_ranks"].get<size_t>());
  EXPECT_EQ(o200k().n_ranks(), meta["o200k_base"]["mergeable_ranks"].get<size_t>());
  EXPECT_EQ(o200k().pattern(), tokenizer::SplitPattern::kO200k);
  for (auto& [text, id] : meta["cl100k_base"]["special_tokens"].items())
    EXPECT_EQ(cl100k().special_id(text), std::optional<tokenizer::TokenId>(id.get<uint32_t>()));
  for (auto& [text, id] : meta["o200k_base"]["special_tokens"].items())
    EXPECT_EQ(o200k().special_id(text), std::optional<tokenizer::TokenId>(id.get<uint32_t>()));
}

TEST(TiktokenFile, CrlfCopyIsStillRecognised) {
  TempDir dir;
  std::string content = read_file(source_path("data/tokenizer/cl100k_base.tiktoken"));
  std::string crlf;
  for (char c : content) {
    if (c == '\n') crlf += '\r';
    crlf += c;
  }
  auto path = dir.path() / "my_ranks.tiktoken";
  std::ofstream(path, std::ios::binary) << crlf;
  Tokenizer tok = Tokenizer::load(path);
  EXPECT_EQ(tok.metadata.at("name"), "cl100k_base");
  EXPECT_EQ(tok.special_id("<|endoftext|>"), std::optional<tokenizer::TokenId>(100257));
}

// Writes `content` to a file and expects load to fail naming `line` (or no line: -1).
void expect_error(const std::string& name, const std::string& content, int64_t line, const std::string& words) {
  TempDir dir;
  auto path = dir.path() / name;
  std::ofstream(path, std::ios::binary) << content;
  try {
    Tokenizer::load(path);
    FAIL() << "expected an error for " << name;
  } catch (const Error& e) {
    EXPECT_EQ(e.file(), path.string()) << e.describe();
    EXPECT_EQ(e.line(), line) << e.describe();
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.describe();
    EXPECT_FALSE(e.how_to_fix().empty()) << e.describe();
  }
}

std::string byte_table(int n) {  // a valid little table: the 256 bytes, in order
  static const char* b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (int b = 0; b < n; ++b) out += std::string{b64[b >> 2], b64[(b & 3) << 4], '=', '='} + " " + std::to_string(b) + "\n";
  return out;
}

TEST(TiktokenFile, SmallCustomFileLoads) {
  TempDir dir;
  auto path = dir.path() / "bytes.tiktoken";
  std::ofstream(path, std::ios::binary) << byte_table(256) << "YWI= 256\n";
  Tokenizer tok = Tokenizer::load(path);
  EXPECT_EQ(tok.n_ranks(), 257u);
  EXPECT_TRUE(tok.specials().empty());
  EXPECT_EQ(tok.encode("xab"), (std::vector<tokenizer::TokenId>{'x', 256}));
}

TEST(TiktokenFile, BrokenFilesGiveLineNumberedErrors) {
  expect_error("empty.tiktoken", "", -1, "empty");
  expect_error("blank.tiktoken", "\n\n", -1, "empty");
  expect_error("b64.tiktoken", byte_table(3) + "Y!I= 3\n", 4, "base64");
  expect_error("b64len.tiktoken", byte_table(3) + "YWJ 3\n", 4, "base64");
  expect_error("rank.tiktoken", byte_table(3) + "YWI= x3\n", 4, "bad rank");
  expect_error("dup.tiktoken", byte_table(3) + "YWI= 1\n", 4, "duplicate rank 1");
  expect_error("gap.tiktoken", byte_table(3) + "YWI= 5\n", 4, "rank 3 is missing");
  expect_error("norank.tiktoken", byte_table(3) + "YWI=", 4, "truncated");
  expect_error("dupbytes.tiktoken", byte_table(256) + "AA== 256\n", -1, "same bytes");
  expect_error("nobytes.tiktoken", byte_table(255) + "YWI= 255\n", -1, "single byte");
  // Named like a known encoding, but cut short: say so instead of loading a wrong vocabulary.
  std::string cl = read_file(source_path("data/tokenizer/cl100k_base.tiktoken"));
  expect_error("cl100k_base.tiktoken", cl.substr(0, cl.rfind('\n', cl.size() / 2) + 1), -1, "content differs");
}

TEST(TokenizerLoad, MissingAndEmptyFiles) {
  EXPECT_THROW(Tokenizer::load("/nonexistent/tok.tiktoken"), Error);
  expect_error("empty.json", "   \n", -1, "empty");
}

}  // namespace
}  // namespace aji::test
