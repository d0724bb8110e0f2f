// Cross-page repeated-line removal in `aji data run` (extract.repeated_lines): lines that
// a host's pages share (a newsletter blurb, a copyright line) are removed from that host's
// pages of one input file, after extraction and before the filters.
//
// Reference: the same run with the removal off, with the fixture's shared lines taken out of
// each page of the repeating host by plain string editing here.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/threads.h"
#include "aji/data/pipeline.h"
#include "kill_util.h"
#include "test_util.h"

namespace aji::data {
namespace {

namespace fs = std::filesystem;
using aji::test::source_path;
using aji::test::TempDir;

void write_bytes(const fs::path& p, const std::string& s) {
  fs::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary);
  f.write(s.data(), static_cast<std::streamsize>(s.size()));
}

std::vector<std::string> news_lines() {
  LineReader r(source_path("tests/fixtures/data/langid/en_news.txt"));
  std::vector<std::string> lines;
  std::string_view line;
  while (r.next(line)) lines.emplace_back(line);
  return lines;
}

// One WARC response record of an HTML page whose <main> holds these paragraphs.
std::string warc_record(const std::string& id, const std::string& url, const std::vector<std::string>& paragraphs) {
  std::string body = "<html><head><title>" + id + "</title></head><body><main>";
  for (const auto& p : paragraphs) body += "<p>" + p + "</p>\n";
  body += "</main></body></html>";
  std::string http = "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + body;
  return "WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:" + id + ">\r\nWARC-Target-URI: " + url +
         "\r\nContent-Length: " + std::to_string(http.size()) + "\r\n\r\n" + http + "\r\n\r\n";
}

// Lines the pages of daily.example.com share.
const std::string kFooter = "Subscribe to the Example Daily newsletter for more stories like this one.";
const std::string kCopyright = "Copyright 2026 Example Daily, all rights reserved.";
// On 2 of its 9 pages only: under half of them, so it stays.
const std::string kCorrection = "Correction: an earlier version of this story misspelled a name.";

// A WARC file: 8 news pages of daily.example.com (5 unique news lines each, plus the shared
// footer and copyright), one page of that host with nothing but the shared lines, and 4 pages
// of other.example.org that share the same footer (fewer than min_pages: left alone).
struct Crawl {
  std::string warc;
  std::set<std::string> daily_ids, other_ids;
  int daily_pages = 0;
  explicit Crawl(const std::string& prefix, size_t first_line = 0) {
    const auto lines = news_lines();
    for (int i = 0; i < 8; ++i) {
      std::vector<std::string> p;
      if (i % 2 == 0) p.push_back(kFooter);  // at the top of some pages, the end of others
      for (size_t k = 0; k < 5; ++k) p.push_back(lines[(first_line + size_t(i) * 5 + k) % lines.size()]);
      if (i == 1 || i == 4) p.push_back(kCorrection);
      if (i % 2 == 1) p.push_back(kFooter);
      p.push_back(kCopyright);
      const std::string id = prefix + "daily" + std::to_string(i);
      warc += warc_record(id, "https://daily.example.com/news/" + std::to_string(i), p);
      daily_ids.insert(id);
      ++daily_pages;
    }
    warc += warc_record(prefix + "chrome", "https://daily.example.com/about", {kFooter, kCopyright});
    ++daily_pages;
    for (int i = 0; i < 4; ++i) {
      std::vector<std::string> p;
      for (size_t k = 0; k < 6; ++k) p.push_back(lines[(first_line + 3 + size_t(i) * 6 + k) % lines.size()]);
      p.push_back(kFooter);
      const std::string id = prefix + "other" + std::to_string(i);
      warc += warc_record(id, "http://other.example.org/p" + std::to_string(i), p);
      other_ids.insert(id);
    }
  }
};

// id -> text of every kept document under dir.
std::map<std::string, std::string> outputs(const fs::path& dir) {
  std::map<std::string, std::string> docs;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (!e.is_regular_file() || name.size() < 10 || name.substr(name.size() - 10) != ".jsonl.zst") continue;
    LineReader r(e.path());
    std::string_view line;
    while (r.next(line)) {
      auto j = nlohmann::json::parse(line);
      docs[j["id"].get<std::string>()] = j["text"].get<std::string>();
    }
  }
  return docs;
}

