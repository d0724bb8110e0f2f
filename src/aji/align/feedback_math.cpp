#include "aji/align/feedback_math.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "aji/base/error.h"

namespace aji::align::fb {

namespace {

bool valid_at(MaskSpan mask, size_t i) { return mask.empty() || mask[i] != 0; }

void check_shape(size_t got, size_t want, const char* what) {
  if (got != want)
    throw Error(std::string("feedback math: ") + what + " has " + std::to_string(got) + " entries, expected " +
                std::to_string(want))
        .fix("pass arrays of the same (B,T) shape");
}

// Non-finite check restricted to valid entries (masked ones may hold sentinels).
void require_finite_masked(FloatSpan xs, MaskSpan mask, std::string_view what) {
  for (size_t i = 0; i < xs.size(); ++i)
    if (valid_at(mask, i) && !std::isfinite(xs[i]))
      throw Error("feedback math: " + std::string(what) + "[" + std::to_string(i) + "] is " +
                  (std::isnan(xs[i]) ? "NaN" : "inf"))
          .fix("a reward, value or log-prob diverged: lower the learning rate, check the reward function, "
               "or skip this batch (first_non_finite() finds it before the loss)");
}

}  // namespace

double sigmoid(double x) {
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

double softplus(double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::fabs(x))); }

double log_sigmoid(double x) { return -softplus(-x); }

int64_t first_non_finite(FloatSpan xs) {
  for (size_t i = 0; i < xs.size(); ++i)
    if (!std::isfinite(xs[i])) return int64_t(i);
  return -1;
}

void require_finite(FloatSpan xs, std::string_view what) { require_finite_masked(xs, {}, what); }

// ---------------------------------------------------------------- masked statistics

double masked_mean(FloatSpan x, MaskSpan mask) {
  if (!mask.empty()) check_shape(mask.size(), x.size(), "mask");
  double s = 0;
  int64_t n = 0;
  for (size_t i = 0; i < x.size(); ++i)
    if (valid_at(mask, i)) s += x[i], ++n;
  return n ? s / double(n) : 0.0;
}

double masked_var(FloatSpan x, MaskSpan mask, bool unbiased) {
  if (!mask.empty()) check_shape(mask.size(), x.size(), "mask");
  const double m = masked_mean(x, mask);
  double s = 0;
  int64_t n = 0;
  for (size_t i = 0; i < x.size(); ++i)
    if (valid_at(mask, i)) {
      const double d = x[i] - m;
      s += d * d;
      ++n;
    }
  if (n < 2) return 0.0;
  return s / double(unbiased ? n - 1 : n);
}

std::vector<float> masked_whiten(FloatSpan x, MaskSpan mask, bool shift_mean) {
  const double m = masked_mean(x, mask);
  const double inv = 1.0 / std::sqrt(masked_var(x, mask, true) + 1e-8);
  std::vector<float> out(x.size(), 0.0f);
  for (size_t i = 0; i < x.size(); ++i)
    if (valid_at(mask, i)) out[i] = float((x[i] - m) * inv + (shift_mean ? 0.0 : m));
  return out;
}

CompletionMask completion_mask(std::span<const int32_t> ids, int B, int T, int32_t eos_id) {
  check_shape(ids.size(), size_t(B) * size_t(T), "ids");
  CompletionMask cm;
  cm.mask.assign(ids.size(), 0);
  cm.terminated.assign(size_t(B), 0);
  cm.length.assign(size_t(B), 0);
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      const int32_t id = ids[size_t(b) * T + t];
      if (id < 0) break;
      cm.mask[size_t(b) * T + t] = 1;
      ++cm.length[b];
      if (id == eos_id) {
        cm.terminated[b] = 1;
        break;
      }
    }
  }
  return cm;
}

// ---------------------------------------------------------------- reward model

