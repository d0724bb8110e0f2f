// `aji dpo` end to end on a micro model (tests/align/micro_base.h): the command runs, writes
// its run directory (checkpoints, metrics.jsonl with the DPO metrics and the KL, loss.svg,
// summary.json), starts at loss ln 2, resumes bit for bit, refuses to overwrite, and refuses
// bad input (chosen == rejected with file:line; a reward-model dir as --model).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numbers>

#include <nlohmann/json.hpp>

#include "aji/align/dpo_run.h"
#include "aji/base/error.h"
#include "aji/base/threads.h"
#include "aji/kernels/cpu/bf16_gemm.h"
#include "aji/train/checkpoint.h"
#include "align/micro_base.h"
#include "test_util.h"

namespace fs = std::filesystem;
using aji::test::TempDir;
using nlohmann::json;

namespace {

const char* kPairs[][3] = {{"What color is the sky?", "The sky is blue.", "The sky is green."},
                           {"How many legs does a cat have?", "A cat has four legs.", "A cat has nine legs."},
                           {"Say hello.", "Hello! How can I help you today?", "Go away."},
                           {"하늘은 무슨 색이야?", "하늘은 파란색이야.", "하늘은 초록색이야."}};

std::string pair_line(int i, bool same = false) {
  auto& p = kPairs[i % 4];
  return std::string(R"({"prompt": [{"role": "user", "content": ")") + p[0] +
         R"("}], "chosen": [{"role": "assistant", "content": ")" + p[1] +
         R"("}], "rejected": [{"role": "assistant", "content": ")" + (same ? p[1] : p[2]) + R"("}]})";
}

struct DpoFixture {
  TempDir dir;
  fs::path base, prefs;
  DpoFixture() {
    aji::set_num_threads(1);
    {
      std::ofstream c(dir.path() / "corpus.txt");
      for (int i = 0; i < 150; ++i)
        for (auto& p : kPairs) c << p[0] << " " << p[1] << " " << p[2] << "\n\n";
    }
    base = aji::test::build_micro_base(dir.path(), dir.path() / "corpus.txt");
    prefs = dir.path() / "prefs.jsonl";
    std::ofstream out(prefs);
    for (int i = 0; i < 16; ++i) out << pair_line(i) << "\n";
  }
  aji::align::DpoRunOptions options(const std::string& run) const {
    aji::align::DpoRunOptions o;
    o.model = base;
    o.data_files = {prefs};
    o.out_dir = dir.path() / run;
    o.quiet = true;
    o.val_fraction = 0.25;
    o.kl_prompts = 2;
    o.max_new_tokens = 6;
    o.train.beta = 0.5;
    o.train.batch = 4;
    o.train.steps = 6;
    o.train.lr = 3e-3f;
    o.train.nll_weight = 0.2;
    o.save_every = 2;
    o.eval_every = 3;
    return o;
  }
};

std::vector<float> weights(const fs::path& run) {
  aji::model::Model m = aji::train::load_model(run);
  return {m.params(), m.params() + m.num_params()};
}

std::vector<json> metric_lines(const fs::path& run) {
  std::vector<json> v;
  std::ifstream in(run / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) v.push_back(json::parse(line));
  return v;
}

}  // namespace

TEST(DpoRun, CommandWritesRunDirAndResumesBitIdentically) {
  DpoFixture f;
  // The command line, as a user types it.
  const fs::path cli_run = f.dir.path() / "cli";
  std::string out;
  const std::string cmd = std::string(AJI_BINARY) + " --threads 1 dpo --model " + f.base.string() + " --data " +
                          f.prefs.string() + " --out " + cli_run.string() +
                          " --beta 0.5 --nll-weight 0.2 --epochs 2 --lr 0.003 --batch-size 4 --kl-prompts 2 "
                          "--max-new-tokens 6 2>&1";
  ASSERT_EQ(aji::test::run_command(cmd, &out), 0) << out;
  EXPECT_NE(out.find("done:"), std::string::npos) << out;
  ASSERT_TRUE(fs::exists(cli_run / "summary.json")) << out;
  EXPECT_TRUE(fs::exists(cli_run / "loss.svg"));
  const json summary = json::parse(std::ifstream(cli_run / "summary.json"));
  EXPECT_EQ(summary["train_pairs"].get<int>() + summary["val_pairs"].get<int>(), 16);
  EXPECT_TRUE(summary["kl_after"].is_number());
  const std::vector<json> lines = metric_lines(cli_run);
  ASSERT_FALSE(lines.empty());
  bool saw_step1 = false, saw_kl = false;
  for (const json& j : lines) {
    if (j["step"] == 1 && j.contains("loss")) {
      saw_step1 = true;
      // step 1: the policy is the reference, so the DPO part is ln 2 exactly
      EXPECT_NEAR(j["dpo_loss"].get<double>(), std::numbers::ln2, 1e-6);
      EXPECT_GT(j["nll_loss"].get<double>(), 0.0);
      for (const char* k : {"accuracy", "margin", "chosen_logratio", "rejected_logratio", "grad_norm", "lr"})
        EXPECT_TRUE(j.contains(k)) << k;
    }
    if (j.contains("kl")) {
      saw_kl = true;
      EXPECT_TRUE(j.contains("val_accuracy"));
      if (j["step"] == 0) {
        EXPECT_NEAR(j["kl"].get<double>(), 0.0, 1e-3);
      }
    }
  }
  EXPECT_TRUE(saw_step1);
  EXPECT_TRUE(saw_kl);
  // A second fresh run into a finished dir is refused without --force.
  std::string again;
  EXPECT_NE(aji::test::run_command(cmd, &again), 0);
  EXPECT_NE(again.find("--force"), std::string::npos) << again;

  // Library: stop after 3 steps + --resume == straight 6 steps, bit for bit.
  aji::align::run_dpo(f.options("straight"));
  aji::align::DpoRunOptions part = f.options("resumed");
  part.stop_after = 3;
  const aji::align::DpoRunResult r1 = aji::align::run_dpo(part);
  EXPECT_TRUE(r1.interrupted);
  EXPECT_EQ(r1.step, 3);
  aji::align::DpoRunOptions rest = f.options("resumed");
  rest.resume = true;
  rest.model.clear();
  rest.data_files.clear();
  const aji::align::DpoRunResult r2 = aji::align::run_dpo(rest);
  EXPECT_EQ(r2.step, 6);
  const std::vector<float> a = weights(f.dir.path() / "straight"), b = weights(f.dir.path() / "resumed");
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
  // The policy moved; the SFT model it started from did not.
  const std::vector<float> start = weights(f.base);
  EXPECT_NE(std::memcmp(a.data(), start.data(), a.size() * sizeof(float)), 0);
  // Resuming with another --beta is refused.
  aji::align::DpoRunOptions other = f.options("resumed");
  other.resume = true;
  other.train.beta = 0.1;
  other.given = {"--beta"};
  EXPECT_THROW(aji::align::run_dpo(other), aji::Error);
}

