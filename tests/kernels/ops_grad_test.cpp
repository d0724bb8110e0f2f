// Each op's backward against central finite differences of L(x) = sum(dout * f(x))
// (summed in double), and each forward against a naive double-precision formula.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "aji/base/half.h"
#include "aji/base/rng.h"
#include "aji/kernels/cpu/ops.h"
#include "aji/kernels/cpu/vec_math.h"

namespace ops = aji::kernels::cpu;

namespace {

std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f, float mean = 0.0f) {
  aji::Rng r(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = mean + scale * (float)r.normal();
  return v;
}

double dotd(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (double)a[i] * b[i];
  return s;
}

// Numeric gradient of loss() with respect to the elements of x (x is perturbed in place).
// Large inputs are checked on a deterministic sample of `max_checked` elements (the
// others are set to the analytic value's stand-in NaN and skipped by rel_err).
std::vector<double> numeric_grad(std::vector<float>& x, const std::function<double()>& loss, float h = 1e-2f,
                                 size_t max_checked = 120) {
  std::vector<double> g(x.size(), NAN);
  const size_t step = x.size() <= max_checked ? 1 : (x.size() + max_checked - 1) / max_checked;
  for (size_t j = (step > 1 ? 1 : 0); j < x.size(); j += step) {
    const float keep = x[j];
    x[j] = keep + h;
    const double lp = loss();
    x[j] = keep - h;
    const double lm = loss();
    x[j] = keep;
    g[j] = (lp - lm) / (2.0 * h);
  }
  return g;
}

// ||a - n|| / ||n||
double rel_err(const std::vector<float>& a, const std::vector<double>& n) {
  double d = 0, s = 1e-12;
  for (size_t i = 0; i < n.size(); ++i) {
    if (std::isnan(n[i])) continue;
    d += (a[i] - n[i]) * (a[i] - n[i]);
    s += n[i] * n[i];
  }
  return std::sqrt(d / s);
}

constexpr double kTol = 3e-3;

TEST(OpsGrad, MatmulBothLayouts) {
  const int N = 5, IC = 7, OC = 9;
  for (auto layout : {ops::WeightLayout::kOutIn, ops::WeightLayout::kInOut}) {
    auto x = randn(N * IC, 1), w = randn(IC * OC, 2), b = randn(OC, 3), dout = randn(N * OC, 4);
    std::vector<float> out(N * OC);
    auto loss = [&] {
      ops::matmul_forward(out.data(), x.data(), w.data(), b.data(), N, IC, OC, layout);
      return dotd(out, dout);
    };
    // forward vs naive
    loss();
    for (int r = 0; r < N; ++r)
      for (int o = 0; o < OC; ++o) {
        double s = b[o];
        for (int i = 0; i < IC; ++i)
          s += (double)x[r * IC + i] * (layout == ops::WeightLayout::kOutIn ? w[o * IC + i] : w[i * OC + o]);
        EXPECT_NEAR(out[r * OC + o], s, 1e-5);
      }
    std::vector<float> dx(N * IC), dw(IC * OC, 0.0f), db(OC, 0.0f);
    ops::matmul_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), N, IC, OC, layout);
    EXPECT_LT(rel_err(dx, numeric_grad(x, loss)), kTol);
    EXPECT_LT(rel_err(dw, numeric_grad(w, loss)), kTol);
    EXPECT_LT(rel_err(db, numeric_grad(b, loss)), kTol);
    // accumulate mode adds to out
    std::vector<float> acc(N * OC, 1.0f);
    ops::matmul_forward(acc.data(), x.data(), w.data(), b.data(), N, IC, OC, layout, true);
    ops::matmul_forward(out.data(), x.data(), w.data(), b.data(), N, IC, OC, layout);
    for (int i = 0; i < N * OC; ++i) EXPECT_NEAR(acc[i], out[i] + 1.0f, 1e-5);
  }
}

TEST(OpsGrad, MatmulFewRowsPath) {
  // N <= 4 takes the weight-streaming path (decoding); it must equal the GEMM path.
  const int IC = 77, OC = 131;  // not multiples of 8 or of the 64-column blocks
  for (auto layout : {ops::WeightLayout::kOutIn, ops::WeightLayout::kInOut})
    for (int N : {1, 3, 4}) {
      auto x = randn(8 * IC, 1), w = randn(IC * OC, 2), b = randn(OC, 3);
      std::vector<float> big(8 * OC), small(N * OC, 0.5f);
      ops::matmul_forward(big.data(), x.data(), w.data(), b.data(), 8, IC, OC, layout);
      ops::matmul_forward(small.data(), x.data(), w.data(), b.data(), N, IC, OC, layout, true);  // accumulate onto 0.5
      for (int i = 0; i < N * OC; ++i) ASSERT_NEAR(small[i], big[i] + 0.5f, 2e-4) << "N=" << N << " i=" << i;
      ops::matmul_forward(small.data(), x.data(), w.data(), nullptr, N, IC, OC, layout);
      for (int i = 0; i < N * OC; ++i) ASSERT_NEAR(small[i], big[i] - b[i % OC], 2e-4);
    }
}

