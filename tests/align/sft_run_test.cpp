// `aji sft train` end to end on a micro model: outputs, learning, bit-identical resume,
// the run-dir guard, and clear errors for bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "aji/align/sft_run.h"
#include "aji/kernels/cpu/bf16_gemm.h"
#include "aji/base/error.h"
#include "aji/base/threads.h"
#include "aji/train/checkpoint.h"
#include "aji/train/pretrain.h"
#include "aji/train/tokenize_data.h"
#include "micro_base.h"
#include "test_util.h"

namespace fs = std::filesystem;
using aji::test::TempDir;

namespace {

const char* kQa[][2] = {{"What color is the sky?", "The sky is blue."},
                        {"How many legs does a cat have?", "A cat has four legs."},
                        {"하늘은 무슨 색이야?", "하늘은 파란색이야."},
                        {"Say hello.", "Hello! How can I help you today?"}};

struct SftFixture {
  TempDir dir;
  fs::path base, train, val;
  explicit SftFixture(const std::string& specials = "") {
    aji::set_num_threads(1);
    {
      std::ofstream c(dir.path() / "corpus.txt");
      for (int i = 0; i < 200; ++i)
        for (auto& qa : kQa) c << qa[0] << " " << qa[1] << "\n\n";
    }
    aji::test::MicroBaseOptions mb;
    mb.vocab_size = 320;
    mb.tokenizer_flags = specials;
    base = aji::test::build_micro_base(dir.path(), dir.path() / "corpus.txt", mb);
    train = dir.path() / "train.jsonl";
    val = dir.path() / "val.jsonl";
    std::ofstream tr(train), va(val);
    for (int i = 0; i < 12; ++i) {
      auto& qa = kQa[i % 4];
      (i < 8 ? tr : va) << R"({"messages": [{"role": "user", "content": ")" << qa[0]
                        << R"("}, {"role": "assistant", "content": ")" << qa[1] << R"("}]})" << "\n";
    }
  }
  aji::align::SftRunOptions options(const std::string& run, int64_t steps) const {
    aji::align::SftRunOptions o;
    o.model = base;
    o.train_file = train;
    o.val_file = val;
    o.out_dir = dir.path() / run;
    o.quiet = true;
    o.train.batch = 2;
    o.train.grad_accum = 2;
    o.train.steps = steps;
    o.train.lr = 3e-3f;
    o.train.eval_every = 5;
    o.save_every = 3;
    return o;
  }
};

std::vector<float> weights(const fs::path& run) {
  aji::model::Model m = aji::train::load_model(run);
  return {m.params(), m.params() + m.num_params()};
}

}  // namespace

TEST(SftRun, LearnsWritesCheckpointsAndMetrics) {
  SftFixture f;
  auto lo = f.options("run", 60);
  lo.train.lr = 1e-2f;
  auto r = aji::align::run_sft(lo);
  EXPECT_EQ(r.step, 60);
  EXPECT_LT(r.last_loss, 0.5 * r.first_loss);
  EXPECT_LT(r.last_val_loss, r.first_val_loss);  // the val questions are the training ones
  const fs::path run = f.dir.path() / "run";
  EXPECT_TRUE(fs::exists(run / "loss.svg"));
  EXPECT_TRUE(fs::exists(run / "metrics.jsonl"));
  const fs::path ck = aji::train::resolve_model_dir(run);
  for (const char* name : {"model.safetensors", "optimizer.bin", "trainer_state.json", "aji_tokenizer.json", "config.json"})
    EXPECT_TRUE(fs::exists(ck / name)) << name;
  // The run dir is a model dir like any other (generate/chat/classify read it).
  EXPECT_EQ(weights(run).size(), aji::train::load_model(f.base).num_params());
  // A second run into the same dir needs --force; --resume with nothing to do is fine.
  EXPECT_THROW(aji::align::run_sft(f.options("run", 40)), aji::Error);
  auto forced = f.options("run", 3);
  forced.force = true;
  EXPECT_EQ(aji::align::run_sft(forced).step, 3);
}

