// Huge single documents through the whole pipeline (Release only: it writes ~150 MB).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "aji/base/rng.h"
#include "aji/data/pipeline.h"
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

}  // namespace
}  // namespace aji::data
