// Huge single documents through the whole pipeline (Release only: it writes ~150 MB).
#include <gtest/gtest.h>

#include <fcntl.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "aji/base/io.h"
#include "aji/base/rng.h"
#include "aji/data/pipeline.h"
#include "data/kill_util.h"
#include "test_util.h"

namespace aji::data {
namespace {

namespace fs = std::filesystem;
using aji::test::TempDir;

std::string prose(size_t bytes, uint64_t seed) {
  static const char* const words[] = {"the", "river", "of", "data", "runs", "through", "a", "quiet", "valley", "and",
                                      "every", "stone", "has", "its", "own", "story", "to", "tell", "with", "light"};
  aji::Rng rng(seed);
  std::string s;
  s.reserve(bytes + 64);
  while (s.size() < bytes) {
    int n = 8 + static_cast<int>(rng.next_u64() % 12);
    for (int i = 0; i < n; ++i) {
      s += words[rng.next_u64() % 20];
      s += i + 1 < n ? " " : ". ";
    }
    s += std::to_string(rng.next_u64() % 100000);
    s += rng.next_u64() % 4 == 0 ? ".\n" : ". ";
  }
  return s;
}

TEST(PipelineHuge, FiftyMegabyteDocumentAndOversizedOnes) {
  TempDir tmp;
  fs::path in = tmp.path() / "in";
  fs::create_directories(in);
  {
    std::ofstream f(in / "huge.jsonl");
    f << nlohmann::json{{"id", "small-1"}, {"text", prose(3000, 1)}}.dump() << "\n";
    f << nlohmann::json{{"id", "huge-50mb"}, {"text", prose(50u << 20, 2)}}.dump() << "\n";
    f << nlohmann::json{{"id", "too-big-100mb"}, {"text", prose(100u << 20, 3)}}.dump() << "\n";
    f << nlohmann::json{{"id", "small-2"}, {"text", prose(3000, 4)}}.dump() << "\n";
  }
  RunOptions o;
  o.inputs = {in.string()};
  o.out_dir = tmp.path() / "out";
  o.progress = false;
  PipelineConfig c = PipelineConfig::fineweb_default();
  RunReport r = run_pipeline(c, o);
  // The 100 MB line is over max_document_bytes (64 MB): counted, streamed past.
  EXPECT_EQ(r.total.error_kinds["document_too_large"], 1u);
  ASSERT_EQ(r.total.errors.size(), 1u);
  EXPECT_EQ(r.total.errors[0].offset, 3u);
  // The others went through every stage: kept or dropped with a reason, never lost.
  EXPECT_EQ(r.total.stages["read"].docs_out, 3u);
  uint64_t accounted = 0;
  for (auto& [k, v] : r.total.drops) accounted += v;
  for (auto& [k, v] : r.total.kept_docs) accounted += v;
  EXPECT_EQ(accounted, 3u);
  EXPECT_GE(r.total.stages["extract"].docs_out, 3u);
}

// A real interruption: `aji data run` is killed with SIGKILL midway, then rerun; the
// rerun skips the finished input files and the final output equals an uninterrupted run.
// The kill is deterministic: the run stops itself in the 6th input file
// (AJI_TEST_PAUSE_AT=data_doc:N) and is killed there, however fast the machine.
TEST(PipelineHuge, KilledRunResumesWithoutRedoingFinishedFiles) {
  TempDir tmp;
  fs::path in = tmp.path() / "in";
  fs::create_directories(in);
  constexpr int kFiles = 24, kDocs = 60;
  for (int f = 0; f < kFiles; ++f) {
    std::ofstream out(in / ("part-" + std::to_string(100 + f) + ".jsonl"));
    for (int d = 0; d < kDocs; ++d)
      out << nlohmann::json{{"id", std::to_string(f) + "-" + std::to_string(d)}, {"text", prose(4000, uint64_t(f) * 1000 + d)}}.dump() << "\n";
  }
  auto run = [&](const fs::path& out_dir) {
    return std::vector<std::string>{AJI_BINARY, "--threads", "1", "data", "run", "--no-progress", "--input", in.string(),
                                    "--out", out_dir.string()};
  };
  fs::path killed = tmp.path() / "killed", clean = tmp.path() / "clean";
  const fs::path log = tmp.path() / "log.txt";
  const auto k = aji::test::run_and_kill_at(run(killed), "data_doc:" + std::to_string(5 * kDocs + kDocs / 2), log);
  ASSERT_TRUE(k.killed) << aji::read_file(log);
  size_t finished_before = 0;
  for (const auto& e : fs::directory_iterator(killed / ".done")) finished_before += e.path().extension() == ".json";
  ASSERT_EQ(finished_before, 5u);

  ASSERT_EQ(aji::test::run_and_kill_at(run(killed), "", log).exit_code, 0) << aji::read_file(log);
  auto report = nlohmann::json::parse(aji::read_file(killed / "report.json"));
  EXPECT_EQ(report["units_skipped"].get<size_t>(), finished_before);
  EXPECT_EQ(report["units_run"].get<size_t>(), kFiles - finished_before);
  ASSERT_EQ(aji::test::run_and_kill_at(run(clean), "", log).exit_code, 0) << aji::read_file(log);
  size_t compared = 0;
  for (const char* lang : {"en"}) {
    for (const auto& e : fs::directory_iterator(clean / lang)) {
      fs::path other = killed / lang / e.path().filename();
      ASSERT_TRUE(fs::exists(other)) << other;
      EXPECT_EQ(aji::read_file(e.path()), aji::read_file(other)) << other;
      ++compared;
    }
  }
  EXPECT_EQ(compared, size_t(kFiles));
  EXPECT_TRUE(aji::test::temp_files(killed).empty());
  auto a = nlohmann::json::parse(aji::read_file(clean / "report.json"));
  EXPECT_EQ(report["total"]["kept_docs"], a["total"]["kept_docs"]);
  EXPECT_EQ(report["total"]["drops"], a["total"]["drops"]);
}

}  // namespace
}  // namespace aji::data
