// `aji sft train` end to end on a micro model: outputs, learning, bit-identical resume,
// the run-dir guard, and clear errors for bad input.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "aji/align/sft_run.h"
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
