// Training inputs and bad input: JSONL (field, malformed lines, skip flag), compressed
// files, invalid UTF-8 and NUL bytes, empty input, vocabulary limits, and the CLI.
#include <gtest/gtest.h>
#include <zlib.h>

#include <nlohmann/json.hpp>

#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/rng.h"
#include "aji/tokenizer/tokenizer_files.h"
#include "aji/tokenizer/trainer.h"
#include "test_util.h"

namespace aji::tokenizer {
namespace {

using aji::test::run_command;
using aji::test::source_path;
using aji::test::TempDir;

TrainOptions small_options(size_t vocab = 256 + 50 + 3) {
  TrainOptions o;
  o.vocab_size = vocab;
  o.progress = false;
  return o;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.describe();
  }
  return "";
}

TEST(TrainInputs, VocabularyLimits) {
  TrainOptions o = small_options(255);
  o.specials.clear();
  EXPECT_NE(error_of([&] { validate_train_options(o); }).find("too small"), std::string::npos);
  o.vocab_size = 256;
  EXPECT_NO_THROW(validate_train_options(o));
  o.specials = {"<|endoftext|>"};
  const std::string msg = error_of([&] { validate_train_options(o); });
  EXPECT_NE(msg.find("--vocab-size 257"), std::string::npos) << msg;
  o.vocab_size = kMaxVocabSize + 1;
  EXPECT_NE(error_of([&] { validate_train_options(o); }).find("above the limit"), std::string::npos);
  o.vocab_size = 1000;
  o.specials = {"<|a|>", "<|a|>"};
  EXPECT_NE(error_of([&] { validate_train_options(o); }).find("twice"), std::string::npos);
}

TEST(TrainInputs, EmptyInputIsAnError) {
  TempDir dir;
  write_file_atomic(dir.path() / "empty.txt", "");
  const std::string msg = error_of([&] { train_tokenizer({dir.path() / "empty.txt"}, small_options()); });
  EXPECT_NE(msg.find("no text"), std::string::npos) << msg;
  EXPECT_NE(msg.find("empty.txt"), std::string::npos) << msg;
}

TEST(TrainInputs, InvalidUtf8AndNulBytesTrainByteLevel) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 50; ++i) {
    text += "abc\xff\xfe def ";
    text.push_back('\0');
    text += "ghi\xc3(\xe2\x82 한글\n";
  }
  write_file_atomic(dir.path() / "bad.txt", text);
  TrainStats stats;
  TrainResult r;
  Tokenizer tok = train_tokenizer({dir.path() / "bad.txt"}, small_options(), &stats, &r);
  EXPECT_EQ(stats.input_bytes, static_cast<int64_t>(text.size()));
  EXPECT_FALSE(r.merges.empty());
  const auto ids = tok.encode(text, SpecialPolicy::kAsText);
  EXPECT_EQ(tok.decode(ids), text);
  EXPECT_LT(ids.size(), text.size() / 3);  // 26 bytes/line -> 8 tokens: every piece learned whole
}

TEST(TrainInputs, HugeLineWithoutSafePointsIsCutAndTrained) {
  // Stands in for a 1 GB single-word line: no "\n" and no " " to cut at.
  TempDir dir;
  std::string line;
  Rng rng(3);
  while (line.size() < 600000) line += "abcdefgh"[rng.below(8)];
  write_file_atomic(dir.path() / "line.txt", line);
  TrainOptions o = small_options(256 + 20 + 3);
  o.max_run_bytes = 200000;
  TrainStats stats;
  Tokenizer tok = train_tokenizer({dir.path() / "line.txt"}, o, &stats);
  EXPECT_GE(stats.forced_cuts, 1);
  EXPECT_GE(stats.total_pieces, 2);
  EXPECT_EQ(stats.input_bytes, 600000);
  EXPECT_EQ(tok.n_ranks(), 276u);
  EXPECT_EQ(tok.decode(tok.encode(line.substr(0, 1000))), line.substr(0, 1000));
}

