// bf16 matrix products (kernels/cpu/bf16_gemm.h) against an fp64 reference computed on the
// same bf16-rounded inputs. The product of two bf16 numbers (8 significant bits each) is
// exact in fp32 (24 bits), so the only error left is fp32 accumulation: the tolerance is
// a few fp32 ulps of sum |a_k b_k| per output, far below bf16 rounding (2^-9 relative), so a
// product that used unrounded inputs or rounded its output to bf16 would fail.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "aji/base/half.h"
#include "aji/base/rng.h"
#include "aji/kernels/cpu/bf16_gemm.h"
#include "aji/kernels/cpu/fma_peak.h"

using namespace aji::kernels::cpu;

namespace {

std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f) {
  aji::Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = scale * static_cast<float>(rng.normal());
  return v;
}

std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> o(v.size());
  round_to_bf16(o.data(), v.data(), (int64_t)v.size());
  return o;
}

double bf(uint16_t b) { return aji::bf16_to_f32(b); }

// |got - want| <= 4 * 2^-24 * K * sum|a b| + 1e-30: fp32 accumulation of exact products
void expect_close(double got, double want, double abs_sum, int64_t K, const char* what, int64_t i) {
  const double tol = 4.0 * std::ldexp(1.0, -24) * (double)K * abs_sum + 1e-30;
  ASSERT_LE(std::fabs(got - want), tol) << what << " element " << i << ": got " << got << " want " << want;
}

}  // namespace

TEST(Bf16Gemm, RoundingMatchesTheScalarConversionIncludingTiesAndSpecials) {
  std::vector<float> v = randn(1000 + 37, 1, 3.0f);  // vector body + tail
  // exact ties: bf16 keeps the top 16 bits; 0x8000 in the low half is halfway
  const uint32_t ties[] = {0x3F808000u, 0x3F818000u, 0xBF808000u, 0x3F80FFFFu, 0x3F807FFFu};
  for (uint32_t t : ties) {
    float f;
    std::memcpy(&f, &t, 4);
    v.push_back(f);
  }
  v.push_back(std::numeric_limits<float>::infinity());
  v.push_back(-std::numeric_limits<float>::infinity());
  v.push_back(0.0f);
  v.push_back(-0.0f);
  v.push_back(3.0e38f);  // rounds up to infinity
  v.push_back(std::numeric_limits<float>::quiet_NaN());
  std::vector<uint16_t> got = to_bf16(v);
  for (size_t i = 0; i + 1 < v.size(); ++i) ASSERT_EQ(got[i], aji::f32_to_bf16(v[i])) << "value " << v[i];
  EXPECT_TRUE(std::isnan(aji::bf16_to_f32(got.back())));
  // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: to even (1)
  EXPECT_EQ(aji::bf16_to_f32(got[1037]), 1.0f);
  // 1 + 3*2^-8 is a tie between 1 + 2^-7 and 1 + 2^-6: to even (1 + 2^-6)
  EXPECT_EQ(aji::bf16_to_f32(got[1038]), 1.0f + 1.0f / 64.0f);
}

TEST(Bf16Gemm, GeneralProductEveryTransposeOddShapesBiasAndAccumulate) {
  struct Shape {
    int64_t M, N, K;
  };
  for (const Shape s : {Shape{1, 1, 1}, Shape{7, 13, 5}, Shape{37, 53, 71}, Shape{130, 33, 257}}) {
    for (char ta : {'N', 'T'})
      for (char tb : {'N', 'T'})
        for (int mode = 0; mode < 3; ++mode) {  // 0: =, 1: = + bias, 2: += with bias
          const bool bias_on = mode >= 1, acc = mode == 2;
          const std::vector<uint16_t> A = to_bf16(randn(s.M * s.K, 10 + s.M)), B = to_bf16(randn(s.K * s.N, 20 + s.N));
          const std::vector<float> bias = randn(s.N, 30), C0 = randn(s.M * s.N, 40);
          std::vector<float> C = C0;
          const int64_t lda = ta == 'N' ? s.K : s.M, ldb = tb == 'N' ? s.N : s.K;
          gemm_bf16(ta, tb, s.M, s.N, s.K, A.data(), lda, B.data(), ldb, acc, C.data(), s.N,
                    bias_on ? bias.data() : nullptr);
          for (int64_t i = 0; i < s.M; ++i)
            for (int64_t j = 0; j < s.N; ++j) {
              double sum = 0, abs_sum = 0;
              for (int64_t k = 0; k < s.K; ++k) {
                const double a = bf(ta == 'N' ? A[i * lda + k] : A[k * lda + i]);
                const double b = bf(tb == 'N' ? B[k * ldb + j] : B[j * ldb + k]);
                sum += a * b;
                abs_sum += std::fabs(a * b);
              }
              if (bias_on) sum += bias[j];
              if (acc) sum += C0[i * s.N + j];
              expect_close(C[i * s.N + j], sum, abs_sum + std::fabs(sum), s.K + 2, "gemm", i * s.N + j);
            }
        }
  }
  // one primitive per distinct shape: the same call again creates none
  const size_t n = bf16_primitive_cache_size();
  const std::vector<uint16_t> A = to_bf16(randn(7 * 5, 1)), B = to_bf16(randn(5 * 13, 2));
  std::vector<float> C(7 * 13);
  gemm_bf16('N', 'N', 7, 13, 5, A.data(), 5, B.data(), 13, false, C.data(), 13);
  EXPECT_EQ(bf16_primitive_cache_size(), n);
}