BtPair bradley_terry(double r_chosen, double r_rejected, double margin) {
  const double d = r_chosen - r_rejected - margin;
  BtPair p;
  p.loss = softplus(-d);
  const double s = sigmoid(-d);
  p.d_chosen = -s;
  p.d_rejected = s;
  return p;
}

double pairwise_accuracy(FloatSpan r_chosen, FloatSpan r_rejected) {
  check_shape(r_rejected.size(), r_chosen.size(), "r_rejected");
  if (r_chosen.empty()) return 0.0;
  double acc = 0;
  for (size_t i = 0; i < r_chosen.size(); ++i)
    acc += r_chosen[i] > r_rejected[i] ? 1.0 : (r_chosen[i] == r_rejected[i] ? 0.5 : 0.0);
  return acc / double(r_chosen.size());
}

BtBatch bradley_terry_batch(FloatSpan r_chosen, FloatSpan r_rejected, FloatSpan margins, double center_coef) {
  const size_t P = r_chosen.size();
  check_shape(r_rejected.size(), P, "r_rejected");
  if (!margins.empty()) check_shape(margins.size(), P, "margins");
  require_finite(r_chosen, "r_chosen");
  require_finite(r_rejected, "r_rejected");
  require_finite(margins, "margins");
  BtBatch out;
  out.d_chosen.assign(P, 0.0f);
  out.d_rejected.assign(P, 0.0f);
  if (P == 0) return out;
  const double inv = 1.0 / double(P);
  for (size_t i = 0; i < P; ++i) {
    const BtPair p = bradley_terry(r_chosen[i], r_rejected[i], margins.empty() ? 0.0 : margins[i]);
    const double sum = double(r_chosen[i]) + double(r_rejected[i]);
    out.bt_loss += p.loss * inv;
    out.center_loss += center_coef * sum * sum * inv;
    out.mean_margin += (double(r_chosen[i]) - double(r_rejected[i])) * inv;
    out.d_chosen[i] = float((p.d_chosen + 2.0 * center_coef * sum) * inv);
    out.d_rejected[i] = float((p.d_rejected + 2.0 * center_coef * sum) * inv);
  }
  out.loss = out.bt_loss + out.center_loss;
  out.accuracy = pairwise_accuracy(r_chosen, r_rejected);
  return out;
}

std::vector<RankPair> ranking_pairs(FloatSpan preference) {
  require_finite(preference, "preference");
  std::vector<RankPair> pairs;
  const int K = int(preference.size());
  for (int i = 0; i < K; ++i)
    for (int j = 0; j < K; ++j)
      if (preference[i] > preference[j]) pairs.push_back({i, j});
  return pairs;
}

RankingLoss ranking_loss(FloatSpan rewards, std::span<const RankPair> pairs) {
  require_finite(rewards, "rewards");
  RankingLoss out;
  out.d_rewards.assign(rewards.size(), 0.0f);
  out.n_pairs = int(pairs.size());
  if (pairs.empty()) return out;
  const double inv = 1.0 / double(pairs.size());
  std::vector<double> grad(rewards.size(), 0.0);
  for (const RankPair& p : pairs) {
    if (p.winner < 0 || p.loser < 0 || size_t(p.winner) >= rewards.size() || size_t(p.loser) >= rewards.size())
      throw Error("feedback math: ranking pair (" + std::to_string(p.winner) + ", " + std::to_string(p.loser) +
                  ") is out of range for " + std::to_string(rewards.size()) + " rewards")
          .fix("build pairs with ranking_pairs() over the same completions");
    const BtPair bt = bradley_terry(rewards[p.winner], rewards[p.loser]);
    out.loss += bt.loss * inv;
    grad[p.winner] += bt.d_chosen * inv;
    grad[p.loser] += bt.d_rejected * inv;
    const float rw = rewards[p.winner], rl = rewards[p.loser];
    out.accuracy += (rw > rl ? 1.0 : rw == rl ? 0.5 : 0.0) * inv;
  }
  for (size_t k = 0; k < grad.size(); ++k) out.d_rewards[k] = float(grad[k]);
  return out;
}

