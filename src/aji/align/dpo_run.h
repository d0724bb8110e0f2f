// `aji dpo`: Direct Preference Optimization of an SFT model on preference pairs, in a run
// directory (the run-dir rule of align/run_dir.h, the checkpoint format of train/checkpoint.h).
//
//   PREFS.jsonl... --read_preferences (TRL pairs / K-way rankings, file:line errors)-->
//   --render_preferences (chat template; pairs longer than the context: counted skips)-->
//   PreferenceIds (prompt, chosen, rejected) --dpo_reference_logps (frozen SFT model, once)-->
//   --dpo_train (align/dpo.h)--> RUN_DIR/ckpt-N/ (policy weights, tokenizer, AdamW, state)
//
// The run dir also gets metrics.jsonl (one line per step: loss, dpo_loss, nll_loss,
// accuracy, margin, chosen/rejected log-ratios, grad_norm, lr; and per evaluation:
// val_loss, val_accuracy, val_margin, val log-ratios, kl = mean over sampled replies of the
// summed per-token k1 against the reference), loss.svg, run.json and, at the end,
// summary.json. The reference is always the --model dir, reloaded on --resume; --resume
// continues bit for bit (same threads). Ctrl-C saves and stops; a NaN/inf loss stops with
// an error (the last checkpoint stays). A reward-model dir given as --model is refused.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "aji/align/dpo.h"
#include "aji/base/options.h"

namespace aji::align {

struct DpoRunOptions {
  std::filesystem::path model;                    // the SFT model (policy start and reference)
  std::vector<std::filesystem::path> data_files;  // preference JSONL files
  std::filesystem::path val_file;                 // optional; else val_fraction of the pairs' groups
  double val_fraction = 0.05;
  std::filesystem::path out_dir;
  bool resume = false, force = false;
  bool skip_invalid = false;   // invalid records: counted skips instead of errors
  int eval_every = 0;          // held-out metrics + sampled KL every N steps (0 = at the start and the end)
  int kl_prompts = 16;         // held-out prompts sampled (2 replies each) for the KL estimate
  int max_new_tokens = 64;     // reply length cap of those samples
  int save_every = 0;          // 0 = only at the end
  int keep = 2;
  std::string precision = "auto";  // auto | fp32 | bf16 (train/trainer_run.h apply_run_precision)
  std::string device = "cpu";      // cpu | cuda | cuda:N (train/trainer_run.h apply_run_device)
  int64_t stop_after = 0;      // end this session after N steps (checkpoint saved)
  bool quiet = false;
  DpoOptions train;
  std::vector<std::string> given;  // with resume: the flags the user gave (checked against the run's)

  template <class V>
  void for_each_option(V&& v) {
    using R = Range;
    const auto keep_ = OnResume::kKeep;
    const auto change = OnResume::kChange;
    v(train.beta, OptionInfo{"beta", "DPO beta: larger keeps the policy closer to the reference", R::above(0), keep_});
    v(train.nll_weight, OptionInfo{"nll-weight", "Weight of the NLL term on the chosen reply (RPO; 0 = plain DPO)",
                                   R::at_least(0), keep_});
    v(train.epochs, OptionInfo{"epochs", "Passes over the training pairs", R::above(0), keep_});
    v(train.steps, OptionInfo{"steps", "Optimizer steps (default: from --epochs)", R::between(1, 1e12), keep_});
    v(train.batch, OptionInfo{"batch-size", "Pairs per optimizer step", R::between(1, 1 << 20), keep_});
    v(train.micro_batch, OptionInfo{"micro-batch", "Pairs per forward/backward (0 = the whole step)",
                                    R::between(0, 1 << 20), keep_});
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
    v(train.seed, OptionInfo{"seed", "Seed of the pair order, the validation split and the KL samples", R::any(),
                             keep_});
    v(val_fraction, OptionInfo{"val-fraction", "Share of the preference records held out when --val is not given",
                               R::between(0, 0.9), keep_});
    v(kl_prompts, OptionInfo{"kl-prompts", "Held-out prompts sampled for the KL to the reference (0 = no KL)",
                             R::between(0, 1 << 20), change});
    v(max_new_tokens, OptionInfo{"max-new-tokens", "Reply length cap of the KL samples", R::between(1, 1 << 20),
                                 change});
    v(eval_every, OptionInfo{"eval-every", "Held-out metrics and KL every N steps (0 = at the start and the end)",
                             R::at_least(0), change});
    v(save_every, OptionInfo{"save-every", "Checkpoint every N steps (0 = only at the end)", R::at_least(0), change});
    v(keep, OptionInfo{"keep", "Keep the last K checkpoints (0 = all)", R::at_least(0), change});
    v(precision, precision_option());
    v(device, device_option());
    v(stop_after, OptionInfo{"stop-after", "End this session after N steps with a checkpoint (resume later)",
                             R::at_least(0), OnResume::kNotSaved});
  }
};

struct DpoRunResult {
  int64_t step = 0;
  double first_loss = NAN, last_loss = NAN;
  double first_val_accuracy = NAN, last_val_accuracy = NAN;
  double last_val_margin = NAN, last_kl = NAN;
  int64_t train_pairs = 0, val_pairs = 0;
  bool interrupted = false;
  std::filesystem::path checkpoint;
};

DpoRunResult run_dpo(const DpoRunOptions& options);

}  // namespace aji::align
