// `make demo` end to end at its quick scale (DEMO_SCALE=quick: every stage, a few steps
// each): the script runs from a clean output folder with the freshly built aji, every stage
// leaves its artifact, and the report card (Markdown and HTML) has every section, with the
// loss and reward curves and the evaluation plot inlined in the HTML page; the numbers of the
// RL and evaluation sections are the ones in the runs' own files, and in range.
#include <gtest/gtest.h>

#include <cmath>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "test_util.h"

namespace fs = std::filesystem;

namespace {
std::string read_all(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}
nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}
std::string fixed3(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3f", v);
  return b;
}
}  // namespace

TEST(Demo, QuickScaleRunsEveryStageAndWritesTheReportCard) {
  aji::test::TempDir dir;
  const fs::path out = dir.path() / "demo";
  std::string log;
  const std::string cmd = "cd " + std::string(AJI_SOURCE_DIR) + " && DEMO_SCALE=quick AJI_THREADS=2 DEMO_OUT=" +
                          out.string() + " AJI=" + AJI_BINARY + " scripts/demo.sh 2>&1";
  ASSERT_EQ(aji::test::run_command(cmd, &log), 0) << log.substr(log.size() > 6000 ? log.size() - 6000 : 0);
  // Every stage's artifact.
  for (const char* p : {"clean/report.json", "pretrain/tokenizer.json", "pretrain/run/latest", "pretrain/run/loss.svg",
                        "pretrain/run/metrics.jsonl", "pretrain/corpus/web_clean.txt", "sft/run/latest",
                        "sft/run/loss.svg", "sft/chat.txt", "sft/chat_base.json", "sft/chat_sft.json",
                        "classify/run/report.json", "classify/predictions.jsonl", "rl/run/latest",
                        "rl/run/summary.json", "rl/run/metrics.jsonl", "rl/reward.svg", "rl/chat_rl.json",
                        "eval/base/results.json", "eval/sft/results.json", "eval/rl/results.json",
                        "eval/compare/compare.md", "eval/compare/compare.svg", "aji-chat.gguf", "REPORT.md",
                        "REPORT.html"})
    EXPECT_TRUE(fs::exists(out / p)) << p << "\n" << log.substr(log.size() > 3000 ? log.size() - 3000 : 0);
  const std::string md = read_all(out / "REPORT.md");
  for (const char* section : {"# aji demo report card", "| stage | seconds |", "scale quick", "## Data cleaning",
                              "## Pretraining", "from the data stage (step 1): 16 documents", "final validation loss",
                              "## Supervised fine-tuning", "## Chat",
                              "| model | decoding | degenerate (en) | degenerate (ko) | ended its turn |",
                              "| base model | greedy |", "| after SFT | sampled |", "| after RL | greedy |",
                              "Replies before", "## Spam classifier", "Confusion matrix", "| ham |", "| spam |",
                              "## Reinforcement learning (GRPO)", "| held-out (8 problems x 4 samples) | pass@1 | pass@4 |",
                              "| SFT model (before RL) | ", "| after RL | ", "2 steps x 4 prompts x G=4",
                              "## Evaluation", "## The final chat model in llama.cpp (GGUF)", "## Where everything is"})
    EXPECT_NE(md.find(section), std::string::npos) << "REPORT.md lacks \"" << section << "\"\n" << md;
  EXPECT_EQ(md.find("(not run"), std::string::npos) << md;
  EXPECT_EQ(md.find("(not written"), std::string::npos) << md;

  // RL: the report's held-out pass@1 before -> after is the run's summary.json, the run did its
  // 2 steps, and every rate is a rate.
  const nlohmann::json rl = read_json(out / "rl/run/summary.json");
  EXPECT_EQ(rl["steps"], 2);
  EXPECT_EQ(rl["verifier"], "number");
  for (const char* when : {"eval_before", "eval_after"}) {
    const nlohmann::json& e = rl[when];
    ASSERT_TRUE(e.is_object()) << when << " missing from summary.json";
    EXPECT_EQ(e["tasks"], 8);
    EXPECT_EQ(e["samples"], 4);
    for (const char* k : {"pass@1", "pass@4", "stop_rate"}) {
      EXPECT_GE(e[k].get<double>(), 0.0) << when << " " << k;
      EXPECT_LE(e[k].get<double>(), 1.0) << when << " " << k;
    }
    EXPECT_LE(e["pass@1"].get<double>(), e["pass@4"].get<double>()) << when;
  }
  const double before = rl["eval_before"]["pass@1"], after = rl["eval_after"]["pass@1"];
  EXPECT_NE(md.find("- held-out pass@1: " + fixed3(before) + " -> " + fixed3(after)), std::string::npos) << md;
  // The verdict: a change counts only beyond 2 standard errors of the pass rates (8 tasks x 4
  // samples here: about +-0.2 and more, so a quick run's change rarely counts).
  const double se = std::sqrt((before * (1 - before) + after * (1 - after)) / 32.0);
  const char* verdict = std::fabs(after - before) <= 2 * se ? "no clear change: within 2 standard errors"
                        : after > before                     ? "RL lifted held-out pass@1 by more than 2 standard errors"
                                                             : "RL lowered held-out pass@1 by more than 2 standard errors";
  EXPECT_NE(md.find(verdict), std::string::npos) << md;
  const std::string rl_metrics = read_all(out / "rl/run/metrics.jsonl");
  EXPECT_EQ(count(rl_metrics, "\"reward\""), 2u) << "one line per step\n" << rl_metrics;
  EXPECT_EQ(count(rl_metrics, "\"eval_pass@1\""), 2u) << "evaluated before and after\n" << rl_metrics;
  EXPECT_EQ(count(read_all(out / "rl/reward.svg"), "<circle"), 2u + 2u) << "2 steps and 2 held-out points";

  // Evaluation: each model scored every task at 0 and 3 shots on the first 8 items; the
  // comparison table in the report has a row per (task, shots) and a column per model.
  std::set<std::string> tasks;
  for (const char* model : {"base", "sft", "rl"}) {
    const nlohmann::json r = read_json(out / "eval" / model / "results.json");
    ASSERT_TRUE(r.contains("results")) << model << ": " << r.dump().substr(0, 400);
    std::set<std::pair<std::string, int>> seen;
    for (const auto& t : r["results"]) {
      seen.insert({t["task"].get<std::string>(), t["shots"].get<int>()});
      tasks.insert(t["task"].get<std::string>());
      EXPECT_GT(t["n"].get<int>(), 0) << model << " " << t.dump();
      EXPECT_LE(t["n"].get<int>(), 8) << model << " " << t.dump();
      ASSERT_TRUE(t["metrics"].contains("acc")) << model << " " << t.dump().substr(0, 400);
      for (const auto& [name, m] : t["metrics"].items()) {
        const double v = m["value"].get<double>();
        EXPECT_GE(v, name == "core_centered" ? -1.0 : 0.0) << model << " " << name;  // centered: (acc - b) / (1 - b)
        EXPECT_LE(v, 1.0) << model << " " << name;
        EXPECT_GE(m["stderr"].get<double>(), 0.0) << model << " " << name;
      }
    }
    EXPECT_EQ(seen.size(), 8u) << model << ": 4 tasks x 2 shot counts";
  }
  EXPECT_EQ(tasks, (std::set<std::string>{"arc_easy", "piqa", "klue_nli", "ko_analogy"}));
  EXPECT_NE(md.find("| task | shots | metric | base | sft | rl |"), std::string::npos) << md;
  const std::string score = " [0-9]\\.[0-9]{4} ± [0-9]\\.[0-9]{4} \\|";
  for (const auto& [t, k] : std::vector<std::pair<std::string, int>>{
           {"arc_easy", 0}, {"arc_easy", 3}, {"piqa", 3}, {"ko_analogy", 3}, {"klue_nli", 0}, {"klue_nli", 1}})
    EXPECT_TRUE(std::regex_search(md, std::regex("\\| " + t + " \\| " + std::to_string(k) + " \\| acc \\|" + score +
                                                 score + score)))
        << t << " " << k << "-shot\n" << md;

  // GGUF: a GGUF file, and the report's llama.cpp command runs that file.
  {
    std::ifstream g(out / "aji-chat.gguf", std::ios::binary);
    char magic[4] = {};
    g.read(magic, 4);
    EXPECT_EQ(std::string(magic, 4), "GGUF");
    EXPECT_GT(fs::file_size(out / "aji-chat.gguf"), 100000u);
  }
  EXPECT_NE(md.find("`llama-cli -m " + (out / "aji-chat.gguf").string() + " -cnv`"), std::string::npos) << md;

  const std::string page = read_all(out / "REPORT.html");
  EXPECT_NE(page.find("<h2>Pretraining</h2>"), std::string::npos);
  EXPECT_EQ(count(page, "<svg"), 4u) << "both loss curves, the RL reward curve and the evaluation plot inlined";
  EXPECT_EQ(page.find("not found)"), std::string::npos) << "an image the report names is missing";
  EXPECT_EQ(count(page, "<table>"), 5u)
      << "stage table, RL before/after, chat metrics, evaluation comparison and confusion matrix";
  // The chat measurement: the 16 fixed prompts, each answered greedy and sampled.
  const std::string chat = read_all(out / "sft" / "chat.txt");
  EXPECT_EQ(count(chat, "user: "), 16u) << chat;
  EXPECT_EQ(count(chat, "assistant (greedy): "), 16u) << chat;
  EXPECT_EQ(count(chat, "assistant (sampled): "), 16u) << chat;
  // The demo ends by telling the user how to talk to the model.
  EXPECT_NE(log.find("serve --model " + (out / "rl" / "run").string()), std::string::npos) << log.substr(log.size() > 600 ? log.size() - 600 : 0);
}
