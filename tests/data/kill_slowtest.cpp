// SIGKILL at chosen moments (AJI_TEST_PAUSE_AT: the process stops itself at a named point
// and is killed there, so the kill lands on every machine, however fast):
//  - `aji data run` is killed again and again at random documents, inside atomic writes
//    (temp file complete, not yet renamed) and between an input's outputs and its
//    done-marker, each time restarted on the same --out (its resume); the final output
//    equals an uninterrupted run's, bit for bit for the kept-document files.
//  - `aji tokenizer train` has no resume: a killed run leaves no output file (an older one
//    stays intact), and a rerun writes exactly the uninterrupted run's file.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "aji/base/io.h"
#include "aji/base/rng.h"
#include "data/kill_util.h"
#include "test_util.h"

namespace aji::test {
namespace {

namespace fs = std::filesystem;

std::string prose(size_t bytes, uint64_t seed) {
  static const char* const words[] = {"the", "river", "of", "data", "runs", "through", "a", "quiet", "valley", "and",
                                      "every", "stone", "has", "its", "own", "story", "to", "tell", "with", "light"};
  aji::Rng rng(seed);
  std::string s;
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

std::set<std::string> relative_files(const fs::path& dir) {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec))
    if (e.is_regular_file()) out.insert(fs::relative(e.path(), dir).string());
  return out;
}

size_t markers(const fs::path& out) {
  size_t n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(out / ".done", ec)) n += e.path().extension() == ".json";
  return n;
}

TEST(KillDataRun, KilledAtRandomPointsAndResumedEqualsAnUninterruptedRun) {
  TempDir tmp;
  const fs::path in = tmp.path() / "in";
  fs::create_directories(in);
  constexpr int kFiles = 6, kDocs = 30;
  for (int f = 0; f < kFiles; ++f) {
    std::ofstream o(in / ("part-" + std::to_string(f) + ".jsonl"));
    for (int d = 0; d < kDocs; ++d) {
      const bool rejected = d % 10 == 9;  // too short: dropped, shows up in dropped_samples/
      o << nlohmann::json{{"id", std::to_string(f) + "-" + std::to_string(d)},
                          {"text", rejected ? std::string("short text") : prose(3000, uint64_t(f) * 1000 + d)}}
                  .dump()
        << "\n";
    }
  }
  const fs::path log = tmp.path() / "log.txt";
  auto cmd = [&](const fs::path& out) {
    return std::vector<std::string>{AJI_BINARY, "--threads", "1", "data", "run", "--no-progress",
                                    "--input", in.string(), "--out", out.string()};
  };
  const fs::path clean = tmp.path() / "clean", killed = tmp.path() / "killed";
  ASSERT_EQ(run_and_kill_at(cmd(clean), "", log).exit_code, 0) << read_file(log);
  const auto clean_files = relative_files(clean / "en");
  ASSERT_EQ(clean_files.size(), size_t(kFiles));

  aji::Rng rng(20261204);
  int kills = 0, temp_seen = 0;
  for (int round = 0; round < 12; ++round) {
    const size_t left = kFiles - markers(killed);
    if (left == 0) break;
    std::string pause;
    switch (round % 3) {
      case 0: pause = "data_doc:" + std::to_string(1 + rng.next_u64() % (left * kDocs)); break;
      case 1: pause = "atomic_commit:" + std::to_string(1 + rng.next_u64() % (2 * left)); break;
      default: pause = "data_unit_outputs:" + std::to_string(1 + rng.next_u64() % left); break;
    }
    SCOPED_TRACE("round " + std::to_string(round) + ", killed at " + pause);
    KillOutcome k = run_and_kill_at(cmd(killed), pause, log);
    ASSERT_TRUE(k.killed) << "exit " << k.exit_code << "\n" << read_file(log);
    ++kills;
    std::printf("killed `aji data run` at %s (%zu of %d input files done)\n", pause.c_str(), markers(killed), kFiles);
    if (pause.rfind("atomic_commit", 0) == 0) {
      // Killed inside a write: the temp file is there, the final name is not torn.
      bool found = false;
      for (const auto& t : temp_files(killed)) found |= t.string().find(".tmp." + std::to_string(k.pid)) != std::string::npos;
      EXPECT_TRUE(found);
      temp_seen += found;
    }
    // Whatever is in place is whole and right: every kept file equals the clean one, every
    // done-marker parses and its outputs are there.
    for (const auto& rel : relative_files(killed / "en")) {
      if (rel.find(".tmp.") != std::string::npos) continue;
      ASSERT_TRUE(clean_files.count(rel)) << rel;
      EXPECT_EQ(read_file(killed / "en" / rel), read_file(clean / "en" / rel)) << rel;
    }
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(killed / ".done", ec)) {
      if (e.path().extension() != ".json") continue;
      auto j = nlohmann::json::parse(read_file(e.path()), nullptr, false);
      ASSERT_FALSE(j.is_discarded()) << e.path();
      EXPECT_TRUE(fs::exists(killed / "en" / (e.path().stem().string() + ".jsonl.zst"))) << e.path();
    }
  }
  EXPECT_GE(kills, 4);
  EXPECT_GE(temp_seen, 1);

  // The last restart runs to the end.
  ASSERT_EQ(run_and_kill_at(cmd(killed), "", log).exit_code, 0) << read_file(log);
  EXPECT_EQ(relative_files(killed / "en"), clean_files);
  for (const auto& rel : clean_files) EXPECT_EQ(read_file(killed / "en" / rel), read_file(clean / "en" / rel)) << rel;
  EXPECT_EQ(markers(killed), size_t(kFiles));
  EXPECT_TRUE(temp_files(killed).empty());
  auto a = nlohmann::json::parse(read_file(clean / "report.json"));
  auto b = nlohmann::json::parse(read_file(killed / "report.json"));
  for (const char* key : {"kept_docs", "kept_bytes", "drops", "stages", "errors_total"})
    EXPECT_EQ(a["total"][key], b["total"][key]) << key;
}