TEST(OpsGrad, LayerNorm) {
  const int N = 4, C = 13;
  auto x = randn(N * C, 1, 2.0f, 0.5f), w = randn(C, 2, 0.3f, 1.0f), b = randn(C, 3), dout = randn(N * C, 4);
  std::vector<float> out(N * C), mean(N), rstd(N);
  auto loss = [&] {
    ops::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
    return dotd(out, dout);
  };
  loss();
  for (int r = 0; r < N; ++r) {  // forward vs formula
    double m = 0, v = 0;
    for (int i = 0; i < C; ++i) m += x[r * C + i];
    m /= C;
    for (int i = 0; i < C; ++i) v += (x[r * C + i] - m) * (x[r * C + i] - m);
    v /= C;
    for (int i = 0; i < C; ++i) EXPECT_NEAR(out[r * C + i], (x[r * C + i] - m) / std::sqrt(v + 1e-5) * w[i] + b[i], 1e-5);
  }
  std::vector<float> dx(N * C, 0.0f), dw(C, 0.0f), db(C, 0.0f);
  ops::layernorm_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(), mean.data(), rstd.data(), N, C);
  EXPECT_LT(rel_err(dx, numeric_grad(x, loss, 1e-3f)), kTol);
  EXPECT_LT(rel_err(dw, numeric_grad(w, loss)), kTol);
  EXPECT_LT(rel_err(db, numeric_grad(b, loss)), kTol);
}

TEST(OpsGrad, RmsNormAndHeadRmsNorm) {
  const int N = 4, C = 13;
  auto x = randn(N * C, 1, 1.5f, 0.3f), w = randn(C, 2, 0.3f, 1.0f), dout = randn(N * C, 4);
  std::vector<float> out(N * C), rstd(N);
  auto loss = [&] {
    ops::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, 1e-6f);
    return dotd(out, dout);
  };
  loss();
  for (int r = 0; r < N; ++r) {
    double ss = 0;
    for (int i = 0; i < C; ++i) ss += (double)x[r * C + i] * x[r * C + i];
    for (int i = 0; i < C; ++i) EXPECT_NEAR(out[r * C + i], x[r * C + i] / std::sqrt(ss / C + 1e-6) * w[i], 1e-5);
  }
  std::vector<float> dx(N * C, 0.0f), dw(C, 0.0f);
  ops::rmsnorm_backward(dx.data(), dw.data(), dout.data(), x.data(), w.data(), rstd.data(), N, C);
  EXPECT_LT(rel_err(dx, numeric_grad(x, loss, 1e-3f)), kTol);
  EXPECT_LT(rel_err(dw, numeric_grad(w, loss)), kTol);

  // per-head version over a strided layout: 3 rows of stride 20, 2 heads of 6 at column 5
  const int rows = 3, stride = 20, col = 5, heads = 2, hd = 6;
  auto y = randn(rows * stride, 5), hw = randn(hd, 6, 0.3f, 1.0f), dy = randn(rows * stride, 7);
  std::vector<float> tmp;
  auto hloss = [&] {
    tmp = y;
    ops::head_rmsnorm_forward(tmp.data(), hw.data(), rows, stride, col, heads, hd, 1e-6f);
    double s = 0;
    for (int r = 0; r < rows; ++r)
      for (int j = col; j < col + heads * hd; ++j) s += (double)tmp[r * stride + j] * dy[r * stride + j];
    return s;
  };
  std::vector<float> d = dy, dhw(hd, 0.0f);
  ops::head_rmsnorm_backward(d.data(), dhw.data(), y.data(), hw.data(), rows, stride, col, heads, hd, 1e-6f);
  for (int r = 0; r < rows; ++r)  // outside the heads d is untouched (caller's data)
    for (int j = 0; j < stride; ++j)
      if (j < col || j >= col + heads * hd) d[r * stride + j] = 0.0f;
  EXPECT_LT(rel_err(d, numeric_grad(y, hloss, 1e-3f)), kTol);
  EXPECT_LT(rel_err(dhw, numeric_grad(hw, hloss)), kTol);
}