TEST(SftRun, ResumeIsBitIdentical) {
  SftFixture f;
  auto straight = aji::align::run_sft(f.options("straight", 10));
  auto first = f.options("split", 10);
  first.stop_after = 4;
  auto a = aji::align::run_sft(first);
  EXPECT_TRUE(a.interrupted);
  EXPECT_EQ(a.step, 4);
  aji::align::SftRunOptions again;
  again.out_dir = f.dir.path() / "split";
  again.resume = true;
  again.quiet = true;
  auto b = aji::align::run_sft(again);
  EXPECT_EQ(b.step, 10);
  std::vector<float> joined = a.step_losses;
  joined.insert(joined.end(), b.step_losses.begin(), b.step_losses.end());
  ASSERT_EQ(joined.size(), straight.step_losses.size());
  for (size_t i = 0; i < joined.size(); ++i) EXPECT_EQ(joined[i], straight.step_losses[i]) << "step " << i + 1;
  const auto w1 = weights(f.dir.path() / "straight"), w2 = weights(f.dir.path() / "split");
  ASSERT_EQ(w1.size(), w2.size());
  EXPECT_EQ(0, std::memcmp(w1.data(), w2.data(), sizeof(float) * w1.size()));
  // Issue #13: the summary of a resumed run compares with the run's own first losses (step 1
  // and step 0's validation), not with where the resumed part began.
  EXPECT_EQ(b.first_loss, straight.first_loss);
  EXPECT_EQ(float(b.first_loss), straight.step_losses[0]);
  EXPECT_EQ(b.first_val_loss, straight.first_val_loss);
  EXPECT_FALSE(std::isnan(b.first_val_loss));
  EXPECT_EQ(b.last_val_loss, straight.last_val_loss);
}

// --batching pack: several conversations per row; it learns, and a resumed run keeps the
// layout (it is part of the saved options) and matches the straight run bit for bit.
TEST(SftRun, PackedRunLearnsAndResumesWithItsLayout) {
  SftFixture f;
  auto o = f.options("packed", 30);
  o.train.layout = aji::align::BatchLayout::kPack;
  o.train.lr = 1e-2f;
  o.train.seq_len = 64;
  auto straight = aji::align::run_sft(o);
  EXPECT_EQ(straight.step, 30);
  EXPECT_LT(straight.last_loss, 0.7 * straight.first_loss);
  auto first = o;
  first.out_dir = f.dir.path() / "packed-split";
  first.stop_after = 12;
  aji::align::run_sft(first);
  aji::align::SftRunOptions again;
  again.out_dir = first.out_dir;
  again.resume = true;
  again.quiet = true;
  auto b = aji::align::run_sft(again);
  EXPECT_EQ(b.step, 30);
  EXPECT_EQ(b.step_losses.back(), straight.step_losses.back());
  const auto w1 = weights(f.dir.path() / "packed"), w2 = weights(first.out_dir);
  EXPECT_EQ(0, std::memcmp(w1.data(), w2.data(), sizeof(float) * w1.size()));
}

TEST(SftRun, BadInputIsAClearError) {
  SftFixture f;
  {
    std::ofstream bad(f.dir.path() / "bad.jsonl");
    bad << R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})" << "\n";
    bad << R"({"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "beep"}]})" << "\n";
  }
  auto o = f.options("bad", 2);
  o.train_file = f.dir.path() / "bad.jsonl";
  try {
    aji::align::run_sft(o);
    ADD_FAILURE() << "no error";
  } catch (const aji::Error& e) {
    EXPECT_NE(e.describe().find("bad.jsonl:2"), std::string::npos) << e.describe();
  }
  o.skip_invalid = true;  // counted skip instead
  o.force = true;
  EXPECT_EQ(aji::align::run_sft(o).step, 2);
  // Through the CLI: no --model for a new run.
  std::string out;
  EXPECT_NE(aji::test::run_command(std::string(AJI_BINARY) + " sft train --out " + (f.dir.path() / "x").string() + " 2>&1", &out), 0);
  EXPECT_NE(out.find("--model and --data are required"), std::string::npos) << out;
}

TEST(SftRun, TokenizerWithoutChatTokensIsRefused) {
  SftFixture f("--special '<|endoftext|>'");
  try {
    aji::align::run_sft(f.options("run", 2));
    ADD_FAILURE() << "no error";
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("<|im_start|>"), std::string::npos) << e.what();
  }
}

