// Feedback-stage math (align/feedback_math.h): post-training spec §8.3 checks 11, 12, 14–17,
// 19–22 and 24. Every gradient is checked against central finite differences of the loss
// the same module returns, and the structural results (GAE, loss normalisations, KL) against
// independent brute-force formulas written out here.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "aji/align/feedback_math.h"
#include "aji/base/error.h"
#include "aji/base/rng.h"

using namespace aji::align::fb;

namespace {

const double kLn2 = std::log(2.0);

// Central finite difference of f wrt x[i] (x is perturbed in place and restored). The step
// is the actual float difference, so float rounding of x ± h does not bias the quotient.
double fd(std::vector<float>& x, size_t i, const std::function<double()>& f, double h = 1e-2) {
  const float x0 = x[i];
  x[i] = float(x0 + h);
  const double hi = x[i];
  const double fp = f();
  x[i] = float(x0 - h);
  const double lo = x[i];
  const double fm = f();
  x[i] = x0;
  return (fp - fm) / (hi - lo);
}

double fd_scalar(double x, const std::function<double(double)>& f, double h = 1e-5) {
  return (f(x + h) - f(x - h)) / (2 * h);
}

void expect_close(double got, double want, double rel, const char* what, size_t i) {
  EXPECT_NEAR(got, want, rel * std::max(1.0, std::fabs(want))) << what << " at " << i;
}

std::vector<float> random_vec(aji::Rng& rng, size_t n, double scale = 1.0) {
  std::vector<float> v(n);
  for (auto& x : v) x = float(scale * rng.normal());
  return v;
}

}  // namespace

// ---------------------------------------------------------------- numerics / NaN

TEST(FeedbackMath, StableSigmoidAndSoftplus) {
  for (double x : {-800.0, -30.0, -1.0, 0.0, 1.0, 30.0, 800.0}) {
    EXPECT_TRUE(std::isfinite(softplus(x))) << x;
    EXPECT_TRUE(std::isfinite(sigmoid(x))) << x;
    EXPECT_NEAR(sigmoid(x) + sigmoid(-x), 1.0, 1e-15);
    EXPECT_NEAR(softplus(x) - softplus(-x), x, 1e-9 * std::max(1.0, std::fabs(x)));
  }
  EXPECT_NEAR(softplus(2.0), std::log1p(std::exp(2.0)), 1e-15);
  EXPECT_NEAR(log_sigmoid(-2.0), std::log(1.0 / (1.0 + std::exp(2.0))), 1e-15);
}

TEST(FeedbackMath, NonFiniteInputsAreReportedNotPropagated) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> r = {1, 0, nan, 1};
  EXPECT_EQ(first_non_finite(r), 2);
  EXPECT_EQ(first_non_finite(std::vector<float>{1, 2}), -1);
  try {
    group_advantages(r, 2);
    FAIL() << "NaN reward accepted";
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("rewards[2] is NaN"), std::string::npos) << e.what();
    EXPECT_FALSE(e.how_to_fix().empty());
  }
  std::vector<float> v = {0, 0, 0, 0}, rew = {0, inf, 0, 0};
  std::vector<uint8_t> mask = {1, 1, 1, 1};
  EXPECT_THROW(gae(rew, v, mask, 1, 4, 1, 1), aji::Error);
  // A sentinel in a masked slot is fine (TRL INVALID_LOGPROB-style padding).
  std::vector<uint8_t> mask2 = {1, 0, 1, 1};
  EXPECT_NO_THROW(gae(rew, v, mask2, 1, 4, 1, 1));
  std::vector<float> adv = {0, nan, 0, 0};
  EXPECT_THROW(ppo_policy_loss(v, v, adv, mask, 0.2, 0.2), aji::Error);
  EXPECT_THROW(bradley_terry_batch(std::vector<float>{nan}, std::vector<float>{0}), aji::Error);
  std::vector<double> lp = {std::nan("")}, z = {0};
  EXPECT_THROW(dpo_batch(lp, z, z, z, 0.1), aji::Error);
}

// ---------------------------------------------------------------- check 11: Bradley–Terry

TEST(FeedbackMath, BradleyTerryPairIdentities) {
  EXPECT_DOUBLE_EQ(bradley_terry(0.0, 0.0).loss, kLn2);
  EXPECT_DOUBLE_EQ(bradley_terry(1.7, 1.7).loss, kLn2);
  for (double rw : {-3.0, -0.4, 0.0, 0.9, 5.0})
    for (double rl : {-2.0, 0.3, 4.0}) {
      const double delta = rw - rl;
      const BtPair p = bradley_terry(rw, rl);
      EXPECT_NEAR(p.loss, -std::log(1.0 / (1.0 + std::exp(-delta))), 1e-12);
      EXPECT_NEAR(p.d_chosen, fd_scalar(rw, [&](double x) { return bradley_terry(x, rl).loss; }), 1e-7);
      EXPECT_NEAR(p.d_rejected, fd_scalar(rl, [&](double x) { return bradley_terry(rw, x).loss; }), 1e-7);
      EXPECT_NEAR(p.d_chosen, -1.0 / (1.0 + std::exp(delta)), 1e-12);  // −σ(−Δ)
      EXPECT_DOUBLE_EQ(p.d_chosen + p.d_rejected, 0.0);
      EXPECT_NEAR(bradley_terry(rw + 2.5, rl + 2.5).loss, p.loss, 1e-12);            // shift invariance
      EXPECT_NEAR(bradley_terry(rw, rl).loss - bradley_terry(rl, rw).loss, -delta, 1e-12);  // swap
      EXPECT_NEAR(bradley_terry(rw, rl, 0.7).loss, bradley_terry(rw - 0.7, rl).loss, 1e-12);  // margin
    }
  // Far in the tails the loss stays finite and exact.
  EXPECT_NEAR(bradley_terry(0.0, 1000.0).loss, 1000.0, 1e-9);
  EXPECT_NEAR(bradley_terry(1000.0, 0.0).loss, 0.0, 1e-300);
}