TEST(OpsGrad, GeluAndSwiglu) {
  const int n = 37;  // not a multiple of 8: the scalar tail runs too
  auto x = randn(n, 1, 2.0f), dout = randn(n, 2);
  std::vector<float> out(n);
  auto loss = [&] {
    ops::gelu_forward(out.data(), x.data(), n);
    return dotd(out, dout);
  };
  loss();
  for (int i = 0; i < n; ++i) {
    const double v = x[i];
    EXPECT_NEAR(out[i], 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))), 2e-6);
  }
  std::vector<float> dx(n);
  ops::gelu_backward(dx.data(), x.data(), dout.data(), n);
  EXPECT_LT(rel_err(dx, numeric_grad(x, loss, 1e-3f)), kTol);

  const int N = 3, F = 11;
  auto gu = randn(N * 2 * F, 3, 2.0f), dy = randn(N * F, 4);
  std::vector<float> y(N * F);
  auto sloss = [&] {
    ops::swiglu_forward(y.data(), gu.data(), N, F);
    return dotd(y, dy);
  };
  sloss();
  for (int r = 0; r < N; ++r)
    for (int i = 0; i < F; ++i) {
      const double g = gu[r * 2 * F + i], u = gu[r * 2 * F + F + i];
      EXPECT_NEAR(y[r * F + i], g / (1 + std::exp(-g)) * u, 1e-5);
    }
  std::vector<float> dgu(N * 2 * F);
  ops::swiglu_backward(dgu.data(), dy.data(), gu.data(), N, F);
  EXPECT_LT(rel_err(dgu, numeric_grad(gu, sloss, 1e-3f)), kTol);
}

TEST(OpsGrad, RopeIsARotationAndItsBackwardIsTheTranspose) {
  const int B = 2, T = 5, H = 3, hd = 8, stride = 30, col = 4, max_pos = 16;
  std::vector<float> cs(max_pos * hd / 2), sn(max_pos * hd / 2);
  ops::rope_table(cs.data(), sn.data(), max_pos, hd, 10000.0f);
  // HF: inv_freq_i = theta^(-2i/hd); position 3, i = 1: angle 3 * 10000^(-1/4) = 0.3
  EXPECT_NEAR(cs[3 * 4 + 1], std::cos(0.3), 1e-6);
  EXPECT_NEAR(sn[3 * 4 + 1], std::sin(0.3), 1e-6);
  auto x = randn(B * T * stride, 1), dout = randn(B * T * stride, 2);
  std::vector<float> y;
  auto loss = [&] {
    y = x;
    ops::rope_apply(y.data(), cs.data(), sn.data(), B, T, stride, col, H, hd, 2, false);
    return dotd(y, dout);
  };
  loss();
  // rotate_half convention: out[i] = x[i] cos - x[i+hd/2] sin at position pos0 + t
  {
    const int r = 1 * T + 2, h = 1, i = 2, pos = 2 + 2;
    const float* xi = x.data() + r * stride + col + h * hd;
    const double ang = pos * std::pow(10000.0, -2.0 * i / hd);
    EXPECT_NEAR(y[r * stride + col + h * hd + i], xi[i] * std::cos(ang) - xi[i + hd / 2] * std::sin(ang), 1e-5);
    EXPECT_NEAR(y[r * stride + col + h * hd + i + hd / 2], xi[i + hd / 2] * std::cos(ang) + xi[i] * std::sin(ang), 1e-5);
  }
  std::vector<float> d = dout;
  ops::rope_apply(d.data(), cs.data(), sn.data(), B, T, stride, col, H, hd, 2, true);
  EXPECT_LT(rel_err(d, numeric_grad(x, loss)), kTol);
}