// ---------------------------------------------------------------- KL

double kl_estimate(KlEstimator est, double logp, double logp_ref) {
  const double logr = logp_ref - logp;
  switch (est) {
    case KlEstimator::k1:
      return -logr;
    case KlEstimator::k2:
      return 0.5 * logr * logr;
    case KlEstimator::k3:
      return std::expm1(logr) - logr;
  }
  return 0.0;
}

double kl_estimate_grad(KlEstimator est, double logp, double logp_ref) {
  const double logr = logp_ref - logp;
  switch (est) {
    case KlEstimator::k1:
      return 1.0;
    case KlEstimator::k2:
      return -logr;
    case KlEstimator::k3:
      return -std::expm1(logr);  // 1 − exp(logr)
  }
  return 0.0;
}

std::vector<float> token_kl(FloatSpan logp, FloatSpan logp_ref, MaskSpan mask, KlEstimator est) {
  check_shape(logp_ref.size(), logp.size(), "logp_ref");
  check_shape(mask.size(), logp.size(), "mask");
  require_finite_masked(logp, mask, "logp");
  require_finite_masked(logp_ref, mask, "logp_ref");
  std::vector<float> kl(logp.size(), 0.0f);
  for (size_t i = 0; i < logp.size(); ++i)
    if (mask[i]) kl[i] = float(kl_estimate(est, logp[i], logp_ref[i]));
  return kl;
}

// ---------------------------------------------------------------- PPO

std::vector<float> ppo_token_rewards(FloatSpan logp, FloatSpan logp_ref, FloatSpan score, MaskSpan mask, int B,
                                     int T, double beta, KlEstimator est) {
  const size_t N = size_t(B) * size_t(T);
  check_shape(logp.size(), N, "logp");
  check_shape(logp_ref.size(), N, "logp_ref");
  check_shape(mask.size(), N, "mask");
  check_shape(score.size(), size_t(B), "score");
  require_finite(score, "score");
  const std::vector<float> kl = token_kl(logp, logp_ref, mask, est);
  std::vector<float> r(N, 0.0f);
  for (int b = 0; b < B; ++b) {
    int last = -1;
    for (int t = 0; t < T; ++t) {
      const size_t i = size_t(b) * T + t;
      if (!mask[i]) continue;
      r[i] = float(-beta * double(kl[i]));
      last = t;
    }
    if (last >= 0) r[size_t(b) * T + last] += score[b];
  }
  return r;
}

Gae gae(FloatSpan rewards, FloatSpan values, MaskSpan mask, int B, int T, double gamma, double lambda) {
  const size_t N = size_t(B) * size_t(T);
  check_shape(rewards.size(), N, "rewards");
  check_shape(values.size(), N, "values");
  check_shape(mask.size(), N, "mask");
  require_finite_masked(rewards, mask, "rewards");
  require_finite_masked(values, mask, "values");
  Gae g;
  g.advantages.assign(N, 0.0f);
  g.returns.assign(N, 0.0f);
  for (int b = 0; b < B; ++b) {
    double next_v = 0, next_a = 0;
    for (int t = T - 1; t >= 0; --t) {
      const size_t i = size_t(b) * T + t;
      if (!mask[i]) continue;
      const double delta = rewards[i] + gamma * next_v - values[i];
      const double a = delta + gamma * lambda * next_a;
      g.advantages[i] = float(a);
      g.returns[i] = float(a + values[i]);
      next_v = values[i];
      next_a = a;
    }
  }
  return g;
}

