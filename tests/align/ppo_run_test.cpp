// run_ppo (align/ppo_run.h) on a micro model with a real BPE tokenizer and chat template:
// the run directory (checkpoint with the value model, metrics columns, summary), resume
// bit-identical to a straight run, --max-kl stop, and bad prompt files.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "aji/align/ppo_run.h"
#include "aji/base/error.h"
#include "aji/base/threads.h"
#include "aji/train/checkpoint.h"
#include "align/micro_base.h"
#include "test_util.h"

namespace fs = std::filesystem;
namespace al = aji::align;
using aji::test::TempDir;

namespace {

struct PpoFixture {
  TempDir dir;
  fs::path base, prompts;
  PpoFixture() {
    aji::set_num_threads(1);
    {
      std::ofstream c(dir.path() / "corpus.txt");
      // The corpus of sft_run_test (enough distinct text for a 320-id BPE vocabulary).
      const char* qa[][2] = {{"What color is the sky?", "The sky is blue."},
                             {"How many legs does a cat have?", "A cat has four legs."},
                             {"하늘은 무슨 색이야?", "하늘은 파란색이야."},
                             {"Say hello.", "Hello! How can I help you today?"}};
      for (int i = 0; i < 200; ++i)
        for (auto& x : qa) c << x[0] << " " << x[1] << "\n\n";
    }
    aji::test::MicroBaseOptions mb;
    base = aji::test::build_micro_base(dir.path(), dir.path() / "corpus.txt", mb);
    prompts = dir.path() / "prompts.jsonl";
    std::ofstream p(prompts);
    for (const char* q : {"What color is the sky?", "Say hello.", "Name a color.", "Count to three."})
      p << R"({"messages": [{"role": "user", "content": ")" << q << R"("}]})" << "\n";
  }
  al::PpoRunOptions options(const std::string& run, int64_t steps) const {
    al::PpoRunOptions o;
    o.model = base;
    o.reward = dir.path() / "rule";
    o.prompts = prompts;
    o.out_dir = dir.path() / run;
    o.quiet = true;
    o.steps = steps;
    o.rollouts_per_step = 8;
    o.ppo.group_size = 2;
    o.ppo.max_new_tokens = 6;
    o.ppo.ppo_epochs = 2;
    o.ppo.minibatches = 2;
    o.ppo.lr = 1e-3f;
    o.ppo.value_lr = 1e-3f;
    return o;
  }
};

// A rule reward: shorter replies are better; the "true metric" is whether the reply stopped.
al::PpoReward rule_reward() {
  al::PpoReward r;
  r.score = [](const std::vector<int32_t>&, const std::vector<int32_t>& reply) { return -0.1f * float(reply.size()); };
  r.truth = [](const std::vector<int32_t>&, const std::vector<int32_t>& reply) { return reply.size() < 6 ? 1.0f : 0.0f; };
  r.describe = "rule (short replies)";
  return r;
}

std::vector<float> weights(const fs::path& p) {
  aji::model::Model m = aji::train::load_model(p);
  return {m.params(), m.params() + m.num_params()};
}

}  // namespace

TEST(PpoRun, RunDirMetricsAndResumeBitIdentical) {
  PpoFixture f;
  const al::PpoRunResult straight = al::run_ppo(f.options("straight", 3), rule_reward());
  EXPECT_EQ(straight.step, 3);
  const fs::path run = f.dir.path() / "straight";
  for (const char* file : {"metrics.jsonl", "loss.svg", "run.json", "summary.json"}) EXPECT_TRUE(fs::exists(run / file)) << file;
  const fs::path ck = aji::train::resolve_model_dir(run);
  for (const char* file : {"model.safetensors", "optimizer.bin", "value.safetensors", "value_head.safetensors",
                           "value_optimizer.bin", "head_optimizer.bin", "trainer_state.json"})
    EXPECT_TRUE(fs::exists(ck / file)) << file;
  {
    std::ifstream m(run / "metrics.jsonl");
    std::string line;
    int n = 0;
    while (std::getline(m, line)) {
      const auto j = nlohmann::json::parse(line);
      for (const char* key : {"score", "kl", "entropy", "clip_frac", "value_loss", "explained_variance", "reply_length",
                              "true_metric"})
        EXPECT_TRUE(j.contains(key)) << key << " in " << line;
      ++n;
    }
    EXPECT_EQ(n, 3);
  }
  // Stop after 1 step, resume to 3: the same weights as the straight run.
  al::PpoRunOptions a = f.options("resumed", 3);
  a.stop_after = 1;
  const al::PpoRunResult first = al::run_ppo(a, rule_reward());
  EXPECT_EQ(first.step, 1);
  EXPECT_TRUE(first.interrupted);
  al::PpoRunOptions b = f.options("resumed", 3);
  b.resume = true;
  b.model.clear();
  b.prompts.clear();
  const al::PpoRunResult second = al::run_ppo(b, rule_reward());
  EXPECT_EQ(second.step, 3);
  EXPECT_EQ(weights(run), weights(f.dir.path() / "resumed"));
  EXPECT_EQ(straight.stats.back().pg_loss, second.stats.back().pg_loss);
  // The frozen base is untouched.
  EXPECT_EQ(weights(f.base), weights(f.base));
}

TEST(PpoRun, MaxKlStopsWithCheckpoint) {
  PpoFixture f;
  al::PpoRunOptions o = f.options("klstop", 5);
  o.max_kl = 1e-6;
  o.ppo.lr = 1e-2f;
  const al::PpoRunResult r = al::run_ppo(o, rule_reward());
  EXPECT_TRUE(r.kl_stop);
  EXPECT_LT(r.step, 5);
  EXPECT_TRUE(fs::exists(aji::train::resolve_model_dir(o.out_dir) / "value.safetensors"));
}

