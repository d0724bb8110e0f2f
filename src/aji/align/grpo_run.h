// `aji grpo`: RL with verifiable rewards from an instruct (SFT) model, in a run directory.
//
//   TASKS.jsonl {"messages":[...],"answer":"..."} --read_tasks (rl_tasks.h)--> Task
//   --render_generation_prompt (ChatML, "<|im_start|>assistant\n")--> GrpoTask (prompt ids)
//   --grpo_train (grpo.h): G rollouts per prompt, verifier rewards (verifiers.h), group
//   advantages, token-level loss, beta k3 to the frozen starting model--> RUN_DIR/ckpt-N/
//
// The run dir gets metrics.jsonl (one line per step: reward, pass rate, zero-variance
// groups, reply length, KL, loss, ...; one per evaluation: eval_pass@1, eval_pass@G, ...),
// loss.svg (the loss, and eval pass@1 on the right axis), run.json and summary.json. The
// starting model (--model) is the frozen reference and is re-read on --resume. A checkpoint
// holds the policy, AdamW and the step: a step's prompts and rollout seed are functions of
// (--seed, step), so a resumed run continues bit for bit (same threads).
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "aji/align/grpo.h"
#include "aji/base/options.h"

namespace aji::align {

struct GrpoRunOptions {
  std::filesystem::path model;       // SFT policy (aji run/checkpoint dir or Hugging Face dir)
  std::filesystem::path tasks_file;  // tasks JSONL
  std::filesystem::path eval_file;   // optional tasks JSONL for pass@1 / pass@G
  std::string verifier;              // exact, number, choice, regex:..., command:...
  std::filesystem::path out_dir;
  bool resume = false, force = false, skip_invalid = false, quiet = false;
  bool mask_truncated = false;
  // The declared settings (base/options.h).
  int64_t steps = 100;
  int group_size = 8;
  int prompts_per_step = 8;
  double kl_coef = 0.0;
  int max_new_tokens = 128;
  float temperature = 1.0f;
  float lr = 1e-5f;
  int64_t warmup = 0;
  float grad_clip = 1.0f;
  float weight_decay = 0.0f;
  std::string scale = "group";    // group | none | batch
  std::string loss_type = "dapo";  // dapo | grpo | bnpo | dr_grpo
  uint64_t seed = 1;
  int eval_every = 0;     // 0: only before and after
  int eval_samples = 0;   // completions per eval task (0: the group size)
  int64_t eval_limit = 0; // evaluate the first N eval tasks (0: all)
  double verifier_timeout = 5.0;
  int save_every = 0;
  int keep = 2;
  std::string precision = "auto";  // auto | fp32 | bf16 (train/trainer_run.h apply_run_precision)
  std::string device = "cpu";      // cpu | cuda | cuda:N (train/trainer_run.h apply_run_device)
  int64_t stop_after = 0;
  std::vector<std::string> given;  // flags the user passed (resume checks)

  template <class V>
  void for_each_option(V&& v) {
    using R = Range;
    const auto keep_ = OnResume::kKeep;
    const auto change = OnResume::kChange;
    v(steps, OptionInfo{"steps", "Optimizer steps (one batch of rollouts each)", R::between(1, 1e12), keep_});
    v(group_size, OptionInfo{"group-size", "Completions sampled per prompt (G)", R::between(2, 4096), keep_});
    v(prompts_per_step, OptionInfo{"prompts-per-step", "Prompts per step (drawn from --tasks)", R::between(1, 1 << 20),
                                   keep_});
    v(kl_coef, OptionInfo{"kl-coef", "beta of the k3 KL term to the starting model (0: none, nanochat; 0.04: "
                                     "DeepSeekMath)", R::at_least(0), keep_});
    v(max_new_tokens, OptionInfo{"max-new-tokens", "Longest completion", R::between(1, 1 << 20), keep_});
    v(temperature, OptionInfo{"temperature", "Sampling temperature (also the log-prob temperature)", R::above(0),
                              keep_});
    v(lr, OptionInfo{"lr", "Learning rate (RL wants small ones)", R::above(0), keep_});
    v(warmup, OptionInfo{"warmup", "Warmup steps, then constant", R::at_least(0), keep_});
    v(grad_clip, OptionInfo{"grad-clip", "Global gradient-norm clip (0 = off)", R::at_least(0), keep_});
    v(weight_decay, OptionInfo{"weight-decay", "AdamW weight decay (matrices only)", R::at_least(0), keep_});
    v(scale, OptionInfo{"scale-rewards", "Advantage scaling: group ((r-mean)/std), none (r-mean), batch", R::any(),
                        keep_});
    v(loss_type, OptionInfo{"loss-type", "Token aggregation: dapo, grpo, bnpo, dr_grpo", R::any(), keep_});
    v(seed, OptionInfo{"seed", "Seed of the prompt draws and the rollouts", R::any(), keep_});
    v(verifier_timeout, OptionInfo{"verifier-timeout", "Seconds a command: verifier may run", R::above(0), keep_});
    v(eval_every, OptionInfo{"eval-every", "Evaluate on --eval-tasks every N steps (0: before and after only)",
                             R::at_least(0), change});
    v(eval_samples, OptionInfo{"eval-samples", "Completions per eval task (0: --group-size)", R::at_least(0), change});
    v(eval_limit, OptionInfo{"eval-limit", "Evaluate on the first N eval tasks (0: all)", R::at_least(0), change});
    v(save_every, OptionInfo{"save-every", "Checkpoint every N steps (0 = only at the end)", R::at_least(0), change});
    v(keep, OptionInfo{"keep", "Keep the last K checkpoints (0 = all)", R::at_least(0), change});
    v(precision, precision_option());
    v(device, device_option());
    v(stop_after, OptionInfo{"stop-after", "End this session after N steps with a checkpoint (resume later)",
                             R::at_least(0), OnResume::kNotSaved});
  }
};

struct GrpoRunResult {
  int64_t step = 0;
  double first_reward = NAN, last_reward = NAN;  // rollout mean reward: first step of the run, last step
  GrpoEval eval_before, eval_after;              // empty (n_tasks 0) without --eval-tasks
  bool interrupted = false;
  std::filesystem::path checkpoint;
  std::vector<GrpoStepStats> stats;  // this session's steps
};

GrpoRunResult run_grpo(const GrpoRunOptions& options);

}  // namespace aji::align
