// Data parallelism for the post-training trainers, for real: `mpirun -np 2` runs of `aji dpo`,
// `aji rm train` and `aji classify train` against one process with the same global batch.
// Each rank takes its share of every batch (train::rank_share, trainer_run.h: rank r takes
// items r, r+N, ...); the reference is the single-process run: per-step losses to kLossTol
// (relative) and the final weights to kParamTol. Each run crosses an epoch end with a batch
// that 2 does not divide, so the weighting of unequal shares is exercised too. Also: N not
// dividing --batch-size is a clear error on every rank naming the sizes that work. Skipped,
// saying why, without mpirun, in a build without MPI, and in the sanitizer build.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/align/reward_model.h"
#include "aji/base/dist.h"
#include "aji/base/rng.h"
#include "aji/model/model.h"
#include "aji/train/checkpoint.h"
#include "align/micro_base.h"
#include "test_util.h"
#include "train/dist_test_util.h"

namespace fs = std::filesystem;
using aji::test::TempDir;

namespace {

// Measured here (micro model d32, 4 steps, lr 3e-3, 1 thread per rank): largest parameter
// difference 1.2e-7 for classification, 2.1e-5 for DPO and 1.6e-5 for the reward model; the
// step losses and metrics agree to 1e-5 relative. Not bit for bit: each rank pads its rows to
// its own longest sequence and the ranks sum their gradients in another order, so gradients
// differ by float rounding, and AdamW's first steps turn a rounding difference of a gradient
// element near 0 into an update difference up to lr * |dg| / eps. A missing all-reduce or a
// wrong weight moves most parameters by ~lr (3e-3) within a step and the losses by > 1e-3.
constexpr double kParamTol = 1e-4;
constexpr double kLossTol = 1e-5;  // relative
// The runs say --precision fp32: these tests check the data-parallel arithmetic, and in bf16
// the rounding of products over another split of the batch alone differs by ~1e-4.

std::string skip_reason() { return aji::test::mpirun_skip_reason(); }
std::string mpirun(int np) { return aji::test::mpirun_command(np, 120); }
std::string single() { return aji::test::single_process_command(); }

std::vector<float> weights(const fs::path& dir) {
  if (fs::exists(dir / "rm.json")) {  // a reward model: the trunk, then the score head
    aji::align::RewardModel rm = aji::align::load_reward_model(dir);
    std::vector<float> w(rm.trunk.params(), rm.trunk.params() + rm.trunk.num_params());
    w.insert(w.end(), rm.head.w.begin(), rm.head.w.end());
    return w;
  }
  aji::model::Model m = aji::train::load_model(dir);
  return {m.params(), m.params() + m.num_params()};
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

// The values of `key` on the lines of metrics.jsonl that have it, in order.
std::vector<double> series(const fs::path& run, const std::string& key) {
  std::ifstream f(run / "metrics.jsonl");
  std::vector<double> v;
  for (std::string line; std::getline(f, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains(key) && j[key].is_number() && j.contains("step") && !j.contains("val_loss"))
      v.push_back(j[key].get<double>());
  }
  return v;
}

// Same per-step losses (and the other step means in `keys`) and the same final weights.
void expect_same_run(const fs::path& one, const fs::path& two, size_t steps, const fs::path& weights_one,
                     const fs::path& weights_two, const std::vector<std::string>& keys) {
  for (const std::string& key : keys) {
    const std::vector<double> a = series(one, key), b = series(two, key);
    ASSERT_EQ(a.size(), steps) << one << " " << key;
    ASSERT_EQ(b.size(), steps) << two << " " << key << ": one metrics line per step (rank 0 alone writes)";
    for (size_t i = 0; i < steps; ++i)
      EXPECT_NEAR(b[i], a[i], kLossTol * std::max(1.0, std::fabs(a[i]))) << key << " at step " << i + 1;
  }
  const double d = max_abs_diff(weights(weights_one), weights(weights_two));
  EXPECT_LE(d, kParamTol) << weights_one << " vs " << weights_two;
  std::printf("%s: 2 ranks vs 1 process, max |parameter difference| %.3g\n", two.filename().c_str(), d);
}

int run(const std::string& cmd, std::string* out) { return aji::test::run_command(cmd + " 2>&1", out); }

const char* kPairs[][3] = {{"What color is the sky?", "The sky is blue.", "The sky is green."},
                           {"How many legs does a cat have?", "A cat has four legs.", "A cat has nine legs."},
                           {"Say hello.", "Hello! How can I help you today?", "Go away."},
                           {"Name a fruit.", "An apple is a fruit.", "A chair is a fruit."}};

struct PrefFixture {
  TempDir dir;
  fs::path base, prefs;
  PrefFixture() {
    {
      std::ofstream c(dir.path() / "corpus.txt");
      for (int i = 0; i < 150; ++i)
        for (auto& p : kPairs) c << p[0] << " " << p[1] << " " << p[2] << "\n\n";
    }
    base = aji::test::build_micro_base(dir.path(), dir.path() / "corpus.txt");
    prefs = dir.path() / "prefs.jsonl";
    std::ofstream out(prefs);
    // 7 pairs: batches of 4 leave a batch of 3 at each epoch's end (2 ranks take 2 and 1).
    for (int i = 0; i < 7; ++i) {
      auto& p = kPairs[i % 4];
      out << R"({"prompt": [{"role": "user", "content": ")" << p[0] << R"("}], "chosen": [{"role": "assistant", "content": ")"
          << p[1] << R"("}], "rejected": [{"role": "assistant", "content": ")" << p[2] << R"("}]})" << "\n";
    }
  }
};

}  // namespace