TEST(FeedbackMath, BradleyTerryBatchCenteringAndAccuracy) {
  aji::Rng rng(11);
  const size_t P = 7;
  std::vector<float> rw = random_vec(rng, P), rl = random_vec(rng, P), m = random_vec(rng, P, 0.3);
  const double eta = 0.05;
  const BtBatch b = bradley_terry_batch(rw, rl, m, eta);
  double bt = 0, center = 0;
  for (size_t i = 0; i < P; ++i) {
    bt += std::log1p(std::exp(-(double(rw[i]) - rl[i] - m[i]))) / P;
    center += eta * std::pow(double(rw[i]) + rl[i], 2) / P;
  }
  EXPECT_NEAR(b.bt_loss, bt, 1e-12);
  EXPECT_NEAR(b.center_loss, center, 1e-12);
  EXPECT_NEAR(b.loss, bt + center, 1e-12);
  auto loss = [&] { return bradley_terry_batch(rw, rl, m, eta).loss; };
  for (size_t i = 0; i < P; ++i) {
    expect_close(b.d_chosen[i], fd(rw, i, loss), 2e-4, "d_chosen", i);
    expect_close(b.d_rejected[i], fd(rl, i, loss), 2e-4, "d_rejected", i);
    // Centering part alone: 2η(r_w + r_l)/B on each reward.
    const BtBatch no_c = bradley_terry_batch(rw, rl, m, 0.0);
    EXPECT_NEAR(b.d_chosen[i] - no_c.d_chosen[i], 2 * eta * (double(rw[i]) + rl[i]) / P, 1e-6);
    EXPECT_NEAR(b.d_rejected[i] - no_c.d_rejected[i], 2 * eta * (double(rw[i]) + rl[i]) / P, 1e-6);
  }
  // Accuracy: one win, one tie, one loss -> (1 + 0.5 + 0)/3.
  EXPECT_DOUBLE_EQ(pairwise_accuracy(std::vector<float>{2, 1, 0}, std::vector<float>{1, 1, 3}), 0.5);
  const BtBatch acc = bradley_terry_batch(std::vector<float>{2, 1, 0}, std::vector<float>{1, 1, 3});
  EXPECT_DOUBLE_EQ(acc.accuracy, 0.5);
  EXPECT_NEAR(acc.mean_margin, (1.0 + 0.0 - 3.0) / 3, 1e-12);
}

// ---------------------------------------------------------------- check 12: K-way rankings

TEST(FeedbackMath, RankingExpansionAndPerPromptMean) {
  for (int K = 2; K <= 9; ++K) {
    std::vector<float> pref(K);
    for (int k = 0; k < K; ++k) pref[k] = float((k * 5) % K);  // a permutation of 0..K-1 (5 coprime to K≠5)
    if (K == 5) for (int k = 0; k < K; ++k) pref[k] = float(K - k);
    const auto pairs = ranking_pairs(pref);
    EXPECT_EQ(int(pairs.size()), K * (K - 1) / 2) << K;
    for (const RankPair& p : pairs) EXPECT_GT(pref[p.winner], pref[p.loser]);
  }
  // Ties produce no pair: scores {3,1,1,0}: 6 pairs minus the tied one.
  std::vector<float> pref = {3, 1, 1, 0};
  const auto pairs = ranking_pairs(pref);
  ASSERT_EQ(pairs.size(), 5u);
  for (const RankPair& p : pairs) EXPECT_FALSE((p.winner == 1 && p.loser == 2) || (p.winner == 2 && p.loser == 1));
  // The per-prompt loss over K rewards (K forwards) is the mean BT loss over its pairs.
  std::vector<float> rewards = {0.5f, -0.2f, 1.1f, 0.0f};
  const RankingLoss rl = ranking_loss(rewards, pairs);
  double want = 0;
  for (const RankPair& p : pairs) want += std::log1p(std::exp(-(double(rewards[p.winner]) - rewards[p.loser])));
  want /= double(pairs.size());
  EXPECT_EQ(rl.n_pairs, 5);
  EXPECT_NEAR(rl.loss, want, 1e-12);
  EXPECT_EQ(rl.d_rewards.size(), rewards.size());  // one gradient per forward pass
  auto loss = [&] { return ranking_loss(rewards, pairs).loss; };
  for (size_t k = 0; k < rewards.size(); ++k) expect_close(rl.d_rewards[k], fd(rewards, k, loss), 2e-4, "d_r", k);
  // Accuracy over the pairs: rewards order 2 > 0 > 3 > 1 vs preference 0 > {1,2} > 3.
  // Pairs (0,1) ok, (0,2) wrong, (0,3) ok, (1,3) wrong, (2,3) ok -> 3/5.
  EXPECT_NEAR(rl.accuracy, 0.6, 1e-12);
  // All tied: no pairs, zero loss and gradient.
  const auto none = ranking_pairs(std::vector<float>{2, 2, 2});
  EXPECT_TRUE(none.empty());
  const RankingLoss z = ranking_loss(rewards, none);
  EXPECT_EQ(z.loss, 0.0);
  for (float g : z.d_rewards) EXPECT_EQ(g, 0.0f);
}

// ---------------------------------------------------------------- check 14: KL estimators