// text without the lines equal to any of `remove`.
std::string without_lines(const std::string& text, const std::vector<std::string>& remove) {
  std::string out;
  size_t p = 0;
  while (p <= text.size()) {
    size_t e = text.find('\n', p);
    if (e == std::string::npos) e = text.size();
    std::string line = text.substr(p, e - p);
    if (std::find(remove.begin(), remove.end(), line) == remove.end()) {
      if (!out.empty()) out += '\n';
      out += line;
    }
    p = e + 1;
  }
  return out;
}

RunOptions options(const fs::path& in, const fs::path& out) {
  RunOptions o;
  o.inputs = {in.string()};
  o.out_dir = out;
  o.progress = false;
  o.notes = false;
  return o;
}

PipelineConfig config(bool enabled) {
  PipelineConfig c = PipelineConfig::fineweb_default();
  c.output.batch_size = 4;  // several batches in both passes
  c.repeated_lines.enabled = enabled;
  return c;
}

TEST(RepeatedLines, SharedLinesOfAHostAreRemovedElsewhereNothingChanges) {
  TempDir tmp;
  Crawl crawl("a");
  const fs::path in = tmp.path() / "in";
  write_bytes(in / "crawl.warc", crawl.warc);
  const RunReport off = run_pipeline(config(false), options(in, tmp.path() / "off"));
  const RunReport on = run_pipeline(config(true), options(in, tmp.path() / "on"));
  const auto ref = outputs(tmp.path() / "off"), got = outputs(tmp.path() / "on");

  // Without removal the shared lines are in the output (the extractor keeps them).
  ASSERT_TRUE(ref.count("adaily0"));
  EXPECT_NE(ref.at("adaily0").find(kFooter), std::string::npos);
  size_t daily_kept = 0;
  for (const auto& [id, text] : got) {
    ASSERT_TRUE(ref.count(id)) << id;
    if (crawl.daily_ids.count(id)) {
      ++daily_kept;
      EXPECT_EQ(text.find(kFooter), std::string::npos) << id;
      EXPECT_EQ(text.find(kCopyright), std::string::npos) << id;
      EXPECT_EQ(text, without_lines(ref.at(id), {kFooter, kCopyright})) << id;  // unique content (and kCorrection) stays
    } else {
      ASSERT_TRUE(crawl.other_ids.count(id)) << id;
      EXPECT_EQ(text, ref.at(id)) << id;  // another host: untouched, its footer included
      EXPECT_NE(text.find(kFooter), std::string::npos) << id;
    }
  }
  EXPECT_GE(daily_kept, 6u);
  for (const auto& [id, text] : ref) {
    if (crawl.daily_ids.count(id) || crawl.other_ids.count(id)) {
      EXPECT_TRUE(got.count(id)) << id;
    }
  }
  EXPECT_NE(got.at("adaily1").find(kCorrection), std::string::npos);

  // Counted: footer + copyright on each of the host's pages; the chrome-only page is empty now.
  EXPECT_EQ(on.total.repeated_lines_removed, 2u * static_cast<uint64_t>(crawl.daily_pages));
  EXPECT_EQ(on.total.repeated_lines_docs, static_cast<uint64_t>(crawl.daily_pages));
  EXPECT_EQ(off.total.repeated_lines_removed, 0u);
  EXPECT_EQ(on.total.drops.at("extract_too_short"), 1u);
  EXPECT_EQ(nlohmann::json(on.total)["samples"]["extract_too_short"][0]["id"], "achrome");
  // In the done-marker and the report too.
  auto marker = nlohmann::json::parse(read_file(tmp.path() / "on" / ".done" / (unit_name((in / "crawl.warc").string()) + ".json")));
  EXPECT_EQ(marker["repeated_lines_removed"], on.total.repeated_lines_removed);
  EXPECT_NE(read_file(tmp.path() / "on" / "report.txt").find("repeated site lines removed: 18 lines from 9 documents"),
            std::string::npos);
  // Bytes are counted at the extract stage: what it removed is gone before language ID.
  EXPECT_LT(on.total.stages.at("extract").bytes_out, off.total.stages.at("extract").bytes_out);
}