ClippedToken clipped_surrogate(double logp, double logp_old, double advantage, double eps_low, double eps_high) {
  ClippedToken c;
  c.ratio = std::exp(logp - logp_old);
  const double clipped_ratio = std::clamp(c.ratio, 1.0 - eps_low, 1.0 + eps_high);
  const double l1 = -advantage * c.ratio;
  const double l2 = -advantage * clipped_ratio;
  if (l2 > l1) {
    c.loss = l2;
    c.clipped = true;
    c.d_logp = 0.0;  // clip(ρ) is constant outside the band, and l2 > l1 only happens outside it
  } else {
    c.loss = l1;
    c.d_logp = -advantage * c.ratio;
  }
  return c;
}

PpoPolicyLoss ppo_policy_loss(FloatSpan logp, FloatSpan logp_old, FloatSpan advantages, MaskSpan mask,
                              double eps_low, double eps_high) {
  const size_t N = logp.size();
  check_shape(logp_old.size(), N, "logp_old");
  check_shape(advantages.size(), N, "advantages");
  check_shape(mask.size(), N, "mask");
  require_finite_masked(logp, mask, "logp");
  require_finite_masked(logp_old, mask, "logp_old");
  require_finite_masked(advantages, mask, "advantages");
  PpoPolicyLoss out;
  out.d_logp.assign(N, 0.0f);
  for (size_t i = 0; i < N; ++i) out.n_valid += mask[i] ? 1 : 0;
  if (out.n_valid == 0) return out;
  const double inv = 1.0 / double(out.n_valid);
  std::vector<float> ratios(N, 0.0f);
  double kl = 0;
  for (size_t i = 0; i < N; ++i) {
    if (!mask[i]) continue;
    const ClippedToken c = clipped_surrogate(logp[i], logp_old[i], advantages[i], eps_low, eps_high);
    out.loss += c.loss * inv;
    out.d_logp[i] = float(c.d_logp * inv);
    out.clip_frac += (c.clipped ? 1.0 : 0.0) * inv;
    ratios[i] = float(c.ratio);
    const double d = double(logp[i]) - double(logp_old[i]);
    kl += 0.5 * d * d;
  }
  out.approx_kl = kl * inv;
  out.ratio_mean = masked_mean(ratios, mask);
  out.ratio_var = masked_var(ratios, mask, true);
  return out;
}

ValueLoss ppo_value_loss(FloatSpan values, FloatSpan values_old, FloatSpan returns, MaskSpan mask, double clip_v) {
  const size_t N = values.size();
  check_shape(values_old.size(), N, "values_old");
  check_shape(returns.size(), N, "returns");
  check_shape(mask.size(), N, "mask");
  require_finite_masked(values, mask, "values");
  require_finite_masked(values_old, mask, "values_old");
  require_finite_masked(returns, mask, "returns");
  ValueLoss out;
  out.d_values.assign(N, 0.0f);
  int64_t n = 0;
  for (size_t i = 0; i < N; ++i) n += mask[i] ? 1 : 0;
  if (n == 0) return out;
  const double inv = 1.0 / double(n);
  for (size_t i = 0; i < N; ++i) {
    if (!mask[i]) continue;
    const double v = values[i], r = returns[i];
    const double l1 = (v - r) * (v - r);
    if (clip_v >= 0) {
      const double vc = std::clamp(v, double(values_old[i]) - clip_v, double(values_old[i]) + clip_v);
      const double l2 = (vc - r) * (vc - r);
      if (l2 > l1) {  // only possible when v is outside the band, where vc is constant
        out.loss += 0.5 * l2 * inv;
        out.clip_frac += inv;
        continue;
      }
    }
    out.loss += 0.5 * l1 * inv;
    out.d_values[i] = float((v - r) * inv);
  }
  return out;
}

double approx_kl(FloatSpan logp, FloatSpan logp_old, MaskSpan mask) {
  check_shape(logp_old.size(), logp.size(), "logp_old");
  if (!mask.empty()) check_shape(mask.size(), logp.size(), "mask");
  double s = 0;
  int64_t n = 0;
  for (size_t i = 0; i < logp.size(); ++i)
    if (valid_at(mask, i)) {
      const double d = double(logp[i]) - double(logp_old[i]);
      s += 0.5 * d * d;
      ++n;
    }
  return n ? s / double(n) : 0.0;
}

