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
#include "aji/base/options.h"

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
  std::string precision = "auto";    // auto | fp32 | bf16 (train/trainer_run.h run_precision)
  std::string device = "cpu";      // cpu | cuda | cuda:N (train/trainer_run.h apply_run_device)
  bool quiet = false;
  SftOptions train;                  // batch, steps/epochs, lr, ...
  // With resume: the CLI flags the user gave ("--lr", ...), checked against the run's
  // saved settings (sft_setting_flags()); the values are the ones in this struct.
  std::vector<std::string> given;

  // The numeric and text settings, declared once (base/options.h): the CLI's flags, help,
  // defaults and range checks (cli/options.h), run_sft's validation, and the run's saved
  // settings (what --resume keeps, accepts with a note, or refuses).
  template <class V>
  void for_each_option(V&& v) {
    using R = Range;
    const auto keep_ = OnResume::kKeep;
    const auto change = OnResume::kChange;
    v(val_fraction, OptionInfo{"val-fraction", "Share of --data held out when --val is not given", R::between(0, 0.9),
                               keep_});
    v(train.steps, OptionInfo{"steps", "Optimizer steps (default: from --epochs)", R::between(1, 1e12),
                              keep_});
    v(train.epochs, OptionInfo{"epochs", "Passes over the training conversations", R::above(0), keep_});
    v(train.batch, OptionInfo{"batch-size", "Rows per micro-batch (one conversation each, unless --batching pack)",
                              R::between(1, 1 << 20), keep_});
    v(train.grad_accum, OptionInfo{"grad-accum", "Micro-batches per optimizer step", R::between(1, 1 << 20), keep_});
    v(train.seq_len, OptionInfo{"seq-len", "Tokens per row (default: the model's context)", R::between(2, 1 << 24),
                                keep_});
    v(train.lr, OptionInfo{"lr", "Peak learning rate", R::above(0), keep_});
    v(train.min_lr_frac, OptionInfo{"min-lr-frac", "Final learning rate as a fraction of the peak", R::between(0, 1),
                                    keep_});
    v(train.warmup, OptionInfo{"warmup", "Warmup steps", R::at_least(0), keep_});
    v(train.decay, OptionInfo{"decay", "cosine, linear or constant", R::any(), keep_});
    v(train.weight_decay, OptionInfo{"weight-decay", "AdamW weight decay (matrices only)", R::at_least(0), keep_});
    v(train.beta1, OptionInfo{"beta1", "AdamW beta1", R::from_below(0, 1), keep_});
    v(train.beta2, OptionInfo{"beta2", "AdamW beta2", R::from_below(0, 1), keep_});
    v(train.eps, OptionInfo{"eps", "AdamW epsilon", R::above(0), keep_});
    v(train.grad_clip, OptionInfo{"grad-clip", "Global gradient-norm clip (0 = off)", R::at_least(0), keep_});
    v(train.seed, OptionInfo{"seed", "Seed of the data order and the validation split", R::any(), keep_});
    v(train.eval_every, OptionInfo{"eval-every", "Validation loss every N steps (0 = at the end)", R::at_least(0),
                                   change});
    v(save_every, OptionInfo{"save-every", "Checkpoint every N steps (0 = only at the end)", R::at_least(0), change});
    v(keep, OptionInfo{"keep", "Keep the last K checkpoints (0 = all)", R::at_least(0), change});
    v(precision, precision_option());
    v(device, device_option());
    v(stop_after, OptionInfo{"stop-after", "End this session after N steps with a checkpoint (resume later)",
                             R::at_least(0), OnResume::kNotSaved});
  }
};

// The flags of `aji sft train` a resumed run compares with its saved settings: the declared
// options above plus --model, --data, --val, --all-tokens, --skip-invalid and --batching.
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
