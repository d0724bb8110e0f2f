// The pipeline runner end to end: bad inputs counted and survived, no good document lost,
// per-language routing, resume after an interruption, sharding, determinism across
// thread counts, config files, and the CLI.
#include <gtest/gtest.h>
#include <zlib.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <unistd.h>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/threads.h"
#include "aji/data/pipeline.h"
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

std::string gzip_member(const std::string& data) {
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

std::string lines_text(const std::string& rel, size_t from, size_t n) {
  LineReader r(source_path(rel));
  std::string_view line;
  std::string out;
  size_t i = 0;
  while (r.next(line)) {
    if (i >= from && i < from + n) out += std::string(line) + "\n";
    ++i;
  }
  return out;
}

std::string warc_page(const std::string& id, const std::string& url, const std::string& paragraphs) {
  std::string body = "<html><body><nav><a href='/'>Home</a></nav><main>";
  size_t p = 0;
  while (p < paragraphs.size()) {
    size_t e = paragraphs.find('\n', p);
    if (e == std::string::npos) e = paragraphs.size();
    body += "<p>" + paragraphs.substr(p, e - p) + "</p>\n";
    p = e + 1;
  }
  body += "</main></body></html>";
  std::string http = "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + body;
  return "WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:" + id + ">\r\nWARC-Target-URI: " + url +
         "\r\nContent-Length: " + std::to_string(http.size()) + "\r\n\r\n" + http + "\r\n\r\n";
}

// Reads every output document of a run: (language dir, id) → text.
std::map<std::pair<std::string, std::string>, std::string> outputs(const fs::path& dir) {
  std::map<std::pair<std::string, std::string>, std::string> docs;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    std::string name = e.path().filename().string();
    if (!e.is_regular_file() || name.size() < 10 || name.substr(name.size() - 10) != ".jsonl.zst") continue;
    LineReader r(e.path());
    std::string_view line;
    while (r.next(line)) {
      auto j = nlohmann::json::parse(line);
      docs[{fs::relative(e.path().parent_path(), dir).string(), j["id"].get<std::string>()}] = j["text"];
    }
  }
  return docs;
}

// A small corpus with good English and Korean documents and every kind of bad input.
struct Corpus {
  TempDir tmp;
  fs::path in = tmp.path() / "in";
  std::set<std::string> good_en, good_ko;
  Corpus() {
    // WARC with a damaged member in the middle and a record with a wrong length.
    std::string warc;
    for (int i = 0; i < 6; ++i) {
      std::string id = "w" + std::to_string(i);
      bool ko = i % 2 == 1;
      std::string text = ko ? lines_text("tests/fixtures/data/langid/ko_news.txt", size_t(i) * 6, 6)
                            : lines_text("tests/fixtures/data/langid/en_news.txt", size_t(i) * 6, 6);
      std::string rec = warc_page(id, "https://news.example.com/" + id, text);
      std::string m = gzip_member(rec);
      if (i == 2) {
        m.resize(m.size() / 2);  // truncated member: w2 is lost, the rest survives
      } else {
        (ko ? good_ko : good_en).insert(id);
      }
      warc += m;
    }
    write_bytes(in / "crawl.warc.gz", warc);
    // JSONL with malformed lines and an oversized one.
    std::string jsonl;
    for (int i = 0; i < 4; ++i) {
      bool ko = i >= 2;
      std::string text = ko ? lines_text("tests/fixtures/data/langid/ko_news.txt", 20 + size_t(i) * 5, 5)
                            : lines_text("tests/fixtures/data/langid/en_news.txt", 20 + size_t(i) * 5, 5);
      nlohmann::json j = {{"id", "j" + std::to_string(i)}, {"text", text}};
      jsonl += j.dump() + "\n";
      if (i == 1) jsonl += "{\"id\": \"broken\", \"text\": \n";
      (ko ? good_ko : good_en).insert("j" + std::to_string(i));
    }
    jsonl += "{\"id\": \"short\", \"text\": \"too short to keep\"}\n";
    write_bytes(in / "docs.jsonl", jsonl);
    write_bytes(in / "empty.jsonl", "");
    write_bytes(in / "binary.html", std::string(2000, '\0'));
  }
};

