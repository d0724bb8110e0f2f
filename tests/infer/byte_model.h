// A byte-level tokenizer (ids 0-255 = bytes, then <|endoftext|> and the chat tokens) and a
// tiny random model saved as a model dir: what the infer CLI tests run `aji` on.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "aji/model/model.h"
#include "aji/tokenizer/tokenizer.h"
#include "aji/tokenizer/tokenizer_files.h"
#include "aji/train/checkpoint.h"

namespace aji::test {

inline tokenizer::Tokenizer byte_tok(bool chat_tokens) {
  std::vector<std::string> bytes;
  for (int b = 0; b < 256; ++b) bytes.push_back(std::string(1, static_cast<char>(b)));
  std::vector<tokenizer::SpecialToken> sp = {{"<|endoftext|>", 256}};
  if (chat_tokens) {
    sp.push_back({"<|im_start|>", 257});
    sp.push_back({"<|im_end|>", 258});
  }
  return tokenizer::Tokenizer::from_ranks(bytes, tokenizer::SplitPattern::kGpt2, sp);
}

inline model::ModelConfig byte_model_config(int context) {
  model::ModelConfig c;
  c.vocab_size = 259;
  c.n_layer = 1;
  c.n_head = 2;
  c.n_kv_head = 2;
  c.d_model = 16;
  c.d_ff = 32;
  c.max_seq_len = context;
  return c;
}

// dir/name: a weights-only model dir (random weights from `seed`) with the byte tokenizer.
inline std::filesystem::path make_byte_model_dir(const std::filesystem::path& dir, const std::string& name,
                                                 int context, uint64_t seed, bool chat_tokens = true) {
  model::Model m(byte_model_config(context));
  m.init_weights(seed);
  const auto tokp = dir / (name + "_tokenizer") / "aji_tokenizer.json";
  std::filesystem::create_directories(tokp.parent_path());
  tokenizer::save_aji_tokenizer_file(byte_tok(chat_tokens), tokp);
  train::save_model_dir(dir / name, m, {tokp});
  return dir / name;
}

}  // namespace aji::test
