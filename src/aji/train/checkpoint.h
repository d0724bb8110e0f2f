// Checkpoints and model directories.
//
// A run directory (aji pretrain --out RUN_DIR) holds
//   ckpt-<step>/            one per saved step (keep-last-K)
//     model.safetensors     F32 weights, Hugging Face tensor names and shapes
//     config.json           Hugging Face config (GPT2LMHeadModel / LlamaForCausalLM)
//     aji_config.json       aji's model config
//     aji_tokenizer.json    the tokenizer (aji's file), tokenizer.json (Hugging Face's)
//     optimizer.bin         AdamW m, v, step (training checkpoints only)
//     trainer_state.json    step, loader cursor, LR schedule, options, metrics so far
//   latest                  "ckpt-<step>\n": the newest complete checkpoint
//   metrics.jsonl, loss.svg, run.json
// A checkpoint is written into a hidden temp directory and renamed into place, then
// `latest` is replaced atomically: a crash leaves the previous checkpoint intact.
//
// --model DIR accepts a run dir (-> its latest checkpoint), a checkpoint dir, or a
// Hugging Face model dir (config.json + model.safetensors [+ tokenizer.json]) of the
// GPT-2 or Llama family.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/model/model.h"
#include "aji/train/optimizer.h"

namespace aji::train {

constexpr const char* kAjiTokenizerFile = "aji_tokenizer.json";

struct CheckpointContents {
  const model::Model* model = nullptr;
  const AdamW* optimizer = nullptr;       // nullptr: weights-only checkpoint
  nlohmann::json trainer_state;           // written as trainer_state.json when not null
  std::vector<std::filesystem::path> copy_files;  // copied in by file name (tokenizers)
};

// Writes RUN_DIR/ckpt-<step>/ atomically, points `latest` at it, then removes all but the
// newest `keep` checkpoints (keep <= 0 keeps all). Returns the checkpoint dir.
std::filesystem::path save_checkpoint(const std::filesystem::path& run_dir, int64_t step,
                                      const CheckpointContents& contents, int keep);

// Writes a weights-only model dir (model.safetensors, config.json, aji_config.json,
// copied files) at dir, atomically (temp dir + rename). With a tokenizer among the copied
// files it also gets the Hugging Face tokenizer_config.json and generation_config.json
// (write_hf_tokenizer_files, as every checkpoint; chat: <|im_end|> ends generation).
void save_model_dir(const std::filesystem::path& dir, const model::Model& model,
                    const std::vector<std::filesystem::path>& copy_files, bool chat = false);

// Removes what an interrupted writer left in a run dir: a process killed with SIGKILL
// mid-save leaves its hidden temp dir `.ckpt-N.tmp.PID` (or `ckpt-N.old`), and the temp
// files `latest.tmp.PID`, `metrics.jsonl.tmp.PID`... of the run's own files. Only for a
// run dir no other process is writing. Returns how many were removed.
int remove_torn_checkpoint_files(const std::filesystem::path& run_dir);

// Checkpoints in a run dir, ascending by step.
std::vector<std::pair<int64_t, std::filesystem::path>> list_checkpoints(const std::filesystem::path& run_dir);

// Where the weights are: run dir -> latest checkpoint; checkpoint or HF dir -> itself.
// Errors say what was expected.
std::filesystem::path resolve_model_dir(const std::filesystem::path& path);

// The config of a model dir: aji_config.json if present, else Hugging Face config.json.
model::ModelConfig load_model_config(const std::filesystem::path& model_dir);

// Fills model's parameters from model_dir/model.safetensors. Every tensor of the model
// must be present with its exact shape (GPT-2 files without the "transformer." prefix
// and with attention-mask buffers are accepted). A missing tensor or a shape mismatch
// (e.g. a checkpoint of another architecture) is an aji::Error saying so.
void load_weights(model::Model& model, const std::filesystem::path& safetensors_path);

// Config + weights from any --model DIR.
model::Model load_model(const std::filesystem::path& path, std::filesystem::path* resolved_dir = nullptr);

// The tokenizer file of a model dir: aji_tokenizer.json, else tokenizer.json; nullopt if none.
std::optional<std::filesystem::path> find_tokenizer_file(const std::filesystem::path& model_dir);
// The tokenizer a command should use: `chosen` when not empty (a --tokenizer flag), else
// find_tokenizer_file(model_dir), else an aji::Error that names the dir and the fix.
std::filesystem::path require_tokenizer_file(const std::filesystem::path& model_dir,
                                             const std::filesystem::path& chosen = {});

// A chat model's trainer_state.json: it carries an "sft", "dpo", "ppo" or "grpo" section.
bool is_chat_trainer_state(const nlohmann::json& trainer_state);
// A model dir of a chat model: its trainer_state.json says so (above), or its config.json's
// eos_token_id is the tokenizer's <|im_end|> (a Hugging Face export written by aji).
bool is_chat_model_dir(const std::filesystem::path& model_dir);

// The Hugging Face files beside the tokenizer of a model dir, so transformers and
// lm-evaluation-harness load it: tokenizer_config.json (tokenizer_class, bos/eos/pad tokens,
// model_max_length, the chat template) and generation_config.json (bos, eos, pad ids); for
// a chat model config.json's eos_token_id becomes <|im_end|> and generation stops at
// [<|im_end|>, <|endoftext|>]. Does nothing when the dir has no tokenizer, aji cannot read
// it, or it lacks <|endoftext|>. save_checkpoint calls it for every checkpoint.
void write_hf_tokenizer_files(const std::filesystem::path& model_dir, const model::ModelConfig& config, bool chat);

// Copies a file atomically (temp + rename).
void copy_file_atomic(const std::filesystem::path& from, const std::filesystem::path& to);

}  // namespace aji::train
