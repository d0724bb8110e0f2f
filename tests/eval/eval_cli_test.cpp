// `aji eval run|compare|tasks` end to end on the tiny Hugging Face fixture model.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "aji/base/io.h"
#include "test_util.h"

TEST(EvalCli, RunWritesResultsAndReportAndCompareReadsThemBack) {
  aji::test::TempDir tmp;
  const std::string aji = AJI_BINARY;
  const std::string model = aji::test::source_path("tests/fixtures/eval/hf-gpt2").string();
  const std::string data = aji::test::source_path("data/eval").string();
  std::string out;
  ASSERT_EQ(aji::test::run_command(aji + " eval tasks --data-dir " + data, &out), 0);
  EXPECT_NE(out.find("klue_nli"), std::string::npos) << out;
  const std::string run_dir = (tmp.path() / "base").string();
  ASSERT_EQ(aji::test::run_command(aji + " --threads 1 -q eval run --model " + model + " --data-dir " + data +
                                       " --tasks copa ko_analogy --shots 0 2 --limit 5 --out " + run_dir + " 2>&1",
                                   &out),
            0)
      << out;
  EXPECT_NE(out.find("copa             acc_norm                   2"), std::string::npos) << out;
  auto j = nlohmann::json::parse(aji::read_file(tmp.path() / "base" / "results.json"));
  ASSERT_EQ(j["results"].size(), 4u);
  EXPECT_EQ(j["results"][1]["shots"], 2);
  EXPECT_EQ(j["results"][0]["n"].get<int>() + j["results"][0]["too_long"].get<int>(), 5);
  EXPECT_NE(aji::read_file(tmp.path() / "base" / "report.md").find("## Evaluation"), std::string::npos);
  ASSERT_EQ(aji::test::run_command(aji + " -q eval compare " + run_dir + " " + run_dir + " --out " +
                                       (tmp.path() / "cmp").string() + " 2>&1",
                                   &out),
            0)
      << out;
  EXPECT_TRUE(std::filesystem::exists(tmp.path() / "cmp" / "compare.svg"));
  // An unknown task fails before the model loads, naming the known ones.
  EXPECT_NE(aji::test::run_command(aji + " eval run --model " + model + " --tasks arc_eazy 2>&1", &out), 0);
  EXPECT_NE(out.find("known tasks: arc_easy"), std::string::npos) << out;
}