PipelineConfig test_config() {
  PipelineConfig c = PipelineConfig::fineweb_default();
  c.output.batch_size = 3;  // several batches even on a small corpus
  return c;
}

RunOptions opts(const Corpus& c, const fs::path& out) {
  RunOptions o;
  o.inputs = {c.in.string()};
  o.out_dir = out;
  o.progress = false;
  return o;
}

TEST(Pipeline, BadInputIsCountedAndNoGoodDocumentIsLost) {
  Corpus c;
  fs::path out = c.tmp.path() / "out";
  RunReport r = run_pipeline(test_config(), opts(c, out));
  auto docs = outputs(out);
  std::set<std::string> en, ko;
  for (const auto& [k, v] : docs) (k.first == "en" ? en : ko).insert(k.second);
  EXPECT_EQ(en, c.good_en);
  EXPECT_EQ(ko, c.good_ko);
  // Errors: truncated gzip member, malformed JSON line, binary "HTML", each with its file.
  const UnitStats& t = r.total;
  auto get = [](const std::map<std::string, uint64_t>& m, const char* k) {
    auto it = m.find(k);
    return it == m.end() ? uint64_t(0) : it->second;
  };
  SCOPED_TRACE(format_report(r));
  EXPECT_EQ(get(t.error_kinds, "gzip_corrupt"), 1u);
  EXPECT_EQ(get(t.error_kinds, "jsonl_malformed"), 1u);
  EXPECT_EQ(get(t.error_kinds, "binary_content"), 1u);
  for (const auto& e : t.errors) EXPECT_FALSE(e.file.empty());
  // Every document read is either written or dropped with a reason.
  uint64_t dropped = 0, written = 0;
  for (const auto& [k, v] : t.drops) dropped += v;
  for (const auto& [k, v] : t.kept_docs) written += v;
  EXPECT_EQ(t.stages.at("read").docs_out, dropped + written);
  EXPECT_EQ(written, c.good_en.size() + c.good_ko.size());
  EXPECT_EQ(dropped, 1u);  // the "too short to keep" document, by a quality filter
  EXPECT_EQ(t.stages.at("quality").docs_in - t.stages.at("quality").docs_out, 1u);
  // The navigation link never reaches the output; the report files exist.
  for (const auto& [k, v] : docs) EXPECT_EQ(v.find("Home"), std::string::npos);
  auto rep = nlohmann::json::parse(read_file(out / "report.json"));
  EXPECT_EQ(rep["total"]["errors_total"].get<int>(), 3);
  EXPECT_TRUE(fs::exists(out / "report.txt"));
  ASSERT_TRUE(fs::is_directory(out / "dropped_samples"));
  auto sample = fs::directory_iterator(out / "dropped_samples")->path();
  EXPECT_NE(read_file(sample).find("too short to keep"), std::string::npos);
  std::string table = format_report(r);
  EXPECT_NE(table.find("gzip_corrupt"), std::string::npos);
  EXPECT_NE(table.find("crawl.warc.gz@"), std::string::npos);
}

TEST(Pipeline, ResumeSkipsFinishedInputsAndRedoesTheRest) {
  Corpus c;
  fs::path out = c.tmp.path() / "out";
  RunReport first = run_pipeline(test_config(), opts(c, out));
  auto docs_first = outputs(out);
  ASSERT_EQ(first.units_run, 4);
  // Simulate a crash while docs.jsonl was being processed: its marker and outputs are
  // gone, a half-written temp file is left behind.
  std::string unit = unit_name((c.in / "docs.jsonl").string());
  fs::remove(out / ".done" / (unit + ".json"));
  for (const char* lang : {"en", "ko"}) fs::remove(out / lang / (unit + ".jsonl.zst"));
  write_bytes(out / "en" / (unit + ".jsonl.zst.tmp.12345"), "partial");
  auto warc_out = out / "en" / (unit_name((c.in / "crawl.warc.gz").string()) + ".jsonl.zst");
  auto mtime = fs::last_write_time(warc_out);

  RunReport second = run_pipeline(test_config(), opts(c, out));
  EXPECT_EQ(second.units_run, 1);
  EXPECT_EQ(second.units_skipped, 3);
  EXPECT_EQ(fs::last_write_time(warc_out), mtime);  // finished work untouched
  EXPECT_FALSE(fs::exists(out / "en" / (unit + ".jsonl.zst.tmp.12345")));  // the killed run's temp file
  EXPECT_EQ(outputs(out), docs_first);
  EXPECT_EQ(nlohmann::json(second.total)["drops"], nlohmann::json(first.total)["drops"]);
  EXPECT_EQ(second.total.errors_total, first.total.errors_total);
}

