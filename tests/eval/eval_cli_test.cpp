// `aji eval run|compare|tasks` end to end on the tiny Hugging Face fixture model.
#include <gtest/gtest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "aji/base/io.h"
#include "aji/train/checkpoint.h"
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

// `aji eval compare --steps RUN_DIR`: every checkpoint of a (tiny, hand-made) run evaluated
// and drawn against its step; the step whose weights are the fixture's scores what
// `aji eval run` gives the fixture itself.
TEST(EvalCli, CompareStepsEvaluatesEveryCheckpointAndPlotsScoreAgainstStep) {
  namespace fs = std::filesystem;
  aji::test::TempDir tmp;
  const std::string aji = AJI_BINARY;
  const fs::path fixture = aji::test::source_path("tests/fixtures/eval/hf-gpt2");
  const std::string data = aji::test::source_path("data/eval").string();
  auto m = aji::train::load_model(fixture);
  const fs::path run = tmp.path() / "run";
  aji::train::CheckpointContents c;
  c.model = &m;
  c.copy_files = {fixture / "tokenizer.json"};
  std::vector<float> orig(m.params(), m.params() + m.num_params());
  for (int64_t step : {100, 200, 300}) {
    // step 200 holds the fixture's weights; the others are perturbed copies of them
    for (size_t i = 0; i < orig.size(); ++i)
      m.params()[i] = step == 200 ? orig[i] : orig[i] * (1.0f + 0.5f * float((i * 2654435761u + step) % 7) / 7.0f);
    aji::train::save_checkpoint(run, step, c, 0);
  }
  const std::string out_dir = (tmp.path() / "steps").string();
  std::string out;
  ASSERT_EQ(aji::test::run_command(aji + " --threads 1 -q eval compare --steps " + run.string() + " --data-dir " + data +
                                       " --tasks piqa copa --limit 12 --no-bos --out " + out_dir + " 2>&1",
                                   &out),
            0)
      << out;
  for (const char* step : {"| 100 |", "| 200 |", "| 300 |"}) EXPECT_NE(out.find(step), std::string::npos) << out;
  EXPECT_NE(out.find("piqa 0-shot acc_norm"), std::string::npos) << out;
  const std::string svg = aji::read_file(fs::path(out_dir) / "steps.svg");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("<polyline"), std::string::npos);
  EXPECT_NE(svg.find("step 300"), std::string::npos);
  EXPECT_NE(aji::read_file(fs::path(out_dir) / "steps.md").find("steps.svg"), std::string::npos);
  // step 200 against `aji eval run` on the fixture itself, item for item
  const std::string direct = (tmp.path() / "direct").string();
  ASSERT_EQ(aji::test::run_command(aji + " --threads 1 -q eval run --model " + fixture.string() + " --data-dir " + data +
                                       " --tasks piqa copa --limit 12 --no-bos --out " + direct + " 2>&1",
                                   &out),
            0)
      << out;
  const auto a = nlohmann::json::parse(aji::read_file(fs::path(out_dir) / "ckpt-200" / "results.json"));
  const auto b = nlohmann::json::parse(aji::read_file(fs::path(direct) / "results.json"));
  ASSERT_EQ(a["results"].size(), 2u);
  for (size_t t = 0; t < 2; ++t) {
    EXPECT_EQ(a["results"][t]["metrics"]["acc"]["value"], b["results"][t]["metrics"]["acc"]["value"]);
    const auto& ia = a["results"][t]["items"];
    const auto& ib = b["results"][t]["items"];
    ASSERT_EQ(ia.size(), ib.size());
    for (size_t i = 0; i < ia.size(); ++i)
      for (size_t k = 0; k < ia[i]["logliks"].size(); ++k)
        EXPECT_NEAR(ia[i]["logliks"][k].get<double>(), ib[i]["logliks"][k].get<double>(), 1e-9);
  }
  // --reuse reads the per-checkpoint results back without evaluating (no --tasks needed)
  ASSERT_EQ(aji::test::run_command(aji + " -q eval compare --steps " + run.string() + " --reuse --out " + out_dir +
                                       " 2>&1",
                                   &out),
            0)
      << out;
  EXPECT_NE(out.find("| 300 |"), std::string::npos) << out;
  // a directory without checkpoints is a clear error
  EXPECT_NE(aji::test::run_command(aji + " -q eval compare --steps " + tmp.path().string() + " --tasks copa --out " +
                                       out_dir + " 2>&1",
                                   &out),
            0);
  EXPECT_NE(out.find("no checkpoints"), std::string::npos) << out;
}
