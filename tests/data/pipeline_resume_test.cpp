// Resume of `aji data run` keyed on content and settings (a replaced input or a changed
// config is redone, and says so), temp files of a killed run, and the output folder of
// `aji data run` as the input of the next stages (kept documents only).
#include <gtest/gtest.h>
#include <zlib.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/data/pipeline.h"
#include "aji/tokenizer/trainer.h"
#include "test_util.h"

namespace aji::data {
namespace {

namespace fs = std::filesystem;
using aji::test::run_command;
using aji::test::source_path;
using aji::test::TempDir;

void write_bytes(const fs::path& p, const std::string& s) {
  fs::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary);
  f.write(s.data(), static_cast<std::streamsize>(s.size()));
}

std::string gzip(const std::string& data) {
  z_stream z{};
  deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, data.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

std::vector<std::string> news_lines() {
  LineReader r(source_path("tests/fixtures/data/langid/en_news.txt"));
  std::vector<std::string> lines;
  std::string_view line;
  while (r.next(line)) lines.emplace_back(line);
  return lines;
}

// JSONL documents of 8 news lines each, ids "<prefix><i>"; plus `rejected`
// one-line documents that every quality filter drops (their text holds "zqxrejected").
std::string jsonl_docs(const std::string& prefix, size_t first_line, size_t n_docs, size_t rejected = 0) {
  const auto lines = news_lines();
  std::string out;
  for (size_t d = 0; d < n_docs; ++d) {
    std::string text;
    for (size_t k = 0; k < 8; ++k) text += lines[(first_line + d * 4 + k) % lines.size()] + "\n";
    out += nlohmann::json{{"id", prefix + std::to_string(d)}, {"text", text}}.dump() + "\n";
  }
  for (size_t d = 0; d < rejected; ++d)
    out += nlohmann::json{{"id", "bad" + std::to_string(d)}, {"text", "zqxrejected zqxrejected"}}.dump() + "\n";
  return out;
}

// id -> text of every kept document of one output file.
std::map<std::string, std::string> read_docs(const fs::path& file) {
  std::map<std::string, std::string> docs;
  LineReader r(file);
  std::string_view line;
  while (r.next(line)) {
    auto j = nlohmann::json::parse(line);
    docs[j["id"].get<std::string>()] = j["text"].get<std::string>();
  }
  return docs;
}

RunOptions options(const fs::path& in, const fs::path& out) {
  RunOptions o;
  o.inputs = {in.string()};
  o.out_dir = out;
  o.progress = false;
  o.notes = false;
  return o;
}

// The issue's case: a .gz cut short (its done-marker counts the damage) is later replaced
// by the full file. Keyed on the input path only, the rerun skipped it as done.
TEST(PipelineResume, ReplacedInputIsRedone) {
  TempDir tmp;
  fs::path in = tmp.path() / "in", out = tmp.path() / "out";
  const std::string full = gzip(jsonl_docs("d", 0, 10));
  write_bytes(in / "part.jsonl.gz", full.substr(0, full.size() / 2));
  const PipelineConfig cfg = PipelineConfig::fineweb_default();
  RunReport first = run_pipeline(cfg, options(in, out));
  ASSERT_EQ(first.units_run, 1);
  EXPECT_GE(first.total.errors_total, 1u);  // the truncation was counted
  const fs::path kept = out / "en" / (unit_name((in / "part.jsonl.gz").string()) + ".jsonl.zst");
  const size_t kept_before = fs::exists(kept) ? read_docs(kept).size() : 0;
  ASSERT_LT(kept_before, 10u);

  RunReport same = run_pipeline(cfg, options(in, out));  // unchanged: skipped
  EXPECT_EQ(same.units_run, 0);
  EXPECT_EQ(same.units_skipped, 1);

  write_bytes(in / "part.jsonl.gz", full);
  RunReport second = run_pipeline(cfg, options(in, out));
  EXPECT_EQ(second.units_run, 1);
  EXPECT_EQ(second.units_skipped, 0);
  EXPECT_EQ(second.total.errors_total, 0u);
  ASSERT_TRUE(fs::exists(kept));
  EXPECT_GT(read_docs(kept).size(), kept_before);
  // The same as a fresh run on the full file.
  RunReport fresh = run_pipeline(cfg, options(in, tmp.path() / "fresh"));
  EXPECT_EQ(read_file(kept), read_file(tmp.path() / "fresh" / "en" / kept.filename()));
  EXPECT_EQ(nlohmann::json(second.total)["kept_docs"], nlohmann::json(fresh.total)["kept_docs"]);
}

// Same size and the old modification time, different content: the head/tail hash sees it.
TEST(PipelineResume, SameSizeAndMtimeDifferentContentIsRedone) {
  TempDir tmp;
  fs::path in = tmp.path() / "in", out = tmp.path() / "out";
  std::string a = jsonl_docs("a", 0, 6), b = jsonl_docs("b", 0, 6);
  ASSERT_EQ(a.size(), b.size());
  write_bytes(in / "x.jsonl", a);
  const auto mtime = fs::last_write_time(in / "x.jsonl");
  const PipelineConfig cfg = PipelineConfig::fineweb_default();
  ASSERT_EQ(run_pipeline(cfg, options(in, out)).units_run, 1);
  write_bytes(in / "x.jsonl", b);
  fs::last_write_time(in / "x.jsonl", mtime);
  RunOptions o = options(in, out);
  o.notes = true;
  testing::internal::CaptureStderr();
  ASSERT_EQ(run_pipeline(cfg, o).units_run, 1);
  const std::string note = testing::internal::GetCapturedStderr();
  EXPECT_NE(note.find("the input file's content changed"), std::string::npos) << note;  // not the mtime
  auto docs = read_docs(out / "en" / (unit_name((in / "x.jsonl").string()) + ".jsonl.zst"));
  ASSERT_FALSE(docs.empty());
  EXPECT_EQ(docs.begin()->first.substr(0, 1), "b");
}

// A large file (past the 64 KiB head sample) changed only near its end: the tail sample sees it.
TEST(PipelineResume, ChangeNearTheEndOfALargeFileIsRedone) {
  TempDir tmp;
  fs::path in = tmp.path() / "in", out = tmp.path() / "out";
  std::string a = jsonl_docs("a", 0, 300);
  ASSERT_GT(a.size(), size_t(200) << 10);
  std::string b = a;
  const size_t last = b.rfind("\"a299\"");
  ASSERT_NE(last, std::string::npos);
  b[last + 1] = 'z';  // id "z299", same size
  write_bytes(in / "x.jsonl", a);
  const auto mtime = fs::last_write_time(in / "x.jsonl");
  const PipelineConfig cfg = PipelineConfig::fineweb_default();
  ASSERT_EQ(run_pipeline(cfg, options(in, out)).units_run, 1);
  write_bytes(in / "x.jsonl", b);
  fs::last_write_time(in / "x.jsonl", mtime);
  RunOptions o = options(in, out);
  o.notes = true;
  testing::internal::CaptureStderr();
  EXPECT_EQ(run_pipeline(cfg, o).units_run, 1);
  const std::string note = testing::internal::GetCapturedStderr();
  EXPECT_NE(note.find("the input file's content changed"), std::string::npos) << note;  // not the mtime
}

// A changed config redoes finished files, and outputs the new config no longer writes go.
TEST(PipelineResume, ChangedConfigIsRedoneAndOldOutputsRemoved) {
  TempDir tmp;
  fs::path in = tmp.path() / "in", out = tmp.path() / "out";
  write_bytes(in / "x.jsonl", jsonl_docs("a", 0, 6));
  const std::string unit = unit_name((in / "x.jsonl").string());
  PipelineConfig no_lid = PipelineConfig::fineweb_default();
  no_lid.language_id.enabled = false;  // everything goes to out/all
  ASSERT_EQ(run_pipeline(no_lid, options(in, out)).units_run, 1);
  ASSERT_TRUE(fs::exists(out / "all" / (unit + ".jsonl.zst")));
  EXPECT_EQ(run_pipeline(no_lid, options(in, out)).units_run, 0);

  PipelineConfig with_lid = PipelineConfig::fineweb_default();
  RunReport r = run_pipeline(with_lid, options(in, out));
  EXPECT_EQ(r.units_run, 1);
  EXPECT_FALSE(fs::exists(out / "all" / (unit + ".jsonl.zst")));
  EXPECT_EQ(read_docs(out / "en" / (unit + ".jsonl.zst")).size(), r.total.kept_docs.at("en"));
  // The markers a reader trusts name only the new output.
  auto files = run_output_files(out);
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(files[0], out / "en" / (unit + ".jsonl.zst"));
  // A marker of an older aji (no resume key) is redone too.
  auto marker = nlohmann::json::parse(read_file(out / ".done" / (unit + ".json")));
  marker.erase("resume_key");
  write_bytes(out / ".done" / (unit + ".json"), marker.dump());
  EXPECT_EQ(run_pipeline(with_lid, options(in, out)).units_run, 1);
}

TEST(PipelineResume, RedoIsAnnouncedOnTheCommandLine) {
  TempDir tmp;
  fs::path in = tmp.path() / "in", out = tmp.path() / "out";
  write_bytes(in / "x.jsonl", jsonl_docs("a", 0, 4));
  const std::string cmd = std::string(AJI_BINARY) + " data run --no-progress --input " + in.string() + " --out " +
                          out.string();
  std::string text;
  ASSERT_EQ(run_command(cmd + " 2>&1", &text), 0) << text;
  write_bytes(tmp.path() / "cfg.json", R"({"output": {"zstd_level": 7}})");
  ASSERT_EQ(run_command(cmd + " --config " + (tmp.path() / "cfg.json").string() + " 2>&1", &text), 0) << text;
  EXPECT_NE(text.find("redoing " + (in / "x.jsonl").string() + ": the pipeline config changed"), std::string::npos)
      << text;
}

// Temp files of a killed run ("<file>.tmp.<pid>") are removed when their unit is redone.
TEST(PipelineResume, TempFilesOfAKilledRunAreRemoved) {
  TempDir tmp;
  fs::path in = tmp.path() / "in", out = tmp.path() / "out";
  write_bytes(in / "x.jsonl", jsonl_docs("a", 0, 4));
  const std::string unit = unit_name((in / "x.jsonl").string());
  const std::vector<fs::path> stale = {out / "en" / (unit + ".jsonl.zst.tmp.999999"),
                                       out / ".done" / (unit + ".json.tmp.999999"),
                                       out / "report.json.tmp.999999", out / "report.txt.tmp.999998"};
  const fs::path other_unit = out / "en" / "someone-else-00000000.jsonl.zst.tmp.999999";
  for (const auto& p : stale) write_bytes(p, "partial");
  write_bytes(other_unit, "partial");
  ASSERT_EQ(run_pipeline(PipelineConfig::fineweb_default(), options(in, out)).units_run, 1);
  for (const auto& p : stale) EXPECT_FALSE(fs::exists(p)) << p;
  EXPECT_TRUE(fs::exists(other_unit));  // not this run's unit: maybe another shard's
}

// ---- The data-run output as an input ----

struct RunOutput {
  TempDir tmp;
  fs::path in = tmp.path() / "in", out = tmp.path() / "out";
  RunReport report;
  RunOutput() {
    write_bytes(in / "a.jsonl", jsonl_docs("a", 0, 5, 3));
    write_bytes(in / "b.jsonl.gz", gzip(jsonl_docs("b", 8, 4, 2)));
    report = run_pipeline(PipelineConfig::fineweb_default(), options(in, out));
  }
  uint64_t kept_docs() const { return report.total.kept_docs.at("en"); }
};

TEST(RunOutputInput, OnlyKeptDocumentsAreListed) {
  RunOutput r;
  ASSERT_GE(r.kept_docs(), 6u);
  uint64_t dropped = 0;
  for (const auto& [reason, n] : r.report.total.drops) dropped += n;
  ASSERT_GE(dropped, 5u);  // the rejected ones (and maybe a news window)
  // Things a directory listing would pick up and a reader must not.
  ASSERT_TRUE(fs::exists(r.out / "dropped_samples"));
  write_bytes(r.out / "en" / "a-00000000.jsonl.zst.tmp.4242", "partial");
  write_bytes(r.out / "en" / "orphan-00000000.jsonl.zst", "no marker names it");
  EXPECT_TRUE(is_run_output(r.out));
  EXPECT_FALSE(is_run_output(r.in));

  auto files = run_output_files(r.out);
  ASSERT_EQ(files.size(), 2u);
  for (const auto& f : files) EXPECT_EQ(f.parent_path(), r.out / "en");
  for (const std::string& arg : {r.out.string(), (r.out / "en").string(), r.out.string() + "/"}) {
    TextInputs in = resolve_text_inputs({arg}, "");
    EXPECT_EQ(in.files, files) << arg;
    EXPECT_EQ(in.jsonl_field, "text");
    EXPECT_TRUE(in.from_run_output);
  }
  EXPECT_EQ(resolve_text_inputs({r.out.string()}, "text").files, files);
  // Every document read back is a kept one.
  size_t n = 0;
  for (const auto& f : files)
    for (const auto& [id, text] : read_docs(f)) {
      EXPECT_EQ(text.find("zqxrejected"), std::string::npos) << id;
      ++n;
    }
  EXPECT_EQ(n, r.kept_docs());
}

TEST(RunOutputInput, PlainInputsAndErrors) {
  RunOutput r;
  TextInputs plain = resolve_text_inputs({r.in.string()}, "");
  EXPECT_FALSE(plain.from_run_output);
  EXPECT_EQ(plain.files.size(), 2u);
  EXPECT_EQ(plain.jsonl_field, "");
  auto message = [](const std::function<void()>& fn) {
    try {
      fn();
    } catch (const Error& e) {
      return e.describe();
    }
    return std::string();
  };
  std::string m = message([&] { resolve_text_inputs({r.out.string(), (r.in / "a.jsonl").string()}, ""); });
  EXPECT_NE(m.find("mixed"), std::string::npos) << m;
  m = message([&] { resolve_text_inputs({r.out.string()}, "body"); });
  EXPECT_NE(m.find("\"text\""), std::string::npos) << m;
  // With --jsonl-field text the mix is fine: every input is JSONL.
  EXPECT_EQ(resolve_text_inputs({r.out.string(), (r.in / "a.jsonl").string()}, "text").files.size(), 3u);
  // A run that has finished nothing yet.
  fs::path empty = r.tmp.path() / "empty";
  fs::create_directories(empty / ".done");
  m = message([&] { resolve_text_inputs({empty.string()}, ""); });
  EXPECT_NE(m.find("no kept documents"), std::string::npos) << m;
  // A marker naming a file that is gone.
  fs::remove(run_output_files(r.out).front());
  m = message([&] { run_output_files(r.out); });
  EXPECT_NE(m.find("missing"), std::string::npos) << m;
}

// The tokenizer trainer reads exactly the kept documents: as many documents and text bytes
// as the data run's report says it kept.
TEST(RunOutputInput, TokenizerTrainsOnKeptDocumentsOnly) {
  RunOutput r;
  TextInputs in = resolve_text_inputs({r.out.string()}, "");
  tokenizer::TrainOptions o;
  o.vocab_size = 256 + 40 + 3;
  o.progress = false;
  o.jsonl_field = in.jsonl_field;
  o.skip_bad_lines = true;  // what the old error message suggested: must change nothing
  tokenizer::TrainStats stats;
  tokenizer::train_tokenizer(in.files, o, &stats);
  EXPECT_EQ(stats.documents, static_cast<int64_t>(r.kept_docs()));
  EXPECT_EQ(stats.skipped_lines, 0);
  EXPECT_EQ(static_cast<uint64_t>(stats.input_bytes), r.report.total.kept_bytes.at("en"));
}

// `aji data tokenize` and `aji tokenizer train` on the folder, from the command line.
TEST(RunOutputInput, CommandLineReadsTheFolder) {
  RunOutput r;
  const std::string aji = AJI_BINARY;
  const fs::path tok = r.tmp.path() / "tok.json";
  std::string text;
  ASSERT_EQ(run_command(aji + " -q tokenizer train --input " + r.out.string() + " --skip-bad-lines --vocab-size 300 --out " +
                            tok.string() + " 2>&1",
                        &text),
            0)
      << text;
  ASSERT_EQ(run_command(aji + " -q data tokenize --tokenizer " + tok.string() + " --input " + r.out.string() +
                            " --skip-bad-lines --val-fraction 0 --out " + (r.tmp.path() / "shards").string() + " 2>&1",
                        &text),
            0)
      << text;
  EXPECT_NE(text.find(std::to_string(r.kept_docs()) + " documents,"), std::string::npos) << text;
  EXPECT_EQ(text.find("skipped"), std::string::npos) << text;
}

}  // namespace
}  // namespace aji::data
