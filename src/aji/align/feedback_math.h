// The math of the feedback stage (post-training spec §3 RM, §4 PPO, §5 GRPO, §6 DPO) as
// pure functions on numbers: no model, no tokenizer, no I/O. The trainers compute
// per-token log-probs / values / rewards with the model, call these functions, and feed
// the returned gradients back (Model::lm_head_logprob_backward takes dL/d logp_i per token).
//
// Conventions used throughout:
//  * Batched per-token arrays are (B,T) row-major flat spans: x[b*T + t]; a 0/1 uint8
//    `mask` of the same shape says which tokens are valid (response / completion tokens).
//    Masked-out entries of outputs are 0 (losses, gradients, advantages, returns).
//  * Every loss comes with its exact gradient wrt its inputs (dL/dlogp, dL/dV, dL/dr);
//    the tests check each against central finite differences.
//  * Internally double precision; results are float (what the model stores) or double
//    for scalar reductions.
//  * Non-finite inputs that would poison a loss (rewards, scores, values, advantages,
//    log-probs) make the batch functions throw aji::Error naming the array and index.
//    A trainer that would rather skip the batch calls first_non_finite() first.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace aji::align::fb {

using FloatSpan = std::span<const float>;
using MaskSpan = std::span<const uint8_t>;

// ---------------------------------------------------------------- numerics
double sigmoid(double x);          // 1/(1+e^-x), no overflow for any finite x
double softplus(double x);         // log(1+e^x) = −log σ(−x), stable
double log_sigmoid(double x);      // log σ(x) = −softplus(−x)

// Index of the first NaN/±inf in xs, or -1 when all are finite.
int64_t first_non_finite(FloatSpan xs);
// Throws aji::Error "<what>[i] is NaN/inf" (with a fix hint) when xs has a non-finite value.
void require_finite(FloatSpan xs, std::string_view what);

// ---------------------------------------------------------------- masked statistics
// Mean / variance over entries with mask 1 (TRL masked_mean / masked_var). mask may be
// empty = all valid. Variance is Bessel-corrected (n−1) when unbiased; with fewer than 2
// valid entries it is 0 (TRL raises there). Empty selection: mean 0.
double masked_mean(FloatSpan x, MaskSpan mask);
double masked_var(FloatSpan x, MaskSpan mask, bool unbiased = true);
// (x − mean)/sqrt(var + 1e-8) over valid entries (Bessel var); masked entries -> 0.
// shift_mean=false adds the mean back (TRL whiten(shift_mean=False)).
std::vector<float> masked_whiten(FloatSpan x, MaskSpan mask, bool shift_mean = true);

// Completion mask from sampled ids (B,T): tokens up to and including the first `eos_id`
// are valid, everything after is not (TRL completion_mask; PPO step 3). `terminated[b]`
// is 1 when row b contains eos_id. Ids < 0 (padding) end a row without EOS.
struct CompletionMask {
  std::vector<uint8_t> mask;        // (B,T)
  std::vector<uint8_t> terminated;  // (B)
  std::vector<int32_t> length;      // (B) valid tokens per row
};
CompletionMask completion_mask(std::span<const int32_t> ids, int B, int T, int32_t eos_id);

// ---------------------------------------------------------------- reward model (§3)
// One pair: L = softplus(−(r_w − r_l − margin)) = −log σ(Δ − m), Δ = r_w − r_l.
// dL/dr_w = −σ(−(Δ−m)), dL/dr_l = +σ(−(Δ−m)).
struct BtPair {
  double loss = 0;
  double d_chosen = 0;
  double d_rejected = 0;
};
BtPair bradley_terry(double r_chosen, double r_rejected, double margin = 0);

// Pairwise accuracy mean[r_w > r_l], ties count 0.5. Empty -> 0.
double pairwise_accuracy(FloatSpan r_chosen, FloatSpan r_rejected);

