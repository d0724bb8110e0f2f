// Loading a model for inference commands (`aji generate`, `aji score`, `aji serve`): the
// model directory, its tokenizer, and the text rules every one of them must share — the
// BOS token put before a text (the model's bos_token_id, else <|endoftext|>, unless
// --no-bos) and the tokens that end a text (eos_token_id and <|endoftext|>) — and the
// weight type generation runs with (--weights fp32|bf16|q8_0: generate, chat, serve; score
// and eval stay exact fp32), and the device it runs on (--device: generate, score, chat).
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "aji/kernels/backend.h"
#include "aji/model/model.h"
#include "aji/tokenizer/tokenizer.h"

namespace aji::cli {

struct ModelArgs {
  std::string model;
  std::string tokenizer;  // override
  bool no_bos = false;
  std::string weights = "fp32";  // --weights (add_weights_option)
  std::string kv_cache = "fp32";  // --kv-cache (add_kv_cache_option)
  bool keep_fp32 = false;        // keep the fp32 matrices after converting (a full-sequence forward needs them)
  std::string device = "cpu";    // --device (add_device_option)
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

// --weights fp32|bf16|q8_0, the one declaration for every generating command.
void add_weights_option(CLI::App* cmd, std::string& weights);
// Converts the model's matrices to `weights` (Model::use_weights) and frees their fp32
// copies unless keep_fp32; one note on stderr (unless --quiet): the type, the bytes, and any
// matrix q8_0 kept in fp32. "fp32" does nothing. A bad name is an aji::Error.
void apply_weights(model::Model& model, const std::string& weights, bool keep_fp32);
// --kv-cache fp32|bf16, beside --weights: the element type of the KV caches the model makes
// (Model::set_kv_cache). bf16 halves the bytes every decode step reads from the cache.
void add_kv_cache_option(CLI::App* cmd, std::string& kv_cache);
void apply_kv_cache(model::Model& model, const std::string& kv_cache);
// --device cpu|cuda|cuda:N, beside --weights: where generation and scoring run (generate,
// score, chat, bench generate).
void add_device_option(CLI::App* cmd, std::string& device);
// The device of --device, opened before the model loads (null for the CPU): a device that is
// not there is an aji::Error naming what is missing, and so are weight or KV-cache types the
// device does not run yet (fp32 only).
std::shared_ptr<kernels::Backend> open_inference_device(const std::string& device, const std::string& weights,
                                                        const std::string& kv_cache);

}  // namespace aji::cli