TEST(FeedbackMath, KlEstimatorsMonteCarloMatchExactKl) {
  const std::vector<double> p = {0.4, 0.25, 0.2, 0.1, 0.05};
  const std::vector<double> q = {0.2, 0.2, 0.3, 0.15, 0.15};
  double kl = 0;
  for (size_t i = 0; i < p.size(); ++i) kl += p[i] * std::log(p[i] / q[i]);
  aji::Rng rng(14);
  const int N = 200000;
  double s1 = 0, s3 = 0, s1sq = 0, s3sq = 0;
  for (int n = 0; n < N; ++n) {
    double u = rng.uniform(), c = 0;
    size_t k = 0;
    for (; k + 1 < p.size(); ++k) {
      c += p[k];
      if (u < c) break;
    }
    const double k1 = kl_estimate(KlEstimator::k1, std::log(p[k]), std::log(q[k]));
    const double k3 = kl_estimate(KlEstimator::k3, std::log(p[k]), std::log(q[k]));
    ASSERT_GE(k3, 0.0);
    s1 += k1, s3 += k3, s1sq += k1 * k1, s3sq += k3 * k3;
  }
  const double m1 = s1 / N, m3 = s3 / N;
  const double se1 = std::sqrt((s1sq / N - m1 * m1) / N), se3 = std::sqrt((s3sq / N - m3 * m3) / N);
  EXPECT_NEAR(m1, kl, 5 * se1) << "k1 MC mean vs exact KL " << kl;
  EXPECT_NEAR(m3, kl, 5 * se3) << "k3 MC mean vs exact KL " << kl;
  // Identical policies: every estimator is exactly 0.
  for (double lp : {-0.1, -2.3, -7.0})
    for (KlEstimator e : {KlEstimator::k1, KlEstimator::k2, KlEstimator::k3}) EXPECT_EQ(kl_estimate(e, lp, lp), 0.0);
  // Closed forms.
  EXPECT_NEAR(kl_estimate(KlEstimator::k2, -1.0, -1.5), 0.125, 1e-15);
  EXPECT_NEAR(kl_estimate(KlEstimator::k3, -1.0, -1.5), std::exp(-0.5) - 1 + 0.5, 1e-15);
}

TEST(FeedbackMath, KlEstimatorGradientsAndK3Formula) {  // check 22 (KL part)
  for (double lp : {-3.0, -1.2, -0.05})
    for (double lr : {-2.5, -1.2, -0.4})
      for (KlEstimator e : {KlEstimator::k1, KlEstimator::k2, KlEstimator::k3}) {
        const double g = kl_estimate_grad(e, lp, lr);
        EXPECT_NEAR(g, fd_scalar(lp, [&](double x) { return kl_estimate(e, x, lr); }), 1e-7);
        if (e == KlEstimator::k3) { EXPECT_NEAR(g, 1.0 - std::exp(lr) / std::exp(lp), 1e-12); }  // 1 − π_ref/π
      }
  EXPECT_EQ(kl_estimate_grad(KlEstimator::k3, -0.7, -0.7), 0.0);
}

// ---------------------------------------------------------------- check 15: clipped losses

TEST(FeedbackMath, PpoPolicyLossAtRatioOneIsVanillaPolicyGradient) {
  aji::Rng rng(15);
  const int B = 3, T = 5;
  std::vector<float> lp = random_vec(rng, B * T), adv = random_vec(rng, B * T);
  std::vector<uint8_t> mask(B * T, 1);
  mask[4] = mask[13] = mask[14] = 0;
  const PpoPolicyLoss pl = ppo_policy_loss(lp, lp, adv, mask, 0.2, 0.2);
  EXPECT_EQ(pl.n_valid, 12);
  double mean_neg_a = 0;
  for (int i = 0; i < B * T; ++i) {
    if (!mask[i]) {
      EXPECT_EQ(pl.d_logp[i], 0.0f);
      continue;
    }
    mean_neg_a += -double(adv[i]) / 12;
    EXPECT_NEAR(pl.d_logp[i], -double(adv[i]) / 12, 1e-7) << i;  // −mean(A ∇log π)
  }
  EXPECT_NEAR(pl.loss, mean_neg_a, 1e-6);
  EXPECT_EQ(pl.clip_frac, 0.0);
  // Check 19: ratio ≡ 1 -> approx-KL 0.
  EXPECT_EQ(pl.approx_kl, 0.0);
  EXPECT_EQ(approx_kl(lp, lp, mask), 0.0);
  EXPECT_DOUBLE_EQ(pl.ratio_mean, 1.0);
  EXPECT_DOUBLE_EQ(pl.ratio_var, 0.0);
}

