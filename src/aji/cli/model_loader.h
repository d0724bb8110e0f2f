// Loading a model for inference commands (`aji generate`, `aji score`, `aji serve`): the
// model directory, its tokenizer, and the text rules every one of them must share — the
// BOS token put before a text (the model's bos_token_id, else <|endoftext|>, unless
// --no-bos) and the tokens that end a text (eos_token_id and <|endoftext|>).
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "aji/model/model.h"
#include "aji/tokenizer/tokenizer.h"

namespace aji::cli {

struct ModelArgs {
  std::string model;
  std::string tokenizer;  // override
  bool no_bos = false;
};

struct LoadedModel {
  model::Model model;
  tokenizer::Tokenizer tok;
  std::optional<int32_t> bos;        // prepended to the text
  std::vector<int32_t> stop_tokens;  // end of text
};

LoadedModel load_model_for_inference(const ModelArgs& a);

// BOS (if any) then the text's ids, special-token text encoded as ordinary bytes.
std::vector<int32_t> encode_text(const LoadedModel& l, const std::string& text);

void add_model_options(CLI::App* cmd, ModelArgs& a);

}  // namespace aji::cli