TEST(TrainInputs, GzipInputEqualsPlain) {
  TempDir dir;
  const std::string text = read_file(source_path("tests/fixtures/tokenizer/train_tiny.txt"));
  const auto gz = dir.path() / "tiny.txt.gz";
  gzFile f = gzopen(gz.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, text.data(), static_cast<unsigned>(text.size())), static_cast<int>(text.size()));
  gzclose(f);
  TrainResult a, b;
  train_tokenizer({source_path("tests/fixtures/tokenizer/train_tiny.txt")}, small_options(), nullptr, &a);
  train_tokenizer({gz}, small_options(), nullptr, &b);
  EXPECT_EQ(a.token_bytes, b.token_bytes);
}

TEST(TrainInputs, JsonlFieldAndMalformedLines) {
  TempDir dir;
  const auto path = dir.path() / "docs.jsonl";
  std::string jsonl;
  for (int i = 0; i < 30; ++i) jsonl += nlohmann::json({{"id", i}, {"text", "the quick brown fox " + std::to_string(i)}}).dump() + "\n";
  jsonl += "\n";  // blank lines are ignored
  write_file_atomic(path, jsonl);
  TrainOptions o = small_options();
  o.jsonl_field = "text";
  TrainStats stats;
  train_tokenizer({path}, o, &stats);
  EXPECT_EQ(stats.documents, 30);

  // Line 32 is broken; line 33 lacks the field; line 34 has a number.
  write_file_atomic(path, jsonl + "{\"text\": \"unterminated\n{\"body\": \"x\"}\n{\"text\": 5}\n");
  std::string msg = error_of([&] { train_tokenizer({path}, o); });
  EXPECT_NE(msg.find("docs.jsonl:32"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--skip-bad-lines"), std::string::npos) << msg;
  o.skip_bad_lines = true;
  train_tokenizer({path}, o, &stats);
  EXPECT_EQ(stats.skipped_lines, 3);
  EXPECT_EQ(stats.documents, 30);

  // A wrong field name: every line is malformed.
  o.skip_bad_lines = false;
  o.jsonl_field = "content";
  write_file_atomic(path, jsonl);
  msg = error_of([&] { train_tokenizer({path}, o); });
  EXPECT_NE(msg.find("no field \"content\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("docs.jsonl:1"), std::string::npos) << msg;
}

TEST(TrainCli, TrainInfoEncodeStatsAndErrors) {
  TempDir dir;
  const std::string aji = AJI_BINARY;
  const std::string out = (dir.path() / "tok.json").string();
  const std::string hf = (dir.path() / "tokenizer.json").string();
  std::string stdout_text;
  ASSERT_EQ(run_command(aji + " -q tokenizer train --input " + source_path("tests/fixtures/tokenizer").string() +
                            "/train_tiny.txt --vocab-size 400 --pattern o200k --out " + out + " --hf-out " + hf +
                            " 2>&1",
                        &stdout_text),
            0)
      << stdout_text;
  Tokenizer tok = Tokenizer::load(out);
  EXPECT_EQ(tok.vocab_size(), 400u);
  EXPECT_EQ(tok.pattern(), SplitPattern::kO200k);
  EXPECT_EQ(tok.special_id("<|im_start|>"), std::optional<TokenId>(398));
  Tokenizer tok_hf = Tokenizer::load(hf);
  EXPECT_EQ(tok_hf.encode("Before we proceed any further"), tok.encode("Before we proceed any further"));

  ASSERT_EQ(run_command(aji + " tokenizer stats --json --tokenizer " + out + " --input " +
                            source_path("tests/fixtures/tokenizer/train_tiny.txt").string(),
                        &stdout_text),
            0);
  const auto stats = nlohmann::json::parse(stdout_text);
  const int64_t tokens = stats["total"]["tokens"].get<int64_t>();
  const std::string text = read_file(source_path("tests/fixtures/tokenizer/train_tiny.txt"));
  EXPECT_EQ(tokens, static_cast<int64_t>(tok.encode(text, SpecialPolicy::kAsText).size()));
  EXPECT_EQ(stats["total"]["bytes"].get<int64_t>(), static_cast<int64_t>(text.size()));

  // Errors: exit status 1 and a message that says what to do.
  const std::string tiny = source_path("tests/fixtures/tokenizer/train_tiny.txt").string();
  EXPECT_EQ(run_command(aji + " tokenizer train --input " + tiny + " --vocab-size 100 --out " + out + " 2>&1", &stdout_text), 1);
  EXPECT_NE(stdout_text.find("too small"), std::string::npos) << stdout_text;
  EXPECT_EQ(run_command(aji + " tokenizer train --input " + tiny + " --vocab-size 500 --pattern gpt5 --out " + out + " 2>&1",
                        &stdout_text),
            1);
  EXPECT_NE(stdout_text.find("unknown split pattern"), std::string::npos) << stdout_text;
  EXPECT_EQ(run_command(aji + " tokenizer train --input " + (dir.path() / "nope*.txt").string() +
                            " --vocab-size 500 --out " + out + " 2>&1",
                        &stdout_text),
            1);
  EXPECT_NE(stdout_text.find("nope"), std::string::npos) << stdout_text;
}

// Every line's text is not UTF-8 (a legacy-charset export): with --skip-bad-lines all are
// skipped, and the error names that cause and the first such line, not just "no text".
TEST(TrainInputs, AllLinesInvalidUtf8NameTheCause) {
  TempDir dir;
  const auto path = dir.path() / "cp949.jsonl";
  write_file_atomic(path, "\n{\"text\": \"caf\xe9 au lait\"}\n{\"text\": \"\xc7\xd1\xb1\xdb\"}\n");
  TrainOptions o = small_options();
  o.jsonl_field = "text";
  o.skip_bad_lines = true;
  const std::string msg = error_of([&] { train_tokenizer({path}, o); });
  EXPECT_NE(msg.find("not valid UTF-8"), std::string::npos) << msg;
  EXPECT_NE(msg.find("cp949.jsonl:2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("iconv"), std::string::npos) << msg;
}

// The percentages of the progress lines, in order, from a captured stderr.
std::vector<double> progress_percents(const std::string& text, const std::string& label) {
  std::vector<double> out;
  size_t p = 0;
  while ((p = text.find(label + ":", p)) != std::string::npos) {
    size_t open = text.find('(', p), close = text.find("%)", p), eol = text.find('\n', p);
    if (open != std::string::npos && close != std::string::npos && close < eol)
      out.push_back(std::stod(text.substr(open + 1, close - open - 1)));
    p = eol == std::string::npos ? text.size() : eol;
  }
  return out;
}

// Compressed JSONL: the total is the file's size on disk, so what is counted must be
// compressed bytes too (it counted line bytes: "count pieces: ... (2343.1%)").
TEST(TrainCli, ProgressOnCompressedInputEndsAtOneHundredPercent) {
  TempDir dir;
  std::string jsonl;
  for (int i = 0; i < 3000; ++i) jsonl += "{\"text\": \"the same words again and again " + std::to_string(i % 7) + "\"}\n";
  const auto gz = dir.path() / "docs.jsonl.gz";
  gzFile f = gzopen(gz.c_str(), "wb");
  ASSERT_EQ(gzwrite(f, jsonl.data(), static_cast<unsigned>(jsonl.size())), static_cast<int>(jsonl.size()));
  gzclose(f);
  std::string text;
  ASSERT_EQ(run_command(std::string(AJI_BINARY) + " tokenizer train --jsonl-field text --vocab-size 300 --input " +
                            gz.string() + " --out " + (dir.path() / "tok.json").string() + " 2>&1",
                        &text),
            0)
      << text;
  const auto pct = progress_percents(text, "count pieces");
  ASSERT_FALSE(pct.empty()) << text;
  for (double v : pct) EXPECT_LE(v, 100.0) << text;
  EXPECT_EQ(pct.back(), 100.0) << text;
}

}  // namespace
}  // namespace aji::tokenizer
