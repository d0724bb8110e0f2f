// Direct Preference Optimization (post-training spec §6; Rafailov et al. 2023) on token ids:
// the library half of `aji dpo` and of acceptance experiment F (§8.1).
//
//   L = −log σ( β [ (log π_θ(y_w|x) − log π_ref(y_w|x)) − (log π_θ(y_l|x) − log π_ref(y_l|x)) ] )
//       + α · mean_p [ −(1/n_p) Σ_t log π_θ(y_w,t | …) ]          (RPO NLL, α = nll_weight, 0 = off)
//
// * log π(y|x) is the SUM of the completion tokens' log-probs (prompt and pads contribute 0;
//   TRL), from Model::lm_head_logprobs; the loss, its dL/d log π and the NLL term come from
//   feedback_math (fb::dpo_batch, fb::rpo_nll); the per-token gradient goes back through
//   Model::lm_head_logprob_backward + backward. No second log-softmax, no second DPO formula.
// * One forward over [chosen rows; rejected rows] on the batch axis (right padded), per
//   micro-batch (a step of P pairs may be split into micro-batches of `micro_batch` pairs;
//   each micro-batch's gradient is scaled by its share of the step, so the result is the
//   gradient of the mean over the P pairs).
// * The frozen reference: its sequence log-probs are PRECOMPUTED once before training
//   (dpo_reference_logps; TRL precompute_ref_log_probs), one forward-only pass over the data
//   instead of one per step, and the reference model never gets gradients (has_grads() stays
//   false: its memory is the parameters plus a forward arena, no grads, no AdamW moments).
//   The reference model itself is kept only for the KL of sampled replies at evaluation
//   points (dpo_sample_eval). Because aji's kernels compute each row the same way whatever
//   the batch composition and padding, the policy's log-probs at step 0 equal the
//   precomputed ones exactly, and the step-0 loss is ln 2 (tested).
// * Everything that decides the next step is DpoState (step, epoch, cursor) + the policy
//   weights + AdamW moments; the epoch order is a seeded shuffle of (seed, epoch), so a run
//   stopped after step k and resumed continues bit for bit (same thread count).
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/infer/rollout.h"
#include "aji/model/model.h"
#include "aji/train/optimizer.h"

