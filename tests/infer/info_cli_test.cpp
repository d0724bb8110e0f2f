// `aji info`: a run dir built here with save_checkpoint (two checkpoints with known
// trainer states), a checkpoint dir, and a Hugging Face dir; every figure is checked
// against what was written or against the model itself.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "aji/train/checkpoint.h"
#include "byte_model.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {
nlohmann::json info_json(const fs::path& model, int* rc) {
  std::string out;
  *rc = aji::test::run_command(std::string(AJI_BINARY) + " info --json --model " + model.string() + " 2>&1", &out);
  try {
    return nlohmann::json::parse(out);
  } catch (...) {
    ADD_FAILURE() << out;
    return {};
  }
}
}  // namespace

TEST(InfoCli, RunDirCheckpointDirAndHuggingFaceDir) {
  aji::test::TempDir tmp;
  aji::model::Model m(aji::test::byte_model_config(64));
  m.init_weights(1);
  const auto tokp = tmp.path() / "aji_tokenizer.json";
  aji::tokenizer::save_aji_tokenizer_file(aji::test::byte_tok(true), tokp);
  const fs::path run = tmp.path() / "run";
  auto state = [](int64_t step, double val) {
    return nlohmann::json{{"step", step},
                          {"tokens_seen", step * 1024},
                          {"elapsed_s", 1.5 * step},
                          {"metrics", {{"train_loss", 3.25}, {"val_loss", val}, {"val_bpb", 1.125}}}};
  };
  aji::train::save_checkpoint(run, 100, {&m, nullptr, state(100, 4.5), {tokp}}, 0);
  aji::train::save_checkpoint(run, 200, {&m, nullptr, state(200, 3.75), {tokp}}, 0);

  int rc = 0;
  auto j = info_json(run, &rc);
  ASSERT_EQ(rc, 0) << j.dump();
  EXPECT_EQ(j["params"].get<int64_t>(), static_cast<int64_t>(m.num_params()));  // the allocated weights
  EXPECT_EQ(j["config"]["d_model"], 16);
  EXPECT_EQ(j["config"]["max_seq_len"], 64);
  EXPECT_EQ(j["step"], 200);
  EXPECT_EQ(j["tokens_seen"], 200 * 1024);
  EXPECT_DOUBLE_EQ(j["val_loss"].get<double>(), 3.75);
  EXPECT_DOUBLE_EQ(j["train_loss"].get<double>(), 3.25);
  EXPECT_DOUBLE_EQ(j["val_bpb"].get<double>(), 1.125);
  EXPECT_EQ(fs::path(j["model_dir"].get<std::string>()).filename(), "ckpt-200");
  ASSERT_EQ(j["checkpoints"].size(), 2u);
  EXPECT_EQ(j["checkpoints"][0]["step"], 100);
  EXPECT_DOUBLE_EQ(j["checkpoints"][0]["val_loss"].get<double>(), 4.5);
  EXPECT_FALSE(j["checkpoints"][0]["current"].get<bool>());
  EXPECT_EQ(j["checkpoints"][1]["step"], 200);
  EXPECT_TRUE(j["checkpoints"][1]["current"].get<bool>());
  EXPECT_TRUE(j["checkpoints"][1]["weights_only"].get<bool>());
  EXPECT_EQ(fs::path(j["tokenizer"].get<std::string>()).filename(), "aji_tokenizer.json");

  // A checkpoint dir: its own state, and the run's list.
  j = info_json(run / "ckpt-100", &rc);
  ASSERT_EQ(rc, 0) << j.dump();
  EXPECT_EQ(j["step"], 100);
  EXPECT_DOUBLE_EQ(j["val_loss"].get<double>(), 4.5);
  ASSERT_EQ(j["checkpoints"].size(), 2u);
  EXPECT_TRUE(j["checkpoints"][0]["current"].get<bool>());

  // A Hugging Face dir (the transformers fixture): config and parameters, no training state.
  aji::model::Model hf = aji::train::load_model(aji::test::source_path("tests/fixtures/infer/hf-gpt2"));
  j = info_json(aji::test::source_path("tests/fixtures/infer/hf-gpt2"), &rc);
  ASSERT_EQ(rc, 0) << j.dump();
  EXPECT_EQ(j["kind"], "huggingface");
  EXPECT_EQ(j["params"].get<int64_t>(), static_cast<int64_t>(hf.num_params()));
  EXPECT_FALSE(j.contains("step"));
  EXPECT_FALSE(j.contains("checkpoints"));

  // The table names the same figures; a missing dir is an error with the fix.
  std::string out;
  EXPECT_EQ(aji::test::run_command(std::string(AJI_BINARY) + " info --model " + run.string() + " 2>&1", &out), 0);
  EXPECT_NE(out.find("step:       200"), std::string::npos) << out;
  EXPECT_NE(out.find("val 3.7500"), std::string::npos) << out;
  EXPECT_NE(out.find("2 checkpoints"), std::string::npos) << out;
  EXPECT_NE(aji::test::run_command(std::string(AJI_BINARY) + " info --model " + (tmp.path() / "nope").string() + " 2>&1",
                                   &out),
            0);
  EXPECT_NE(out.find("fix"), std::string::npos) << out;
  // Without --model: the build's own facts, as before.
  EXPECT_EQ(aji::test::run_command(std::string(AJI_BINARY) + " info 2>&1", &out), 0);
  EXPECT_NE(out.find("threads: "), std::string::npos) << out;
}