// --precision: the run records what it trained in; in bf16 the policy and the frozen reference
// share the precision, so step 1's DPO loss is ln 2 in both; bf16 trains to nearly fp32's
// losses with other weights; a bf16 run resumed with --precision fp32 goes on in fp32.
TEST(DpoRun, PrecisionIsRecordedAndBf16TrainsLikeFp32) {
  DpoFixture f;
  const bool bf16 = aji::kernels::cpu::bf16_supported();
  aji::align::DpoRunOptions o32 = f.options("fp32"), o16 = f.options("bf16");
  o32.precision = "fp32";
  o16.precision = "bf16";
  const aji::align::DpoRunResult r32 = aji::align::run_dpo(o32), r16 = aji::align::run_dpo(o16);
  const json run32 = json::parse(std::ifstream(o32.out_dir / "run.json"));
  const json run16 = json::parse(std::ifstream(o16.out_dir / "run.json"));
  EXPECT_EQ(run32["options"]["precision"], "fp32");
  EXPECT_EQ(run16["options"]["precision"], bf16 ? "bf16" : "fp32");  // falls back where the CPU has none
  for (const fs::path& run : {o32.out_dir, o16.out_dir}) {
    for (const json& j : metric_lines(run)) {
      if (j["step"] == 1 && j.contains("dpo_loss")) {
        EXPECT_NEAR(j["dpo_loss"].get<double>(), std::numbers::ln2, 1e-6) << run;
      }
    }
  }
  EXPECT_NEAR(r16.last_loss, r32.last_loss, 0.05 * std::fabs(r32.last_loss)) << r16.last_loss << " vs " << r32.last_loss;
  const std::vector<float> w32 = weights(o32.out_dir), w16 = weights(o16.out_dir);
  ASSERT_EQ(w32.size(), w16.size());
  if (!bf16) GTEST_SKIP() << "this CPU has no native bf16 products: both runs were fp32";
  EXPECT_NE(std::memcmp(w32.data(), w16.data(), w32.size() * sizeof(float)), 0);
  // Resume the bf16 run (stopped early) in fp32: accepted, recorded in the next checkpoint.
  aji::align::DpoRunOptions part = f.options("switch");
  part.precision = "bf16";
  part.stop_after = 2;
  EXPECT_TRUE(aji::align::run_dpo(part).interrupted);
  aji::align::DpoRunOptions rest = f.options("switch");
  rest.resume = true;
  rest.precision = "fp32";
  rest.given = {"--precision"};
  EXPECT_EQ(aji::align::run_dpo(rest).step, 6);
  const json state = json::parse(std::ifstream(o32.out_dir.parent_path() / "switch" / "ckpt-6" / "trainer_state.json"));
  EXPECT_EQ(state["dpo"]["options"]["precision"], "fp32") << state.dump();
}

TEST(DpoRun, BadInputIsRefusedWithFileAndLine) {
  DpoFixture f;
  const fs::path bad = f.dir.path() / "bad.jsonl";
  {
    std::ofstream out(bad);
    out << pair_line(0) << "\n" << pair_line(1) << "\n" << pair_line(2, /*same=*/true) << "\n";
  }
  aji::align::DpoRunOptions o = f.options("bad");
  o.data_files = {bad};
  try {
    aji::align::run_dpo(o);
    ADD_FAILURE() << "chosen == rejected accepted";
  } catch (const aji::Error& e) {
    EXPECT_EQ(e.line(), 3) << e.what();
    EXPECT_NE(e.file().find("bad.jsonl"), std::string::npos) << e.file();
  }
  // --skip-invalid: a counted skip, the run goes on.
  o.skip_invalid = true;
  o.out_dir = f.dir.path() / "skipped";
  o.val_fraction = 0;
  o.kl_prompts = 0;
  EXPECT_EQ(aji::align::run_dpo(o).train_pairs, 2);

  // A reward-model dir (a scalar head beside the trunk) as --model.
  const fs::path rm = f.dir.path() / "rm";
  fs::copy(aji::train::resolve_model_dir(f.base), rm, fs::copy_options::recursive);
  std::ofstream(rm / "score_head.safetensors") << "x";
  aji::align::DpoRunOptions r = f.options("from-rm");
  r.model = rm;
  try {
    aji::align::run_dpo(r);
    ADD_FAILURE() << "a reward model accepted as the policy";
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("reward model"), std::string::npos) << e.what();
  }
}
