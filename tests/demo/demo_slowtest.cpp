// `make demo` end to end at its quick scale (DEMO_SCALE=quick: every stage, a few steps
// each): the script runs from a clean output folder with the freshly built aji, every stage
// leaves its artifact, and the report card (Markdown and HTML) has every section, with the
// loss curves inlined in the HTML page.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
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
                        "classify/run/report.json", "classify/predictions.jsonl", "REPORT.md", "REPORT.html"})
    EXPECT_TRUE(fs::exists(out / p)) << p << "\n" << log.substr(log.size() > 3000 ? log.size() - 3000 : 0);
  const std::string md = read_all(out / "REPORT.md");
  for (const char* section : {"# aji demo report card", "| stage | seconds |", "scale quick", "## Data cleaning",
                              "## Pretraining", "from the data stage (step 1): 16 documents", "final validation loss",
                              "## Supervised fine-tuning", "## Chat",
                              "| model | decoding | degenerate (en) | degenerate (ko) | ended its turn |",
                              "| base model | greedy |", "| after SFT | sampled |", "Replies before",
                              "## Spam classifier", "Confusion matrix", "| ham |", "| spam |"})
    EXPECT_NE(md.find(section), std::string::npos) << "REPORT.md lacks \"" << section << "\"\n" << md;
  EXPECT_EQ(md.find("(not run)"), std::string::npos) << md;
  const std::string page = read_all(out / "REPORT.html");
  EXPECT_NE(page.find("<h2>Pretraining</h2>"), std::string::npos);
  EXPECT_EQ(count(page, "<svg"), 2u) << "both loss curves inlined";
  EXPECT_EQ(page.find("not found)"), std::string::npos) << "an image the report names is missing";
  EXPECT_EQ(count(page, "<table>"), 3u) << "stage table, chat metrics and confusion matrix";
  // The chat measurement: the 16 fixed prompts, each answered greedy and sampled.
  const std::string chat = read_all(out / "sft" / "chat.txt");
  EXPECT_EQ(count(chat, "user: "), 16u) << chat;
  EXPECT_EQ(count(chat, "assistant (greedy): "), 16u) << chat;
  EXPECT_EQ(count(chat, "assistant (sampled): "), 16u) << chat;
  // The demo ends by telling the user how to talk to the model.
  EXPECT_NE(log.find("serve --model " + (out / "sft" / "run").string()), std::string::npos) << log.substr(log.size() > 600 ? log.size() - 600 : 0);
}