// The three products of a linear layer (forward, dX, dW) and the bias gradient, both weight
// layouts, against fp64 on the bf16-rounded operands.
TEST(Bf16Gemm, LinearLayerForwardAndBackwardBothLayouts) {
  const int64_t N = 45;
  const int IC = 37, OC = 29;
  for (WeightLayout lay : {WeightLayout::kOutIn, WeightLayout::kInOut}) {
    const bool out_in = lay == WeightLayout::kOutIn;
    const std::vector<float> x = randn(N * IC, 1), w = randn((size_t)IC * OC, 2, 0.2f), bias = randn(OC, 3);
    const std::vector<float> dy = randn(N * OC, 4), dw0 = randn((size_t)IC * OC, 5), db0 = randn(OC, 6);
    const std::vector<uint16_t> x16 = to_bf16(x), w16 = to_bf16(w), dy16 = to_bf16(dy);
    auto W = [&](int i, int o) { return bf(out_in ? w16[(size_t)o * IC + i] : w16[(size_t)i * OC + o]); };
    // forward, with bias, and accumulating onto an existing output
    for (bool acc : {false, true}) {
      std::vector<float> out = randn(N * OC, 7), before = out;
      matmul_forward_bf16(out.data(), x.data(), w16.data(), bias.data(), N, IC, OC, lay, acc);
      for (int64_t r = 0; r < N; ++r)
        for (int o = 0; o < OC; ++o) {
          double s = bias[o] + (acc ? before[r * OC + o] : 0.0), a = std::fabs(s);
          for (int i = 0; i < IC; ++i) {
            s += bf(x16[r * IC + i]) * W(i, o);
            a += std::fabs(bf(x16[r * IC + i]) * W(i, o));
          }
          expect_close(out[r * OC + o], s, a, IC + 2, "forward", r * OC + o);
        }
    }
    // backward: dX overwritten, dW and dbias accumulated
    std::vector<float> dx(N * IC, 123.0f), dw = dw0, db = db0;
    matmul_backward_bf16(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w16.data(), N, IC, OC, lay);
    for (int64_t r = 0; r < N; ++r)
      for (int i = 0; i < IC; ++i) {
        double s = 0, a = 0;
        for (int o = 0; o < OC; ++o) {
          s += bf(dy16[r * OC + o]) * W(i, o);
          a += std::fabs(bf(dy16[r * OC + o]) * W(i, o));
        }
        expect_close(dx[r * IC + i], s, a, OC, "dX", r * IC + i);
      }
    for (int i = 0; i < IC; ++i)
      for (int o = 0; o < OC; ++o) {
        const size_t at = out_in ? (size_t)o * IC + i : (size_t)i * OC + o;
        double s = dw0[at], a = std::fabs(s);
        for (int64_t r = 0; r < N; ++r) {
          s += bf(dy16[r * OC + o]) * bf(x16[r * IC + i]);
          a += std::fabs(bf(dy16[r * OC + o]) * bf(x16[r * IC + i]));
        }
        expect_close(dw[at], s, a, N + 1, "dW", (int64_t)at);
      }
    for (int o = 0; o < OC; ++o) {  // the bias gradient sums dout in fp32, not rounded to bf16
      double s = db0[o], a = std::fabs(s);
      for (int64_t r = 0; r < N; ++r) {
        s += dy[r * OC + o];
        a += std::fabs(dy[r * OC + o]);
      }
      expect_close(db[o], s, a, N + 1, "dbias", o);
    }
    // the output gradient already in bf16, its rows further apart than OC (the loss kernel's
    // rows over the logits' memory), the input fp32: the same products; the gaps (NaN) unread
    const int64_t ldd = 2 * OC + 3;
    std::vector<uint16_t> dy_strided((size_t)(N * ldd), 0x7fc0);
    for (int64_t r = 0; r < N; ++r)
      std::memcpy(dy_strided.data() + r * ldd, dy16.data() + r * OC, sizeof(uint16_t) * OC);
    std::vector<float> dx2(N * IC, 123.0f), dw2 = dw0;
    matmul_backward_bf16(dx2.data(), dw2.data(), dy_strided.data(), x.data(), w16.data(), N, IC, OC, lay, ldd);
    for (size_t i = 0; i < dx.size(); ++i) ASSERT_NEAR(dx2[i], dx[i], 1e-5 * (1 + std::fabs(dx[i]))) << i;
    for (size_t i = 0; i < dw.size(); ++i) ASSERT_NEAR(dw2[i], dw[i], 1e-5 * (1 + std::fabs(dw[i]))) << i;
  }
}

