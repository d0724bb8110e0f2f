// Slow: bit-identical resume with two threads (OpenMP reductions in every op) on a
// model large enough that the parallel paths are taken, trained on the bundled corpus.
#include <gtest/gtest.h>

#include <fstream>

#include "aji/base/threads.h"
#include "aji/train/checkpoint.h"
#include "aji/train/pretrain.h"
#include "aji/train/tokenize_data.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace aji::train;

TEST(PretrainSlow, TwoThreadResumeIsBitIdenticalOnTheCorpus) {
  aji::set_num_threads(2);
  aji::test::TempDir dir;
  std::string out;
  const std::string corpus = aji::test::source_path("data/corpus/train/en_shakespeare.txt").string();
  ASSERT_EQ(aji::test::run_command(std::string(AJI_BINARY) + " -q tokenizer train --input " + corpus +
                                       " --vocab-size 1024 --out " + (dir.path() / "tok.json").string() + " 2>&1",
                                   &out),
            0)
      << out;
  TokenizeDataOptions t;
  t.tokenizer = dir.path() / "tok.json";
  t.inputs = {corpus};
  t.out_dir = dir.path() / "data";
  t.val_fraction = 0.05;
  t.progress = false;
  tokenize_data(t);
  std::ofstream(dir.path() / "m.json") << R"({"arch": "llama", "vocab_size": 1024, "n_layer": 2, "n_head": 4,
      "n_kv_head": 2, "d_model": 128, "d_ff": 256, "max_seq_len": 128})";
  auto opts = [&](const std::string& run) {
    PretrainOptions o;
    o.config = dir.path() / "m.json";
    o.data_dir = t.out_dir;
    o.out_dir = dir.path() / run;
    o.steps = 30;
    o.batch = 4;
    o.seq_len = 128;
    o.total_batch_tokens = 1024;
    o.lr = 3e-3f;
    o.eval_every = 10;
    o.eval_batches = 4;
    o.sample_every = 0;
    o.save_every = 10;
    o.quiet = true;
    return o;
  };
  auto straight = pretrain(opts("a"));
  auto first = opts("b");
  first.stop_after = 13;
  auto r1 = pretrain(first);
  auto second = opts("b");
  second.resume = true;
  second.config.clear();
  auto r2 = pretrain(second);
  std::vector<float> joined = r1.step_losses;
  joined.insert(joined.end(), r2.step_losses.begin(), r2.step_losses.end());
  ASSERT_EQ(joined.size(), 30u);
  for (size_t i = 0; i < joined.size(); ++i) EXPECT_EQ(joined[i], straight.step_losses[i]) << "step " << i + 1;
  EXPECT_LT(straight.step_losses.back(), straight.step_losses.front() - 1.5f);  // it learns
  auto m1 = load_model(dir.path() / "a"), m2 = load_model(dir.path() / "b");
  EXPECT_TRUE(std::equal(m1.params(), m1.params() + m1.num_params(), m2.params()));
}