namespace aji::align {

// One preference pair on token ids. chosen / rejected are the completion tokens that follow
// the prompt (the end-of-turn token included when the reply has one); both must be
// non-empty and prompt + completion must fit the model's context.
struct PreferenceIds {
  std::vector<int32_t> prompt;
  std::vector<int32_t> chosen;
  std::vector<int32_t> rejected;
};

struct DpoOptions {
  double beta = 0.1;         // β: larger = stay closer to the reference
  double nll_weight = 0.0;   // α of the RPO NLL term on the chosen reply (0 = plain DPO)
  int batch = 32;            // pairs per optimizer step
  int micro_batch = 0;       // pairs per forward/backward (0 = the whole step at once)
  std::optional<int64_t> steps;  // optimizer steps; unset = from epochs
  double epochs = 1.0;
  float lr = 5e-5f;
  float min_lr_frac = 0.0f;
  std::string decay = "constant";
  int64_t warmup = 0;
  float weight_decay = 0.0f;
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float grad_clip = 1.0f;
  int32_t pad_id = 0;        // input id at padding (never a target)
  uint64_t seed = 1234;      // data order
  std::filesystem::path run_dir;  // named in a divergence error (train::train_step); may be empty
};

// Where the loop is. The epoch's order is dpo_epoch_order(n, seed, epoch).
struct DpoState {
  int64_t step = 0;      // optimizer steps done
  int64_t epoch = 0;
  int64_t next_pair = 0; // index into this epoch's order
  nlohmann::json to_json() const;
  static DpoState from_json(const nlohmann::json& j);
};

// The reference's sequence log-probs, one per pair.
struct ReferenceLogps {
  std::vector<double> chosen, rejected;
};

// Steps per epoch = ceil(n / batch) (the last batch of an epoch may be smaller).
int64_t dpo_total_steps(int64_t n_pairs, const DpoOptions& o);
// A seeded permutation of 0..n-1 for an epoch (Fisher-Yates with aji::Rng).
std::vector<int64_t> dpo_epoch_order(int64_t n, uint64_t seed, int64_t epoch);

// Refuses (aji::Error naming the pair index) an empty chosen/rejected, chosen == rejected,
// an empty prompt, a token outside the vocabulary or a pair longer than the context.
void check_preference_ids(const std::vector<PreferenceIds>& pairs, const model::ModelConfig& config);

// Summed completion log-probs of each pair's chosen and rejected reply under `model`,
// forward only (never touches grads), `batch` pairs per forward ([chosen; rejected] rows).
ReferenceLogps dpo_reference_logps(model::Model& model, const std::vector<PreferenceIds>& pairs, int batch,
                                   int32_t pad_id);

struct DpoStepStats {
  int64_t step = 0;          // 1-based, after the update
  int64_t steps = 0;
  double loss = 0;           // DPO + α·NLL
  double dpo_loss = 0;
  double nll_loss = 0;       // α·NLL part (0 when α = 0)
  double accuracy = 0;       // implicit-reward accuracy (ties 0)
  double margin = 0;         // mean β(Δ_w − Δ_l)
  double chosen_logratio = 0;    // mean log π(y_w) − log π_ref(y_w)
  double rejected_logratio = 0;  // mean log π(y_l) − log π_ref(y_l)
  double grad_norm = 0;
  float lr = 0;
  int pairs = 0;
  int64_t tokens = 0;        // input positions (padding included) of the step
  double seconds = 0;
};

// The forward and backward of one step on the pairs `batch_idx` of `pairs`, per micro-batch:
// forward [chosen; rejected] and per-token log-probs (policy_logps), DPO (+NLL) loss and
// dL/dlogp from feedback_math (dpo_loss: fb::dpo_batch, fb::rpo_nll, fb::broadcast_sequence_grad),
// LM-head and trunk backward. Gradients ACCUMULATE into policy.grads() (the caller zeroes);
// returns the step's statistics (loss = the step-mean loss; no grad_norm, lr or step yet).
DpoStepStats dpo_forward_backward(model::Model& policy, const std::vector<PreferenceIds>& pairs,
                                  const ReferenceLogps& ref, const std::vector<int64_t>& batch_idx,
                                  const DpoOptions& o);

// One optimizer step: dpo_forward_backward inside train::train_step (the one trainer step:
// zero, forward/backward, global norm, NaN/inf stop with an aji::Error naming the step and
// o.run_dir's last checkpoint, clip, AdamW at learning rate lr). step_index: 0-based, for
// the error message.
DpoStepStats dpo_step(model::Model& policy, train::AdamW& optimizer, const std::vector<PreferenceIds>& pairs,
                      const ReferenceLogps& ref, const std::vector<int64_t>& batch_idx, const DpoOptions& o,
                      float lr, int64_t step_index = 0);

struct DpoHooks {
  std::function<void(const DpoStepStats&)> on_step;
  // Called after a step; return true to stop (save a checkpoint in the hook).
  std::function<bool(const DpoState&)> after_step;
};

struct DpoResult {
  DpoState state;
  std::vector<DpoStepStats> steps;  // this session's
  bool stopped_early = false;
};

// The training loop: from `state` (fresh or loaded) to the last step, or until a hook stops.
DpoResult dpo_train(model::Model& policy, train::AdamW& optimizer, const std::vector<PreferenceIds>& pairs,
                    const ReferenceLogps& ref, const DpoOptions& o, DpoState state, const DpoHooks& hooks = {});

// Held-out metrics of the policy on pairs (forward only): the same numbers as a step's.
struct DpoEval {
  double loss = 0, dpo_loss = 0, nll_loss = 0, accuracy = 0, margin = 0;
  double chosen_logratio = 0, rejected_logratio = 0;
  int pairs = 0;
};
DpoEval dpo_evaluate(model::Model& policy, const std::vector<PreferenceIds>& pairs, const ReferenceLogps& ref,
                     const DpoOptions& o);

// Samples from the policy (infer::rollout) and the KL to the reference on them: per sample
// the sum over the reply's tokens of k1 = log π(y_t) − log π_ref(y_t) (fb::token_kl), both
// at temperature 1; kl = the mean over samples. rollout options' temperature must be 1 for
// the estimate to be unbiased (any other value is refused).
struct DpoSampleEval {
  std::vector<infer::Rollout> rollouts;
  double kl = 0;
  double mean_length = 0;   // tokens per reply (stop token included)
  double stop_rate = 0;
};
DpoSampleEval dpo_sample_eval(model::Model& policy, model::Model& reference,
                              const std::vector<std::vector<int32_t>>& prompts, const infer::RolloutOptions& ro);

}  // namespace aji::align