TEST(FeedbackMath, PpoPolicyLossClippedTokensHaveZeroGradient) {
  const double eps = 0.2;
  // A > 0, ratio > 1+ε: clipped, zero gradient.
  ClippedToken c = clipped_surrogate(std::log(1.5), 0.0, 2.0, eps, eps);
  EXPECT_TRUE(c.clipped);
  EXPECT_EQ(c.d_logp, 0.0);
  EXPECT_NEAR(c.loss, -2.0 * 1.2, 1e-12);
  // A < 0, ratio < 1−ε: clipped, zero gradient.
  c = clipped_surrogate(std::log(0.5), 0.0, -1.0, eps, eps);
  EXPECT_TRUE(c.clipped);
  EXPECT_EQ(c.d_logp, 0.0);
  EXPECT_NEAR(c.loss, 0.8, 1e-12);
  // A > 0, ratio < 1−ε: the unclipped (pessimistic) term is active, gradient flows.
  c = clipped_surrogate(std::log(0.5), 0.0, 1.0, eps, eps);
  EXPECT_FALSE(c.clipped);
  EXPECT_NEAR(c.d_logp, -0.5, 1e-12);
  // Asymmetric ε (Clip-Higher): ratio 1.25 is inside [0.8, 1.28].
  EXPECT_FALSE(clipped_surrogate(std::log(1.25), 0.0, 1.0, 0.2, 0.28).clipped);
  EXPECT_TRUE(clipped_surrogate(std::log(1.25), 0.0, 1.0, 0.2, 0.2).clipped);

  // Finite differences of the batch loss at generic points (away from the kinks).
  aji::Rng rng(151);
  const int N = 24;
  std::vector<float> lp_old = random_vec(rng, N), lp(N), adv = random_vec(rng, N);
  for (int i = 0; i < N; ++i) lp[i] = lp_old[i] + float(0.4 * rng.normal());
  std::vector<uint8_t> mask(N, 1);
  mask[3] = 0;
  auto kink = [&](int i) {
    const double r = std::exp(double(lp[i]) - lp_old[i]);
    return std::fabs(r - 0.8) < 0.02 || std::fabs(r - 1.2) < 0.02;
  };
  const PpoPolicyLoss pl = ppo_policy_loss(lp, lp_old, adv, mask, eps, eps);
  int n_clipped = 0;
  for (int i = 0; i < N; ++i) n_clipped += mask[i] && clipped_surrogate(lp[i], lp_old[i], adv[i], eps, eps).clipped;
  EXPECT_GT(n_clipped, 0);
  EXPECT_NEAR(pl.clip_frac, n_clipped / 23.0, 1e-12);
  auto loss = [&] { return ppo_policy_loss(lp, lp_old, adv, mask, eps, eps).loss; };
  for (int i = 0; i < N; ++i) {
    if (kink(i)) continue;
    expect_close(pl.d_logp[i], fd(lp, size_t(i), loss, 1e-3), 1e-3, "d_logp", size_t(i));
  }
  double akl = 0;
  for (int i = 0; i < N; ++i)
    if (mask[i]) akl += 0.5 * std::pow(double(lp[i]) - lp_old[i], 2) / 23;
  EXPECT_NEAR(pl.approx_kl, akl, 1e-9);
}

TEST(FeedbackMath, PpoValueLossClippingAndGradient) {
  // Clipped prediction wins: V moved far from V_old in the wrong direction -> gradient 0.
  {
    std::vector<float> v = {2.0f}, v_old = {0.0f}, ret = {-1.0f};
    std::vector<uint8_t> m = {1};
    const ValueLoss vl = ppo_value_loss(v, v_old, ret, m, 0.2);
    // unclipped (2+1)² = 9, clipped (0.2+1)² = 1.44: the unclipped one wins (max) -> gradient flows.
    EXPECT_NEAR(vl.loss, 4.5, 1e-6);
    EXPECT_NEAR(vl.d_values[0], 3.0, 1e-6);
    EXPECT_EQ(vl.clip_frac, 0.0);
  }
  {
    std::vector<float> v = {1.0f}, v_old = {0.0f}, ret = {0.9f};
    std::vector<uint8_t> m = {1};
    const ValueLoss vl = ppo_value_loss(v, v_old, ret, m, 0.2);
    // unclipped (0.1)² = 0.01, clipped (0.2 − 0.9)² = 0.49 wins -> zero gradient.
    EXPECT_NEAR(vl.loss, 0.5 * 0.49, 1e-6);
    EXPECT_EQ(vl.d_values[0], 0.0f);
    EXPECT_EQ(vl.clip_frac, 1.0);
  }
  aji::Rng rng(152);
  const int N = 20;
  std::vector<float> v_old = random_vec(rng, N), v(N), ret = random_vec(rng, N);
  for (int i = 0; i < N; ++i) v[i] = v_old[i] + float(0.5 * rng.normal());
  std::vector<uint8_t> mask(N, 1);
  mask[0] = mask[7] = 0;
  for (double clip : {0.2, -1.0}) {
    const ValueLoss vl = ppo_value_loss(v, v_old, ret, mask, clip);
    double want = 0;
    for (int i = 0; i < N; ++i) {
      if (!mask[i]) continue;
      const double u = std::pow(double(v[i]) - ret[i], 2);
      const double vc = clip < 0 ? v[i] : std::clamp(double(v[i]), double(v_old[i]) - clip, double(v_old[i]) + clip);
      want += 0.5 * std::max(u, std::pow(vc - ret[i], 2)) / 18;
    }
    EXPECT_NEAR(vl.loss, want, 1e-9);
    auto loss = [&] { return ppo_value_loss(v, v_old, ret, mask, clip).loss; };
    for (int i = 0; i < N; ++i) {
      const double lo = double(v_old[i]) - 0.2, hi = double(v_old[i]) + 0.2;
      if (clip > 0 && (std::fabs(v[i] - lo) < 0.01 || std::fabs(v[i] - hi) < 0.01)) continue;
      expect_close(vl.d_values[i], fd(v, size_t(i), loss, 1e-3), 1e-3, "d_values", size_t(i));
    }
  }
}

// ---------------------------------------------------------------- check 16: rewards + GAE