double explained_variance(FloatSpan values, FloatSpan returns, MaskSpan mask) {
  check_shape(returns.size(), values.size(), "returns");
  std::vector<float> diff(values.size());
  for (size_t i = 0; i < values.size(); ++i) diff[i] = returns[i] - values[i];
  const double var_r = masked_var(returns, mask, true);
  if (var_r <= 0) return 0.0;
  return 1.0 - masked_var(diff, mask, true) / var_r;
}

void AdaptiveKlController::update(double current_kl, int64_t n_steps) {
  const double e = std::clamp(current_kl / target - 1.0, -0.2, 0.2);
  beta *= 1.0 + e * double(n_steps) / horizon;
}

// ---------------------------------------------------------------- GRPO

GroupAdvantages group_advantages(FloatSpan rewards, int group_size, GrpoScale scale) {
  if (group_size <= 0 || rewards.size() % size_t(group_size) != 0)
    throw Error("feedback math: " + std::to_string(rewards.size()) + " rewards do not split into groups of " +
                std::to_string(group_size))
        .fix("pass num_generations rewards for every prompt");
  require_finite(rewards, "rewards");
  GroupAdvantages out;
  const int G = group_size;
  out.n_groups = int(rewards.size() / size_t(G));
  out.advantages.assign(rewards.size(), 0.0f);
  const double batch_std = std::sqrt(masked_var(rewards, {}, true));
  for (int g = 0; g < out.n_groups; ++g) {
    FloatSpan grp = rewards.subspan(size_t(g) * G, size_t(G));
    const double mean = masked_mean(grp, {});
    const double sd = std::sqrt(masked_var(grp, {}, true));
    const bool zero = sd <= 1e-8;
    out.zero_std_groups += zero ? 1 : 0;
    for (int k = 0; k < G; ++k) {
      double a = double(grp[k]) - mean;
      if (zero) a = 0.0;  // exactly 0 (rounding in the mean can leave ~1e-9)
      else if (scale == GrpoScale::group) a /= sd + 1e-4;
      else if (scale == GrpoScale::batch) a /= batch_std + 1e-4;
      out.advantages[size_t(g) * G + k] = float(a);
    }
  }
  out.frac_zero_std = out.n_groups ? double(out.zero_std_groups) / out.n_groups : 0.0;
  return out;
}

GrpoToken grpo_token(double logp, double logp_old, double logp_ref, double advantage, double eps_low,
                     double eps_high, double beta) {
  const ClippedToken c = clipped_surrogate(logp, logp_old, advantage, eps_low, eps_high);
  GrpoToken g;
  g.loss = c.loss;
  g.d_logp = c.d_logp;
  g.clipped = c.clipped;
  if (beta != 0) {
    g.kl = kl_estimate(KlEstimator::k3, logp, logp_ref);
    g.loss += beta * g.kl;
    g.d_logp += beta * kl_estimate_grad(KlEstimator::k3, logp, logp_ref);
  }
  return g;
}