// Pages past the cache are extracted again in pass 2: same output. One and two threads: same output.
TEST(RepeatedLines, SameOutputWithoutCacheAndWithOneOrTwoThreads) {
  TempDir tmp;
  const fs::path in = tmp.path() / "in";
  write_bytes(in / "crawl.warc", Crawl("a").warc);
  const int before = num_threads();
  set_num_threads(1);
  run_pipeline(config(true), options(in, tmp.path() / "t1"));
  set_num_threads(2);
  run_pipeline(config(true), options(in, tmp.path() / "t2"));
  RunOptions small = options(in, tmp.path() / "nocache");
  small.extract_cache_bytes = 3000;  // a few pages fit, the rest are extracted twice
  const RunReport r = run_pipeline(config(true), small);
  set_num_threads(before);
  const std::string f = unit_name((in / "crawl.warc").string()) + ".jsonl.zst";
  const std::string t1 = read_file(tmp.path() / "t1" / "en" / f);
  EXPECT_EQ(t1, read_file(tmp.path() / "t2" / "en" / f));
  EXPECT_EQ(t1, read_file(tmp.path() / "nocache" / "en" / f));
  EXPECT_EQ(r.total.repeated_lines_removed, 18u);
}

// Two passes over a file, each byte counted once: the progress line ends at 100%, not 200%.
TEST(RepeatedLines, ProgressCountsEachByteOnce) {
  TempDir tmp;
  const fs::path in = tmp.path() / "in";
  write_bytes(in / "a.warc", Crawl("a").warc);
  write_bytes(in / "b.warc", Crawl("b", 7).warc);
  RunOptions o = options(in, tmp.path() / "out");
  o.progress = true;
  testing::internal::CaptureStderr();
  run_pipeline(config(true), o);
  const std::string err = testing::internal::GetCapturedStderr();
  std::vector<double> pct;
  for (size_t p = err.find('('); p != std::string::npos; p = err.find('(', p + 1)) {
    size_t e = err.find("%)", p);
    if (e != std::string::npos && e - p < 8) pct.push_back(std::stod(err.substr(p + 1, e - p - 1)));
  }
  ASSERT_FALSE(pct.empty()) << err;
  EXPECT_DOUBLE_EQ(*std::max_element(pct.begin(), pct.end()), 100.0) << err;
  EXPECT_DOUBLE_EQ(pct.back(), 100.0) << err;
}

// JSONL inputs have no HTML pages: no first pass, nothing removed, even when lines repeat.
TEST(RepeatedLines, JsonlIsLeftAlone) {
  TempDir tmp;
  const fs::path in = tmp.path() / "in";
  const auto lines = news_lines();
  std::string jsonl;
  for (int i = 0; i < 8; ++i) {
    std::string text;
    for (size_t k = 0; k < 5; ++k) text += lines[size_t(i) * 5 + k] + "\n";
    text += kFooter + "\n";
    const std::string n = std::to_string(i);
    nlohmann::json doc = {{"text", text}};
    doc["id"] = std::string("j").append(n);
    doc["url"] = std::string("https://daily.example.com/").append(n);
    jsonl += doc.dump() + "\n";
  }
  write_bytes(in / "docs.jsonl", jsonl);
  const RunReport r = run_pipeline(config(true), options(in, tmp.path() / "out"));
  EXPECT_EQ(r.total.repeated_lines_removed, 0u);
  const auto docs = outputs(tmp.path() / "out");
  ASSERT_FALSE(docs.empty());
  for (const auto& [id, text] : docs) EXPECT_NE(text.find(kFooter), std::string::npos) << id;
}