TEST(KillTokenizerTrain, KilledRunLeavesNoOutputAndARerunEqualsAnUninterruptedRun) {
  TempDir tmp;
  const fs::path text = tmp.path() / "corpus.txt";
  {
    std::ofstream o(text);
    o << prose(400000, 7);
  }
  const fs::path log = tmp.path() / "log.txt";
  auto cmd = [&](const fs::path& out) {
    return std::vector<std::string>{AJI_BINARY, "--threads", "2", "tokenizer", "train", "--vocab-size", "409",
                                    "--input", text.string(), "--out", out.string()};
  };
  const fs::path ref = tmp.path() / "ref.json";
  ASSERT_EQ(run_and_kill_at(cmd(ref), "", log).exit_code, 0) << read_file(log);
  const std::string ref_bytes = read_file(ref);
  {
    const fs::path again = tmp.path() / "again.json";
    ASSERT_EQ(run_and_kill_at(cmd(again), "", log).exit_code, 0);
    ASSERT_EQ(read_file(again), ref_bytes);  // deterministic, else "identical" means nothing
  }
  aji::Rng rng(7);
  std::vector<std::string> points = {"tokenizer_count:1", "atomic_commit:1"};
  for (int i = 0; i < 3; ++i) points.push_back("tokenizer_merge:" + std::to_string(1 + rng.next_u64() % 150));
  const fs::path out = tmp.path() / "tok.json";
  for (const auto& pause : points) {
    SCOPED_TRACE("killed at " + pause);
    KillOutcome k = run_and_kill_at(cmd(out), pause, log);
    ASSERT_TRUE(k.killed) << "exit " << k.exit_code << "\n" << read_file(log);
    EXPECT_FALSE(fs::exists(out));
    if (pause.rfind("atomic_commit", 0) == 0) {
      EXPECT_TRUE(fs::exists(out.string() + ".tmp." + std::to_string(k.pid)));
    }
  }
  // Killed while replacing an older tokenizer: the old file stays as it was.
  const std::string old = "{\"an older tokenizer\": true}\n";
  {
    std::ofstream o(out, std::ios::binary);
    o << old;
  }
  ASSERT_TRUE(run_and_kill_at(cmd(out), "atomic_commit:1", log).killed);
  EXPECT_EQ(read_file(out), old);
  // The rerun writes exactly the uninterrupted run's file.
  ASSERT_EQ(run_and_kill_at(cmd(out), "", log).exit_code, 0) << read_file(log);
  EXPECT_EQ(read_file(out), ref_bytes);
}

}  // namespace
}  // namespace aji::test