// A batch of P pairs: loss = mean_p BT(r_w,p, r_l,p, m_p) + η·mean_p (r_w,p + r_l,p)²
// (TRL center_rewards_coefficient). margins may be empty (all 0). Gradients (P each) are
// dL/dr of the batch loss: BT part /P, centering part 2η(r_w + r_l)/P on each reward.
struct BtBatch {
  double loss = 0;         // total
  double bt_loss = 0;      // mean BT part
  double center_loss = 0;  // η·mean((r_w+r_l)²)
  double accuracy = 0;     // ties 0.5
  double mean_margin = 0;  // mean(r_w − r_l)
  std::vector<float> d_chosen, d_rejected;
};
BtBatch bradley_terry_batch(FloatSpan r_chosen, FloatSpan r_rejected, FloatSpan margins = {},
                            double center_coef = 0);

// K-way ranking (InstructGPT §3.5): `preference[k]` is how good completion k is (higher =
// better; e.g. −rank). Returns every ordered pair (winner, loser) of distinct preference,
// ties dropped: K distinct values give K(K−1)/2 pairs. Order: by winner index, then loser.
struct RankPair {
  int winner = 0;
  int loser = 0;
};
std::vector<RankPair> ranking_pairs(FloatSpan preference);

// One prompt = one batch element: loss = mean over its pairs of −log σ(r_win − r_lose)
// with r = the K rewards of that prompt's completions (one RM forward each); d_rewards (K)
// = dL/dr_k. No pairs (all tied) -> loss 0, gradient 0, n_pairs 0 (the trainer skips it).
// A batch loss is the mean of these over prompts: scale d_rewards by 1/#prompts.
struct RankingLoss {
  double loss = 0;
  int n_pairs = 0;
  double accuracy = 0;  // over the pairs, ties in reward 0.5
  std::vector<float> d_rewards;
};
RankingLoss ranking_loss(FloatSpan rewards, std::span<const RankPair> pairs);

// ---------------------------------------------------------------- KL estimators (§4.1 step 5)
// Per token, with logr = logp_ref − logp (Schulman): k1 = −logr, k2 = logr²/2,
// k3 = exp(logr) − 1 − logr (≥ 0). k1 and k3 are unbiased for KL(π‖π_ref) under samples
// from π. Derivatives wrt logp: k1 -> 1, k2 -> −logr, k3 -> 1 − exp(logr).
enum class KlEstimator { k1, k2, k3 };
double kl_estimate(KlEstimator est, double logp, double logp_ref);
double kl_estimate_grad(KlEstimator est, double logp, double logp_ref);  // d/d logp

// Per-token KL estimate (B,T) on valid tokens, 0 elsewhere (for the PPO reward and for
// logging objective/kl = Σ_t kl_t averaged over sequences: sequence_logps(token_kl(..))).
std::vector<float> token_kl(FloatSpan logp, FloatSpan logp_ref, MaskSpan mask, KlEstimator est = KlEstimator::k1);

// ---------------------------------------------------------------- PPO (§4)
// Per-token rewards (B,T): r_t = −β·kl_t on valid tokens, plus score[b] on the last valid
// token of row b (the stop token when the row terminated; OpenRLHF convention, not TRL's
// one-slot-later). Masked tokens get 0. Throws on non-finite score/logp of valid tokens.
std::vector<float> ppo_token_rewards(FloatSpan logp, FloatSpan logp_ref, FloatSpan score, MaskSpan mask, int B,
                                     int T, double beta, KlEstimator est = KlEstimator::k1);

// GAE over each row's valid tokens in order (masked tokens are skipped, get A = R = 0):
//   δ_t = r_t + γ V_next − V_t (V past the last valid token = 0),  A_t = δ_t + γλ A_next,
//   returns R_t = A_t + V_t (from the unwhitened A). Throws on non-finite rewards/values.
struct Gae {
  std::vector<float> advantages;  // (B,T)
  std::vector<float> returns;     // (B,T)
};
Gae gae(FloatSpan rewards, FloatSpan values, MaskSpan mask, int B, int T, double gamma, double lambda);

