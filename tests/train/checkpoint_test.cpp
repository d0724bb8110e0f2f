// Checkpoints: atomic layout, keep-last-K, `latest`, resolving --model DIR, and errors
// for damaged or mismatched weights.
#include <gtest/gtest.h>

#include <fstream>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/threads.h"
#include "aji/train/checkpoint.h"
#include "aji/train/safetensors.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace aji::train;
using aji::test::TempDir;

namespace {
aji::model::ModelConfig small_llama() {
  aji::model::ModelConfig c;
  c.arch = aji::model::Arch::kLlama;
  c.vocab_size = 64;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = 2;
  c.d_model = 32;
  c.d_ff = 48;
  c.max_seq_len = 32;
  return c;
}
}  // namespace

TEST(Checkpoint, SaveLoadKeepLastAndLatest) {
  aji::set_num_threads(1);  // tiny shapes: one thread is fastest and steadiest
  TempDir dir;
  aji::model::Model m(small_llama());
  m.init_weights(3);
  AdamW opt(m.num_params(), {});
  std::ofstream(dir.path() / "aji_tokenizer.json") << "{\"format\":\"aji-tokenizer\"}";
  for (int64_t step : {10, 20, 30, 40}) {
    m.params()[0] = static_cast<float>(step);
    CheckpointContents c{&m, &opt, {{"step", step}}, {dir.path() / "aji_tokenizer.json"}};
    save_checkpoint(dir.path() / "run", step, c, /*keep=*/2);
  }
  auto cks = list_checkpoints(dir.path() / "run");
  ASSERT_EQ(cks.size(), 2u);
  EXPECT_EQ(cks[0].first, 30);
  EXPECT_EQ(cks[1].first, 40);
  EXPECT_EQ(aji::read_file(dir.path() / "run" / "latest"), "ckpt-40\n");
  for (const char* f : {"model.safetensors", "config.json", "aji_config.json", "optimizer.bin", "trainer_state.json",
                        "aji_tokenizer.json"})
    EXPECT_TRUE(fs::exists(cks[1].second / f)) << f;
  for (const auto& e : fs::directory_iterator(dir.path() / "run"))  // no temp dirs left behind
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
  fs::path resolved;
  auto back = load_model(dir.path() / "run", &resolved);
  EXPECT_EQ(resolved, cks[1].second);
  EXPECT_EQ(back.params()[0], 40.0f);
  EXPECT_TRUE(std::equal(m.params(), m.params() + m.num_params(), back.params()));
  EXPECT_EQ(back.config().to_json(), m.config().to_json());
  auto back30 = load_model(cks[0].second);
  EXPECT_EQ(back30.params()[0], 30.0f);
  EXPECT_EQ(find_tokenizer_file(resolved), resolved / "aji_tokenizer.json");
  // config.json alone (no aji_config.json) gives the same config: the HF round trip.
  fs::remove(cks[1].second / "aji_config.json");
  EXPECT_EQ(load_model_config(cks[1].second).to_json(), m.config().to_json());
}

TEST(Checkpoint, DamagedAndMismatchedWeightsAreClearErrors) {
  aji::set_num_threads(1);  // tiny shapes: one thread is fastest and steadiest
  TempDir dir;
  aji::model::Model m(small_llama());
  m.init_weights(1);
  save_model_dir(dir.path() / "ok", m, {});
  // Truncated weights.
  fs::copy(dir.path() / "ok", dir.path() / "trunc", fs::copy_options::recursive);
  fs::resize_file(dir.path() / "trunc" / "model.safetensors", fs::file_size(dir.path() / "trunc" / "model.safetensors") - 100);
  try {
    load_model(dir.path() / "trunc");
    FAIL();
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.describe();
  }
  // Weights of another architecture under this config.
  aji::model::ModelConfig g = small_llama();
  g.arch = aji::model::Arch::kGpt2;
  g.n_kv_head = g.n_head;
  g.bias = true;
  g.tied_embeddings = true;
  g.d_ff = 0;
  aji::model::Model gm(g);
  fs::create_directories(dir.path() / "mixed");
  fs::copy(dir.path() / "ok" / "model.safetensors", dir.path() / "mixed" / "model.safetensors");
  std::ofstream(dir.path() / "mixed" / "config.json") << g.to_hf_config_json().dump();
  try {
    load_model(dir.path() / "mixed");
    FAIL();
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("lacks tensor"), std::string::npos) << e.describe();
    EXPECT_NE(e.how_to_fix().find("another architecture"), std::string::npos);
  }
  // Same names, other shapes.
  aji::model::ModelConfig wide = small_llama();
  wide.d_ff = 64;
  fs::create_directories(dir.path() / "shape");
  fs::copy(dir.path() / "ok" / "model.safetensors", dir.path() / "shape" / "model.safetensors");
  std::ofstream(dir.path() / "shape" / "config.json") << wide.to_hf_config_json().dump();
  EXPECT_THROW(load_model(dir.path() / "shape"), aji::Error);
  // Not a model dir at all.
  EXPECT_THROW(resolve_model_dir(dir.path() / "nope"), aji::Error);
  fs::create_directories(dir.path() / "empty");
  EXPECT_THROW(resolve_model_dir(dir.path() / "empty"), aji::Error);
}