// Issue #13: one rule for a run dir without a checkpoint (a run killed before its first
// save): a fresh start is allowed (no --force) and --resume says there is nothing to resume
// and gives the fresh command; with a checkpoint a fresh start needs --force and names --resume.
TEST(SftRun, RunDirWithoutCheckpointHasOneConsistentRule) {
  SftFixture f;
  auto o = f.options("run", 4);
  aji::align::run_sft(o);
  const fs::path run = o.out_dir;
  for (const auto& [step, path] : aji::train::list_checkpoints(run)) fs::remove_all(path);
  fs::remove(run / "latest");
  ASSERT_TRUE(fs::exists(run / "run.json"));
  aji::align::SftRunOptions again;
  again.out_dir = run;
  again.resume = true;
  again.quiet = true;
  try {
    aji::align::run_sft(again);
    ADD_FAILURE() << "no error";
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("nothing to resume"), std::string::npos) << e.describe();
    EXPECT_NE(e.how_to_fix().find("aji sft train --model"), std::string::npos) << e.describe();
    EXPECT_EQ(e.how_to_fix().find("--resume"), std::string::npos) << e.describe();
    EXPECT_NE(e.how_to_fix().find("no --force needed"), std::string::npos) << e.describe();
  }
  EXPECT_EQ(aji::align::run_sft(o).step, 4);  // fresh start, no --force
  try {  // now it holds a checkpoint
    aji::align::run_sft(o);
    ADD_FAILURE() << "no error";
  } catch (const aji::Error& e) {
    EXPECT_NE(e.how_to_fix().find("--resume"), std::string::npos) << e.describe();
  }
  EXPECT_EQ(aji::align::run_sft(again).step, 4);  // and --resume finds it (nothing left to do)
}

// Issue #13 (the pretrain rule applied to SFT): a resumed run keeps its settings; an option
// given again with another value is refused unless it is safe (eval/save cadence, keep),
// which changes with a note and leaves the training bit-identical.
TEST(SftRun, ResumeKeepsTheRunsSettings) {
  SftFixture f;
  auto straight = aji::align::run_sft(f.options("straight", 10));
  auto first = f.options("split", 10);
  first.stop_after = 4;
  first.keep = 0;  // saved with the run: a resume without --keep keeps every checkpoint too
  const auto a = aji::align::run_sft(first);
  auto again = f.options("split", 10);  // the same values as the run: accepted
  again.resume = true;
  again.model.clear();
  again.keep = 2;
  again.save_every = 3;
  auto refused = [&](const std::string& flag, auto change) {
    auto o = again;
    change(o);
    o.given = {flag};
    try {
      aji::align::run_sft(o);
      ADD_FAILURE() << flag << ": no error";
    } catch (const aji::Error& e) {
      EXPECT_EQ(std::string(e.what()).rfind(flag + " ", 0), 0u) << e.describe();
      EXPECT_NE(e.how_to_fix().find("leave " + flag + " out"), std::string::npos) << e.describe();
    }
  };
  refused("--lr", [](auto& o) { o.train.lr = 1e-2f; });
  refused("--steps", [](auto& o) { o.train.steps = 20; });
  refused("--batch-size", [](auto& o) { o.train.batch = 3; });
  refused("--seed", [](auto& o) { o.train.seed = 7; });
  refused("--data", [&](auto& o) { o.train_file = f.val; });
  {  // through the CLI: the flags given are the ones compared
    std::string out;
    EXPECT_EQ(aji::test::run_command(std::string(AJI_BINARY) + " -q --threads 1 sft train --out " +
                                         again.out_dir.string() + " --resume --lr 0.5 2>&1",
                                     &out),
              1);
    EXPECT_NE(out.find("--lr 0.5 differs from the run's 0.003:"), std::string::npos) << out;
  }
  EXPECT_EQ(aji::train::list_checkpoints(again.out_dir).back().first, 4) << "a refused resume changes nothing";
  // The same values given again, and a safe change (evaluation cadence): accepted.
  again.given = {"--lr", "--steps", "--batch-size", "--data", "--model", "--eval-every"};
  again.model = f.base;
  again.train.eval_every = 2;
  auto b = aji::align::run_sft(again);
  EXPECT_EQ(b.step, 10);
  std::vector<float> joined = a.step_losses;
  joined.insert(joined.end(), b.step_losses.begin(), b.step_losses.end());
  ASSERT_EQ(joined.size(), straight.step_losses.size());
  for (size_t i = 0; i < joined.size(); ++i) EXPECT_EQ(joined[i], straight.step_losses[i]) << "step " << i + 1;
  // --save-every 3 and --keep 0 were the run's: checkpoints 3 (first session), 4 (its stop),
  // 6, 9 and 10 all kept.
  std::vector<int64_t> steps;
  for (const auto& [step, path] : aji::train::list_checkpoints(again.out_dir)) steps.push_back(step);
  EXPECT_EQ(steps, (std::vector<int64_t>{3, 4, 6, 9, 10}));
}

