// The SFT training loop over rendered sequences (post-training spec §1): the library half
// of `aji sft train`, also what the acceptance experiments and the toy base model use.
//
// Data flow
//   RenderedSequence (ids + loss mask) --plan_rows (pad: one per row | pack: several)--> rows
//   each epoch: rows shuffled with Rng(seed, epoch) --make_batch (per-batch right padding)-->
//   TokenBatch --sft_forward_backward--> grads (token-mean over the whole optimizer step)
//   --clip--> AdamW (LrSchedule) --> next step
// Everything that decides the next step lives in SftState (step, epoch, row cursor) plus
// the model weights and AdamW moments, so a run stopped after step k and resumed from a
// checkpoint of those continues bit for bit (same thread count).
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/align/packing.h"
#include "aji/align/sft_loss.h"
#include "aji/model/model.h"
#include "aji/train/memory.h"
#include "aji/train/optimizer.h"

namespace aji::align {

struct SftOptions {
  int batch = 32;           // rows per micro-batch (pad: one conversation per row)
  BatchLayout layout = BatchLayout::kPad;  // kPack: rows filled with whole conversations (no cross-attention)
  int grad_accum = 1;       // micro-batches per optimizer step
  std::optional<int> seq_len;    // T; unset (or 0) = the model's context
  std::optional<int64_t> steps;  // optimizer steps; unset (or 0: runs saved before the option was optional) = from epochs
  double epochs = 1.0;      // used when steps == 0
  float lr = 1e-3f;
  float min_lr_frac = 0.0f;
  std::string decay = "linear";
  int64_t warmup = 0;
  float weight_decay = 0.0f;
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float grad_clip = 1.0f;
  uint32_t pad_id = 0;      // input id at padding (never a target)
  uint64_t seed = 1234;
  int eval_every = 0;       // validation loss every N steps (0 = only at the end)
  bool quiet = true;
  std::filesystem::path run_dir;  // named in a divergence error (train_step); may be empty
  int T(int context) const { return seq_len && *seq_len > 0 ? *seq_len : context; }
};

// Where the loop is: the data cursor of the next micro-batch.
struct SftState {
  int64_t step = 0;       // optimizer steps done
  int64_t epoch = 0;
  int64_t next_row = 0;   // index into this epoch's shuffled rows
  nlohmann::json to_json() const;
  static SftState from_json(const nlohmann::json& j);
};

struct SftStepInfo {
  int64_t step = 0;    // 1-based, after the update
  int64_t steps = 0;
  double loss = 0;     // token-mean CE over the step's supervised targets
  double grad_norm = 0;
  float lr = 0;
  int64_t targets = 0; // supervised targets in the step
  int64_t tokens = 0;  // input positions in the step (padding included)
  double seconds = 0;
};

struct SftHooks {
  std::function<void(const SftStepInfo&)> on_step;
  std::function<void(int64_t step, const LossSum& val)> on_eval;
  // Called after a step; return true to stop (a checkpoint should be saved by the hook).
  std::function<bool(const SftState&)> after_step;
};

struct SftResult {
  SftState state;
  std::vector<float> step_losses;  // this session's steps
  double last_val_loss = NAN;
  bool stopped_early = false;
  PackReport pack;
};

// Steps the whole run would take for these sequences and options.
int64_t sft_total_steps(int64_t rows, const SftOptions& options);

// Trains model (which must already hold its starting weights) on train, continuing from
// state with optimizer (fresh or loaded). val may be empty. Throws aji::Error on a NaN or
// inf loss (nothing after the last good step is kept by the caller's hooks).
SftResult sft_train(model::Model& model, train::AdamW& optimizer, const std::vector<RenderedSequence>& train,
                    const std::vector<RenderedSequence>& val, const SftOptions& options, SftState state,
                    const SftHooks& hooks = {});

// The memory estimate (train/memory.h), shared with `aji pretrain`.
using train::available_memory_bytes;
using train::MemoryEstimate;
using train::require_memory;
using train::training_memory;

// Mean validation loss over every supervised target of seqs (padded batches).
LossSum sft_validation_loss(model::Model& model, const std::vector<RenderedSequence>& seqs, int batch, int T,
                            uint32_t pad_id);

}  // namespace aji::align
