// `aji pretrain`: next-token-prediction training of a model from token shards.
//
// One optimizer step = grad_accum micro-batches of (B,T) tokens, where grad_accum =
// total_batch_tokens / (B*T); the loss of each micro-batch is scaled by 1/grad_accum so
// the accumulated gradient is the mean over the whole batch. Then global-norm clipping,
// the LR schedule, AdamW. Everything that decides the next step (weights, AdamW moments,
// loader cursor, schedule, step) is in the checkpoint, so --resume continues the run bit
// for bit (with the same thread count: OpenMP reductions fix their order per count).
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "aji/base/options.h"

namespace aji::train {

// The settings of a run. The numeric and text settings are declared once, in
// for_each_option (base/options.h): that list gives the CLI its flags, help, defaults
// and range checks, pretrain() its validation, and the run its saved settings (what
// --resume keeps, accepts with a note, or refuses).
struct PretrainOptions {
  std::filesystem::path config;  // model config file or preset name (not with --resume or --init)
  std::filesystem::path data_dir;
  std::filesystem::path out_dir;
  std::filesystem::path init;         // continue pretraining from this model (run, checkpoint or HF dir)
  std::filesystem::path resume_from;  // resume from this checkpoint (ckpt-N in out_dir, or a path); implies resume
  bool resume = false;
  bool force = false;
  bool quiet = false;
  // The declared options given explicitly (by name, e.g. "lr", "save-every"): on --resume
  // these replace the run's saved values where that is safe; the rest are the run's.
  std::set<std::string> given;

  int64_t steps = 0;   // optimizer steps; 0 = from tokens or the time budget
  int64_t tokens = 0;  // or a token budget
  double time_budget = 0;  // or a wall-clock budget in minutes: steps are set from the speed of the first steps
  int batch = 8;                   // B (micro-batch rows)
  int seq_len = 0;                 // T; 0 = the model's context
  int64_t total_batch_tokens = 0;  // tokens per optimizer step; 0 = B*T (no accumulation)
  float lr = 2e-3f;
  float min_lr_frac = 0.1f;
  std::optional<int64_t> warmup;  // unset = 5% of the steps, at most 200
  std::string decay = "cosine";
  float weight_decay = 0.1f;
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float grad_clip = 1.0f;
  int eval_every = 100;   // 0 = only at the end
  int eval_batches = 20;
  int sample_every = 200;  // 0 = never
  int sample_tokens = 64;
  std::string sample_prompt;  // after BOS
  int save_every = 500;       // 0 = only at the end
  int keep = 3;
  uint64_t seed = 1337;
  double peak_gflops_per_core = 0.0;  // fp32 peak of one core for MFU; 0 = measure it (FMA probe)
  int64_t stop_after = 0;  // end this session after N steps (checkpoint saved); 0 = off
  std::string precision = "auto";  // auto, fp32 or bf16 (trainer_run.h's resolve_precision); saved resolved
  std::string device = "cpu";      // cpu, cuda, cuda:N or cpu:separate (kernels/backend.h): where the steps run
  // Called after every optimizer step with (step, train loss); for tests and front ends.
  std::function<void(int64_t, float)> on_step;

  template <class V>
  void for_each_option(V&& v) {
    using R = Range;
    const auto keep_ = OnResume::kKeep;
    const auto change = OnResume::kChange;
    v(steps, OptionInfo{"steps", "Optimizer steps to train (on --resume: a new total)", R::at_least(0), change});
    v(tokens, OptionInfo{"tokens", "Or: tokens to train on (steps = tokens / total batch)", R::at_least(0), change});
    v(time_budget, OptionInfo{"time-budget", "Or: train for about this many minutes (steps set from the speed of "
                                             "the first steps)", R::at_least(0), change});
    // Safe to change on resume: the step's batch is --total-batch-tokens (saved, resolved), B only
    // splits it into micro-batches (e.g. to resume on another number of ranks).
    v(batch, OptionInfo{"batch-size", "Sequences per micro-batch (B); on --resume it may change (the total batch "
                                      "stays)", R::between(1, 1 << 20), change});
    v(seq_len, OptionInfo{"seq-len", "Tokens per sequence (T); 0 = the model's context", R::between(0, 1 << 24),
                          keep_});
    v(total_batch_tokens, OptionInfo{"total-batch-tokens", "Tokens per optimizer step; a multiple of B*T (gradient "
                                                           "accumulation). 0 = B*T", R::at_least(0), keep_});
    v(lr, OptionInfo{"lr", "Peak learning rate", R::above(0), keep_});
    v(min_lr_frac, OptionInfo{"min-lr-frac", "Final learning rate as a fraction of the peak", R::between(0, 1), keep_});
    v(warmup, OptionInfo{"warmup", "Warmup steps (default: 5% of the steps, at most 200)", R::at_least(0), keep_});
    v(decay, OptionInfo{"decay", "Learning-rate decay after warmup: cosine, linear or constant", R::any(), keep_});
    v(weight_decay, OptionInfo{"weight-decay", "AdamW weight decay (matrices only)", R::at_least(0), keep_});
    v(beta1, OptionInfo{"beta1", "AdamW beta1", R::from_below(0, 1), keep_});
    v(beta2, OptionInfo{"beta2", "AdamW beta2", R::from_below(0, 1), keep_});
    v(eps, OptionInfo{"eps", "AdamW epsilon", R::above(0), keep_});
    v(grad_clip, OptionInfo{"grad-clip", "Global gradient-norm clip (0 = off)", R::at_least(0), keep_});
    v(seed, OptionInfo{"seed", "Seed of the initial weights and the data order", R::any(), keep_});
    v(eval_every, OptionInfo{"eval-every", "Validation loss and bits per byte every N steps (0 = at the end)",
                             R::at_least(0), change});
    v(eval_batches, OptionInfo{"eval-batches", "Validation batches per evaluation", R::at_least(1), change});
    v(sample_every, OptionInfo{"sample-every", "Print a generated sample every N steps (0 = never)", R::at_least(0),
                               change});
    v(sample_tokens, OptionInfo{"sample-tokens", "Tokens per sample", R::at_least(1), change});
    v(sample_prompt, OptionInfo{"sample-prompt", "Text the samples start with (after <|endoftext|>)", R::any(), change});
    v(save_every, OptionInfo{"save-every", "Checkpoint every N steps (0 = only at the end)", R::at_least(0), change});
    v(keep, OptionInfo{"keep", "Keep the last K checkpoints (0 = all)", R::at_least(0), change});
    v(peak_gflops_per_core, OptionInfo{"peak-gflops", "fp32 peak GFLOP/s of one core, for the MFU figure "
                                                      "(0 = measured at start)", R::at_least(0), change});
    v(precision, precision_option());
    v(device, device_option());
    v(stop_after, OptionInfo{"stop-after", "End this session after N steps with a checkpoint (resume later)",
                             R::at_least(0), OnResume::kNotSaved});
  }
};

struct PretrainResult {
  int64_t step = 0;                 // optimizer steps completed (total, across sessions)
  std::vector<float> step_losses;   // train loss of each step run in this session
  float last_val_loss = NAN;
  float last_val_bpb = NAN;
  bool interrupted = false;         // Ctrl-C, SIGTERM or --stop-after
  std::filesystem::path checkpoint; // the last checkpoint written
  std::vector<std::string> warnings;  // also printed (e.g. no validation data)
};

PretrainResult pretrain(const PretrainOptions& options);

}  // namespace aji::train