// A run dir written before the options were declared once (base/options.h) saved --batch-size
// as "batch" and val_fraction/save_every/keep beside "options": it still resumes with its own
// settings (bit for bit), and still refuses a changed one.
TEST(SftRun, CheckpointWithTheOldSettingsKeysStillResumes) {
  SftFixture f;
  auto straight = aji::align::run_sft(f.options("straight", 10));
  auto first = f.options("old", 10);
  first.stop_after = 4;
  first.keep = 0;
  aji::align::run_sft(first);
  const fs::path ts = aji::train::list_checkpoints(first.out_dir).back().second / "trainer_state.json";
  nlohmann::json j = nlohmann::json::parse(std::ifstream(ts));
  nlohmann::json& sft = j["sft"];
  nlohmann::json& opts = sft["options"];
  ASSERT_TRUE(opts.contains("batch_size")) << opts.dump();
  opts["batch"] = opts["batch_size"];  // the old layout (SftOptions::to_json of before)
  for (const char* key : {"batch_size", "stop_after"}) opts.erase(key);
  for (const char* key : {"val_fraction", "save_every", "keep"}) {
    sft[key] = opts[key];
    opts.erase(key);
  }
  opts["pad_id"] = 0;
  std::ofstream(ts) << j.dump(2);
  aji::align::SftRunOptions again;
  again.out_dir = first.out_dir;
  again.resume = true;
  again.quiet = true;
  {
    auto o = again;
    o.train.batch = 5;
    o.given = {"--batch-size"};
    try {
      aji::align::run_sft(o);
      ADD_FAILURE() << "no error";
    } catch (const aji::Error& e) {
      EXPECT_EQ(std::string(e.what()).rfind("--batch-size 5 differs from the run's 2", 0), 0u) << e.describe();
    }
  }
  auto b = aji::align::run_sft(again);
  EXPECT_EQ(b.step, 10);
  ASSERT_EQ(b.step_losses.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(b.step_losses[i], straight.step_losses[4 + i]) << "step " << i + 5;
  std::vector<int64_t> steps;  // --keep 0 and --save-every 3, read from the old keys
  for (const auto& [step, path] : aji::train::list_checkpoints(again.out_dir)) steps.push_back(step);
  EXPECT_EQ(steps, (std::vector<int64_t>{3, 4, 6, 9, 10}));
}

// --precision (train/trainer_run.h run_precision): resolved and saved with the run; bf16
// learns as fp32 does; a checkpoint from before the option existed continues in fp32, bit
// for bit as a straight fp32 run, unless --precision is given.
TEST(SftRun, PrecisionIsSavedAndARunFromBeforeItContinuesInFp32) {
  SftFixture f;
  auto fp32 = f.options("fp32", 10);
  fp32.precision = "fp32";
  const auto straight = aji::align::run_sft(fp32);
  auto bf = f.options("bf16", 10);
  bf.precision = "auto";
  const auto b = aji::align::run_sft(bf);
  const std::string want = aji::kernels::cpu::bf16_supported() ? "bf16" : "fp32";
  const nlohmann::json info = nlohmann::json::parse(std::ifstream(bf.out_dir / "run.json"));
  EXPECT_EQ(info["options"]["precision"], want) << info.dump();
  EXPECT_NEAR(b.last_loss, straight.last_loss, 0.05 * straight.last_loss);
  EXPECT_LT(b.last_loss, 0.95 * b.first_loss);

  auto first = f.options("old", 10);
  first.precision = "fp32";
  first.stop_after = 4;
  aji::align::run_sft(first);
  const fs::path ts = aji::train::list_checkpoints(first.out_dir).back().second / "trainer_state.json";
  nlohmann::json j = nlohmann::json::parse(std::ifstream(ts));
  ASSERT_TRUE(j["sft"]["options"].contains("precision")) << j.dump();
  j["sft"]["options"].erase("precision");
  std::ofstream(ts) << j.dump(2);
  aji::align::SftRunOptions again;
  again.out_dir = first.out_dir;
  again.resume = true;
  again.quiet = true;
  const auto r = aji::align::run_sft(again);
  ASSERT_EQ(r.step_losses.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(r.step_losses[i], straight.step_losses[4 + i]) << "step " << i + 5;
}

// Issue #13: numeric options are checked when the command line is parsed, before any
// model or data is read (the paths here do not exist, so a later check would name them).
TEST(SftRun, BadNumbersAreRefusedAtParseTime) {
  TempDir dir;
  const std::string base = std::string(AJI_BINARY) + " sft train --model /nonexistent/m --data /nonexistent/d.jsonl --out " +
                           (dir.path() / "run").string() + " ";
  for (const char* bad : {"--steps 0", "--steps -3", "--epochs 0", "--epochs -1", "--lr -1", "--lr 0", "--warmup -1",
                          "--batch-size 0", "--grad-accum 0", "--min-lr-frac 1.5", "--weight-decay -0.1",
                          "--grad-clip -1", "--eval-every -2", "--save-every -1", "--keep -1", "--seq-len 1",
                          "--decay sqrt", "--val-fraction 1.5"}) {
    std::string out;
    EXPECT_NE(aji::test::run_command(base + bad + " 2>&1", &out), 0) << bad << "\n" << out;
    const std::string flag = std::string(bad).substr(0, std::string(bad).find(' '));
    EXPECT_NE(out.find(flag), std::string::npos) << bad << "\n" << out;
    EXPECT_EQ(out.find("nonexistent"), std::string::npos) << bad << ": checked after loading?\n" << out;
  }
  EXPECT_FALSE(fs::exists(dir.path() / "run"));
}

// Issue #13: a model or batch that does not fit is refused before allocating, with the
// estimate and the fix, instead of a bare std::bad_alloc. The estimate's activation part is
// checked against what Model::forward really allocates.
TEST(SftRun, TooLittleMemoryIsAClearErrorBeforeAllocating) {
  SftFixture f;
  aji::model::Model m = aji::train::load_model(f.base);
  m.forward(std::vector<int32_t>(4 * 32, 1).data(), 4, 32);
  const auto est = aji::align::training_memory(m.config(), (int64_t)m.num_params(), 4 * 32);
  EXPECT_NEAR(est.activations, double(m.activation_bytes()), 0.05 * double(m.activation_bytes()));
  EXPECT_EQ(est.weights, 4.0 * double(m.num_params()));

  const auto whole = aji::align::training_memory(m.config(), (int64_t)m.num_params(), 64);
  const auto batch = aji::align::training_memory(m.config(), (int64_t)m.num_params(), 2 * 64);
  ASSERT_GT(batch.total(), whole.total());
  auto expect_refused = [&](double limit_bytes, const std::string& fix_word) {
    ::setenv("AJI_MEMORY_LIMIT_MB", std::to_string(limit_bytes / 1048576.0).c_str(), 1);
    auto o = f.options("mem", 2);
    o.force = true;
    try {
      aji::align::run_sft(o);
      ADD_FAILURE() << "no error at " << limit_bytes << " bytes";
    } catch (const aji::Error& e) {
      EXPECT_NE(std::string(e.what()).find("GiB"), std::string::npos) << e.describe();
      EXPECT_NE(e.how_to_fix().find(fix_word), std::string::npos) << e.describe();
    }
  };
  expect_refused(0.5 * whole.total(), "smaller model");
  expect_refused(0.5 * (whole.total() + batch.total()), "--batch-size");
  ::setenv("AJI_MEMORY_LIMIT_MB", std::to_string(2 * batch.total() / 1048576.0).c_str(), 1);
  auto o = f.options("mem", 2);
  o.force = true;
  EXPECT_EQ(aji::align::run_sft(o).step, 2);
  ::unsetenv("AJI_MEMORY_LIMIT_MB");
}