// Attention and its gradients in double, by the formulas (not by finite differences, so
// that long sequences stay cheap): q, out (B, Tq, H, hd); k, v (B, Tk, KV, hd); query i sits
// at position q_pos0 + i and sees keys key_start[b][i] (0 if none) .. its own position.
struct NaiveAttention {
  std::vector<double> out, dq, dk, dv;
};
NaiveAttention naive_attention_with_grads(const std::vector<float>& q, const std::vector<float>& k,
                                          const std::vector<float>& v, const std::vector<float>& dout,
                                          const std::vector<int32_t>& key_start, int B, int Tq, int Tk, int H,
                                          int KV, int hd, int q_pos0) {
  NaiveAttention r;
  r.out.assign(q.size(), 0.0), r.dq.assign(q.size(), 0.0), r.dk.assign(k.size(), 0.0), r.dv.assign(v.size(), 0.0);
  const double scale = 1.0 / std::sqrt((double)hd);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      const int kh = h / (H / KV);
      for (int i = 0; i < Tq; ++i) {
        const int64_t qi = (((int64_t)b * Tq + i) * H + h) * hd;
        const int first = key_start.empty() ? 0 : key_start[(size_t)b * Tq + i], last = q_pos0 + i;
        auto kv_at = [&](int j) { return (((int64_t)b * Tk + j) * KV + kh) * hd; };
        std::vector<double> p(last + 1, 0.0), dp(last + 1, 0.0);
        double m = -1e300, z = 0, D = 0;
        for (int j = first; j <= last; ++j) {
          double s = 0;
          for (int e = 0; e < hd; ++e) s += (double)q[qi + e] * k[kv_at(j) + e];
          p[j] = s * scale;
          m = std::max(m, p[j]);
        }
        for (int j = first; j <= last; ++j) z += (p[j] = std::exp(p[j] - m));
        for (int j = first; j <= last; ++j) {
          p[j] /= z;
          for (int e = 0; e < hd; ++e) {
            r.out[qi + e] += p[j] * v[kv_at(j) + e];
            dp[j] += (double)dout[qi + e] * v[kv_at(j) + e];
          }
          D += p[j] * dp[j];
        }
        for (int j = first; j <= last; ++j) {
          const double ds = p[j] * (dp[j] - D) * scale;
          for (int e = 0; e < hd; ++e) {
            r.dq[qi + e] += ds * k[kv_at(j) + e];
            r.dk[kv_at(j) + e] += ds * q[qi + e];
            r.dv[kv_at(j) + e] += p[j] * dout[qi + e];
          }
        }
      }
    }
  return r;
}

// Naive causal GQA attention in double over full sequences (every query sees keys 0..i).
void naive_attention(std::vector<double>& out, const std::vector<float>& q, const std::vector<float>& k,
                     const std::vector<float>& v, int B, int T, int H, int KV, int hd) {
  const std::vector<float> no_grad(q.size(), 0.0f);
  out = naive_attention_with_grads(q, k, v, no_grad, {}, B, T, T, H, KV, hd, 0).out;
}

TEST(OpsGrad, AttentionGqaAcrossTiles) {
  const int B = 2, T = 37, H = 4, KV = 2, hd = 6;  // T spans two query tiles
  auto q = randn(B * T * H * hd, 1), k = randn(B * T * KV * hd, 2), v = randn(B * T * KV * hd, 3);
  auto dout = randn(B * T * H * hd, 4);
  ops::AttnDims d;
  d.B = B, d.Tq = T, d.Tk = T, d.H = H, d.KV = KV, d.hd = hd;
  d.q_bs = T * H * hd, d.q_ts = H * hd;
  d.k_bs = d.v_bs = T * KV * hd, d.k_ts = d.v_ts = KV * hd;
  d.o_bs = T * H * hd, d.o_ts = H * hd;
  std::vector<float> out(B * T * H * hd), lse(B * H * T);
  auto loss = [&] {
    ops::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), d);
    return dotd(out, dout);
  };
  loss();
  std::vector<double> ref;
  naive_attention(ref, q, k, v, B, T, H, KV, hd);
  for (size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(out[i], ref[i], 2e-6) << i;
  std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
  ops::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), out.data(),
                          lse.data(), d);
  EXPECT_LT(rel_err(dq, numeric_grad(q, loss, 1e-3f)), kTol);
  EXPECT_LT(rel_err(dk, numeric_grad(k, loss, 1e-3f)), kTol);
  EXPECT_LT(rel_err(dv, numeric_grad(v, loss, 1e-3f)), kTol);
}

// The last n_new of T positions of one sequence as queries over all T keys (the KV-cache
// case): q, out (n_new, H*hd) rows; k, v (T, KV*hd) rows.
ops::AttnDims cached_query_dims(int T, int n_new, int H, int KV, int hd) {
  ops::AttnDims d;
  d.B = 1, d.Tq = n_new, d.Tk = T, d.H = H, d.KV = KV, d.hd = hd, d.q_pos0 = T - n_new;
  d.q_ts = d.o_ts = H * hd, d.k_ts = d.v_ts = KV * hd;
  d.q_bs = d.o_bs = n_new * H * hd, d.k_bs = d.v_bs = T * KV * hd;
  return d;
}