// One token of the clipped surrogate: ρ = exp(logp − logp_old),
//   loss = max(−A·ρ, −A·clip(ρ, 1−ε_low, 1+ε_high))  (= −min(ρA, clip(ρ)A)),
//   d_logp = −A·ρ when the unclipped term is active, 0 when the clipped one strictly wins
//   (`clipped` = that case; TRL's clipfrac counts it).
struct ClippedToken {
  double loss = 0;
  double d_logp = 0;
  double ratio = 1;
  bool clipped = false;
};
ClippedToken clipped_surrogate(double logp, double logp_old, double advantage, double eps_low, double eps_high);

// PPO policy loss on a (B,T) minibatch: masked mean of the per-token clipped loss;
// d_logp (B,T) = per-token derivative / #valid. Stats over valid tokens.
struct PpoPolicyLoss {
  double loss = 0;
  std::vector<float> d_logp;
  double clip_frac = 0;
  double approx_kl = 0;  // 0.5·mean((lp − lp_old)²)
  double ratio_mean = 0;
  double ratio_var = 0;  // Bessel
  int64_t n_valid = 0;
};
PpoPolicyLoss ppo_policy_loss(FloatSpan logp, FloatSpan logp_old, FloatSpan advantages, MaskSpan mask,
                              double eps_low, double eps_high);

// Value loss 0.5·masked_mean(max((V − R)², (clip(V, V_old−ε_v, V_old+ε_v) − R)²)) and
// d_values (B,T) = dL/dV (0 on tokens where the clipped prediction strictly wins).
// clip_v < 0 disables clipping. clip_frac = fraction of valid tokens where it wins.
struct ValueLoss {
  double loss = 0;
  std::vector<float> d_values;
  double clip_frac = 0;
};
ValueLoss ppo_value_loss(FloatSpan values, FloatSpan values_old, FloatSpan returns, MaskSpan mask, double clip_v);

// 0.5·masked_mean((logp − logp_old)²).
double approx_kl(FloatSpan logp, FloatSpan logp_old, MaskSpan mask);
// 1 − Var(R − V)/Var(R) over valid tokens (Bessel); 0 when Var(R) is 0.
double explained_variance(FloatSpan values, FloatSpan returns, MaskSpan mask);

// Adaptive KL controller (Ziegler et al. 2019): e = clip(KL/target − 1, −0.2, 0.2),
// β ← β·(1 + e·n_steps/horizon).
struct AdaptiveKlController {
  double beta = 0.05;
  double target = 6.0;
  double horizon = 10000;
  void update(double current_kl, int64_t n_steps);
};

// ---------------------------------------------------------------- GRPO (§5)
// Group advantages over consecutive groups of G rewards (rewards.size() % G == 0):
//   group: (r − mean_g)/(std_g + 1e-4), Bessel std (G = 1: std 0);
//   none:  r − mean_g (Dr. GRPO);
//   batch: (r − mean_g)/(std_batch + 1e-4), Bessel std over all rewards (TRL "batch").
// A group is zero-std when its std ≤ 1e-8; its advantages are then exactly 0.
// Throws aji::Error on a non-finite reward.
enum class GrpoScale { group, none, batch };
struct GroupAdvantages {
  std::vector<float> advantages;  // one per completion
  int n_groups = 0;
  int zero_std_groups = 0;
  double frac_zero_std = 0;  // TRL frac_reward_zero_std
};
GroupAdvantages group_advantages(FloatSpan rewards, int group_size, GrpoScale scale = GrpoScale::group);

// Per-token GRPO loss −min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A) + β·k3(logp, logp_ref) and
// its derivative wrt logp: clipped-surrogate part + β(1 − exp(logp_ref − logp)).
struct GrpoToken {
  double loss = 0;
  double d_logp = 0;
  double kl = 0;  // k3
  bool clipped = false;
};
GrpoToken grpo_token(double logp, double logp_old, double logp_ref, double advantage, double eps_low,
                     double eps_high, double beta);