std::vector<float> grpo_token_weights(MaskSpan mask, int B, int T, GrpoLossType type, int max_completion_length,
                                      int64_t global_active_tokens) {
  const size_t N = size_t(B) * size_t(T);
  check_shape(mask.size(), N, "mask");
  std::vector<float> w(N, 0.0f);
  int64_t total = 0;
  for (size_t i = 0; i < N; ++i) total += mask[i] ? 1 : 0;
  double c = 0;
  switch (type) {
    case GrpoLossType::grpo:
      for (int b = 0; b < B; ++b) {
        int64_t n = 0;
        for (int t = 0; t < T; ++t) n += mask[size_t(b) * T + t] ? 1 : 0;
        const double wb = 1.0 / (double(B) * double(std::max<int64_t>(n, 1)));
        for (int t = 0; t < T; ++t)
          if (mask[size_t(b) * T + t]) w[size_t(b) * T + t] = float(wb);
      }
      return w;
    case GrpoLossType::bnpo:
      c = 1.0 / double(std::max<int64_t>(total, 1));
      break;
    case GrpoLossType::dr_grpo:
      if (max_completion_length <= 0)
        throw Error("feedback math: loss_type dr_grpo needs max_completion_length > 0")
            .fix("pass the sampling limit on completion tokens");
      c = 1.0 / (double(B) * double(max_completion_length));
      break;
    case GrpoLossType::dapo:
      c = 1.0 / double(std::max<int64_t>(global_active_tokens > 0 ? global_active_tokens : total, 1));
      break;
  }
  for (size_t i = 0; i < N; ++i)
    if (mask[i]) w[i] = float(c);
  return w;
}

void mask_truncated_completions(std::vector<uint8_t>& mask, MaskSpan terminated, int B, int T) {
  check_shape(mask.size(), size_t(B) * size_t(T), "mask");
  check_shape(terminated.size(), size_t(B), "terminated");
  for (int b = 0; b < B; ++b)
    if (!terminated[b]) std::fill(mask.begin() + ptrdiff_t(b) * T, mask.begin() + ptrdiff_t(b + 1) * T, 0);
}

GrpoLoss grpo_loss(FloatSpan logp, FloatSpan logp_old, FloatSpan logp_ref, FloatSpan advantages, MaskSpan mask,
                   int B, int T, const GrpoConfig& cfg) {
  const size_t N = size_t(B) * size_t(T);
  check_shape(logp.size(), N, "logp");
  check_shape(logp_old.size(), N, "logp_old");
  check_shape(mask.size(), N, "mask");
  check_shape(advantages.size(), size_t(B), "advantages");
  const bool use_ref = cfg.beta != 0;
  if (use_ref) check_shape(logp_ref.size(), N, "logp_ref");
  require_finite(advantages, "advantages");
  require_finite_masked(logp, mask, "logp");
  require_finite_masked(logp_old, mask, "logp_old");
  if (use_ref) require_finite_masked(logp_ref, mask, "logp_ref");
  const std::vector<float> w =
      grpo_token_weights(mask, B, T, cfg.loss_type, cfg.max_completion_length, cfg.global_active_tokens);
  GrpoLoss out;
  out.d_logp.assign(N, 0.0f);
  double clipped = 0, kl = 0;
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      const size_t i = size_t(b) * T + t;
      if (!mask[i]) continue;
      const GrpoToken g = grpo_token(logp[i], logp_old[i], use_ref ? logp_ref[i] : 0.0, advantages[b], cfg.eps_low,
                                     cfg.eps_high, cfg.beta);
      out.loss += double(w[i]) * g.loss;
      out.d_logp[i] = float(double(w[i]) * g.d_logp);
      clipped += g.clipped ? 1 : 0;
      kl += g.kl;
      ++out.n_valid;
    }
  if (out.n_valid) {
    out.clip_frac = clipped / double(out.n_valid);
    out.mean_kl = kl / double(out.n_valid);
  }
  return out;
}

// ---------------------------------------------------------------- DPO

std::vector<double> sequence_logps(FloatSpan token_logp, MaskSpan mask, int B, int T) {
  const size_t N = size_t(B) * size_t(T);
  check_shape(token_logp.size(), N, "token_logp");
  check_shape(mask.size(), N, "mask");
  require_finite_masked(token_logp, mask, "token_logp");
  std::vector<double> s(size_t(B), 0.0);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      if (mask[size_t(b) * T + t]) s[b] += token_logp[size_t(b) * T + t];
  return s;
}

