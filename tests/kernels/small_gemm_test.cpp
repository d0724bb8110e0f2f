// The small-row fp32 products (kernels/cpu/small_gemm.h) through matmul_forward_rows (any N)
// and matmul_forward (up to kFewRows rows): against an fp64 reference, and each row bit for
// bit what it is alone (N = 1) at every N up to 70 (past one 64-row block), with edge shapes
// (IC not a multiple of 16, OC not a multiple of the tile), bias and accumulate, 1 and 2
// threads.
#include <gtest/gtest.h>

#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "aji/base/threads.h"
#include "aji/kernels/cpu/avx512.h"
#include "aji/kernels/cpu/ops.h"
#include "aji/kernels/cpu/small_gemm.h"

namespace ops = aji::kernels::cpu;
using ops::WeightLayout;

namespace {

std::vector<float> randn(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

struct Shape {
  int IC, OC;
};

void check(WeightLayout layout, Shape s, int threads) {
  aji::set_num_threads(threads);
  const int max_n = 70;
  const auto w = randn(static_cast<size_t>(s.IC) * s.OC, 1 + s.IC);
  const auto x = randn(static_cast<size_t>(max_n) * s.IC, 2 + s.OC);
  const auto bias = randn(static_cast<size_t>(s.OC), 3);
  const auto start = randn(static_cast<size_t>(max_n) * s.OC, 4);  // what accumulate adds to
  auto wt = [&](int k, int o) {
    return layout == WeightLayout::kOutIn ? w[static_cast<size_t>(o) * s.IC + k] : w[static_cast<size_t>(k) * s.OC + o];
  };
  for (bool accumulate : {false, true})
    for (const float* b : {static_cast<const float*>(nullptr), bias.data()}) {
      // each row alone
      std::vector<float> alone(start);
      for (int r = 0; r < max_n; ++r)
        ops::matmul_forward(alone.data() + static_cast<size_t>(r) * s.OC, x.data() + static_cast<size_t>(r) * s.IC,
                            w.data(), b, 1, s.IC, s.OC, layout, accumulate);
      for (int r = 0; r < max_n; ++r)
        for (int o = 0; o < s.OC; ++o) {
          double ref = b ? b[o] : 0.0, mag = std::fabs(ref);
          for (int k = 0; k < s.IC; ++k) {
            ref += (double)x[static_cast<size_t>(r) * s.IC + k] * wt(k, o);
            mag += std::fabs((double)x[static_cast<size_t>(r) * s.IC + k] * wt(k, o));
          }
          if (accumulate) ref += start[static_cast<size_t>(r) * s.OC + o], mag += std::fabs(start[static_cast<size_t>(r) * s.OC + o]);
          ASSERT_NEAR(alone[static_cast<size_t>(r) * s.OC + o], ref, 1e-6 * mag + 1e-6)
              << "row " << r << " output " << o;
        }
      for (int n = 2; n <= max_n; ++n) {
        std::vector<float> got(start.begin(), start.begin() + static_cast<ptrdiff_t>(n) * s.OC);
        ops::matmul_forward_rows(got.data(), x.data(), w.data(), b, n, s.IC, s.OC, layout, accumulate);
        ASSERT_EQ(std::memcmp(got.data(), alone.data(), sizeof(float) * got.size()), 0)
            << "N " << n << " IC " << s.IC << " OC " << s.OC << " accumulate " << accumulate << " bias " << (b != nullptr);
        if (n > ops::kFewRows) continue;
        std::vector<float> mf(start.begin(), start.begin() + static_cast<ptrdiff_t>(n) * s.OC);
        ops::matmul_forward(mf.data(), x.data(), w.data(), b, n, s.IC, s.OC, layout, accumulate);
        ASSERT_EQ(std::memcmp(mf.data(), alone.data(), sizeof(float) * mf.size()), 0) << "matmul_forward, N " << n;
      }
    }
  aji::set_num_threads(1);
}

}  // namespace

// The CPU's kernels, then the AVX2 ones (the same on a CPU without AVX-512).
TEST(SmallGemm, RowsEqualTheirOneRowResultAndAnFp64Reference) {
  for (bool avx2 : {false, true}) {
    ops::small_rows_force_avx2(avx2);
    for (WeightLayout layout : {WeightLayout::kOutIn, WeightLayout::kInOut})
      for (Shape s : {Shape{16, 4}, Shape{37, 5}, Shape{384, 33}, Shape{1, 3}, Shape{100, 70}}) {
        SCOPED_TRACE(testing::Message() << ops::small_rows_isa() << (layout == WeightLayout::kOutIn ? " OutIn" : " InOut")
                                        << " IC " << s.IC << " OC " << s.OC);
        check(layout, s, 1);
      }
  }
  ops::small_rows_force_avx2(false);
}

TEST(SmallGemm, TheSameBitsWithTwoThreads) {
  // large enough that the product is split over threads (parallel_worth: 32768 elements)
  for (bool avx2 : {false, true}) {
    ops::small_rows_force_avx2(avx2);
    SCOPED_TRACE(ops::small_rows_isa());
    for (WeightLayout layout : {WeightLayout::kOutIn, WeightLayout::kInOut}) check(layout, Shape{384, 200}, 2);
  }
  ops::small_rows_force_avx2(false);
}

// The AVX2 tiles are the AVX-512 ones' chains in 256-bit halves: the same bits, so a model
// decodes the same tokens on either CPU.
TEST(SmallGemm, Avx2KernelsGiveTheAvx512Bits) {
  if (!__builtin_cpu_supports("avx512f")) GTEST_SKIP() << "this CPU has no AVX-512F: only the AVX2 kernels run here";
  for (WeightLayout layout : {WeightLayout::kOutIn, WeightLayout::kInOut})
    for (Shape s : {Shape{37, 5}, Shape{384, 33}, Shape{1, 3}, Shape{100, 70}})
      for (int n : {1, 3, 16, 70})
        for (bool accumulate : {false, true}) {
          const auto w = randn(static_cast<size_t>(s.IC) * s.OC, 31 + s.IC);
          const auto x = randn(static_cast<size_t>(n) * s.IC, 32 + n);
          const auto bias = randn(static_cast<size_t>(s.OC), 33);
          std::vector<float> wide(static_cast<size_t>(n) * s.OC, 0.5f), narrow = wide;
          ops::matmul_forward_rows(wide.data(), x.data(), w.data(), bias.data(), n, s.IC, s.OC, layout, accumulate);
          ops::small_rows_force_avx2(true);
          ops::matmul_forward_rows(narrow.data(), x.data(), w.data(), bias.data(), n, s.IC, s.OC, layout, accumulate);
          ops::small_rows_force_avx2(false);
          ASSERT_EQ(std::memcmp(wide.data(), narrow.data(), sizeof(float) * wide.size()), 0)
              << (layout == WeightLayout::kOutIn ? "OutIn" : "InOut") << " IC " << s.IC << " OC " << s.OC << " N " << n;
        }
}

// The four-at-once sum of the register tiles' epilogue is hsum512's sum of each, bit for bit
// (each tile's outputs must be what the one-row path computes alone). Vectors of wildly
// different magnitudes and signs, so that another order of the additions would round
// differently.
__attribute__((target("avx512f"))) static void hsum4_vs_hsum(const float* v, float* four, float* one) {
  __m512 x[4];
  for (int i = 0; i < 4; ++i) x[i] = _mm512_loadu_ps(v + 16 * i);
  _mm_storeu_ps(four, ops::hsum512x4(x[0], x[1], x[2], x[3]));
  for (int i = 0; i < 4; ++i) one[i] = ops::hsum512(x[i]);
}

TEST(SmallGemm, FourSumsAtOnceAreHsum512BitForBit) {
  if (!__builtin_cpu_supports("avx512f")) GTEST_SKIP() << "this CPU has no AVX-512F: the kernels using it do not run";
  std::mt19937 g(21);
  std::uniform_real_distribution<float> e(-30.0f, 30.0f);
  int differs_from_sequential = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    float v[64], four[4], one[4];
    for (float& x : v) x = std::ldexp(e(g) > 0 ? 1.0f + e(g) / 64 : -1.0f - e(g) / 64, static_cast<int>(e(g) / 2));
    hsum4_vs_hsum(v, four, one);
    for (int i = 0; i < 4; ++i) {
      ASSERT_EQ(std::memcmp(&four[i], &one[i], 4), 0) << "trial " << trial << " vector " << i;
      float seq = 0.0f;
      for (int j = 0; j < 16; ++j) seq += v[16 * i + j];
      differs_from_sequential += seq != one[i];
    }
  }
  // the data do tell summation orders apart (else the bit comparison above proves nothing)
  EXPECT_GT(differs_from_sequential, 1000);
}