TEST(FeedbackMath, GaeMatchesBruteForce) {
  aji::Rng rng(16);
  const int B = 3, T = 7;
  std::vector<float> r = random_vec(rng, B * T), v = random_vec(rng, B * T);
  std::vector<uint8_t> mask(B * T, 0);
  const int len[B] = {7, 4, 1};
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < len[b]; ++t) mask[b * T + t] = 1;
  for (double gamma : {1.0, 0.9})
    for (double lambda : {1.0, 0.95, 0.0}) {
      const Gae g = gae(r, v, mask, B, T, gamma, lambda);
      for (int b = 0; b < B; ++b)
        for (int t = 0; t < T; ++t) {
          const int i = b * T + t;
          if (t >= len[b]) {
            EXPECT_EQ(g.advantages[i], 0.0f);
            EXPECT_EQ(g.returns[i], 0.0f);
            continue;
          }
          // A_t = Σ_l (γλ)^l δ_{t+l},  δ_s = r_s + γ V_{s+1} − V_s  (V after the end = 0).
          double a = 0, w = 1;
          for (int s = t; s < len[b]; ++s) {
            const double vnext = s + 1 < len[b] ? v[b * T + s + 1] : 0.0;
            a += w * (r[b * T + s] + gamma * vnext - v[b * T + s]);
            w *= gamma * lambda;
          }
          EXPECT_NEAR(g.advantages[i], a, 1e-5) << b << "," << t;
          EXPECT_NEAR(g.returns[i], a + v[i], 1e-5);
          if (gamma == 1.0 && lambda == 1.0) {  // reward-to-go − V
            double rtg = 0;
            for (int s = t; s < len[b]; ++s) rtg += r[b * T + s];
            EXPECT_NEAR(g.advantages[i], rtg - v[i], 1e-5);
          }
          if (lambda == 0.0) {  // TD residual
            const double vnext = t + 1 < len[b] ? v[i + 1] : 0.0;
            EXPECT_NEAR(g.advantages[i], r[i] + gamma * vnext - v[i], 1e-5);
          }
        }
    }
}

TEST(FeedbackMath, TokenRewardsScoreOnEosAndNothingAfterIt) {
  const int B = 2, T = 5, EOS = 9;
  // Row 0 stops at t=2 (EOS), then garbage; row 1 never stops (truncated).
  std::vector<int32_t> ids = {4, 5, EOS, 6, EOS, 3, 3, 3, 3, 3};
  const CompletionMask cm = completion_mask(ids, B, T, EOS);
  EXPECT_EQ(cm.mask, (std::vector<uint8_t>{1, 1, 1, 0, 0, 1, 1, 1, 1, 1}));
  EXPECT_EQ(cm.terminated, (std::vector<uint8_t>{1, 0}));
  EXPECT_EQ(cm.length, (std::vector<int32_t>{3, 5}));
  aji::Rng rng(161);
  std::vector<float> lp = random_vec(rng, B * T), lp_ref = random_vec(rng, B * T);
  lp[3] = lp[4] = lp_ref[3] = lp_ref[4] = 1.0f;  // TRL INVALID_LOGPROB sentinel
  std::vector<float> score = {2.0f, -1.0f};
  const double beta = 0.05;
  const auto r = ppo_token_rewards(lp, lp_ref, score, cm.mask, B, T, beta);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      const int i = b * T + t;
      if (!cm.mask[i]) {
        EXPECT_EQ(r[i], 0.0f);
        continue;
      }
      double want = -beta * (double(lp[i]) - lp_ref[i]);
      if (t == cm.length[b] - 1) want += score[b];  // the EOS token (or the last one if truncated)
      EXPECT_NEAR(r[i], want, 1e-6) << b << "," << t;
    }
  // Per-sequence KL for logging: Σ_t k1 over the valid tokens only.
  const auto kl = token_kl(lp, lp_ref, cm.mask);
  const auto seq_kl = sequence_logps(kl, cm.mask, B, T);
  double kl0 = 0;
  for (int t = 0; t < 3; ++t) kl0 += double(lp[t]) - lp_ref[t];
  EXPECT_NEAR(seq_kl[0], kl0, 1e-5);
  EXPECT_EQ(kl[3], 0.0f);
  std::vector<float> v = random_vec(rng, B * T);
  const Gae g = gae(r, v, cm.mask, B, T, 1.0, 0.95);
  EXPECT_EQ(g.advantages[3], 0.0f);
  EXPECT_EQ(g.advantages[4], 0.0f);
  // k3 rewards are never positive without the score.
  std::vector<float> zero = {0, 0};
  for (float x : ppo_token_rewards(lp, lp_ref, zero, cm.mask, B, T, beta, KlEstimator::k3)) EXPECT_LE(x, 0.0f);
}

// ---------------------------------------------------------------- check 17: masked stats

TEST(FeedbackMath, MaskedStatisticsEqualPlainStatisticsOfSelectedEntries) {
  aji::Rng rng(17);
  std::vector<float> x = random_vec(rng, 30, 3.0);
  std::vector<uint8_t> mask(30);
  std::vector<double> sel;
  for (int i = 0; i < 30; ++i) {
    mask[i] = (i % 3 != 1) ? 1 : 0;
    if (mask[i]) sel.push_back(x[i]);
  }
  double m = 0;
  for (double s : sel) m += s / double(sel.size());
  double ss = 0;
  for (double s : sel) ss += (s - m) * (s - m);
  EXPECT_NEAR(masked_mean(x, mask), m, 1e-9);
  EXPECT_NEAR(masked_var(x, mask, true), ss / double(sel.size() - 1), 1e-9);
  EXPECT_NEAR(masked_var(x, mask, false), ss / double(sel.size()), 1e-9);
  const auto w = masked_whiten(x, mask);
  for (int i = 0; i < 30; ++i)
    if (!mask[i]) { EXPECT_EQ(w[i], 0.0f); }
  EXPECT_NEAR(masked_mean(w, mask), 0.0, 1e-6);
  EXPECT_NEAR(masked_var(w, mask, true), 1.0, 1e-5);
  const auto ws = masked_whiten(x, mask, false);
  EXPECT_NEAR(masked_mean(ws, mask), m, 1e-5);
  // Explained variance: perfect values -> 1, constant mean prediction -> about 0.
  std::vector<float> mean_pred(30, float(m));
  EXPECT_NEAR(explained_variance(x, x, mask), 1.0, 1e-12);
  EXPECT_NEAR(explained_variance(mean_pred, x, mask), 0.0, 1e-5);
}