// pair_product_bf16 on operands packed by pack_bf16_pair_rows / pack_bf16_pairs_transposed
// (attention's tiles), every operand layout, odd K (a zero pad), edges of the 8-row blocks and
// 16-column vectors, and accumulation; against fp64 on the bf16-rounded inputs.
TEST(Bf16Gemm, PairProductOnPackedOperandsEveryLayoutAndEdge) {
  for (int M : {1, 7, 8, 13, 32})
    for (int N : {1, 15, 16, 17, 33, 64, 100})
      for (int K : {1, 2, 7, 64, 129}) {
        // x (M,K) and y (K,N), row-major fp32; C = x y
        const auto x = randn((size_t)M * K, 11 + K), y = randn((size_t)K * N, 13 + N);
        const auto x16 = to_bf16(x), y16 = to_bf16(y);
        const int pairs = (K + 1) / 2;
        // A as row-major pairs (x's rows, an odd K padded) and as pairs down the columns
        // (pack_bf16_pair_rows of x^T); B as pair rows of y and as pairs transposed of y^T
        std::vector<float> xpad((size_t)M * 2 * pairs, 0.0f), xt((size_t)K * M), yt((size_t)N * K);
        for (int i = 0; i < M; ++i)
          for (int k = 0; k < K; ++k) xpad[(size_t)i * 2 * pairs + k] = x[(size_t)i * K + k], xt[(size_t)k * M + i] = x[(size_t)i * K + k];
        for (int k = 0; k < K; ++k)
          for (int j = 0; j < N; ++j) yt[(size_t)j * K + k] = y[(size_t)k * N + j];
        std::vector<uint16_t> a_rows((size_t)M * 2 * pairs);
        round_to_bf16(a_rows.data(), xpad.data(), (int64_t)a_rows.size());
        const int64_t lda_cols = M + 3, ldb = N + 5;
        std::vector<uint32_t> a_cols((size_t)pairs * lda_cols), b_rows((size_t)pairs * ldb), b_tr((size_t)pairs * ldb);
        pack_bf16_pair_rows(a_cols.data(), lda_cols, xt.data(), M, K, M);
        pack_bf16_pair_rows(b_rows.data(), ldb, y.data(), N, K, N);
        std::vector<float> ytp((size_t)N * 2 * pairs, 0.0f);  // y^T rows padded to an even width
        for (int j = 0; j < N; ++j)
          for (int k = 0; k < K; ++k) ytp[(size_t)j * 2 * pairs + k] = yt[(size_t)j * K + k];
        pack_bf16_pairs_transposed(b_tr.data(), ldb, ytp.data(), 2 * pairs, N, 2 * pairs);
        const auto* a_words = reinterpret_cast<const uint32_t*>(a_rows.data());
        for (int layout = 0; layout < 4; ++layout) {
          const bool a_by_rows = layout % 2 == 0, b_pair_rows = layout < 2;
          const int64_t ldc = N + 2;
          std::vector<float> C((size_t)M * ldc, 0.5f);
          const bool acc = layout == 3;
          pair_product_bf16(M, N, pairs, a_by_rows ? a_words : a_cols.data(), a_by_rows ? pairs : 1,
                            a_by_rows ? 1 : lda_cols, b_pair_rows ? b_rows.data() : b_tr.data(), ldb, C.data(), ldc,
                            acc);
          for (int i = 0; i < M; ++i)
            for (int j = 0; j < N; ++j) {
              double want = acc ? 0.5 : 0.0, abs_sum = 0;
              for (int k = 0; k < K; ++k) {
                const double t = bf(x16[(size_t)i * K + k]) * bf(y16[(size_t)k * N + j]);
                want += t;
                abs_sum += std::fabs(t);
              }
              expect_close(C[(size_t)i * ldc + j], want, abs_sum + 0.5, K, "pair product", (int64_t)i * N + j);
            }
          for (int i = 0; i < M; ++i)  // the columns past N are left alone
            for (int j = N; j < ldc; ++j) ASSERT_EQ(C[(size_t)i * ldc + j], 0.5f) << M << "x" << N << "x" << K;
        }
      }
}

TEST(Bf16Gemm, Bf16PeakIsMeasuredWhereTheCpuHasIt) {
  const FmaProbe p = bf16_probe(1 << 16);
  if (!bf16_supported() || std::string(p.isa) == "none") {
    EXPECT_EQ(measured_bf16_peak_gflops(1), 0.0);
    GTEST_SKIP() << "no AVX512-BF16 on this CPU (oneDNN ISA " << bf16_isa_name() << ")";
  }
  EXPECT_EQ(p.check, (float)(1 << 16));  // every vdpbf16ps ran: each lane gained exactly `rounds`
  EXPECT_EQ(p.flops, 4.0 * 16 * 12 * (1 << 16));
  const double bf16 = measured_bf16_peak_gflops(1), fp32 = measured_peak_gflops(1);
  EXPECT_GT(bf16, 0.0);
  // two bf16 products per lane where fp32 does one: between 1x and 4x the fp32 rate
  EXPECT_GT(bf16, 1.0 * fp32 * 0.8);
  EXPECT_LT(bf16, 4.0 * fp32 * 1.25);
}
