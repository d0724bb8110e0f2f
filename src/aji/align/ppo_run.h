// `aji ppo`: PPO-RLHF of an SFT model against a reward (a reward model dir from `aji rm
// train`, or any RewardFn), in a run directory on the shared trainer session
// (train/trainer_run.h: run-dir rule, checkpoints, metrics.jsonl, plot, Ctrl-C, --stop-after).
//
//   PROMPTS.jsonl {"messages":[..., user turn]} --render_generation_prompt--> prompt ids
//   --ppo_step (ppo.h) × steps--> RUN_DIR/ckpt-N/ (policy weights + AdamW, value model
//   value.safetensors + value_head.safetensors + their AdamW, trainer_state.json "ppo")
//
// metrics.jsonl: one line per step with the columns — "score" (reward-model score),
// "kl" (Σ per-token k1 over the reply, mean over rollouts), "entropy", "clip_frac",
// "value_loss", "explained_variance", "reply_length", "true_metric" when a true metric is
// given — plus pg_loss, approx_kl, stop_rate, distinct_replies, rlhf_reward. The run's plot
// (loss.svg, drawn by TrainerRun) shows rlhf_reward = score − β·KL (logged again as "loss"
// so the shared plot picks it up) and the true metric on the right axis ("val_accuracy").
// Guards: the reward-hacking watch (ppo.h RewardHackWatch) warns when the score keeps
// rising while the true metric falls; --max-kl stops the run (with a checkpoint) when the
// step's KL exceeds it.
// Resume is bit-identical (same threads): every random draw derives from (seed, step).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "aji/align/ppo.h"
#include "aji/align/rl_tasks.h"
#include "aji/base/options.h"

namespace aji::align {

struct PpoRunOptions {
  std::filesystem::path model;    // SFT policy (also the frozen reference)
  std::filesystem::path reward;   // reward model dir (recorded; the caller loads it into PpoReward)
  std::filesystem::path prompts;  // JSONL conversations ending with a user turn
  std::filesystem::path out_dir;
  bool resume = false, force = false, quiet = false;
  bool skip_invalid = false;
  // A verifier (align/verifiers.h: exact, number, choice, regex:P, command:P) for the true-metric
  // column: the prompts file is then a task file ({"messages":[...], "answer":"..."}).
  std::string true_verifier;
  int64_t steps = 100;
  int rollouts_per_step = 64;
  int save_every = 0;
  int keep = 2;
  std::string precision = "auto";  // auto | fp32 | bf16 (train/trainer_run.h apply_run_precision)
  std::string device = "cpu";      // cpu | cuda | cuda:N (train/trainer_run.h apply_run_device)
  int64_t stop_after = 0;
  double max_kl = 0;              // stop when a step's KL exceeds it (0 = off)
  PpoOptions ppo;                 // group size, β, clip, lr, ... (prompts_per_step from rollouts_per_step)
  std::vector<std::string> given; // flags the user passed (for --resume checks)

  template <class V>
  void for_each_option(V&& v) {
    using R = Range;
    const auto keep_ = OnResume::kKeep;
    const auto change = OnResume::kChange;
    v(steps, OptionInfo{"steps", "PPO iterations (rollout + update)", R::between(1, 1e9), change});
    v(ppo.kl_coef, OptionInfo{"kl-coef", "beta of the per-token KL penalty (k1) in the reward", R::at_least(0), keep_});
    v(rollouts_per_step, OptionInfo{"rollouts-per-step", "Sampled replies per step (prompts x --group-size)",
                                    R::between(1, 1 << 20), keep_});
    v(ppo.group_size, OptionInfo{"group-size", "Replies sampled per prompt", R::between(1, 1024), keep_});
    v(ppo.max_new_tokens, OptionInfo{"max-new-tokens", "Longest reply sampled", R::between(1, 1 << 20), keep_});
    v(ppo.temperature, OptionInfo{"temperature", "Sampling temperature (also of every log-prob)", R::above(0), keep_});
    v(ppo.lr, OptionInfo{"lr", "Policy learning rate (AdamW, constant)", R::above(0), keep_});
    v(ppo.value_lr, OptionInfo{"value-lr", "Value model learning rate", R::above(0), keep_});
    v(ppo.clip, OptionInfo{"clip", "PPO ratio clip epsilon", R::above(0), keep_});
    v(ppo.value_clip, OptionInfo{"value-clip", "Value clip epsilon (negative = off)", R::any(), keep_});
    v(ppo.vf_coef, OptionInfo{"vf-coef", "Value loss coefficient", R::above(0), keep_});
    v(ppo.ppo_epochs, OptionInfo{"ppo-epochs", "Passes over each step's rollouts", R::between(1, 1000), keep_});
    v(ppo.minibatches, OptionInfo{"minibatches", "Minibatches per pass", R::between(1, 1 << 20), keep_});
    v(ppo.missing_stop_penalty, OptionInfo{"missing-stop-penalty", "Added to the score of a reply that never ends",
                                           R::any(), keep_});
    v(ppo.lambda, OptionInfo{"gae-lambda", "GAE lambda (gamma is 1)", R::between(0, 1), keep_});
    v(ppo.grad_clip, OptionInfo{"grad-clip", "Global gradient-norm clip (0 = off)", R::at_least(0), keep_});
    v(ppo.seed, OptionInfo{"seed", "Seed of prompt draws, sampling and minibatch order", R::any(), keep_});
    v(max_kl, OptionInfo{"max-kl", "Stop when a step's KL to the reference exceeds this (0 = off)", R::at_least(0),
                         change});
    v(save_every, OptionInfo{"save-every", "Checkpoint every N steps (0 = only at the end)", R::at_least(0), change});
    v(keep, OptionInfo{"keep", "Keep the last K checkpoints (0 = all)", R::at_least(0), change});
    v(precision, precision_option());
    v(device, device_option());
    v(stop_after, OptionInfo{"stop-after", "End this session after N steps with a checkpoint (resume later)",
                             R::at_least(0), OnResume::kNotSaved});
  }
};

// The reward the run optimises, built by the caller: for `aji ppo` the reward model of
// --reward (its trunk and head also initialise the value model, InstructGPT); for tests a
// rule. truth: an optional true metric (a verifier, a hidden rule) logged as "true_metric".
struct PpoReward {
  RewardFn score;
  RewardFn truth;
  const model::Model* value_trunk = nullptr;       // value model init; nullptr = the SFT trunk
  const model::ScalarHead* value_head = nullptr;   // nullptr = zero head
  std::string describe = "reward";
};

struct PpoRunResult {
  int64_t step = 0;
  bool interrupted = false, kl_stop = false;
  int hacking_warnings = 0;
  std::vector<PpoStepStats> stats;  // this session's steps
  std::filesystem::path checkpoint;
};

// Prompt ids of a prompt file (conversations ending with a user turn) through the model's
// chat template; prompts that leave fewer than 2 positions for the reply are counted skips
// (or errors without skip_invalid) naming file:line; no prompt left is an error.
// With `tasks` (not null) the file is a task file (rl_tasks.h) and tasks receives the task of
// each returned prompt.
std::vector<std::vector<int32_t>> read_ppo_prompts(const std::filesystem::path& path, const std::filesystem::path& model_dir,
                                                   int max_seq_len, bool skip_invalid, bool quiet,
                                                   int32_t* stop_token, int32_t* pad_id,
                                                   std::vector<Task>* tasks = nullptr);

PpoRunResult run_ppo(const PpoRunOptions& options, const PpoReward& reward);

}  // namespace aji::align
