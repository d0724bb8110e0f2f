// `aji rm train` and `aji rm score`: a reward model (reward_model.h) trained on preference
// files and used to score conversations.
//
//   PREFS.jsonl... --read_preferences (TRL pairs / K-way rankings; file:line errors or counted
//   skips)--> PreferenceGroup --render_preferences (the one chat template; pairs with a side
//   longer than the context dropped, counted)--> RmGroup (prompt + reply ids, its pairs)
//   --split: val_fraction of the prompts held out (seeded)--> rm_train
//   --> OUT/rm/ (the RM directory: trunk, tokenizer, score.safetensors, rm.json with the
//   offset and the training summary), OUT/metrics.jsonl, loss.svg, summary.json, run.json
//
// Checkpoints (OUT/ckpt-N: trunk weights + AdamW, score head + its AdamW, rm.json marking it
// a reward model, trainer_state.json with the run's settings and cursor) every --save-every
// steps and at the end; --resume continues bit for bit (same threads) with the run's
// settings (train/trainer_run.h, the same rules as `aji sft train`). Ctrl-C saves and stops.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "aji/align/reward_model.h"
#include "aji/base/options.h"

namespace aji::align {

struct RmRunOptions {
  std::filesystem::path model;                  // SFT model: run dir, checkpoint or HF dir
  std::vector<std::filesystem::path> data;      // preference JSONL files
  std::filesystem::path out_dir;
  double val_fraction = 0.1;
  int max_len = 0;              // tokens per prompt + reply (0 = the model's context); longer pairs dropped
  bool resume = false, force = false;
  bool skip_invalid = false;    // invalid records: counted skips instead of errors
  int save_every = 0;
  int keep = 2;
  std::string precision = "auto";  // auto | fp32 | bf16 (train/trainer_run.h apply_run_precision)
  std::string device = "cpu";      // cpu | cuda | cuda:N (train/trainer_run.h apply_run_device)
  int64_t stop_after = 0;
  bool quiet = false;
  RmOptions train;
  std::vector<std::string> given;  // with resume: the flags the user typed ("--lr", ...)

  template <class V>
  void for_each_option(V&& v) {
    using R = Range;
    const auto keep_ = OnResume::kKeep;
    const auto change = OnResume::kChange;
    v(val_fraction, OptionInfo{"val-fraction", "Share of the prompts held out for pairwise accuracy", R::between(0, 0.9),
                               keep_});
    v(max_len, OptionInfo{"max-len", "Tokens of prompt + reply at most; longer responses are dropped (default: the "
                                     "model's context)",
                          R::between(0, 1 << 24), keep_});
    v(train.epochs, OptionInfo{"epochs", "Passes over the training prompts", R::above(0), keep_});
    v(train.steps, OptionInfo{"steps", "Optimizer steps (instead of --epochs)", R::between(0, 1e12), keep_});
    v(train.batch, OptionInfo{"batch-size", "Prompts per step (each with all its ranked replies)",
                              R::between(1, 1 << 20), keep_});
    v(train.micro_rows, OptionInfo{"micro-rows", "Sequences per forward pass at most (whole prompts; memory)",
                                   R::between(1, 1 << 20), keep_});
    v(train.lr, OptionInfo{"lr", "Learning rate", R::above(0), keep_});
    v(train.warmup, OptionInfo{"warmup", "Warmup steps", R::at_least(0), keep_});
    v(train.decay, OptionInfo{"decay", "constant, linear or cosine", R::any(), keep_});
    v(train.min_lr_frac, OptionInfo{"min-lr-frac", "Final learning rate as a fraction of the peak", R::between(0, 1),
                                    keep_});
    v(train.weight_decay, OptionInfo{"weight-decay", "AdamW weight decay", R::at_least(0), keep_});
    v(train.grad_clip, OptionInfo{"grad-clip", "Global gradient-norm clip (0 = off)", R::at_least(0), keep_});
    v(train.center_coef, OptionInfo{"center-coef", "Centering term eta*mean((r_w+r_l)^2) (TRL: 0.01; 0 = off)",
                                    R::at_least(0), keep_});
    v(train.seed, OptionInfo{"seed", "Seed of the validation split and the data order", R::any(), keep_});
    v(train.eval_every, OptionInfo{"eval-every", "Validation every N steps (0 = every epoch)", R::at_least(0), change});
    v(save_every, OptionInfo{"save-every", "Checkpoint every N steps (0 = only at the end)", R::at_least(0), change});
    v(keep, OptionInfo{"keep", "Keep the last K checkpoints (0 = all)", R::at_least(0), change});
    v(precision, precision_option());
    v(device, device_option());
    v(stop_after, OptionInfo{"stop-after", "End this session after N steps with a checkpoint (resume later)",
                             R::at_least(0), OnResume::kNotSaved});
  }
};

// The flags of `aji rm train` a resumed run compares with its saved settings.
const std::vector<std::string>& rm_setting_flags();

struct RmRunResult {
  int64_t steps = 0;
  bool interrupted = false;
  std::vector<float> step_losses;  // this session's
  double first_loss = NAN;         // step 1 of the run (ln 2 from the zero head)
  RmEval val_before, val_after;    // held-out before step 1 (this session) and at the end
  float offset = 0;
  int64_t n_train = 0, n_val = 0;  // prompts (groups with pairs)
  int64_t pairs_train = 0, pairs_val = 0;
  std::filesystem::path rm_dir;    // OUT/rm (empty when interrupted)
};

RmRunResult run_rm_train(const RmRunOptions& options);

// An RM directory from what a user passes: the dir itself (rm.json), or a run dir of `aji rm
// train` (its rm/). Anything else: aji::Error with the fix.
std::filesystem::path resolve_reward_model_dir(const std::filesystem::path& path);

struct RmScoreOptions {
  std::filesystem::path model;  // RM dir or `aji rm train` run dir
  std::filesystem::path input;  // JSONL {"messages":[...]} ending with the assistant's reply
  int batch = 16;
  bool skip_invalid = false;
};
// One JSON line per input line (written to `out`): {"line": N, "score": S} with S the shifted
// score (raw − offset). Invalid lines: aji::Error file:line, or with skip_invalid
// {"line": N, "error": "..."} and counted. Returns the number scored.
int64_t run_rm_score(const RmScoreOptions& options, std::FILE* out);

}  // namespace aji::align
