// `aji grpo` end to end on a micro model (tests/align/micro_base.h): the command's outputs
// (metrics.jsonl, summary.json, checkpoint, plot), bit-identical resume through the run
// directory, the run-dir guard, and clear errors for bad input.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "aji/align/grpo_run.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/threads.h"
#include "aji/train/checkpoint.h"
#include "micro_base.h"
#include "test_util.h"

namespace fs = std::filesystem;
using aji::test::TempDir;

namespace {

const char* kQa[][2] = {{"What color is the sky?", "blue"},
                        {"How many legs does a cat have?", "four"},
                        {"Say hello.", "hello"},
                        {"What is two plus two?", "4"}};

struct GrpoFixture {
  TempDir dir;
  fs::path base, tasks, eval, script;
  GrpoFixture() {
    aji::set_num_threads(1);
    {
      std::ofstream c(dir.path() / "corpus.txt");
      for (int i = 0; i < 200; ++i)
        for (auto& qa : kQa) c << qa[0] << " " << qa[1] << "\n\n";
    }
    aji::test::MicroBaseOptions mb;
    mb.vocab_size = 300;  // the small corpus gives 314 ids at most
    base = aji::test::build_micro_base(dir.path(), dir.path() / "corpus.txt", mb);
    // A command: verifier whose reward varies with the reply (the parity of the JSON's byte
    // count), so that the micro model's random replies give groups with non-zero variance.
    script = dir.path() / "parity.sh";
    std::ofstream(script) << "n=$(wc -c)\necho $((n % 2))\n";
    tasks = dir.path() / "tasks.jsonl";
    eval = dir.path() / "eval.jsonl";
    std::ofstream t(tasks), e(eval);
    for (int i = 0; i < 8; ++i) {
      auto& qa = kQa[i % 4];
      (i < 6 ? t : e) << R"({"messages": [{"role": "user", "content": ")" << qa[0] << R"("}], "answer": ")" << qa[1]
                      << "\"}\n";
    }
  }
  aji::align::GrpoRunOptions options(const std::string& run, int64_t steps) const {
    aji::align::GrpoRunOptions o;
    o.model = base;
    o.tasks_file = tasks;
    o.eval_file = eval;
    o.verifier = "command:/bin/sh " + script.string();
    o.out_dir = dir.path() / run;
    o.quiet = true;
    o.steps = steps;
    o.group_size = 4;
    o.prompts_per_step = 2;
    o.max_new_tokens = 6;
    o.lr = 1e-3f;
    o.kl_coef = 0.04;
    o.eval_samples = 2;
    return o;
  }
};

std::vector<float> weights(const fs::path& run) {
  aji::model::Model m = aji::train::load_model(run);
  return {m.params(), m.params() + m.num_params()};
}

std::vector<nlohmann::json> read_jsonl(const fs::path& p) {
  std::ifstream in(p);
  std::vector<nlohmann::json> v;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) v.push_back(nlohmann::json::parse(line));
  return v;
}

}  // namespace

TEST(GrpoRun, CliWritesMetricsSummaryAndCheckpoint) {
  GrpoFixture f;
  const fs::path run = f.dir.path() / "cli";
  std::string out;
  const std::string cmd = std::string(AJI_BINARY) + " -q --threads 1 grpo --model " + f.base.string() + " --tasks " +
                          f.tasks.string() + " --verifier 'command:/bin/sh " + f.script.string() + "' --out " + run.string() +
                          " --steps 3 --group-size 4 --kl-coef 0.04 --max-new-tokens 6 --temperature 1 --eval-tasks " +
                          f.eval.string() + " --prompts-per-step 2 --eval-samples 2 --lr 1e-3 2>&1";
  ASSERT_EQ(aji::test::run_command(cmd, &out), 0) << out;
  int steps = 0, evals = 0;
  for (const nlohmann::json& j : read_jsonl(run / "metrics.jsonl")) {
    if (j.contains("reward")) {
      ++steps;
      for (const char* k : {"loss", "kl", "frac_zero_std", "reply_len", "pass_rate", "grad_norm"})
        EXPECT_TRUE(j.contains(k) && j[k].is_number()) << k << " in " << j.dump();
    }
    if (j.contains("eval_pass@1")) {
      ++evals;
      EXPECT_TRUE(j.contains("eval_pass@2")) << j.dump();
    }
  }
  EXPECT_EQ(steps, 3);
  EXPECT_EQ(evals, 2) << "before and after";
  const nlohmann::json s = nlohmann::json::parse(aji::read_file(run / "summary.json"));
  EXPECT_EQ(s["steps"], 3);
  EXPECT_TRUE(s["eval_before"].is_object());
  EXPECT_TRUE(s["eval_after"].is_object());
  EXPECT_EQ(s["verifier_calls"].get<int64_t>(), 3 * 2 * 4 + 2 * 2 * 2);
  EXPECT_TRUE(fs::exists(run / "loss.svg"));
  EXPECT_NE(weights(run), weights(f.base)) << "the policy trained\n" << aji::read_file(run / "metrics.jsonl");
  EXPECT_EQ(s["verifier_failures"].get<int64_t>(), 0) << s.dump();
  // The run-dir guard: the same command again is refused (the fix names --resume / --force).
  ASSERT_NE(aji::test::run_command(cmd, &out), 0);
  EXPECT_NE(out.find("--resume"), std::string::npos) << out;
}

