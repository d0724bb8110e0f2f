// Reward model (post-training spec §3): the SFT trunk with its LM head unused and a scalar
// head `score` (Linear(C,1), no bias, zero-initialised: every pair starts as a tie, loss ln 2)
// read at the LAST NON-PAD token of each sequence (right padding), which is the end-of-turn
// token closing the reply.
//
// Data flow of one optimizer step (rm_step)
//   RmGroup = one prompt with K >= 2 completions (full token sequences prompt + reply +
//   end-of-turn) and its ordered pairs (winner, loser): a TRL pair is a group of K = 2 with
//   one pair, a K-way ranking every pair of distinct rank (preferences.h; ties give none)
//   --forward: every completion of the step's groups ONCE (K forwards per prompt, not
//     2·C(K,2)), right-padded rows of up to micro_rows sequences (a group never splits)
//   --score: ScalarHead at position len-1 of each row -> r (one per completion)
//   --loss: per group fb::bradley_terry_batch over its pairs (mean of −log σ(r_w − r_l − m)
//     + η·mean (r_w + r_l)²), the step loss = mean over the step's groups (InstructGPT §3.5:
//     one prompt = one batch element)
//   --backward: dL/dr -> ScalarHead::backward into d_hidden at the read positions ->
//     Model::backward; AdamW on the trunk (every tensor but an untied lm_head) and the head.
// After training, rm_offset = mean raw score of the training groups' best completions (the
// chosen reply of a pair), stored in rm.json; RewardModel::score subtracts it, so chosen
// replies score 0 on average (InstructGPT; the BT loss is shift-invariant).
//
// The RM directory: the trunk as train::save_model_dir writes it (model.safetensors,
// config.json, aji_config.json, tokenizer files), score.safetensors ("score.weight" (1,C)),
// rm.json ({"kind":"reward_model","offset":..., "pad_id":..., "training":{...}}), written
// as one directory atomically. load_reward_model refuses a plain model dir (no rm.json);
// train::load_model refuses an RM dir (a reward model is not a policy).
#pragma once

#include <cmath>
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

constexpr const char* kRewardModelFile = "rm.json";
constexpr const char* kScoreHeadFile = "score.safetensors";

// One prompt with its K completions (K >= 2). sequences[k] = prompt + reply + end-of-turn
// token ids, unpadded, 1..max_seq_len ids; pairs: (winner, loser) indices into sequences,
// every ordered pair of the group's ranking (ties give none; preferences.h expands a
// ranking, rm_group_from_scores a score list). margin: Llama-2 margin m on every pair.
struct RmGroup {
  std::vector<std::vector<int32_t>> sequences;
  std::vector<fb::RankPair> pairs;
  float margin = 0.0f;
  int64_t source_line = 0;  // where it was read (0 when built in memory)
};

// A group whose pairs are every ordered pair of distinct score (fb::ranking_pairs: higher
// is better, ties drop), e.g. a hidden rule's scores of K sampled replies.
RmGroup rm_group_from_scores(std::vector<std::vector<int32_t>> sequences, const std::vector<float>& scores);

// Pairs of a group.
int64_t rm_group_pairs(const RmGroup& g);

// The completions that win a pair and lose none (the chosen reply of a pair, the top tier
// of a ranking): what the offset is measured on.
std::vector<int> rm_group_best(const RmGroup& g);

// The scorer: trunk + head + offset. The trunk's grads are never allocated for scoring.
struct RewardModel {
  model::Model trunk;
  model::ScalarHead head;
  float offset = 0.0f;  // subtracted by score()/scores(): raw − offset
  int32_t pad_id = 0;
  nlohmann::json info;  // rm.json as loaded (kind, offset, training summary)

  explicit RewardModel(model::Model m, int32_t pad = 0);

  // Raw head outputs at the last token of each sequence (no offset), `batch` rows per
  // forward, longest first inside the call, returned in input order. Always fp32 (a bf16
  // training run's evaluations score as the saved model will).
  std::vector<float> raw_scores(const std::vector<std::vector<int32_t>>& seqs, int batch = 32);
  // Shifted scores raw − offset (what PPO and `aji rm score` use).
  std::vector<float> scores(const std::vector<std::vector<int32_t>>& seqs, int batch = 32);
  float score(const std::vector<int32_t>& ids);
};

struct RmOptions {
  int batch = 8;            // prompts (groups) per optimizer step
  double epochs = 1;        // used when steps == 0
  int64_t steps = 0;
  float lr = 1e-5f;
  float weight_decay = 0.0f;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  int64_t warmup = 0;
  std::string decay = "constant";  // constant | linear | cosine
  float min_lr_frac = 0.1f;
  float grad_clip = 1.0f;   // global norm over trunk + head; <= 0 off
  double center_coef = 0;   // η of the centering term (TRL center_rewards_coefficient; 0.01 recommended)
  int micro_rows = 32;      // sequences per forward at most (whole groups; gradient accumulated)
  uint64_t seed = 1234;     // shuffling of groups per epoch
  int eval_every = 0;       // held-out evaluation every N steps (0: at the end of every epoch)
  std::filesystem::path run_dir;  // named in a divergence error (train::train_step); may be empty
};