TEST(OpsGrad, AttentionWithQueryOffsetMatchesTheTailOfFullAttention) {
  // 4 new queries at positions 9..12 over 13 cached keys == the last 4 rows of full attention
  const int T = 13, n_new = 4, H = 2, KV = 1, hd = 5;
  auto q = randn(T * H * hd, 1), k = randn(T * KV * hd, 2), v = randn(T * KV * hd, 3);
  std::vector<double> ref;
  naive_attention(ref, q, k, v, 1, T, H, KV, hd);
  const ops::AttnDims d = cached_query_dims(T, n_new, H, KV, hd);
  std::vector<float> out(n_new * H * hd);
  ops::attention_forward(out.data(), nullptr, q.data() + (T - n_new) * H * hd, k.data(), v.data(), d);
  for (int i = 0; i < n_new * H * hd; ++i) EXPECT_NEAR(out[i], ref[(T - n_new) * H * hd + i], 2e-6);
}

TEST(OpsGrad, FewQueryRowsOverACacheMatchFullAttentionForEveryHeadWidth) {
  // The decoding path (at most 4 query rows): vectorised score and value sums for head
  // widths that are multiples of 32 and 8, a scalar tail otherwise; GQA; 1 to 4 new rows.
  for (int hd : {64, 40, 5})
    for (int n_new : {1, 3, 4}) {
      const int T = 23, H = 4, KV = 2;
      auto q = randn(T * H * hd, 1), k = randn(T * KV * hd, 2), v = randn(T * KV * hd, 3);
      std::vector<double> ref;
      naive_attention(ref, q, k, v, 1, T, H, KV, hd);
      const ops::AttnDims d = cached_query_dims(T, n_new, H, KV, hd);
      std::vector<float> out(n_new * H * hd), lse(H * n_new);
      ops::attention_forward(out.data(), lse.data(), q.data() + (T - n_new) * H * hd, k.data(), v.data(), d);
      for (int i = 0; i < n_new * H * hd; ++i)
        ASSERT_NEAR(out[i], ref[(T - n_new) * H * hd + i], 2e-6) << "hd " << hd << " rows " << n_new << " at " << i;
      // lse of head 0, last row: log sum_j exp(q.k_j / sqrt(hd)) over all T keys
      double m = -1e300, z = 0;
      std::vector<double> sc(T);
      for (int j = 0; j < T; ++j) {
        double s = 0;
        for (int e = 0; e < hd; ++e) s += (double)q[(T - 1) * H * hd + e] * k[j * KV * hd + e];
        sc[j] = s / std::sqrt((double)hd);
        m = std::max(m, sc[j]);
      }
      for (double x : sc) z += std::exp(x - m);
      EXPECT_NEAR(lse[n_new - 1], m + std::log(z), 1e-5) << "hd " << hd << " rows " << n_new;
    }
}

#if AJI_VEC_AVX2
TEST(OpsGrad, EightSumsAtOnceAreHsum8BitForBit) {
  // decoding's scores take eight keys' dot products reduced together (vm::hsum8x8); each
  // must be hsum8's sum, bit for bit (the one-key path gives the rest of the keys)
  std::mt19937 g(5);
  std::uniform_real_distribution<float> e(-30.0f, 30.0f);
  int differs_from_sequential = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    float x[64], got[8];
    for (float& f : x) f = std::ldexp(1.0f + std::fabs(e(g)) / 64, static_cast<int>(e(g) / 2)) * (e(g) > 0 ? 1 : -1);
    __m256 a[8];
    for (int i = 0; i < 8; ++i) a[i] = _mm256_loadu_ps(x + 8 * i);
    _mm256_storeu_ps(got, ops::vm::hsum8x8(a));
    for (int i = 0; i < 8; ++i) {
      const float want = ops::vm::hsum8(a[i]);
      ASSERT_EQ(std::memcmp(&got[i], &want, 4), 0) << "trial " << trial << " vector " << i;
      float seq = 0.0f;
      for (int j = 0; j < 8; ++j) seq += x[8 * i + j];
      differs_from_sequential += seq != want;
    }
  }
  EXPECT_GT(differs_from_sequential, 1000);  // the data tell summation orders apart
}
#endif

