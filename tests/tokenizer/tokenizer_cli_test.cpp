// `aji tokenizer encode|decode|info` through the built binary.
#include <gtest/gtest.h>

#include <zlib.h>

#include <fstream>
#include <iterator>

#include "tokenizer_test_util.h"

namespace aji::test {
namespace {

std::string aji_cmd(const std::string& args) { return std::string(AJI_BINARY) + " " + args; }
std::string cl100k_path() { return source_path("data/tokenizer/cl100k_base.tiktoken").string(); }

void write(const std::filesystem::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }
std::string read_file_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST(TokenizerCli, EncodeDecodeRoundTrip) {
  TempDir dir;
  write(dir.path() / "in.txt", "Hello world, 안녕하세요!\n  tabs\tand\r\nCRLF ");
  std::string out;
  ASSERT_EQ(run_command(aji_cmd("tokenizer encode --tokenizer " + cl100k_path() + " --input " +
                                (dir.path() / "in.txt").string()),
                        &out),
            0);
  std::vector<tokenizer::TokenId> want;
  cl100k().encode_ordinary("Hello world, 안녕하세요!\n  tabs\tand\r\nCRLF ", want);
  std::string want_text;
  for (size_t i = 0; i < want.size(); ++i) {
    if (i) want_text += ' ';
    want_text += std::to_string(want[i]);
  }
  EXPECT_EQ(out, want_text + "\n");
  write(dir.path() / "ids.txt", out);
  ASSERT_EQ(run_command(aji_cmd("tokenizer decode --tokenizer " + cl100k_path() + " < " +
                                (dir.path() / "ids.txt").string()),
                        &out),
            0);
  EXPECT_EQ(out, "Hello world, 안녕하세요!\n  tabs\tand\r\nCRLF ");
}

TEST(TokenizerCli, StdinAndSpecials) {
  std::string out;
  // "Hello <|endoftext|> World" -> tiktoken [9906, 220, 100257, 4435] when allowed.
  ASSERT_EQ(run_command("printf 'Hello <|endoftext|> World' | " +
                            aji_cmd("tokenizer encode --allow-special --tokenizer " + cl100k_path()),
                        &out),
            0);
  EXPECT_EQ(out, "9906 220 100257 4435\n");
  // Not allowed: exit 1 with an error that names the token and the flag.
  ASSERT_EQ(run_command("printf 'Hello <|endoftext|>' | " + aji_cmd("tokenizer encode --tokenizer " + cl100k_path()) +
                            " 2>&1",
                        &out),
            1);
  EXPECT_NE(out.find("<|endoftext|>"), std::string::npos);
  EXPECT_NE(out.find("--allow-special"), std::string::npos);
  // User-defined ChatML specials.
  ASSERT_EQ(run_command("printf '<|im_start|>user' | " +
                            aji_cmd("tokenizer encode --allow-special --special '<|im_start|>=100264' --tokenizer " +
                                    cl100k_path()),
                        &out),
            0);
  EXPECT_EQ(out, "100264 882\n");
  ASSERT_EQ(run_command("echo '100264 882' | " +
                            aji_cmd("tokenizer decode --special '<|im_start|>=100264' --tokenizer " + cl100k_path()),
                        &out),
            0);
  EXPECT_EQ(out, "<|im_start|>user");
}

// --ordinary: special-token text encoded as plain text, as tiktoken's encode_ordinary /
// encode(disallowed_special=()) do (fixture from tests/reference/tiktoken_ordinary_reference.py);
// --allow-special gives tiktoken's allowed_special="all" ids; the default refuses special text.
TEST(TokenizerCli, OrdinaryMatchesTiktokenEncodeOrdinary) {
  TempDir dir;
  const nlohmann::json fx =
      nlohmann::json::parse(read_file_bytes(source_path("tests/fixtures/tokenizer/tiktoken_ordinary.json")));
  ASSERT_GE(fx["cases"].size(), 10u);
  auto ids_text = [](const nlohmann::json& arr) {
    std::string s;
    for (size_t i = 0; i < arr.size(); ++i) {
      if (i) s += ' ';
      s += std::to_string(arr[i].get<uint32_t>());  // (one append at a time: GCC 12's -Wrestrict misfires on "" + string)
    }
    return s + "\n";
  };
  int k = 0;
  for (const auto& c : fx["cases"]) {
    const std::string tok = source_path("data/tokenizer/" + c["encoding"].get<std::string>() + ".tiktoken").string();
    const std::filesystem::path in = dir.path() / ("in" + std::to_string(k++) + ".txt");
    write(in, c["text"].get<std::string>());
    std::string out;
    ASSERT_EQ(run_command(aji_cmd("tokenizer encode --ordinary --tokenizer " + tok + " --input " + in.string()), &out), 0);
    EXPECT_EQ(out, ids_text(c["ordinary"])) << c["text"];
    ASSERT_EQ(run_command(aji_cmd("tokenizer encode --allow-special --tokenizer " + tok + " --input " + in.string()),
                          &out),
              0);
    EXPECT_EQ(out, ids_text(c["allowed"])) << c["text"];
    const int rc = run_command(aji_cmd("tokenizer encode --tokenizer " + tok + " --input " + in.string()) + " 2>/dev/null",
                               &out);
    if (c["allowed"] != c["ordinary"]) {
      EXPECT_NE(rc, 0) << c["text"];  // default unchanged: special text is an error
    } else {
      EXPECT_EQ(rc, 0) << c["text"];
      EXPECT_EQ(out, ids_text(c["ordinary"])) << c["text"];
    }
  }
  std::string err;
  EXPECT_NE(run_command(aji_cmd("tokenizer encode --ordinary --allow-special --tokenizer " + cl100k_path() +
                                " --input " + (dir.path() / "in0.txt").string() + " 2>&1"),
                        &err),
            0);
  EXPECT_NE(err.find("--ordinary"), std::string::npos) << err;
}

TEST(TokenizerCli, JsonlEncodeAndDecode) {
  TempDir dir;
  write(dir.path() / "in.jsonl", "{\"text\": \"Hello world\", \"id\": 1}\n{\"text\": \"\\uc548\\ub155\"}\n");
  std::string out;
  ASSERT_EQ(run_command(aji_cmd("tokenizer encode --tokenizer " + cl100k_path() + " --jsonl-field text --input " +
                                (dir.path() / "in.jsonl").string()),
                        &out),
            0);
  EXPECT_EQ(out, "[9906,1917]\n[31495,230,75265,243]\n");
  write(dir.path() / "ids.jsonl", out);
  ASSERT_EQ(run_command(aji_cmd("tokenizer decode --tokenizer " + cl100k_path() + " < " +
                                (dir.path() / "ids.jsonl").string()),
                        &out),
            0);
  EXPECT_EQ(out, "Hello world\n안녕\n");
}

TEST(TokenizerCli, BadInputGivesClearErrors) {
  TempDir dir;
  std::string out;
  write(dir.path() / "bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": oops}\n");
  EXPECT_EQ(run_command(aji_cmd("tokenizer encode --tokenizer " + cl100k_path() + " --jsonl-field text --input " +
                                (dir.path() / "bad.jsonl").string() + " 2>&1"),
                        &out),
            1);
  EXPECT_NE(out.find("bad.jsonl:2"), std::string::npos) << out;
  write(dir.path() / "nofield.jsonl", "{\"body\": \"ok\"}\n");
  EXPECT_EQ(run_command(aji_cmd("tokenizer encode --tokenizer " + cl100k_path() + " --jsonl-field text --input " +
                                (dir.path() / "nofield.jsonl").string() + " 2>&1"),
                        &out),
            1);
  EXPECT_NE(out.find("nofield.jsonl:1"), std::string::npos) << out;
  write(dir.path() / "ids.txt", "1 2\n3 banana\n");
  EXPECT_EQ(run_command(aji_cmd("tokenizer decode --tokenizer " + cl100k_path() + " --input " +
                                (dir.path() / "ids.txt").string() + " 2>&1"),
                        &out),
            1);
  EXPECT_NE(out.find("ids.txt:2"), std::string::npos) << out;
  EXPECT_EQ(run_command("echo 100256 | " + aji_cmd("tokenizer decode --tokenizer " + cl100k_path()) + " 2>&1", &out), 1);
  EXPECT_NE(out.find("100256"), std::string::npos) << out;
  EXPECT_EQ(run_command(aji_cmd("tokenizer info --tokenizer /nonexistent.tiktoken 2>&1"), &out), 1);
  EXPECT_NE(out.find("nonexistent"), std::string::npos) << out;
}

TEST(TokenizerCli, InfoAndHelp) {
  std::string out;
  ASSERT_EQ(run_command(aji_cmd("tokenizer info --tokenizer " + cl100k_path()), &out), 0);
  EXPECT_NE(out.find("100256"), std::string::npos);
  EXPECT_NE(out.find("100277"), std::string::npos);
  EXPECT_NE(out.find("<|endoftext|>"), std::string::npos);
  EXPECT_NE(out.find("cl100k"), std::string::npos);
  ASSERT_EQ(run_command(aji_cmd("tokenizer encode --help"), &out), 0);
  EXPECT_NE(out.find("--jsonl-field"), std::string::npos);
}

// `aji data tokenize`: a bad input ends as an error naming its real cause and place.
TEST(DataTokenizeCli, AllInvalidUtf8InputNamesTheCauseNotTheValFraction) {
  TempDir dir;
  const std::string tok = (dir.path() / "tok.json").string();
  std::string text;
  ASSERT_EQ(run_command(aji_cmd("-q tokenizer train --vocab-size 300 --input " +
                                source_path("tests/fixtures/tokenizer/train_tiny.txt").string() + " --out " + tok +
                                " 2>&1"),
                        &text),
            0)
      << text;
  // Latin-1 text, one document per line: every document is skipped as not UTF-8.
  write(dir.path() / "latin1.txt", "caf\xe9 au lait\nna\xefve question\n\nr\xe9sum\xe9\n");
  EXPECT_EQ(run_command(aji_cmd("-q data tokenize --tokenizer " + tok + " --input " + (dir.path() / "latin1.txt").string() +
                                " --out " + (dir.path() / "shards").string() + " 2>&1"),
                        &text),
            1);
  EXPECT_NE(text.find("not valid UTF-8"), std::string::npos) << text;
  EXPECT_NE(text.find("latin1.txt:1"), std::string::npos) << text;
  EXPECT_EQ(text.find("val-fraction"), std::string::npos) << text;
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "shards" / "manifest.json"));
  // The same in JSONL with --skip-bad-lines (the hint of the per-line error).
  write(dir.path() / "latin1.jsonl", "{\"text\": \"caf\xe9\"}\n{\"text\": \"na\xefve\"}\n");
  EXPECT_EQ(run_command(aji_cmd("-q data tokenize --tokenizer " + tok + " --jsonl-field text --skip-bad-lines --input " +
                                (dir.path() / "latin1.jsonl").string() + " --out " + (dir.path() / "shards").string() +
                                " 2>&1"),
                        &text),
            1);
  EXPECT_NE(text.find("UTF-8"), std::string::npos) << text;
  EXPECT_NE(text.find("latin1.jsonl:1"), std::string::npos) << text;
  EXPECT_EQ(text.find("val-fraction"), std::string::npos) << text;
}