TEST(Pipeline, ShardsSplitTheInputsAndMergeToTheWholeRun) {
  Corpus c;
  fs::path whole = c.tmp.path() / "whole", sharded = c.tmp.path() / "sharded";
  RunReport all = run_pipeline(test_config(), opts(c, whole));
  int units = 0;
  for (int i = 0; i < 3; ++i) {
    RunOptions o = opts(c, sharded);
    o.shard_index = i;
    o.shard_count = 3;
    units += run_pipeline(test_config(), o).units_run;
  }
  EXPECT_EQ(units, all.units_run);
  EXPECT_TRUE(fs::exists(sharded / "report.shard-1-of-3.json"));
  RunReport merged = merge_reports(sharded);
  EXPECT_EQ(nlohmann::json(merged.total)["drops"], nlohmann::json(all.total)["drops"]);
  EXPECT_EQ(merged.total.kept_docs, all.total.kept_docs);
  EXPECT_EQ(outputs(sharded), outputs(whole));
}

TEST(Pipeline, SameOutputWithOneOrTwoThreads) {
  Corpus c;
  int before = num_threads();
  set_num_threads(1);
  run_pipeline(test_config(), opts(c, c.tmp.path() / "t1"));
  set_num_threads(2);
  run_pipeline(test_config(), opts(c, c.tmp.path() / "t2"));
  set_num_threads(before);
  for (const char* lang : {"en", "ko"}) {
    std::string f = unit_name((c.in / "crawl.warc.gz").string()) + ".jsonl.zst";
    EXPECT_EQ(read_file(c.tmp.path() / "t1" / lang / f), read_file(c.tmp.path() / "t2" / lang / f));
  }
}

TEST(Pipeline, RealWarcFilesEndToEnd) {
  TempDir tmp;
  RunOptions o;
  o.inputs = {source_path("tests/fixtures/data/warc/*.warc.gz").string()};
  o.out_dir = tmp.path();
  o.progress = false;
  RunReport r = run_pipeline(test_config(), o);
  EXPECT_EQ(r.total.errors_total, 0u);
  EXPECT_GT(r.total.kept_docs["en"], 5u);
  EXPECT_GT(r.total.drops["language_not_kept"], 5u);  // the Chinese and Russian pages
  // WARC response records of the fixtures (warcio's count) all reach the pipeline.
  auto ref = nlohmann::json::parse(read_file(source_path("tests/fixtures/data/warc/records.json")));
  size_t records = 0;
  for (auto it = ref.begin(); it != ref.end(); ++it)
    if (it.key().find(".wet") == std::string::npos) records += it.value().size();
  EXPECT_EQ(r.total.stages["read"].docs_out, records);
}

TEST(Pipeline, UnreadableInputIsCountedAndRetriedNextTime) {
  // /proc/self/mem is a regular file that fails with EIO when read at offset 0, for
  // root too (permission bits would not stop root, and CI runs as root).
  Corpus c;
  fs::rename(c.in / "docs.jsonl", c.tmp.path() / "docs.jsonl.saved");
  fs::create_symlink("/proc/self/mem", c.in / "docs.jsonl");
  fs::path out = c.tmp.path() / "out";
  RunReport r = run_pipeline(test_config(), opts(c, out));
  fs::remove(c.in / "docs.jsonl");
  fs::rename(c.tmp.path() / "docs.jsonl.saved", c.in / "docs.jsonl");
  EXPECT_EQ(r.total.error_kinds["input_unreadable"], 1u);
  EXPECT_EQ(r.units_run, 3);
  RunReport again = run_pipeline(test_config(), opts(c, out));
  EXPECT_EQ(again.units_run, 1);
}