TEST(OpsGrad, Bf16KeysAndValuesAreReadAsTheirFp32Values) {
  // attention_forward over bf16 K and V (a bf16 KV cache) is the fp32 attention over the
  // same values widened, bit for bit: the decoding path (1-4 query rows) and the tiled path
  // (more rows), head widths with vector and scalar tails, GQA, packed documents.
  for (int hd : {64, 40, 5})
    for (int n_new : {1, 4, 9, 40}) {
      const int T = 45, H = 4, KV = 2;
      auto q = randn(T * H * hd, 7), k = randn(T * KV * hd, 8), v = randn(T * KV * hd, 9);
      std::vector<uint16_t> kb(k.size()), vb(v.size());
      for (size_t i = 0; i < k.size(); ++i) {
        uint32_t u;
        std::memcpy(&u, &k[i], 4);
        u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000u;  // round to nearest even (finite values)
        kb[i] = static_cast<uint16_t>(u >> 16);
        std::memcpy(&k[i], &u, 4);
        std::memcpy(&u, &v[i], 4);
        u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000u;
        vb[i] = static_cast<uint16_t>(u >> 16);
        std::memcpy(&v[i], &u, 4);
      }
      for (bool packed : {false, true}) {
        ops::AttnDims d = cached_query_dims(T, n_new, H, KV, hd);
        std::vector<int32_t> ks(n_new);
        for (int r = 0; r < n_new; ++r) ks[r] = (r * 7) % (T - n_new + r + 1);
        if (packed) d.key_start = ks.data();
        std::vector<float> o32(n_new * H * hd), o16(n_new * H * hd);
        const float* qp = q.data() + (T - n_new) * H * hd;
        ops::attention_forward(o32.data(), nullptr, qp, k.data(), v.data(), d);
        ops::attention_forward(o16.data(), nullptr, qp, kb.data(), vb.data(), d);
        ASSERT_EQ(std::memcmp(o32.data(), o16.data(), sizeof(float) * o32.size()), 0)
            << "hd " << hd << " rows " << n_new << " packed " << packed;
        if (!packed) {  // and the fp64 reference on the rounded keys and values
          std::vector<double> ref;
          naive_attention(ref, q, k, v, 1, T, H, KV, hd);
          for (int i = 0; i < n_new * H * hd; ++i)
            ASSERT_NEAR(o16[i], ref[(T - n_new) * H * hd + i], 2e-6) << "hd " << hd << " rows " << n_new << " at " << i;
        }
      }
    }
}

// 300 keys span two of the backward's key blocks; head width 64 fills whole 16-float panels,
// 40 and 6 are padded; sequence 1 holds two packed documents (the second starts at 131);
// n_new < 300 puts the last n_new queries over all 300 keys (a query offset). aji's forward
// and backward with fp32 or bf16 products, and the float64 reference on the same inputs.
struct BlockedAttention {
  int B = 2, Tk = 300, Tq = 0, H = 4, KV = 2, hd = 0, q_pos0 = 0;
  std::vector<float> q, k, v, dout, out, lse, dq, dk, dv;
  std::vector<int32_t> key_start;
  NaiveAttention ref;
  NaiveAttention reference(const std::vector<float>& q_in, const std::vector<float>& k_in,
                           const std::vector<float>& v_in) const {
    return naive_attention_with_grads(q_in, k_in, v_in, dout, key_start, B, Tq, Tk, H, KV, hd, q_pos0);
  }
};
BlockedAttention run_blocked_attention(int hd, int n_new, bool bf16_products) {
  BlockedAttention t;
  t.hd = hd, t.Tq = n_new, t.q_pos0 = t.Tk - n_new;
  const int B = t.B, Tq = t.Tq, Tk = t.Tk, H = t.H, KV = t.KV;
  t.q = randn((size_t)B * Tq * H * hd, 1), t.k = randn((size_t)B * Tk * KV * hd, 2);
  t.v = randn((size_t)B * Tk * KV * hd, 3), t.dout = randn((size_t)B * Tq * H * hd, 4);
  t.key_start.assign((size_t)B * Tq, 0);
  for (int i = 0; i < Tq; ++i) t.key_start[(size_t)Tq + i] = t.q_pos0 + i >= 131 ? 131 : 0;
  t.ref = t.reference(t.q, t.k, t.v);
  ops::AttnDims d;
  d.B = B, d.Tq = Tq, d.Tk = Tk, d.H = H, d.KV = KV, d.hd = hd, d.q_pos0 = t.q_pos0, d.key_start = t.key_start.data();
  d.q_bs = d.o_bs = (int64_t)Tq * H * hd, d.q_ts = d.o_ts = H * hd;
  d.k_bs = d.v_bs = (int64_t)Tk * KV * hd, d.k_ts = d.v_ts = KV * hd;
  d.bf16_products = bf16_products;
  t.out.resize(t.q.size()), t.lse.resize((size_t)B * H * Tq), t.dq.resize(t.q.size()), t.dk.resize(t.k.size());
  t.dv.resize(t.v.size());
  ops::attention_forward(t.out.data(), t.lse.data(), t.q.data(), t.k.data(), t.v.data(), d);
  ops::attention_backward(t.dq.data(), t.dk.data(), t.dv.data(), t.dout.data(), t.q.data(), t.k.data(), t.v.data(),
                          t.out.data(), t.lse.data(), d);
  return t;
}