TEST(FeedbackMath, AdaptiveKlControllerFollowsZiegler) {
  AdaptiveKlController c{0.1, 6.0, 10000};
  c.update(6.0, 512);  // on target: unchanged
  EXPECT_DOUBLE_EQ(c.beta, 0.1);
  c.update(12.0, 512);  // e clipped to +0.2
  EXPECT_NEAR(c.beta, 0.1 * (1 + 0.2 * 512 / 10000.0), 1e-15);
  const double b = c.beta;
  c.update(5.4, 1000);  // e = −0.1
  EXPECT_NEAR(c.beta, b * (1 - 0.1 * 0.1), 1e-15);
}

// ---------------------------------------------------------------- check 20: group advantages

TEST(FeedbackMath, GroupAdvantagesSumToZeroWithUnitBesselStd) {
  std::vector<float> r = {1, 0, 0, 1, 1, 1, 1, 1, 0.3f, -2, 5, 0.5f};
  const int G = 4;
  const GroupAdvantages ga = group_advantages(r, G);
  EXPECT_EQ(ga.n_groups, 3);
  EXPECT_EQ(ga.zero_std_groups, 1);
  EXPECT_NEAR(ga.frac_zero_std, 1.0 / 3, 1e-12);
  for (int g = 0; g < 3; ++g) {
    std::vector<float> a(ga.advantages.begin() + g * G, ga.advantages.begin() + (g + 1) * G);
    double s = 0;
    for (float x : a) {
      EXPECT_TRUE(std::isfinite(x));
      s += x;
    }
    EXPECT_NEAR(s, 0.0, 1e-5);
    const double sd = std::sqrt(masked_var(a, {}, true));
    if (g == 1) {
      for (float x : a) EXPECT_EQ(x, 0.0f);
    } else {
      EXPECT_NEAR(sd, 1.0, 1e-3);  // std/(std + 1e-4)
    }
  }
  // Dr. GRPO: r − mean, no scaling.
  const GroupAdvantages dr = group_advantages(r, G, GrpoScale::none);
  EXPECT_NEAR(dr.advantages[0], 0.5, 1e-6);
  EXPECT_NEAR(dr.advantages[9], -2 - (0.3 - 2 + 5 + 0.5) / 4, 1e-6);
  // Batch scaling divides by the std of all rewards.
  const GroupAdvantages bt = group_advantages(r, G, GrpoScale::batch);
  const double bsd = std::sqrt(masked_var(r, {}, true));
  EXPECT_NEAR(bt.advantages[9], dr.advantages[9] / (bsd + 1e-4), 1e-5);
  // G = 1: every group is zero-std, advantages 0, no NaN.
  const GroupAdvantages one = group_advantages(std::vector<float>{3, 4}, 1);
  EXPECT_EQ(one.zero_std_groups, 2);
  EXPECT_EQ(one.advantages, (std::vector<float>{0, 0}));
  EXPECT_THROW(group_advantages(r, 5), aji::Error);

  // A zero-std group contributes exactly zero gradient (β = 0).
  const int B = 4, T = 3;
  std::vector<float> lp = {-1, -2, -0.5f, -1, -1, -1, -3, -0.2f, -1, -2, -2, -2};
  std::vector<float> lp_old = lp;
  lp_old[1] += 0.1f;
  std::vector<uint8_t> mask(B * T, 1);
  std::vector<float> adv(ga.advantages.begin() + 4, ga.advantages.begin() + 8);
  GrpoConfig cfg;
  cfg.loss_type = GrpoLossType::grpo;
  const GrpoLoss gl = grpo_loss(lp, lp_old, {}, adv, mask, B, T, cfg);
  for (float d : gl.d_logp) EXPECT_EQ(d, 0.0f);
  EXPECT_EQ(gl.loss, 0.0);
}

// ---------------------------------------------------------------- check 21: loss normalisations

