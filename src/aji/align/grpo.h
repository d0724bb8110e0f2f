// GRPO / RL with verifiable rewards (post-training spec §5): the library half of `aji grpo`,
// on token ids. No reward model and no value model: a reward function (a verifier, or a
// rule in the toy experiments) scores G sampled completions of each prompt, the group's
// mean (and optionally its std) is the baseline, and the policy takes one optimizer step on
// the token-level loss of those completions.
//
// One step (grpo_step), named sub-steps as in llm.c / nanochat's chat_rl.py:
//   1. rollout     infer::rollout: P prompts x G samples, temperature T, stop token kept in
//                  the completion, seeded by (step seed, prompt, sample)
//   2. score       reward_fn(task, completion) for every completion (must be finite)
//   3. advantages  fb::group_advantages: A = r - mean_g  (scale none, nanochat / Dr. GRPO) or
//                  (r - mean_g)/(std_g + 1e-4)  (scale group, DeepSeekMath / TRL default)
//   4. update      rows prompt+completion, right-padded; policy forward and per-token
//                  log-probs at the sampling temperature (lm_head_logprobs); the frozen
//                  reference's log-probs when beta > 0 (or when a reference is given, for
//                  the KL metric); fb::grpo_loss = -min(rho A, clip(rho) A) + beta k3 with
//                  the chosen aggregation (dapo default); lm_head_logprob_backward +
//                  backward, inside train::train_step (train/trainer_run.h: global norm,
//                  NaN/inf stop, clip, AdamW).
// mu = 1 (one update per sampled batch): the old policy is the policy itself, so
// logp_old = logp (detached) and rho == 1 exactly; the clipped form is kept so that the
// loss is the spec's formula (and a later mu > 1 only changes logp_old).
// The completion mask covers every sampled token up to and including the stop token
// (TRL; spec §5.6: the stop token is reinforced). mask_truncated zeroes completions that
// never stopped (DAPO overlong filtering, TRL mask_truncated_completions).
//
// Determinism: the tasks of step s and its rollout seed are functions of (seed, s) only,
// so the whole state of a run is the step counter + policy weights + AdamW moments; a run
// stopped after k steps and resumed from those continues bit for bit (same threads).
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/align/feedback_math.h"
#include "aji/infer/rollout.h"
#include "aji/model/model.h"
#include "aji/train/optimizer.h"