TEST(OpsGrad, AttentionOverSeveralKeyBlocksPackedDocumentsAndPaddedHeadWidths) {
  for (int hd : {64, 40, 6})
    for (int n_new : {300, 70}) {
      const BlockedAttention t = run_blocked_attention(hd, n_new, false);
      const std::string what = "hd " + std::to_string(hd) + " queries " + std::to_string(n_new);
      EXPECT_LT(rel_err(t.out, t.ref.out), 2e-6) << what;
      EXPECT_LT(rel_err(t.dq, t.ref.dq), 2e-5) << what;
      EXPECT_LT(rel_err(t.dk, t.ref.dk), 2e-5) << what;
      EXPECT_LT(rel_err(t.dv, t.ref.dv), 2e-5) << what;
    }
}

// Mixed precision (AttnDims::bf16_products): every tile product on bf16 operands. Against the
// float64 reference on the same inputs the error is bf16's (q, k, v, P and dS rounded to 8
// significant bits, ~2^-9 relative each); against the reference on bf16-rounded q, k, v only P
// and dS remain. The fp32 path is ~1e-6 from both references, so the bounds below show the
// bf16 products ran and that they are no worse than their rounding. Same cases as above.
TEST(OpsGrad, AttentionWithBf16ProductsIsWithinBf16RoundingOfTheReference) {
  auto rounded = [](std::vector<float> x) {
    for (auto& e : x) e = aji::bf16_to_f32(aji::f32_to_bf16(e));
    return x;
  };
  for (int hd : {64, 40, 6})
    for (int n_new : {300, 70, 3}) {
      const BlockedAttention t = run_blocked_attention(hd, n_new, true);
      const NaiveAttention ref16 = t.reference(rounded(t.q), rounded(t.k), rounded(t.v));
      const std::string what = "hd " + std::to_string(hd) + " queries " + std::to_string(n_new);
      const double e_out = rel_err(t.out, t.ref.out), e_dq = rel_err(t.dq, t.ref.dq), e_dk = rel_err(t.dk, t.ref.dk),
                   e_dv = rel_err(t.dv, t.ref.dv);
      std::printf("%s: out %.2e dq %.2e dk %.2e dv %.2e (vs the reference on rounded q k v: %.2e %.2e %.2e %.2e)\n",
                  what.c_str(), e_out, e_dq, e_dk, e_dv, rel_err(t.out, ref16.out), rel_err(t.dq, ref16.dq),
                  rel_err(t.dk, ref16.dk), rel_err(t.dv, ref16.dv));
      if (t.Tq <= 4) {  // a few query rows (decoding) keep the fp32 products
        EXPECT_LT(e_out, 2e-6) << what;
        EXPECT_LT(std::max({e_dq, e_dk, e_dv}), 2e-5) << what;
        continue;
      }
      // 2^-9 = 2.0e-3 relative per rounded operand; a product of two rounded operands and
      // a softmax over them stays within a few of those
      EXPECT_LT(e_out, 1e-2) << what;
      EXPECT_LT(e_dq, 2e-2) << what;
      EXPECT_LT(e_dk, 2e-2) << what;
      EXPECT_LT(e_dv, 2e-2) << what;
      EXPECT_LT(rel_err(t.out, ref16.out), e_out) << what;  // the rounding of q, k, v is most of it
      EXPECT_GT(e_out, 1e-4) << what << ": the bf16 products did not run";
    }
}