TEST(GrpoRun, ResumeIsBitIdentical) {
  GrpoFixture f;
  aji::align::GrpoRunOptions a = f.options("whole", 4);
  aji::align::run_grpo(a);
  aji::align::GrpoRunOptions b = f.options("split", 4);
  b.stop_after = 2;
  const aji::align::GrpoRunResult r1 = aji::align::run_grpo(b);
  ASSERT_TRUE(r1.interrupted);
  ASSERT_EQ(r1.step, 2);
  aji::align::GrpoRunOptions c;
  c.out_dir = b.out_dir;
  c.resume = true;
  c.quiet = true;
  const aji::align::GrpoRunResult r2 = aji::align::run_grpo(c);
  EXPECT_EQ(r2.step, 4);
  EXPECT_EQ(weights(a.out_dir), weights(b.out_dir));
  // The metrics of the resumed run hold each step once.
  int steps = 0, evals = 0;
  for (const nlohmann::json& j : read_jsonl(b.out_dir / "metrics.jsonl")) {
    steps += j.contains("reward") ? 1 : 0;
    evals += j.contains("eval_pass@1") ? 1 : 0;
  }
  EXPECT_EQ(steps, 4);
  EXPECT_EQ(evals, 2) << "before (first session) and after (second)";
  const nlohmann::json sb = nlohmann::json::parse(aji::read_file(b.out_dir / "summary.json"));
  const nlohmann::json sa = nlohmann::json::parse(aji::read_file(a.out_dir / "summary.json"));
  EXPECT_EQ(sb["eval_before"], sa["eval_before"]) << "the first evaluation travels in the checkpoint";
  EXPECT_EQ(sb["eval_after"], sa["eval_after"]);
  // A setting that decides the run cannot change on resume.
  aji::align::GrpoRunOptions d = c;
  d.kl_coef = 0.5;
  d.given = {"--kl-coef"};
  d.steps = 6;
  EXPECT_THROW(aji::align::run_grpo(d), aji::Error);
}

TEST(GrpoRun, BadInputIsAClearError) {
  GrpoFixture f;
  auto expect_error = [&](aji::align::GrpoRunOptions o, const std::string& needle) {
    try {
      aji::align::run_grpo(o);
      ADD_FAILURE() << "expected an error mentioning " << needle;
    } catch (const aji::Error& e) {
      EXPECT_NE(e.describe().find(needle), std::string::npos) << e.describe();
    }
  };
  aji::align::GrpoRunOptions o = f.options("bad1", 2);
  o.verifier = "sorcery";
  expect_error(o, "sorcery");
  // An empty task set.
  o = f.options("bad2", 2);
  o.tasks_file = f.dir.path() / "empty.jsonl";
  std::ofstream(o.tasks_file).close();
  expect_error(o, "empty.jsonl");
  // A prompt longer than the context (64 tokens), on line 2.
  o = f.options("bad3", 2);
  o.tasks_file = f.dir.path() / "long.jsonl";
  {
    std::ofstream t(o.tasks_file);
    t << R"({"messages": [{"role": "user", "content": "Say hello."}], "answer": "hello"})" << "\n";
    std::string long_text;
    for (int i = 0; i < 80; ++i) long_text += "What color is the sky? ";
    t << R"({"messages": [{"role": "user", "content": ")" << long_text << R"("}], "answer": "blue"})" << "\n";
  }
  expect_error(o, "long.jsonl:2");
  o.skip_invalid = true;  // the same file with --skip-invalid: a counted skip, the run goes on
  o.out_dir = f.dir.path() / "bad3b";
  EXPECT_NO_THROW(aji::align::run_grpo(o));
  // A reward model directory given as the policy.
  o = f.options("bad4", 2);
  const fs::path rm = f.dir.path() / "rm";
  fs::copy(aji::train::resolve_model_dir(f.base), rm, fs::copy_options::recursive);
  std::ofstream(rm / "rm.json") << R"({"kind": "reward_model"})";
  o.model = rm;
  expect_error(o, "reward model");
}