TEST(FeedbackMath, GrpoLossNormalisationsOnHandMadeBatch) {
  // B = 3 completions with lengths 3, 1 and 2 (T = 4); ratio 1, β = 0, so the per-token
  // loss is −A_b on each valid token.
  const int B = 3, T = 4;
  std::vector<uint8_t> mask = {1, 1, 1, 0, 1, 0, 0, 0, 1, 1, 0, 0};
  std::vector<float> adv = {1.0f, -2.0f, 0.5f};
  std::vector<float> lp = {-1, -2, -3, 0, -0.5f, 0, 0, 0, -1.5f, -0.7f, 0, 0};
  const double sums[B] = {-3.0, 2.0, -1.0};  // Σ_t ℓ per row
  const double lens[B] = {3, 1, 2};
  struct Case {
    GrpoLossType type;
    double want;
  };
  const double want_grpo = (sums[0] / lens[0] + sums[1] / lens[1] + sums[2] / lens[2]) / B;
  const double want_bnpo = (sums[0] + sums[1] + sums[2]) / 6.0;
  const double want_dr = (sums[0] + sums[1] + sums[2]) / (B * 8.0);  // max_completion_length 8
  const double want_dapo = (sums[0] + sums[1] + sums[2]) / 20.0;   // 20 tokens in the accumulated step
  EXPECT_NEAR(want_grpo, (-1.0 + 2.0 - 0.5) / 3, 1e-12);
  for (const Case& c : {Case{GrpoLossType::grpo, want_grpo}, Case{GrpoLossType::bnpo, want_bnpo},
                        Case{GrpoLossType::dr_grpo, want_dr}, Case{GrpoLossType::dapo, want_dapo}}) {
    GrpoConfig cfg;
    cfg.loss_type = c.type;
    cfg.max_completion_length = 8;
    cfg.global_active_tokens = 20;
    const GrpoLoss gl = grpo_loss(lp, lp, {}, adv, mask, B, T, cfg);
    EXPECT_NEAR(gl.loss, c.want, 1e-7) << int(c.type);
    EXPECT_EQ(gl.n_valid, 6);
    // Gradient: finite differences with a moving policy (ratio ≠ 1, some clipped), β > 0.
    std::vector<float> lp_old = lp, lp_ref = lp;
    for (int i = 0; i < B * T; ++i) {
      lp_old[i] = lp[i] + 0.13f * float((i % 3) - 1);
      lp_ref[i] = lp[i] - 0.3f + 0.1f * float(i % 2);
    }
    cfg.beta = 0.04;
    cfg.eps_high = 0.28;
    std::vector<float> x = lp;
    auto loss = [&] { return grpo_loss(x, lp_old, lp_ref, adv, mask, B, T, cfg).loss; };
    const GrpoLoss g2 = grpo_loss(x, lp_old, lp_ref, adv, mask, B, T, cfg);
    for (int i = 0; i < B * T; ++i) {
      if (!mask[i]) {
        EXPECT_EQ(g2.d_logp[i], 0.0f);
        continue;
      }
      expect_close(g2.d_logp[i], fd(x, size_t(i), loss, 1e-3), 1e-3, "grpo d_logp", size_t(i));
    }
    // The weights alone reproduce the formula: Σ w = Σ_b n_b·w_b.
    const auto w = grpo_token_weights(mask, B, T, c.type, 8, 20);
    double wsum = 0;
    for (float v : w) wsum += v;
    const double want_wsum = c.type == GrpoLossType::grpo      ? 1.0
                             : c.type == GrpoLossType::bnpo    ? 1.0
                             : c.type == GrpoLossType::dr_grpo ? 6.0 / 24.0
                                                               : 6.0 / 20.0;
    EXPECT_NEAR(wsum, want_wsum, 1e-6);
  }
  // dapo with no global count normalises by this batch (= bnpo).
  GrpoConfig d;
  EXPECT_NEAR(grpo_loss(lp, lp, {}, adv, mask, B, T, d).loss, want_bnpo, 1e-7);
}

TEST(FeedbackMath, AllTruncatedCompletionsGiveZeroLossAndGradient) {
  const int B = 2, T = 3, EOS = 7;
  std::vector<int32_t> ids = {1, 2, 3, 4, 5, 6};  // nobody emitted EOS
  CompletionMask cm = completion_mask(ids, B, T, EOS);
  mask_truncated_completions(cm.mask, cm.terminated, B, T);
  for (uint8_t m : cm.mask) EXPECT_EQ(m, 0);
  std::vector<float> lp = {-1, -2, -3, -1, -1, -1}, lp_old = {-1.1f, -2, -3, -1, -0.5f, -1}, adv = {1.0f, -1.0f};
  for (GrpoLossType t : {GrpoLossType::grpo, GrpoLossType::bnpo, GrpoLossType::dr_grpo, GrpoLossType::dapo}) {
    GrpoConfig cfg;
    cfg.loss_type = t;
    cfg.max_completion_length = T;
    cfg.beta = 0.1;
    const GrpoLoss gl = grpo_loss(lp, lp_old, lp, adv, cm.mask, B, T, cfg);
    EXPECT_EQ(gl.loss, 0.0);
    for (float d : gl.d_logp) EXPECT_EQ(d, 0.0f);
  }
  // One terminated row keeps its mask.
  std::vector<int32_t> ids2 = {1, EOS, 3, 4, 5, 6};
  CompletionMask cm2 = completion_mask(ids2, B, T, EOS);
  mask_truncated_completions(cm2.mask, cm2.terminated, B, T);
  EXPECT_EQ(cm2.mask, (std::vector<uint8_t>{1, 1, 0, 0, 0, 0}));
}

TEST(FeedbackMath, GrpoTokenKlTermGradient) {  // check 22
  const double beta = 0.04;
  for (double lp : {-2.0, -0.3})
    for (double ref : {-2.5, -0.3, -0.1}) {
      const GrpoToken g = grpo_token(lp, lp, ref, 0.0, 0.2, 0.2, beta);  // A = 0: only the KL term
      EXPECT_NEAR(g.d_logp, beta * (1 - std::exp(ref) / std::exp(lp)), 1e-12);
      EXPECT_NEAR(g.d_logp,
                  fd_scalar(lp, [&](double x) { return grpo_token(x, lp, ref, 0.0, 0.2, 0.2, beta).loss; }), 1e-8);
      if (ref == lp) {
        EXPECT_EQ(g.d_logp, 0.0);
        EXPECT_EQ(g.kl, 0.0);
      }
      const GrpoToken h = grpo_token(lp, lp - 0.05, ref, 1.3, 0.2, 0.28, beta);
      EXPECT_NEAR(h.d_logp,
                  fd_scalar(lp, [&](double x) { return grpo_token(x, lp - 0.05, ref, 1.3, 0.2, 0.28, beta).loss; }),
                  1e-7);
    }
}

// ---------------------------------------------------------------- check 24: DPO