namespace aji::align {

// One prompt with what its verifier needs.
struct GrpoTask {
  std::vector<int32_t> prompt;  // rendered generation prompt (ends with the assistant-start token)
  std::string answer;           // reference answer for the verifier (may be empty for rule rewards)
  std::string source;           // "file:line" (for messages), may be empty
  int64_t id = -1;              // the caller's own index (e.g. into its verifier tasks)
};

// Reward of one completion (tokens after the prompt, the stop token included when
// rollout.stopped). Must be finite; a NaN/inf reward is an aji::Error naming the task.
using GrpoRewardFn = std::function<double(const GrpoTask& task, const infer::Rollout& completion)>;

// A completion passes when its reward reaches this (full credit); pass@1 / pass@G use it.
constexpr double kGrpoPassReward = 1.0 - 1e-6;

struct GrpoOptions {
  int group_size = 8;        // G completions per prompt (>= 2 for a non-zero advantage)
  int prompts_per_step = 8;  // P prompts per optimizer step (sampled with replacement per step)
  int max_new_tokens = 64;
  float temperature = 1.0f;  // sampling AND log-prob temperature (> 0)
  double beta = 0.0;         // k3 coefficient to the frozen reference (0 = no reference needed)
  fb::GrpoScale scale = fb::GrpoScale::group;
  fb::GrpoLossType loss_type = fb::GrpoLossType::dapo;
  double eps_low = 0.2, eps_high = 0.2;
  bool mask_truncated = false;  // completions without a stop token get no loss
  std::vector<int32_t> stop_tokens;
  float lr = 1e-4f;
  int64_t warmup = 0;
  std::string decay = "constant";  // cosine, linear or constant (over `steps`)
  float min_lr_frac = 0.0f;
  float weight_decay = 0.0f;
  // AdamW betas as TRL's GRPOTrainer / torch (0.9, 0.999). With beta2 0.95, E1's beta-0.04
  // run ended with MORE KL than the beta-0 run (2.42 vs 1.90 nats): the short second-moment
  // memory blows the small late gradients up to full-size steps.
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float grad_clip = 1.0f;
  int64_t steps = 60;
  uint64_t seed = 1;
  int rollout_batch = 64;  // rows decoded together (infer::RolloutOptions::max_batch)
  int update_batch = 0;    // rows per forward/backward in the update (0 = all rows at once)
  // Multiplies every advantage: 1 normally; -1 is the experiments' negative control
  // (reward the wrong completions). Not a CLI option.
  double advantage_sign = 1.0;
  std::filesystem::path run_dir;  // named by the divergence error (may be empty)
};

// What one step measured (also a metrics.jsonl line).
struct GrpoStepStats {
  int64_t step = 0;  // 1-based, after the update
  double loss = 0;
  double mean_reward = 0;
  double pass_rate = 0;       // fraction of completions with full reward
  double frac_zero_std = 0;   // groups whose rewards are all equal (no gradient)
  double mean_length = 0;     // completion tokens (stop token included)
  double stop_rate = 0;       // completions that ended on a stop token
  double kl = 0;              // mean over completions of sum_t k1 (logp - logp_ref); 0 without reference
  double k3 = 0;              // masked token mean of k3 (the loss term); 0 without reference
  double entropy = 0;         // token mean of the policy's entropy at the sampling temperature
  double clip_frac = 0;
  double grad_norm = 0;       // before clipping
  double logprob_drift = 0;   // max |rollout logp - recomputed logp| (spec check 18; ~1e-5)
  float lr = 0;
  int64_t tokens = 0;         // trained (masked-in) completion tokens
  double seconds = 0, rollout_seconds = 0;
  nlohmann::json to_json() const;
};

// Step s (0-based) of a run: its task indices (P, with replacement, Rng(seed, s)) and the
// rollout seed. Functions of (seed, s) only.
std::vector<size_t> grpo_step_tasks(size_t n_tasks, int prompts_per_step, uint64_t seed, int64_t step);
uint64_t grpo_rollout_seed(uint64_t seed, int64_t step);

// The learning-rate schedule of a run of options.steps steps.
train::LrSchedule grpo_schedule(const GrpoOptions& o);

// Checks options (ranges, beta > 0 needs a reference, stop tokens in the vocabulary...);
// aji::Error naming the option.
void validate_grpo_options(const GrpoOptions& o, const model::Model& policy, model::Model* reference);

// One GRPO step on `batch` (P tasks): rollout, score, advantages, update. `reference` may be
// null when beta == 0 (then kl/k3 are reported as 0). Throws aji::Error on a non-finite
// reward (naming the task) or a non-finite loss / gradient norm (naming the step; nothing is
// updated). rollouts_out, if given, receives the step's completions (prompt-major).
GrpoStepStats grpo_step(model::Model& policy, model::Model* reference, train::AdamW& optimizer,
                        const std::vector<const GrpoTask*>& batch, const GrpoRewardFn& reward, const GrpoOptions& o,
                        int64_t step, float lr, std::vector<infer::Rollout>* rollouts_out = nullptr,
                        std::vector<double>* rewards_out = nullptr);

struct GrpoHooks {
  std::function<void(const GrpoStepStats&)> on_step;
  // Called after each step with the number of steps done; return true to stop.
  std::function<bool(int64_t step)> after_step;
};

struct GrpoTrainResult {
  int64_t step = 0;  // steps done in all
  std::vector<GrpoStepStats> stats;  // this session's steps
  bool stopped_early = false;
};

// Steps from `start_step` to o.steps over `tasks` (non-empty).
GrpoTrainResult grpo_train(model::Model& policy, model::Model* reference, train::AdamW& optimizer,
                           const std::vector<GrpoTask>& tasks, const GrpoRewardFn& reward, const GrpoOptions& o,
                           int64_t start_step = 0, const GrpoHooks& hooks = {});

// Evaluation on tasks: `samples` completions per task at `temperature` (0 = greedy: one
// completion per task), seeded. pass@1 = mean over completions of [reward full], pass@k =
// fraction of tasks with at least one full-reward completion among its samples.
struct GrpoEvalOptions {
  int samples = 8;
  int max_new_tokens = 64;
  float temperature = 1.0f;
  std::vector<int32_t> stop_tokens;
  uint64_t seed = 7;
  int rollout_batch = 64;
};
struct GrpoEval {
  int n_tasks = 0, samples = 0;
  double mean_reward = 0;
  double pass_at_1 = 0;
  double pass_at_k = 0;  // k = samples
  double stop_rate = 0;
  double mean_length = 0;
  double kl = 0;  // mean sequence KL (sum of k1 over the completion) to the reference; 0 without one
  std::vector<infer::Rollout> completions;  // task-major (under mpirun: this rank's tasks, t % N == rank)
  std::vector<double> rewards;              // task-major, every task's (over all ranks)
  nlohmann::json to_json(const std::string& prefix) const;  // {"<prefix>reward":..,"<prefix>pass@1":..}
};
GrpoEval grpo_evaluate(model::Model& policy, model::Model* reference, const std::vector<GrpoTask>& tasks,
                       const GrpoRewardFn& reward, const GrpoEvalOptions& o);

// Sum of k1 = logp - logp_ref over each completion (the reference's log-probs at
// `temperature`, the policy's as recorded by the rollout). One value per completion.
std::vector<double> completion_kl(model::Model& reference, const std::vector<GrpoTask>& tasks,
                                  const std::vector<infer::Rollout>& completions, float temperature);

}  // namespace aji::align
