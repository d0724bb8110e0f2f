// train::save_model_dir (classifier, reward model, PPO policy dirs) writes the Hugging Face
// tokenizer_config.json and generation_config.json as every checkpoint does (one writer,
// write_hf_tokenizer_files). The reference check: transformers' AutoTokenizer loads the dir
// and apply_chat_template renders what aji trains on (render_chat_text / render_chat ids);
// skipped when python3 has no transformers.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "aji/base/atomic_file.h"
#include "aji/base/io.h"
#include "aji/model/model.h"
#include "aji/tokenizer/chat_template.h"
#include "aji/tokenizer/tokenizer.h"
#include "aji/tokenizer/tokenizer_files.h"
#include "aji/train/checkpoint.h"
#include "test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

aji::model::Model tiny_llama() {
  aji::model::ModelConfig c;
  c.arch = aji::model::Arch::kLlama;
  c.vocab_size = 1024;
  c.n_layer = 1;
  c.n_head = 2;
  c.n_kv_head = 2;
  c.d_model = 16;
  c.d_ff = 32;
  c.max_seq_len = 48;
  aji::model::Model m(c);
  m.init_weights(3);
  return m;
}

// The model dir with aji's tokenizer and Hugging Face's tokenizer.json, as callers pass them.
fs::path save_dir(const fs::path& root, const aji::model::Model& m, bool chat) {
  const auto tok = aji::tokenizer::Tokenizer::load(aji::test::source_path("tests/fixtures/gguf/tokenizer_cl100k.json"));
  const fs::path staging = root / "staging";
  fs::create_directories(staging);
  aji::tokenizer::save_aji_tokenizer_file(tok, staging / aji::train::kAjiTokenizerFile);
  aji::tokenizer::save_hf_tokenizer_json(tok, staging / "tokenizer.json");
  const fs::path dir = root / (chat ? "chat" : "base");
  aji::train::save_model_dir(dir, m, {staging / aji::train::kAjiTokenizerFile, staging / "tokenizer.json"}, chat);
  return dir;
}

}  // namespace

TEST(CheckpointHf, SaveModelDirWritesTokenizerAndGenerationConfig) {
  aji::test::TempDir tmp;
  const auto m = tiny_llama();
  const fs::path chat = save_dir(tmp.path(), m, true);
  const json tc = json::parse(aji::read_file(chat / "tokenizer_config.json"));
  EXPECT_EQ(tc["tokenizer_class"], "PreTrainedTokenizerFast");
  EXPECT_EQ(tc["bos_token"], "<|endoftext|>");
  EXPECT_EQ(tc["eos_token"], "<|im_end|>");
  EXPECT_EQ(tc["pad_token"], "<|endoftext|>");
  EXPECT_EQ(tc["model_max_length"], 48);
  EXPECT_EQ(tc["chat_template"], std::string(aji::tokenizer::chat_template_jinja()));
  // the fixture tokenizer: <|endoftext|> 1021, <|im_start|> 1022, <|im_end|> 1023
  const json gc = json::parse(aji::read_file(chat / "generation_config.json"));
  EXPECT_EQ(gc["eos_token_id"], json({1023, 1021}));
  EXPECT_EQ(gc["pad_token_id"], 1021);
  EXPECT_EQ(json::parse(aji::read_file(chat / "config.json"))["eos_token_id"], 1023);
  EXPECT_TRUE(aji::train::is_chat_model_dir(chat));
  // a non-chat dir (classifier, reward model): <|endoftext|> ends generation, template still there
  const fs::path base = save_dir(tmp.path(), m, false);
  const json tb = json::parse(aji::read_file(base / "tokenizer_config.json"));
  EXPECT_EQ(tb["eos_token"], "<|endoftext|>");
  EXPECT_EQ(json::parse(aji::read_file(base / "generation_config.json"))["eos_token_id"], 1021);
  EXPECT_FALSE(aji::train::is_chat_model_dir(base));
  // config.json names bos and eos too: without them transformers takes GPT-2's 50256, past
  // the end of a small vocabulary
  const json cb = json::parse(aji::read_file(base / "config.json"));
  EXPECT_EQ(cb["bos_token_id"], 1021);
  EXPECT_EQ(cb["eos_token_id"], 1021);
  EXPECT_EQ(json::parse(aji::read_file(chat / "config.json"))["bos_token_id"], 1021);
  // without a tokenizer nothing extra is written (and nothing fails)
  const fs::path bare = tmp.path() / "bare";
  aji::train::save_model_dir(bare, m, {});
  EXPECT_TRUE(fs::exists(bare / "model.safetensors"));
  EXPECT_FALSE(fs::exists(bare / "tokenizer_config.json"));
  // the weights load back
  auto back = aji::train::load_model(chat);
  ASSERT_EQ(back.num_params(), m.num_params());
  EXPECT_EQ(std::vector<float>(back.params(), back.params() + back.num_params()),
            std::vector<float>(m.params(), m.params() + m.num_params()));
}

TEST(CheckpointHf, TransformersRendersTheChatTemplateAjiTrainsOn) {
  std::string out;
  if (aji::test::run_command("python3 -c 'import transformers' 2>/dev/null", &out) != 0)
    GTEST_SKIP() << "python3 with transformers is not installed (pip install transformers)";
  aji::test::TempDir tmp;
  const auto m = tiny_llama();
  const fs::path dir = save_dir(tmp.path(), m, true);
  const std::vector<aji::tokenizer::ChatMessage> msgs = {
      {"system", "Be brief."}, {"user", "What is 2+2?"}, {"assistant", "4."}, {"user", "한국의 수도는?"}};
  json jm = json::array();
  for (const auto& x : msgs) jm.push_back({{"role", x.role}, {"content", x.content}});
  aji::write_file_atomic(tmp.path() / "messages.json", jm.dump());
  aji::write_file_atomic(tmp.path() / "check.py", R"PY(
import json, sys, os
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
msgs = json.load(open(sys.argv[2], encoding="utf-8"))
text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
ids = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True)
if hasattr(ids, "keys"): ids = ids["input_ids"]
print(json.dumps({"text": text, "ids": list(ids), "eos": tok.eos_token, "bos": tok.bos_token, "pad": tok.pad_token}))
)PY");
  const int rc = aji::test::run_command("python3 " + (tmp.path() / "check.py").string() + " " + dir.string() + " " +
                                            (tmp.path() / "messages.json").string(),
                                        &out);
  ASSERT_EQ(rc, 0) << out;
  const json r = json::parse(out);
  EXPECT_EQ(r["eos"], "<|im_end|>");
  EXPECT_EQ(r["bos"], "<|endoftext|>");
  EXPECT_EQ(r["pad"], "<|endoftext|>");
  EXPECT_EQ(r["text"], aji::tokenizer::render_chat_text(msgs, true));
  const auto tok = aji::tokenizer::Tokenizer::load(dir / aji::train::kAjiTokenizerFile);
  const auto rendered = aji::tokenizer::render_chat(tok, msgs, true);
  std::vector<int64_t> want(rendered.ids.begin(), rendered.ids.end());
  EXPECT_EQ(r["ids"].get<std::vector<int64_t>>(), want);
}
