// PPO-RLHF (post-training spec §4, InstructGPT) on token ids: the library half of `aji ppo`
// and what experiment D (§8.1 D) drives.
//
// Models: the policy π_θ (trained, starts as the SFT model), a frozen reference π_ref (the
// SFT model; only forward + lm_head_logprobs, so it never allocates gradients), and a value
// model V_ψ = its own trunk + a ScalarHead read at every position (InstructGPT initialises
// it from the reward model; without one, from the SFT trunk with a zero head). The reward
// is a function of (prompt, reply) — a reward model, a rule or a verifier plug in the same
// way (see RewardFn).
//
// One PPO iteration, ppo_step() (spec §4.1), in named sub-steps:
//   ppo_rollout      prompts of this step (drawn with Rng(seed, step)) -> G samples each
//                    (infer::rollout, pure sampling at `temperature`, stop token kept);
//   ppo_score        reward(prompt, reply) on the reply truncated at (and including) the
//                    stop token, + missing_stop_penalty when it never stopped;
//   ppo_advantages   policy / reference log-probs at the same temperature and the values
//                    V_t (the state before each reply token) on the right-padded batch,
//                    per-token k1 KL in the reward, score on the last reply token
//                    (fb::ppo_token_rewards), GAE (fb::gae), whitening (fb::masked_whiten);
//   ppo_update       ppo_epochs × minibatches (shuffled with Rng(seed, step)), each two
//                    shared trainer steps (train::train_step: zero, backward, global norm,
//                    NaN/inf stop, clip, AdamW): the clipped policy loss
//                    (fb::ppo_policy_loss) -> lm_head_logprob_backward -> backward; the
//                    value loss with value clip (fb::ppo_value_loss) × vf_coef ->
//                    ScalarHead::backward -> trunk backward (policy and value have their
//                    own AdamW, OpenRLHF's separate critic optimiser; so vf_coef only
//                    scales the value gradient before its clip).
// Everything random is derived from (seed, step), so a run stopped after step k and resumed
// from the saved weights + AdamW moments continues bit for bit (same thread count).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/align/feedback_math.h"
#include "aji/model/model.h"
#include "aji/model/scalar_head.h"
#include "aji/train/optimizer.h"