TEST(DistMpirunAlign, DpoOnTwoRanksMatchesOneProcess) {
  if (const std::string why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
  PrefFixture f;
  const fs::path d = f.dir.path();
  const std::string common = " -q dpo --precision fp32 --model " + f.base.string() + " --data " + f.prefs.string() +
                             " --val-fraction 0 --kl-prompts 0 --steps 4 --batch-size 4 --lr 3e-3 --beta 0.5"
                             " --nll-weight 0.2";
  std::string out;
  ASSERT_EQ(run(single() + common + " --out " + (d / "one").string(), &out), 0) << out;
  ASSERT_EQ(run(mpirun(2) + common + " --out " + (d / "two").string(), &out), 0) << out;
  expect_same_run(d / "one", d / "two", 4, d / "one", d / "two", {"loss", "accuracy", "margin"});
  EXPECT_TRUE(fs::exists(d / "two" / "summary.json"));

  // --batch-size 3 cannot be split over 2 ranks: a clear error on every rank, no hang.
  EXPECT_NE(run(mpirun(2) + " -q dpo --model " + f.base.string() + " --data " + f.prefs.string() +
                    " --val-fraction 0 --kl-prompts 0 --steps 2 --batch-size 3 --out " + (d / "bad").string(),
                &out),
            0);
  EXPECT_NE(out.find("--batch-size 3 does not split over 2 ranks"), std::string::npos) << out;
  EXPECT_NE(out.find("--batch-size 2, 4 or another multiple of 2"), std::string::npos) << out;
}

TEST(DistMpirunAlign, RewardModelOnTwoRanksMatchesOneProcess) {
  if (const std::string why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
  PrefFixture f;
  const fs::path d = f.dir.path();
  const std::string common = " -q rm train --precision fp32 --model " + f.base.string() + " --data " + f.prefs.string() +
                             " --val-fraction 0 --steps 4 --batch-size 4 --lr 3e-3";
  std::string out;
  ASSERT_EQ(run(single() + common + " --out " + (d / "one").string(), &out), 0) << out;
  ASSERT_EQ(run(mpirun(2) + common + " --out " + (d / "two").string(), &out), 0) << out;
  expect_same_run(d / "one", d / "two", 4, d / "one" / "rm", d / "two" / "rm",
                  {"loss", "accuracy", "margin", "reward_mean", "reward_min", "reward_max", "tokens"});
}

TEST(DistMpirunAlign, ClassifyOnTwoRanksMatchesOneProcess) {
  if (const std::string why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
  TempDir dir;
  const fs::path d = dir.path();
  aji::Rng rng(5);
  auto text = [&](bool spam) {
    const char* w[2][4] = {{"see", "you", "at", "home"}, {"free", "cash", "call", "now"}};
    std::string s;
    for (int i = 0, n = 3 + int(rng.below(4)); i < n; ++i) s += std::string(w[spam][rng.below(4)]) + " ";
    return s + (spam ? "prize!" : "tonight.");
  };
  {
    std::ofstream c(d / "corpus.txt");
    for (int i = 0; i < 300; ++i) c << text(i % 2) << "\n\n";
    std::ofstream t(d / "train.jsonl");
    for (int i = 0; i < 10; ++i) {  // batches of 4: 4, 4, 2 per epoch
      const bool spam = i % 3 == 0;
      t << nlohmann::json{{"text", text(spam)}, {"label", spam ? "spam" : "ham"}}.dump() << "\n";
    }
  }
  aji::test::MicroBaseOptions mb;
  mb.vocab_size = 300;  // what a BPE of this small corpus reaches
  const fs::path base = aji::test::build_micro_base(d, d / "corpus.txt", mb);
  const std::string common = " -q classify train --precision fp32 --model " + base.string() + " --train " + (d / "train.jsonl").string() +
                             " --trainable all --steps 4 --batch-size 4 --lr 3e-3";
  std::string out;
  ASSERT_EQ(run(single() + common + " --out " + (d / "one").string(), &out), 0) << out;
  ASSERT_EQ(run(mpirun(2) + common + " --out " + (d / "two").string(), &out), 0) << out;
  expect_same_run(d / "one", d / "two", 4, d / "one" / "classifier", d / "two" / "classifier",
                  {"loss", "batch_accuracy", "tokens"});
}

// GRPO: each rank rolls out its share of every step's prompts (prompt p to rank p % N, seeded
// by its index in the whole step, so the completions are one process's), the rewards and the
// step's token count are summed over the ranks, and each rank's loss part is normalised by the
// whole step's counts. 3 prompts a step over 2 ranks: shares of 2 and 1.
TEST(DistMpirunAlign, GrpoOnTwoRanksMatchesOneProcess) {
  if (const std::string why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
  TempDir dir;
  const fs::path d = dir.path();
  const char* qa[][2] = {{"What color is the sky?", "blue"},
                         {"How many legs does a cat have?", "four"},
                         {"Say hello.", "hello"},
                         {"What is two plus two?", "4"}};
  {
    std::ofstream c(d / "corpus.txt");
    for (int i = 0; i < 200; ++i)
      for (auto& q : qa) c << q[0] << " " << q[1] << "\n\n";
    // a reward that varies with the reply: the parity of its byte count
    std::ofstream(d / "parity.sh") << "n=$(wc -c)\necho $((n % 2))\n";
    std::ofstream t(d / "tasks.jsonl"), e(d / "eval.jsonl");
    for (int i = 0; i < 9; ++i)
      (i < 6 ? t : e) << R"({"messages": [{"role": "user", "content": ")" << qa[i % 4][0] << R"("}], "answer": ")"
                      << qa[i % 4][1] << "\"}\n";
  }
  aji::test::MicroBaseOptions mb;
  mb.vocab_size = 300;
  const fs::path base = aji::test::build_micro_base(d, d / "corpus.txt", mb);
  for (const char* loss : {"dapo", "grpo"}) {
    SCOPED_TRACE(loss);
    const std::string common = std::string(" -q grpo --precision fp32 --model ") + base.string() + " --tasks " +
                               (d / "tasks.jsonl").string() + " --verifier 'command:/bin/sh " +
                               (d / "parity.sh").string() +
                               "' --steps 3 --group-size 4 --prompts-per-step 3 --max-new-tokens 6 --temperature 1"
                               " --kl-coef 0.04 --lr 1e-3 --eval-tasks " + (d / "eval.jsonl").string() +
                               " --eval-samples 2 --loss-type " + loss;
    const fs::path one = d / (std::string("one-") + loss), two = d / (std::string("two-") + loss);
    std::string out;
    ASSERT_EQ(run(single() + common + " --out " + one.string(), &out), 0) << out;
    ASSERT_EQ(run(mpirun(2) + common + " --out " + two.string(), &out), 0) << out;
    expect_same_run(one, two, 3, one, two, {"loss", "reward", "reply_len", "kl", "grad_norm"});
    const std::vector<double> norms = series(one, "grad_norm");
    EXPECT_GT(*std::max_element(norms.begin(), norms.end()), 0.0) << "the steps trained";
    // the evaluation before step 1 (3 tasks split 2 + 1 over the ranks): the same numbers
    const auto s1 = nlohmann::json::parse(std::ifstream(one / "summary.json"));
    const auto s2 = nlohmann::json::parse(std::ifstream(two / "summary.json"));
    ASSERT_TRUE(s1["eval_before"].is_object()) << s1.dump();
    EXPECT_EQ(s2["eval_before"], s1["eval_before"]);
    for (const char* k : {"reward", "pass@1", "kl", "reply_len"})
      EXPECT_NEAR(s2["eval_after"][k].get<double>(), s1["eval_after"][k].get<double>(), 1e-4) << k;
  }
}

// PPO: each rank samples its share of every step's prompts, the rows (tokens, sampled
// log-probs, stop flags) and the reward model's scores are gathered on every rank, each rank runs
// the advantage pass's forwards on its prompts' rows (per-token results gathered, then every rank
// computes the same advantages), and each minibatch's rows are dealt over the ranks
// (token-weighted, so the losses are the one-process masked means). 3 prompts x 2 replies a step
// over 2 ranks, 2 minibatches of 3 rows (2 + 1 per rank), 2 PPO epochs.
TEST(DistMpirunAlign, PpoOnTwoRanksMatchesOneProcess) {
  if (const std::string why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
  PrefFixture f;
  const fs::path d = f.dir.path();
  std::string out;
  const fs::path rm = d / "rm";
  ASSERT_EQ(run(single() + " -q rm train --precision fp32 --model " + f.base.string() + " --data " + f.prefs.string() +
                    " --epochs 1 --batch-size 4 --val-fraction 0 --out " + rm.string(),
                &out),
            0)
      << out;
  {
    std::ofstream p(d / "prompts.jsonl");
    for (auto& q : kPairs) p << R"({"messages": [{"role": "user", "content": ")" << q[0] << R"("}]})" << "\n";
  }
  const std::string common = " -q ppo --precision fp32 --model " + f.base.string() + " --reward " + rm.string() +
                             " --prompts " + (d / "prompts.jsonl").string() +
                             " --steps 3 --kl-coef 0.1 --rollouts-per-step 6 --group-size 2 --minibatches 2"
                             " --ppo-epochs 2 --max-new-tokens 6 --lr 1e-3";
  ASSERT_EQ(run(single() + common + " --out " + (d / "one").string(), &out), 0) << out;
  ASSERT_EQ(run(mpirun(2) + common + " --out " + (d / "two").string(), &out), 0) << out;
  expect_same_run(d / "one", d / "two", 3, d / "one", d / "two",
                  {"score", "kl", "pg_loss", "value_loss", "clip_frac", "approx_kl", "grad_norm", "value_grad_norm",
                   "reply_length", "explained_variance"});
  const std::vector<double> norms = series(d / "one", "grad_norm");
  EXPECT_GT(*std::max_element(norms.begin(), norms.end()), 0.0) << "the steps trained";
  EXPECT_TRUE(fs::exists(d / "two" / "summary.json"));
}

// Ranks started with different settings (an MPMD launch: rank 1 gets another --beta) are a
// clear error naming the setting and both values, and the job ends instead of training on
// two objectives. The same check runs in every trainer (train::require_same_settings).
TEST(DistMpirunAlign, RanksWithOtherSettingsAreRefused) {
  if (const std::string why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
  PrefFixture f;
  const fs::path d = f.dir.path();
  auto dpo = [&](const char* beta) {
    return std::string(" -np 1 -x AJI_THREADS=1 ") + AJI_BINARY + " -q dpo --model " + f.base.string() + " --data " +
           f.prefs.string() + " --val-fraction 0 --kl-prompts 0 --steps 2 --batch-size 4 --beta " + beta + " --out " +
           (d / "mixed").string();
  };
  const std::string cmd = "timeout 120 mpirun --allow-run-as-root --oversubscribe --bind-to none" + dpo("0.5") + " :" + dpo("0.25");
  std::string out;
  EXPECT_NE(run(cmd, &out), 0) << out;
  EXPECT_NE(out.find("rank 1 was started with other settings than rank 0: beta 0.25 (rank 0: 0.5)"), std::string::npos)
      << out;
}