TEST(FeedbackMath, DpoStepZeroIsLn2AndGradientsMatch) {
  std::vector<double> lw = {-12.5, -3.25, -40.0}, ll = {-11.0, -7.5, -38.0};
  const DpoBatch z = dpo_batch(lw, lw, ll, ll, 0.1);
  EXPECT_DOUBLE_EQ(z.loss, kLn2);  // policy == reference (to rounding of the mean)
  EXPECT_EQ(z.accuracy, 0.0);
  EXPECT_EQ(z.margin, 0.0);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_NEAR(z.d_chosen[i], -0.1 * 0.5 / 3, 1e-9);
    EXPECT_NEAR(z.d_rejected[i], 0.1 * 0.5 / 3, 1e-9);
  }
  for (double beta : {0.1, 0.5})
    for (double dw : {-2.0, 0.3, 4.0})
      for (double dl : {-1.0, 1.5}) {
        const double rw = -10, rl = -9;
        const DpoPair p = dpo_pair(rw + dw, rw, rl + dl, rl, beta);
        const double z_want = beta * (dw - dl);
        EXPECT_NEAR(p.z, z_want, 1e-12);
        EXPECT_NEAR(p.loss, -std::log(1 / (1 + std::exp(-z_want))), 1e-12);
        const double s = 1 / (1 + std::exp(z_want));  // σ(−z)
        EXPECT_NEAR(p.d_chosen, -beta * s, 1e-12);
        EXPECT_NEAR(p.d_rejected, beta * s, 1e-12);
        EXPECT_NEAR(p.d_chosen, fd_scalar(rw + dw, [&](double x) { return dpo_pair(x, rw, rl + dl, rl, beta).loss; }),
                    1e-8);
        EXPECT_NEAR(p.d_rejected,
                    fd_scalar(rl + dl, [&](double x) { return dpo_pair(rw + dw, rw, x, rl, beta).loss; }), 1e-8);
        EXPECT_NEAR(dpo_pair(rl + dl, rl, rw + dw, rw, beta).z, -p.z, 1e-12);  // swap
        EXPECT_NEAR(p.reward_chosen, beta * dw, 1e-12);
      }
  std::vector<double> moved = {-12.0, -3.25, -41.0};
  const DpoBatch b = dpo_batch(moved, lw, ll, ll, 0.1);
  EXPECT_NEAR(b.accuracy, 1.0 / 3, 1e-12);  // one above, one tie, one below
  EXPECT_NEAR(b.margin, 0.1 * (0.5 + 0 - 1.0) / 3, 1e-12);
}

TEST(FeedbackMath, DpoSequenceLogpsAndTokenGradientsWithRpo) {
  const int B = 2, T = 4;
  std::vector<float> lp_w = {-9, -0.5f, -1.0f, -9, -9, -2.0f, -0.25f, -0.75f};
  std::vector<uint8_t> m_w = {0, 1, 1, 0, 0, 1, 1, 1};  // prompt/pad masked
  std::vector<float> lp_l = {-9, -1.5f, -9, -9, -0.5f, -0.5f, -9, -9};
  std::vector<uint8_t> m_l = {0, 1, 0, 0, 1, 1, 0, 0};
  std::vector<float> ref_w = {-9, -0.7f, -0.9f, -9, -9, -2.2f, -0.3f, -0.5f};
  std::vector<float> ref_l = {-9, -1.2f, -9, -9, -0.6f, -0.4f, -9, -9};
  const auto sw = sequence_logps(lp_w, m_w, B, T);
  EXPECT_NEAR(sw[0], -1.5, 1e-12);
  EXPECT_NEAR(sw[1], -3.0, 1e-12);
  const double beta = 0.2, alpha = 0.5;
  // Total loss as a function of per-token log-probs; the token gradient is
  // broadcast(d_seq) + RPO term.
  auto total = [&] {
    const DpoBatch d = dpo_batch(sequence_logps(lp_w, m_w, B, T), sequence_logps(ref_w, m_w, B, T),
                                 sequence_logps(lp_l, m_l, B, T), sequence_logps(ref_l, m_l, B, T), beta);
    return d.loss + rpo_nll(lp_w, m_w, B, T, alpha);
  };
  const DpoBatch d = dpo_batch(sw, sequence_logps(ref_w, m_w, B, T), sequence_logps(lp_l, m_l, B, T),
                               sequence_logps(ref_l, m_l, B, T), beta);
  std::vector<float> g_w = broadcast_sequence_grad(d.d_chosen, m_w, B, T);
  const std::vector<float> g_l = broadcast_sequence_grad(d.d_rejected, m_l, B, T);
  const double nll = rpo_nll(lp_w, m_w, B, T, alpha, &g_w);
  EXPECT_NEAR(nll, alpha * (1.5 / 2 + 3.0 / 3) / 2, 1e-7);  // per-pair token mean, then pair mean
  for (int i = 0; i < B * T; ++i) {
    if (!m_w[i]) { EXPECT_EQ(g_w[i], 0.0f); }
    if (!m_l[i]) { EXPECT_EQ(g_l[i], 0.0f); }
    expect_close(g_w[i], fd(lp_w, size_t(i), total, 1e-3), 1e-3, "d_logp chosen", size_t(i));
    expect_close(g_l[i], fd(lp_l, size_t(i), total, 1e-3), 1e-3, "d_logp rejected", size_t(i));
  }
  // Prompt and pad tokens do not move the sequence log-prob at all.
  std::vector<float> changed = lp_w;
  changed[0] = changed[3] = changed[4] = 123.0f;
  EXPECT_EQ(sequence_logps(changed, m_w, B, T), sw);
}