namespace aji::align {

// Score of one reply: prompt ids and the reply ids as sampled, truncated after the first
// stop token (which is included when the row stopped). Must return a finite number (a NaN
// stops the run with an aji::Error naming the step and row).
using RewardFn = std::function<float(const std::vector<int32_t>& prompt, const std::vector<int32_t>& reply)>;

struct PpoOptions {
  int prompts_per_step = 16;  // P prompts drawn per step
  int group_size = 4;         // samples per prompt (rollouts per step = P × G)
  int max_new_tokens = 64;
  float temperature = 1.0f;   // sampling AND every log-prob (spec §4.2)
  int32_t stop_token = -1;    // end of turn (required)
  int32_t pad_id = 0;         // input id at padding (never a target)
  double kl_coef = 0.05;      // β of the per-token k1 penalty in the reward
  double missing_stop_penalty = -1.0;  // added to the score of a reply without the stop token
  double gamma = 1.0, lambda = 0.95;
  bool whiten_advantages = true;
  double clip = 0.2;          // ε of the policy ratio
  double value_clip = 0.2;    // ε_v (< 0 disables)
  double vf_coef = 0.1;
  int ppo_epochs = 4;
  int minibatches = 2;        // per epoch; rollouts-per-step must be divisible by it
  float lr = 1e-4f;           // policy
  float value_lr = 1e-4f;     // value trunk + head
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-5f, weight_decay = 0.0f;
  float grad_clip = 1.0f;
  uint64_t seed = 1;
  int max_batch = 64;         // rollout rows decoded together
  double advantage_sign = 1.0;  // -1 flips every advantage: a negative control, never for real runs
  std::filesystem::path run_dir;  // named by the NaN/inf stop (the last good checkpoint); may be empty
  int rollouts_per_step() const { return prompts_per_step * group_size; }
};

// Everything PPO trains or reads. policy/value_trunk/value_head change; ref never does.
struct PpoModels {
  model::Model* policy = nullptr;
  model::Model* ref = nullptr;
  model::Model* value_trunk = nullptr;
  model::ScalarHead* value_head = nullptr;
  train::AdamW* policy_opt = nullptr;
  train::AdamW* value_opt = nullptr;  // over value_trunk's parameters
  train::AdamW* head_opt = nullptr;   // over value_head.w
};

// AdamW instances of the right sizes for the models, from the options.
struct PpoOptimizers {
  train::AdamW policy, value, head;
};
PpoOptimizers make_ppo_optimizers(const model::Model& policy, const model::Model& value_trunk,
                                  const model::ScalarHead& head, const PpoOptions& o);

// One step's samples and the quantities derived from them, on the response layout:
// per-token arrays are (N, R) row-major, N = rollouts, R = the longest reply.
struct PpoBatch {
  int N = 0, R = 0, T = 0;                     // rows, reply positions, model positions
  std::vector<std::vector<int32_t>> prompts;   // N (each row's prompt)
  std::vector<std::vector<int32_t>> replies;   // N, truncated after the stop token
  std::vector<uint8_t> stopped;                // N
  std::vector<int32_t> tokens;                 // (N,T) prompt + reply, right-padded with pad_id
  std::vector<int32_t> targets;                // (N,T) reply token at the position predicting it, else -1
  std::vector<int> reply_start;                // N: model position predicting reply token 0 (= prompt len − 1)
  std::vector<uint8_t> mask;                   // (N,R) valid reply tokens
  std::vector<float> sample_logp;              // (N,R) recorded by the rollout
  std::vector<float> logp;                     // (N,R) policy at the step's start (training forward)
  std::vector<float> ref_logp;                 // (N,R)
  std::vector<float> entropy;                  // (N,R) policy entropy at temperature
  std::vector<float> values;                   // (N,R) V_old
  std::vector<float> scores;                   // N: reward + missing-stop penalty
  std::vector<float> raw_scores;               // N: reward alone
  std::vector<float> true_scores;              // N when a true metric is given
  std::vector<float> rewards, advantages, returns;  // (N,R)
};

struct PpoStepStats {
  int64_t step = 0;            // 1-based, after the update
  double score = 0;            // mean reward (RM score / rule) of the rollouts, before the penalty
  double true_metric = -1;     // mean true metric of the rollouts (-1: none given)
  double kl = 0;               // mean over rollouts of Σ_t k1 over the reply (objective/kl)
  double rlhf_reward = 0;      // mean(score − β·KL)
  double entropy = 0;          // mean per-token policy entropy over reply tokens
  double clip_frac = 0;        // policy, mean over minibatches
  double value_clip_frac = 0;
  double pg_loss = 0, value_loss = 0;
  double approx_kl = 0;        // mean over minibatches of 0.5·mean((lp − lp_old)²)
  double first_ratio_mean = 0, first_approx_kl = 0;  // first minibatch of the step (unit check 19)
  double explained_variance = 0;
  double reply_length = 0;     // mean reply tokens (stop included)
  double stop_rate = 0;
  int distinct_replies = 0;
  double logprob_mismatch = 0; // max |sampling logp − training-forward logp| (unit check 18)
  double grad_norm = 0, value_grad_norm = 0;  // last minibatch, before clipping
  double seconds = 0, rollout_seconds = 0;
  nlohmann::json to_json() const;
};

// The prompts of `step` (0-based): prompts_per_step indices into the pool, drawn with
// Rng(seed, step) (with repetition only when the pool is smaller than P).
std::vector<int> ppo_step_prompts(size_t pool_size, const PpoOptions& o, int64_t step);

// Sub-steps (exposed for tests).
PpoBatch ppo_rollout(model::Model& policy, const std::vector<std::vector<int32_t>>& pool, const PpoOptions& o,
                     int64_t step);
void ppo_score(PpoBatch& b, const RewardFn& reward, const RewardFn& true_metric, const PpoOptions& o);
// Log-probs of the rows' reply tokens by a training forward of `m` at temperature, (N,R);
// entropy (N,R) when not null.
std::vector<float> ppo_reply_logprobs(model::Model& m, const PpoBatch& b, float temperature,
                                      std::vector<float>* entropy = nullptr);
std::vector<float> ppo_reply_values(model::Model& trunk, const model::ScalarHead& head, const PpoBatch& b);
void ppo_advantages(PpoModels& m, PpoBatch& b, const PpoOptions& o);
void ppo_update(PpoModels& m, const PpoBatch& b, const PpoOptions& o, int64_t step, PpoStepStats& st);

// One optimizer iteration (all of the above). `step` = steps done so far (0-based).
PpoStepStats ppo_step(PpoModels& m, const std::vector<std::vector<int32_t>>& pool, const PpoOptions& o, int64_t step,
                      const RewardFn& reward, const RewardFn& true_metric = {}, PpoBatch* batch_out = nullptr);

// Reward hacking in the metrics: the run warns when, over the last `window` steps, the mean
// reward-model score rose by at least min_score_rise while the true metric fell by at least
// min_true_drop (both compared with the `window` steps before). Steps without a true metric
// are ignored.
struct RewardHackWatch {
  int window = 5;
  double min_score_rise = 0.0;
  double min_true_drop = 0.05;
  std::vector<double> score, truth;
  // Adds a step; returns a warning text ("" when none).
  std::string add(double score_mean, double true_mean);
};

// Evaluation: n_prompts × samples fresh samples (seeded) at `temperature`, scored by
// reward and true_metric; KL = mean Σ_t k1(π‖π_ref) over the sampled replies.
struct PpoEval {
  double score = 0, true_metric = -1, kl = 0, stop_rate = 0, reply_length = 0;
  int distinct_replies = 0, n = 0;
};
PpoEval ppo_evaluate(model::Model& policy, model::Model& ref, const std::vector<std::vector<int32_t>>& prompts,
                     int samples, const PpoOptions& o, uint64_t seed, const RewardFn& reward,
                     const RewardFn& true_metric);

// Library-level checkpoint of the trainable state (the run entry point wraps it with the run
// dir): dir/policy (model dir), dir/value (model dir), dir/value_head.safetensors,
// dir/{policy,value,head}_optimizer.bin, dir/ppo_state.json {"step": k}.
void save_ppo_state(const std::filesystem::path& dir, const PpoModels& m, int64_t step);
// Loads into existing models/optimizers of the same shapes; returns the step.
int64_t load_ppo_state(const std::filesystem::path& dir, PpoModels& m);

}  // namespace aji::align