TEST(RepeatedLines, ConfigKeysRoundTripAndChangeTheResumeKey) {
  nlohmann::json j = PipelineConfig::fineweb_default();
  ASSERT_TRUE(j["extract"].contains("repeated_lines"));
  EXPECT_EQ(j["extract"]["repeated_lines"]["enabled"], true);
  EXPECT_EQ(j["extract"]["repeated_lines"]["min_pages"], 5);
  EXPECT_EQ(j["extract"]["repeated_lines"]["min_fraction"], 0.5);
  PipelineConfig c;
  from_json(nlohmann::json::parse(R"({"extract": {"min_text_bytes": 10,
      "repeated_lines": {"enabled": false, "min_pages": 3, "min_fraction": 0.25}}})"),
            c);
  EXPECT_FALSE(c.repeated_lines.enabled);
  EXPECT_EQ(c.repeated_lines.filter.min_pages, 3);
  EXPECT_EQ(c.repeated_lines.filter.min_fraction, 0.25);
  EXPECT_EQ(c.extract.min_text_bytes, 10);
  nlohmann::json back = c;
  PipelineConfig c2;
  from_json(back, c2);
  EXPECT_EQ(nlohmann::json(c2), back);
  for (const char* bad : {R"({"extract": {"repeated_lines": {"min_page": 3}}})",
                          R"({"extract": {"repeated_lines": {"min_pages": 0}}})",
                          R"({"extract": {"repeated_lines": {"min_fraction": 1.5}}})"})
    EXPECT_THROW(from_json(nlohmann::json::parse(bad), c), Error) << bad;

  // A finished file is redone when the setting changes.
  TempDir tmp;
  const fs::path in = tmp.path() / "in", out = tmp.path() / "out";
  write_bytes(in / "crawl.warc", Crawl("a").warc);
  ASSERT_EQ(run_pipeline(config(true), options(in, out)).units_run, 1);
  EXPECT_EQ(run_pipeline(config(true), options(in, out)).units_run, 0);
  PipelineConfig three = config(true);
  three.repeated_lines.filter.min_pages = 3;
  EXPECT_EQ(run_pipeline(three, options(in, out)).units_run, 1);
}

// `aji data run` killed in the middle of a file (in its second pass), then run again: the
// same files as one uninterrupted run.
TEST(RepeatedLines, KillAndResumeGiveTheSameOutput) {
  TempDir tmp;
  const fs::path in = tmp.path() / "in";
  write_bytes(in / "a.warc", Crawl("a").warc);
  write_bytes(in / "b.warc", Crawl("b", 7).warc);
  const std::string aji = AJI_BINARY;
  auto args = [&](const fs::path& out) {
    return std::vector<std::string>{aji, "data", "run", "--no-progress", "--input", in.string(), "--out", out.string()};
  };
  const fs::path log = tmp.path() / "log.txt";
  auto whole = aji::test::run_and_kill_at(args(tmp.path() / "whole"), "", log);
  ASSERT_EQ(whole.exit_code, 0) << read_file(log);
  // 13 documents per file: the 20th is in the second file.
  auto killed = aji::test::run_and_kill_at(args(tmp.path() / "resumed"), "data_doc:20", log);
  ASSERT_TRUE(killed.killed) << read_file(log);
  std::map<std::string, std::string> first_file;  // what the killed run finished: a.warc only
  for (const auto& [id, text] : outputs(tmp.path() / "whole"))
    if (id[0] == 'a') first_file[id] = text;
  ASSERT_FALSE(first_file.empty());
  ASSERT_EQ(outputs(tmp.path() / "resumed"), first_file);
  auto again = aji::test::run_and_kill_at(args(tmp.path() / "resumed"), "", log);
  ASSERT_EQ(again.exit_code, 0) << read_file(log);
  EXPECT_EQ(outputs(tmp.path() / "resumed"), outputs(tmp.path() / "whole"));
  for (const char* unit : {"a.warc", "b.warc"}) {
    const std::string f = unit_name((in / unit).string()) + ".jsonl.zst";
    EXPECT_EQ(read_file(tmp.path() / "resumed" / "en" / f), read_file(tmp.path() / "whole" / "en" / f)) << unit;
  }
  auto report = nlohmann::json::parse(read_file(tmp.path() / "resumed" / "report.json"));
  EXPECT_EQ(report["total"]["repeated_lines_removed"], 36);
}

}  // namespace
}  // namespace aji::data