// A run that fails half-way leaves no shards behind (nothing written half-way).
TEST(DataTokenizeCli, FailedRunLeavesNoShards) {
  TempDir dir;
  const std::string tok = (dir.path() / "tok.json").string();
  std::string text;
  ASSERT_EQ(run_command(aji_cmd("-q tokenizer train --vocab-size 300 --input " +
                                source_path("tests/fixtures/tokenizer/train_tiny.txt").string() + " --out " + tok +
                                " 2>&1"),
                        &text),
            0)
      << text;
  // Enough good text for shards to be written (documents are encoded in 8 MB blocks), then
  // a malformed line.
  std::string doc;
  while (doc.size() < (1u << 20)) doc += "Before we proceed any further, hear me speak. ";
  std::string jsonl;
  for (int i = 0; i < 9; ++i) jsonl += "{\"text\": \"" + doc + std::to_string(i) + "\"}\n";
  jsonl += "{\"text\": broken\n";
  write(dir.path() / "docs.jsonl", jsonl);
  const auto shards = dir.path() / "shards";
  EXPECT_EQ(run_command(aji_cmd("-q data tokenize --tokenizer " + tok + " --jsonl-field text --shard-tokens 1024 --input " +
                                (dir.path() / "docs.jsonl").string() + " --out " + shards.string() + " 2>&1"),
                        &text),
            1);
  EXPECT_NE(text.find("docs.jsonl:10"), std::string::npos) << text;
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(shards)) files += e.path().extension() == ".ajitok";
  EXPECT_EQ(files, 0u);
}

