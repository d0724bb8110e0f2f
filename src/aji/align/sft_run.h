// `aji sft train`: supervised fine-tuning of a pretrained model on chat conversations,
// in a run directory with the same checkpoint format as `aji pretrain` (train/checkpoint.h).
//
//   conversations JSONL --read_conversations (rules, file:line errors)--> Conversation
//   --render_conversations (ChatML, assistant-only mask)--> RenderedSequence
//   --sft_train (sft_train.h)--> RUN_DIR/ckpt-N/ (weights, tokenizer, AdamW, trainer state)
//
// The run dir also gets metrics.jsonl (one line per step and per evaluation), loss.svg and
// run.json. --resume continues from the latest checkpoint bit for bit (same threads) with
// the run's own settings: an option given again must equal the saved one, except the
// safe ones (--eval-every, --save-every, --keep), which change with a note.
// Ctrl-C (InterruptGuard; SIGTERM too once base/interrupt.h handles it) saves and stops; a kill -9 loses only the steps after the last
// checkpoint. The run-dir rule: a dir with a checkpoint is never overwritten without
// --force; a dir without one (a run stopped before its first save) is started afresh (its
// run.json and metrics are replaced, said in a note), and --resume there says that there
// is nothing to resume and gives the fresh command.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "aji/align/render.h"
#include "aji/align/sft_train.h"

namespace aji::align {

struct SftRunOptions {
  std::filesystem::path model;       // base: aji run/checkpoint dir or Hugging Face dir
  std::filesystem::path train_file;  // conversations JSONL
  std::filesystem::path val_file;    // optional; else val_fraction of train_file
  double val_fraction = 0.05;
  std::filesystem::path out_dir;
  bool resume = false, force = false;
  bool skip_invalid = false;         // invalid conversations: counted skips instead of errors
  LossOn loss_on = LossOn::kAssistant;
  int save_every = 0;                // 0 = only at the end
  int keep = 2;
  int64_t stop_after = 0;            // end this session after N steps (checkpoint saved)
  bool quiet = false;
  SftOptions train;                  // batch, steps/epochs, lr, ...
  // With resume: the CLI flags the user gave ("--lr", ...), checked against the run's
  // saved settings (sft_setting_flags()); the values are the ones in this struct.
  std::vector<std::string> given;
};

// The flags of `aji sft train` a resumed run compares with its saved settings.
const std::vector<std::string>& sft_setting_flags();

struct SftRunResult {
  int64_t step = 0;
  double first_loss = NAN, last_loss = NAN;          // first: step 1 of the whole run (kept across resumes)
  double first_val_loss = NAN, last_val_loss = NAN;  // first: before step 1 of the whole run
  bool interrupted = false;
  std::filesystem::path checkpoint;
  std::vector<float> step_losses;
};

SftRunResult run_sft(const SftRunOptions& options);

}  // namespace aji::align