TEST(Pipeline, ConfigRoundTripOverridesAndErrors) {
  PipelineConfig d = PipelineConfig::fineweb_default();
  nlohmann::json j = d;
  PipelineConfig back = j.get<PipelineConfig>();
  EXPECT_EQ(nlohmann::json(back), j);
  EXPECT_TRUE(j["quality"].contains("en"));
  EXPECT_TRUE(j["quality"].contains("ko"));
  // Only what a file lists changes; Korean keeps its own preset.
  TempDir tmp;
  write_bytes(tmp.path() / "p.json",
              R"({"language_id": {"languages": {"ko": 0.5}}, "quality": {"ko": {"fineweb_quality": {"new_line_ratio": 0.25}}},
                  "output": {"batch_size": 7}})");
  PipelineConfig c = load_pipeline_config(tmp.path() / "p.json");
  EXPECT_EQ(c.language_id.languages.size(), 1u);
  EXPECT_DOUBLE_EQ(c.quality_for("ko").fineweb.new_line_ratio, 0.25);
  EXPECT_EQ(nlohmann::json(c.quality_for("ko").gopher_quality), nlohmann::json(QualityFilterConfig::korean().gopher_quality));
  EXPECT_EQ(c.output.batch_size, 7);
  write_bytes(tmp.path() / "bad.json", R"({"extract": {"tables": false}})");
  try {
    load_pipeline_config(tmp.path() / "bad.json");
    FAIL() << "unknown key accepted";
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("tables"), std::string::npos);
    EXPECT_EQ(e.file(), (tmp.path() / "bad.json").string());
  }
  write_bytes(tmp.path() / "broken.json", "{ not json");
  EXPECT_THROW(load_pipeline_config(tmp.path() / "broken.json"), aji::Error);
}

TEST(Pipeline, ShardSpec) {
  int i = 0, n = 0;
  parse_shard("3/8", i, n);
  EXPECT_EQ(i, 3);
  EXPECT_EQ(n, 8);
  for (const char* bad : {"8/8", "-1/4", "1", "a/b", "1/0", "1/2x"}) EXPECT_THROW(parse_shard(bad, i, n), aji::Error) << bad;
  EXPECT_NE(unit_name("/a/part-0.warc.gz"), unit_name("/b/part-0.warc.gz"));
  EXPECT_EQ(unit_name("/a/part-0.warc.gz").substr(0, 7), "part-0-");
}

TEST(DataCli, RunConfigInspectReport) {
  TempDir tmp;
  std::string out;
  ASSERT_EQ(run_command(std::string(AJI_BINARY) + " data config", &out), 0);
  EXPECT_EQ(nlohmann::json::parse(out), nlohmann::json(PipelineConfig::fineweb_default()));
  std::string cmd = std::string(AJI_BINARY) + " --threads 2 data run --no-progress --input " +
                    source_path("tests/fixtures/data/warc/dolma-sample-0000.warc.gz").string() + " --out " +
                    (tmp.path() / "o").string();
  ASSERT_EQ(run_command(cmd, &out), 0);
  EXPECT_NE(out.find("language_id"), std::string::npos);
  EXPECT_NE(out.find("throughput"), std::string::npos);
  std::string en_file;
  for (const auto& e : fs::directory_iterator(tmp.path() / "o" / "en")) en_file = e.path().string();
  ASSERT_EQ(run_command(std::string(AJI_BINARY) + " data inspect " + en_file + " --n 2 --filter-lang en", &out), 0);
  EXPECT_NE(out.find("language: en"), std::string::npos);
  EXPECT_NE(out.find("url:"), std::string::npos);
  ASSERT_EQ(run_command(std::string(AJI_BINARY) + " data report " + (tmp.path() / "o").string(), &out), 0);
  EXPECT_NE(out.find("written, by language"), std::string::npos);
  EXPECT_EQ(run_command(cmd + " --shard 2/2 2>&1", &out), 1);
  EXPECT_NE(out.find("--shard"), std::string::npos);
  EXPECT_EQ(run_command(std::string(AJI_BINARY) + " data run --input /nonexistent/x.warc.gz --out " +
                            (tmp.path() / "p").string() + " 2>&1",
                        &out),
            1);
}

}  // namespace
}  // namespace aji::data