// What one step did (and what metrics.jsonl records).
struct RmStepStats {
  double loss = 0;         // mean over groups of (BT mean + centering)
  double bt_loss = 0;      // mean over groups of the BT part
  double accuracy = 0;     // over all pairs of the step, ties 0.5
  double margin = 0;       // mean r_w − r_l over the pairs
  double reward_min = 0, reward_mean = 0, reward_max = 0;  // raw, over the step's completions
  double grad_norm = 0;    // before clipping
  float lr = 0;
  double seconds = 0;      // wall time of the step
  int64_t groups = 0;      // groups with pairs (the loss denominator)
  int64_t pairs = 0;
  int64_t sequences_forwarded = 0;  // = sum of K over the step's groups
  int64_t forwards = 0;    // trunk forward calls (micro-batches)
  int64_t tokens = 0;      // real (unpadded) tokens
};

// Forward + loss + backward of the groups idx[0..n) of `groups`: accumulates gradients into
// rm.trunk.grads() (the caller zeroes them) and rm.head.grad. Groups without pairs are
// skipped (not counted); the step loss is the mean over the others. A non-finite reward
// (diverged weights) makes stats.loss NaN and stops there (rm_step then throws train_step's
// divergence error). Fills stats except grad_norm/lr/seconds. Exposed for tests.
void rm_forward_backward(RewardModel& rm, const std::vector<RmGroup>& groups, const int64_t* idx, int n,
                         const RmOptions& o, RmStepStats& stats);

// The trunk ranges the RM trains: every tensor except an untied lm_head.
std::vector<train::DecayRange> rm_trunk_ranges(const model::Model& m);

// Everything besides the weights that decides what the next step computes: saved in a
// checkpoint and handed back to rm_train, a run continues bit for bit (same threads).
struct RmProgress {
  int64_t step = 0;        // optimizer steps done
  int64_t epoch = -1;      // epoch whose order is in use
  int64_t next_batch = 0;  // next batch of that epoch
  train::AdamW trunk_opt, head_opt;  // empty at step 0: rm_train sizes them
  nlohmann::json to_json() const;
  void scalars_from_json(const nlohmann::json& j);
};

// One optimizer step on groups idx[0..n) through train::train_step (trainer_run.h): zero
// grads, rm_forward_backward, global norm over trunk + head, NaN/inf stop (aji::Error naming
// the step and o.run_dir's last checkpoint), clip, AdamW on both. step_index: 0-based.
RmStepStats rm_step(RewardModel& rm, const std::vector<RmGroup>& groups, const int64_t* idx, int n,
                    const RmOptions& o, RmProgress& pg, float lr, int64_t step_index);

// Held-out evaluation: every pair of every group, accuracy (ties 0.5), mean margin, the
// mean per-group BT loss, reward min/mean/max over all completions (raw).
struct RmEval {
  double loss = NAN, accuracy = NAN, margin = NAN;
  double reward_min = NAN, reward_mean = NAN, reward_max = NAN;
  int64_t groups = 0, pairs = 0;
};
RmEval rm_evaluate(RewardModel& rm, const std::vector<RmGroup>& groups, int batch = 32);

// Mean raw score of the groups' best completions (rm_group_best; the chosen replies): the offset.
double rm_chosen_mean(RewardModel& rm, const std::vector<RmGroup>& groups, int batch = 32);

// Steps of a run: o.steps, else ceil(epochs · #groups-with-pairs / batch).
int64_t rm_total_steps(size_t n_groups, const RmOptions& o);

// The groups of one epoch, shuffled with Rng(seed + 7919·epoch), cut into batches.
std::vector<std::vector<int64_t>> rm_epoch_batches(size_t n_groups, int batch, uint64_t seed, int64_t epoch);

struct RmHooks {
  std::function<void(int64_t step, int64_t total, const RmStepStats&)> on_step;
  std::function<void(int64_t step, const RmEval&)> on_eval;
  // After every step with the progress; return true to stop (Ctrl-C / --stop-after).
  std::function<bool(const RmProgress&)> after_step;
};

struct RmTrainResult {
  int64_t steps_done = 0;
  std::vector<float> step_losses;     // this session's
  RmStepStats first_step;             // step 1 of this session (loss ln 2 from a zero head)
  RmEval last_val;
  bool stopped_early = false;
  int64_t skipped_groups = 0;         // training groups without pairs (all tied)
};

// Trains rm (trunk + head) on the groups with pairs; validates on val (may be empty) every
// eval_every steps / epoch and at the end. Sets rm.offset = rm_chosen_mean(train) at the end
// (unless stopped early). progress: where to start / where it stands.
RmTrainResult rm_train(RewardModel& rm, const std::vector<RmGroup>& train, const std::vector<RmGroup>& val,
                       const RmOptions& o, const RmHooks& hooks = {}, RmProgress* progress = nullptr);

// ---- the RM directory ----------------------------------------------------------------
// Writes dir atomically: trunk (save_model_dir, with copy_files e.g. the tokenizer),
// score.safetensors, rm.json = {"kind":"reward_model","offset","pad_id"} + extra.
void save_reward_model(const std::filesystem::path& dir, const RewardModel& rm,
                       const std::vector<std::filesystem::path>& copy_files, const nlohmann::json& extra = {});
// Loads an RM dir; a dir without rm.json (a plain model) is an aji::Error with the fix.
RewardModel load_reward_model(const std::filesystem::path& dir);
// True when dir holds rm.json of kind "reward_model".
bool is_reward_model_dir(const std::filesystem::path& dir);

}  // namespace aji::align