// Progress over compressed input counts compressed bytes: never above 100%.
TEST(DataTokenizeCli, ProgressOnCompressedInputEndsAtOneHundredPercent) {
  TempDir dir;
  const std::string tok = (dir.path() / "tok.json").string();
  std::string text;
  ASSERT_EQ(run_command(aji_cmd("-q tokenizer train --vocab-size 300 --input " +
                                source_path("tests/fixtures/tokenizer/train_tiny.txt").string() + " --out " + tok +
                                " 2>&1"),
                        &text),
            0)
      << text;
  std::string plain;
  for (int i = 0; i < 3000; ++i) plain += "the same words again and again " + std::to_string(i % 7) + "\n";
  const auto gz = dir.path() / "docs.txt.gz";
  gzFile f = gzopen(gz.c_str(), "wb");
  ASSERT_EQ(gzwrite(f, plain.data(), static_cast<unsigned>(plain.size())), static_cast<int>(plain.size()));
  gzclose(f);
  ASSERT_EQ(run_command(aji_cmd("data tokenize --tokenizer " + tok + " --input " + gz.string() + " --out " +
                                (dir.path() / "shards").string() + " 2>&1"),
                        &text),
            0)
      << text;
  size_t p = text.rfind("tokenize:");
  ASSERT_NE(p, std::string::npos) << text;
  const std::string line = text.substr(p, text.find('\n', p) - p);
  EXPECT_NE(line.find("(100.0%)"), std::string::npos) << text;
}

}  // namespace
}  // namespace aji::test