DpoPair dpo_pair(double lp_chosen, double ref_chosen, double lp_rejected, double ref_rejected, double beta) {
  DpoPair p;
  p.reward_chosen = beta * (lp_chosen - ref_chosen);
  p.reward_rejected = beta * (lp_rejected - ref_rejected);
  p.z = beta * ((lp_chosen - ref_chosen) - (lp_rejected - ref_rejected));
  p.loss = softplus(-p.z);
  const double s = sigmoid(-p.z);
  p.d_chosen = -beta * s;
  p.d_rejected = beta * s;
  return p;
}

DpoBatch dpo_batch(std::span<const double> lp_chosen, std::span<const double> ref_chosen,
                   std::span<const double> lp_rejected, std::span<const double> ref_rejected, double beta) {
  const size_t P = lp_chosen.size();
  check_shape(ref_chosen.size(), P, "ref_chosen");
  check_shape(lp_rejected.size(), P, "lp_rejected");
  check_shape(ref_rejected.size(), P, "ref_rejected");
  DpoBatch out;
  out.d_chosen.assign(P, 0.0f);
  out.d_rejected.assign(P, 0.0f);
  if (P == 0) return out;
  const double inv = 1.0 / double(P);
  for (size_t i = 0; i < P; ++i) {
    for (double v : {lp_chosen[i], ref_chosen[i], lp_rejected[i], ref_rejected[i]})
      if (!std::isfinite(v))
        throw Error("feedback math: DPO pair " + std::to_string(i) + " has a non-finite sequence log-prob")
            .fix("check the model's log-probs for this pair (a NaN in the forward pass) or skip the batch");
    const DpoPair p = dpo_pair(lp_chosen[i], ref_chosen[i], lp_rejected[i], ref_rejected[i], beta);
    out.loss += p.loss * inv;
    out.d_chosen[i] = float(p.d_chosen * inv);
    out.d_rejected[i] = float(p.d_rejected * inv);
    out.accuracy += (p.reward_chosen > p.reward_rejected ? 1.0 : 0.0) * inv;
    out.margin += (p.reward_chosen - p.reward_rejected) * inv;
    out.reward_chosen += p.reward_chosen * inv;
    out.reward_rejected += p.reward_rejected * inv;
  }
  return out;
}

std::vector<float> broadcast_sequence_grad(FloatSpan d_seq, MaskSpan mask, int B, int T) {
  const size_t N = size_t(B) * size_t(T);
  check_shape(d_seq.size(), size_t(B), "d_seq");
  check_shape(mask.size(), N, "mask");
  std::vector<float> d(N, 0.0f);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      if (mask[size_t(b) * T + t]) d[size_t(b) * T + t] = d_seq[b];
  return d;
}

double rpo_nll(FloatSpan logp_chosen, MaskSpan mask_chosen, int B, int T, double alpha,
               std::vector<float>* d_logp_chosen) {
  const size_t N = size_t(B) * size_t(T);
  check_shape(logp_chosen.size(), N, "logp_chosen");
  check_shape(mask_chosen.size(), N, "mask_chosen");
  require_finite_masked(logp_chosen, mask_chosen, "logp_chosen");
  if (d_logp_chosen) {
    if (d_logp_chosen->empty()) d_logp_chosen->assign(N, 0.0f);
    check_shape(d_logp_chosen->size(), N, "d_logp_chosen");
  }
  if (B == 0) return 0.0;
  double loss = 0;
  for (int b = 0; b < B; ++b) {
    int64_t n = 0;
    double s = 0;
    for (int t = 0; t < T; ++t)
      if (mask_chosen[size_t(b) * T + t]) s += logp_chosen[size_t(b) * T + t], ++n;
    if (n == 0) continue;
    loss += -alpha * s / double(n) / double(B);
    if (d_logp_chosen) {
      const double g = -alpha / (double(B) * double(n));
      for (int t = 0; t < T; ++t)
        if (mask_chosen[size_t(b) * T + t]) (*d_logp_chosen)[size_t(b) * T + t] += float(g);
    }
  }
  return loss;
}

}  // namespace aji::align::fb