TEST(OpsGrad, SoftmaxCrossEntropyWithWeightsAndIgnoredRows) {
  const int n = 4, V = 29;
  auto logits = randn(n * V, 1, 3.0f);
  std::vector<int32_t> targets = {3, -1, 28, 0};
  std::vector<float> weights = {1.0f, 1.0f, 0.5f, 2.0f};
  auto loss = [&] {  // sum_i w_i * CE_i in double
    double s = 0;
    for (int r = 0; r < n; ++r) {
      if (targets[r] < 0) continue;
      double m = -1e300, z = 0;
      for (int v = 0; v < V; ++v) m = std::max(m, (double)logits[r * V + v]);
      for (int v = 0; v < V; ++v) z += std::exp(logits[r * V + v] - m);
      s += weights[r] * (m + std::log(z) - logits[r * V + targets[r]]);
    }
    return s;
  };
  const double expect = loss();
  std::vector<float> g = logits, losses(n);
  const double total = ops::softmax_xent_backward_inplace(g.data(), losses.data(), targets.data(), weights.data(),
                                                          1.0f, n, V);
  EXPECT_NEAR(total, expect, 1e-5 * std::fabs(expect));
  EXPECT_EQ(losses[1], 0.0f);
  EXPECT_LT(rel_err(g, numeric_grad(logits, loss)), kTol);
  std::vector<float> lp(n);
  std::vector<int32_t> t2 = {3, 7, 28, 0};
  ops::log_softmax_pick(lp.data(), logits.data(), t2.data(), n, V);
  EXPECT_NEAR(-lp[0], losses[0], 1e-5);
}

// The bf16 variant writes over the logits' own rows (first half of each): the same losses and
// total bit for bit, and each gradient the fp32 kernel's value rounded to nearest even
// (base/half.h's scalar conversion); widths around the kernel's 256-value blocks and 32-lane
// vectors, ignored rows, a negative weight and a temperature.
TEST(OpsGrad, SoftmaxCrossEntropyBf16GradientIsTheFp32OneRounded) {
  for (int V : {29, 256, 300, 1000}) {
    const int n = 5;
    auto logits = randn((size_t)n * V, 11 + V, 3.0f);
    const std::vector<int32_t> targets = {3, -1, V - 1, 0, 7};
    const std::vector<float> weights = {1.0f, 1.0f, -0.5f, 2.0f, 0.0f};
    for (float inv_t : {1.0f, 0.7f}) {
      std::vector<float> g32 = logits, g16 = logits, l32(n), l16(n);
      const double t32 = ops::softmax_xent_backward_inplace(g32.data(), l32.data(), targets.data(), weights.data(),
                                                            0.25f, n, V, inv_t);
      const double t16 = ops::softmax_xent_backward_inplace_bf16(g16.data(), l16.data(), targets.data(),
                                                                 weights.data(), 0.25f, n, V, inv_t);
      EXPECT_EQ(t16, t32);
      for (int r = 0; r < n; ++r) {
        EXPECT_EQ(l16[r], l32[r]) << "V " << V << " row " << r;
        std::vector<uint16_t> row16(V);
        std::memcpy(row16.data(), g16.data() + (size_t)r * V, sizeof(uint16_t) * V);
        for (int v = 0; v < V; ++v)
          ASSERT_EQ(row16[v], aji::f32_to_bf16(g32[(size_t)r * V + v])) << "V " << V << " row " << r << " col " << v;
      }
    }
  }
}

TEST(OpsGrad, EmbeddingScatterAdd) {
  const int B = 2, T = 5, C = 6, V = 7;
  auto wte = randn(V * C, 1), wpe = randn(T * C, 2), dout = randn(B * T * C, 3);
  std::vector<int32_t> tokens = {1, 3, 1, 1, 6, 0, 3, 3, 2, 1};  // repeats exercise the scatter-add
  std::vector<float> out(B * T * C);
  auto loss = [&] {
    ops::embedding_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C);
    return dotd(out, dout);
  };
  std::vector<float> dwte(V * C, 0.0f), dwpe(T * C, 0.0f);
  ops::embedding_backward(dwte.data(), dwpe.data(), dout.data(), tokens.data(), B, T, C);
  EXPECT_LT(rel_err(dwte, numeric_grad(wte, loss)), kTol);
  EXPECT_LT(rel_err(dwpe, numeric_grad(wpe, loss)), kTol);
}

TEST(VecMath, ExpMatchesLibm) {
  std::vector<float> x, y;
  for (float v = -100.0f; v <= 88.0f; v += 0.0137f) x.push_back(v);
  x.push_back(-INFINITY);
  y.resize(x.size());
  aji::kernels::cpu::vm::exp_array(y.data(), x.data(), (int64_t)x.size());
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double e = std::exp((double)x[i]);
    if (e < 1e-37) {  // the flush-to-zero end of the range
      EXPECT_LE(y[i], 1.2e-37f);
      EXPECT_GE(y[i], 0.0f);
      continue;
    }
    worst = std::max(worst, std::fabs(y[i] - e) / e);
  }
  EXPECT_LT(worst, 5e-7);
  EXPECT_EQ(y.back(), 0.0f);
}

}  // namespace