TEST(PpoRun, BadPromptFiles) {
  PpoFixture f;
  const fs::path bad = f.dir.path() / "bad.jsonl";
  {
    std::ofstream p(bad);
    p << R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})" << "\n";
  }
  al::PpoRunOptions o = f.options("bad", 1);
  o.prompts = bad;
  try {
    al::run_ppo(o, rule_reward());
    FAIL() << "expected an error";
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("user turn"), std::string::npos) << e.what();
    EXPECT_NE(e.describe().find("bad.jsonl:1"), std::string::npos) << e.describe();
  }
  // --skip-invalid: the line is skipped, and then no prompt is left: an error naming the file.
  o.skip_invalid = true;
  o.force = true;
  try {
    al::run_ppo(o, rule_reward());
    FAIL() << "expected an error";
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no usable prompt"), std::string::npos) << e.what();
  }
}

// `aji ppo` in the issue's form on a reward model trained by `aji rm train`; a reward model
// given as the policy, or a policy as the reward, is refused with the fix.
TEST(PpoRun, CliEndToEndAndModelKindsRefused) {
  PpoFixture f;
  const fs::path prefs = f.dir.path() / "prefs.jsonl";
  {
    std::ofstream p(prefs);
    const char* qa[][3] = {{"What color is the sky?", "The sky is blue.", "The sky is green."},
                           {"Say hello.", "Hello! How can I help you today?", "Go away."}};
    for (int i = 0; i < 8; ++i)
      p << R"({"prompt": [{"role": "user", "content": ")" << qa[i % 2][0]
        << R"("}], "chosen": [{"role": "assistant", "content": ")" << qa[i % 2][1]
        << R"("}], "rejected": [{"role": "assistant", "content": ")" << qa[i % 2][2] << R"("}]})" << "\n";
  }
  std::string out;
  const fs::path rm = f.dir.path() / "rm";
  ASSERT_EQ(aji::test::run_command(std::string(AJI_BINARY) + " -q rm train --model " + f.base.string() + " --data " +
                                       prefs.string() + " --epochs 1 --batch-size 4 --val-fraction 0 --out " +
                                       rm.string() + " 2>&1",
                                   &out),
            0)
      << out;
  const fs::path run = f.dir.path() / "ppo";
  const std::string ppo = std::string(AJI_BINARY) + " --threads 1 ppo --prompts " + f.prompts.string() +
                          " --steps 2 --kl-coef 0.1 --rollouts-per-step 4 --group-size 2 --max-new-tokens 6 ";
  ASSERT_EQ(aji::test::run_command(ppo + "--model " + f.base.string() + " --reward " + rm.string() + " --out " +
                                       run.string() + " 2>&1",
                                   &out),
            0)
      << out;
  EXPECT_NE(out.find("step"), std::string::npos) << out;
  const auto summary = nlohmann::json::parse(std::ifstream(run / "summary.json"));
  EXPECT_EQ(summary["step"], 2);
  EXPECT_TRUE(summary["last"].contains("score"));
  // The value model starts from the RM: its head is the RM's score head before training.
  // (After two steps it has moved; what is checked here is that the run used the RM dir.)
  EXPECT_NE(nlohmann::json::parse(std::ifstream(run / "run.json"))["reward_describe"].get<std::string>().find("rm"),
            std::string::npos);
  // A reward model as --model: refused by the policy loader with the fix.
  EXPECT_NE(aji::test::run_command(ppo + "--model " + rm.string() + " --reward " + rm.string() + " --out " +
                                       (f.dir.path() / "bad1").string() + " 2>&1",
                                   &out),
            0);
  EXPECT_NE(out.find("reward model"), std::string::npos) << out;
  EXPECT_NE(out.find("fix"), std::string::npos) << out;
  // A policy as --reward: refused by the reward-model loader with the fix.
  EXPECT_NE(aji::test::run_command(ppo + "--model " + f.base.string() + " --reward " + f.base.string() + " --out " +
                                       (f.dir.path() / "bad2").string() + " 2>&1",
                                   &out),
            0);
  EXPECT_NE(out.find("aji rm train"), std::string::npos) << out;
}

// --true-verifier: the prompts file is a task file; the verifier's reward on the decoded reply
// is the "true_metric" column. An unknown verifier name is an error listing the known ones.
TEST(PpoRun, TrueVerifierColumnFromTasks) {
  PpoFixture f;
  const fs::path tasks = f.dir.path() / "tasks.jsonl";
  {
    std::ofstream t(tasks);
    t << R"({"messages": [{"role": "user", "content": "What color is the sky?"}], "answer": "blue"})" << "\n";
    t << R"({"messages": [{"role": "user", "content": "Say hello."}], "answer": "Hello"})" << "\n";
  }
  al::PpoRunOptions o = f.options("verifier", 2);
  o.prompts = tasks;
  o.true_verifier = "regex:.";  // any non-empty reply passes: the column is the share of non-empty replies
  al::PpoReward r = rule_reward();
  r.truth = nullptr;
  const al::PpoRunResult res = al::run_ppo(o, r);
  ASSERT_EQ(res.stats.size(), 2u);
  for (const auto& st : res.stats) {
    EXPECT_GE(st.true_metric, 0.0);
    EXPECT_LE(st.true_metric, 1.0);
  }
  o.out_dir = f.dir.path() / "verifier2";
  o.true_verifier = "no-such-verifier";
  try {
    al::run_ppo(o, r);
    FAIL() << "expected an error";
  } catch (const aji::Error& e) {
    EXPECT_NE(e.describe().find("exact"), std::string::npos) << e.describe();
  }
}