// Aggregation (TRL loss_type). Weights w (B,T) such that loss = Σ w·ℓ_token, hence
// dL/dlogp_i = w_i · dℓ_i/dlogp_i:
//   grpo:    1/(B · max(n_b,1))             per-sequence mean, then mean over sequences
//   bnpo:    1/max(Σ mask, 1)               over this batch
//   dr_grpo: 1/(B · max_completion_length)  constant
//   dapo:    1/max(global_active_tokens, 1) tokens of the whole accumulated step
//            (global_active_tokens ≤ 0 -> this batch's Σ mask)
enum class GrpoLossType { grpo, bnpo, dr_grpo, dapo };
std::vector<float> grpo_token_weights(MaskSpan mask, int B, int T, GrpoLossType type, int max_completion_length = 0,
                                      int64_t global_active_tokens = 0);

// DAPO overlong filtering / TRL mask_truncated_completions: rows with terminated[b] == 0
// get an all-zero mask (in place).
void mask_truncated_completions(std::vector<uint8_t>& mask, MaskSpan terminated, int B, int T);

struct GrpoConfig {
  double eps_low = 0.2;
  double eps_high = 0.2;
  double beta = 0.0;  // k3 coefficient; logp_ref may be empty when 0
  GrpoLossType loss_type = GrpoLossType::dapo;
  int max_completion_length = 0;  // dr_grpo
  int64_t global_active_tokens = 0;  // dapo
};
// A (B,T) batch: advantages are per sequence (B) and broadcast to its tokens.
struct GrpoLoss {
  double loss = 0;
  std::vector<float> d_logp;  // (B,T) dL/dlogp
  double clip_frac = 0;       // over valid tokens
  double mean_kl = 0;         // masked mean k3 (0 when β = 0 and no ref)
  int64_t n_valid = 0;
};
GrpoLoss grpo_loss(FloatSpan logp, FloatSpan logp_old, FloatSpan logp_ref, FloatSpan advantages, MaskSpan mask,
                   int B, int T, const GrpoConfig& cfg);

// ---------------------------------------------------------------- DPO (§6)
// Sequence log-probs (B): Σ_t logp[b,t]·mask[b,t] (prompt and pad masked out).
std::vector<double> sequence_logps(FloatSpan token_logp, MaskSpan mask, int B, int T);

// One pair: z = β[(lp_w − ref_w) − (lp_l − ref_l)], L = −log σ(z) = softplus(−z),
// dL/dlp_w = −β σ(−z), dL/dlp_l = +β σ(−z); implicit rewards β(lp − ref).
struct DpoPair {
  double loss = 0;
  double z = 0;
  double d_chosen = 0;
  double d_rejected = 0;
  double reward_chosen = 0;
  double reward_rejected = 0;
};
DpoPair dpo_pair(double lp_chosen, double ref_chosen, double lp_rejected, double ref_rejected, double beta);

// P pairs: loss = mean_p L_p; d_chosen/d_rejected (P) = dL/d(sequence logp) of the mean.
// accuracy = mean[reward_chosen > reward_rejected] with ties 0 (TRL rewards/accuracies;
// so policy == reference gives 0), margin = mean(reward_chosen − reward_rejected).
struct DpoBatch {
  double loss = 0;
  std::vector<float> d_chosen, d_rejected;
  double accuracy = 0;
  double margin = 0;
  double reward_chosen = 0;    // mean
  double reward_rejected = 0;  // mean
};
DpoBatch dpo_batch(std::span<const double> lp_chosen, std::span<const double> ref_chosen,
                   std::span<const double> lp_rejected, std::span<const double> ref_rejected, double beta);

// Per-token gradient (B,T) of a sequence-level gradient: every valid token of row b gets
// d_seq[b] (the sequence logp is a plain sum).
std::vector<float> broadcast_sequence_grad(FloatSpan d_seq, MaskSpan mask, int B, int T);

// RPO NLL term on the chosen replies (TRL loss_type "sft", weight α):
//   L_nll = α · mean_p [ −(1/n_p) Σ_t logp_w[p,t] ]   (per-pair token mean, then pair mean),
// so dL/dlogp_w[p,t] = −α/(P·n_p) on its valid tokens (0 for rows with n_p = 0).
// Returns the loss; adds the gradient into d_logp_chosen (B,T) when given.
double rpo_nll(FloatSpan logp_chosen, MaskSpan mask_chosen, int B, int T, double alpha,
               std::vector<float>* d_logp_chosen = nullptr);

}  // namespace aji::align::fb
