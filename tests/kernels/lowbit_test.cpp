// bf16 / Q8_0 weight products (kernels/cpu/lowbit.h) against an fp64 reference over the
// dequantized weights: the reference rounds with base/half.h and Q8_0's 34-byte block
// format (quantize_q8_0 / dequantize_q8_0, whose bytes tests/reference/q8_0_vs_gguf.py
// checks against the gguf package), then sums in double.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "aji/base/error.h"
#include "aji/base/half.h"
#include "aji/base/threads.h"
#include "aji/kernels/cpu/bf16_gemm.h"
#include "aji/kernels/cpu/lowbit.h"

namespace ops = aji::kernels::cpu;
using ops::PackedWeight;
using ops::WeightLayout;
using ops::WeightType;

namespace {

// Every row kernel this build has: the CPU's best (AVX-512 where it has it), AVX2, portable.
constexpr ops::PackedIsa kIsas[] = {ops::PackedIsa::kBest, ops::PackedIsa::kAvx2, ops::PackedIsa::kPortable};

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// W (OC,IC) as the products see it, from the fp32 (OC,IC) matrix.
std::vector<double> reference_weights(const std::vector<float>& w, int OC, int IC, WeightType t) {
  std::vector<double> out(w.size());
  if (t == WeightType::kBF16) {
    for (size_t i = 0; i < w.size(); ++i) out[i] = aji::bf16_to_f32(aji::f32_to_bf16(w[i]));
  } else {
    std::vector<uint8_t> blocks(w.size() / 32 * ops::kQ8BlockBytes);
    ops::quantize_q8_0(w.data(), w.size(), blocks.data());
    std::vector<float> f(w.size());
    ops::dequantize_q8_0(blocks.data(), w.size(), f.data());
    for (size_t i = 0; i < w.size(); ++i) out[i] = f[i];
  }
  (void)OC;
  (void)IC;
  return out;
}

// The activation row as the row kernel sees it: bf16-rounded, or Q8_0 quantized per block.
std::vector<double> reference_activation(const float* x, int IC, WeightType t, bool row_kernel) {
  std::vector<double> out(static_cast<size_t>(IC));
  if (!row_kernel) {
    for (int k = 0; k < IC; ++k) out[k] = x[k];
  } else if (t == WeightType::kBF16) {
    for (int k = 0; k < IC; ++k) out[k] = aji::bf16_to_f32(aji::f32_to_bf16(x[k]));
  } else {
    std::vector<uint8_t> blocks(static_cast<size_t>(IC) / 32 * ops::kQ8BlockBytes);
    ops::quantize_q8_0(x, IC, blocks.data());
    std::vector<float> f(static_cast<size_t>(IC));
    ops::dequantize_q8_0(blocks.data(), IC, f.data());
    for (int k = 0; k < IC; ++k) out[k] = f[k];
  }
  return out;
}

// out = inp W^T + bias (+ prior out when accumulate), checked row by row against fp64.
void check_product(WeightType t, int N, int OC, int IC, bool bias_on, bool accumulate, WeightLayout layout) {
  SCOPED_TRACE(std::string(ops::weight_type_name(t)) + " N=" + std::to_string(N) + " OC=" + std::to_string(OC) +
               " IC=" + std::to_string(IC) + (layout == WeightLayout::kInOut ? " in-out" : " out-in"));
  const auto w = randn(static_cast<size_t>(OC) * IC, 1 + OC * 7 + IC, 0.05f);
  const auto x = randn(static_cast<size_t>(N) * IC, 2 + N, 1.0f);
  const auto b = randn(static_cast<size_t>(OC), 3, 0.5f);
  std::vector<float> stored = w;  // the fp32 matrix in `layout`
  if (layout == WeightLayout::kInOut)
    for (int o = 0; o < OC; ++o)
      for (int k = 0; k < IC; ++k) stored[static_cast<size_t>(k) * OC + o] = w[static_cast<size_t>(o) * IC + k];
  const PackedWeight p = PackedWeight::pack(stored.data(), OC, IC, layout, t);
  const auto wr = reference_weights(w, OC, IC, t);
  // dequantize_rows gives exactly the reference weights
  std::vector<float> rows(static_cast<size_t>(OC) * IC);
  p.dequantize_rows(0, OC, rows.data());
  for (size_t i = 0; i < rows.size(); ++i) ASSERT_EQ((double)rows[i], wr[i]) << "element " << i;

  std::vector<float> out(static_cast<size_t>(N) * OC, 0.25f);
  const std::vector<float> prior = out;
  ops::packed_matmul_forward(out.data(), x.data(), p, bias_on ? b.data() : nullptr, N, accumulate);
  const bool row_kernel = N <= ops::kPackedRows;
  // Many rows on a CPU with native bf16 products: bf16 activations times the weights rounded
  // to bf16 (q8_0's d*q carries 8 significant bits there), fp32 accumulation.
  const bool bf16_gemm = !row_kernel && ops::bf16_supported() &&
                         std::string(ops::packed_kernel_isa(WeightType::kBF16)) == "avx512-bf16";
  std::vector<double> wq = wr;
  if (bf16_gemm)
    for (auto& v : wq) v = aji::bf16_to_f32(aji::f32_to_bf16(static_cast<float>(v)));
  double worst = 0.0;
  for (int r = 0; r < N; ++r) {
    const auto xr = reference_activation(x.data() + static_cast<size_t>(r) * IC, IC,
                                         bf16_gemm ? WeightType::kBF16 : t, row_kernel || bf16_gemm);
    for (int o = 0; o < OC; ++o) {
      double s = 0.0, mag = 0.0;
      for (int k = 0; k < IC; ++k) {
        const double v = xr[k] * wq[static_cast<size_t>(o) * IC + k];
        s += v;
        mag += std::fabs(v);
      }
      if (bias_on) s += b[o];
      if (accumulate) s += prior[static_cast<size_t>(r) * OC + o];
      const double err = std::fabs(out[static_cast<size_t>(r) * OC + o] - s) / (mag + 1.0);
      worst = std::max(worst, err);
    }
  }
  // fp32 accumulation of IC products (and, q8_0, fp16-valued scales multiplied in fp32)
  EXPECT_LT(worst, 2e-6) << "relative to sum |x w| + 1";
}

}  // namespace

TEST(Lowbit, Q8BlockRoundsLikeGgml) {
  // d = max|x|/127 = 1/127 exactly in fp16? no: the scale is stored fp16, the values divided
  // by the fp32 d, halves rounded away from zero (roundf), as quantize_row_q8_0_ref.
  std::vector<float> x(32, 0.0f);
  x[0] = 127.0f;   // d = 1
  x[1] = 2.5f;     // -> 3 (away from zero, not to even)
  x[2] = -2.5f;    // -> -3
  x[3] = 0.49f;    // -> 0
  x[4] = -127.0f;  // -> -127
  std::vector<uint8_t> q(ops::kQ8BlockBytes);
  ops::quantize_q8_0(x.data(), 32, q.data());
  uint16_t dh;
  std::memcpy(&dh, q.data(), 2);
  EXPECT_EQ(aji::f16_to_f32(dh), 1.0f);
  EXPECT_EQ(static_cast<int8_t>(q[2 + 0]), 127);
  EXPECT_EQ(static_cast<int8_t>(q[2 + 1]), 3);
  EXPECT_EQ(static_cast<int8_t>(q[2 + 2]), -3);
  EXPECT_EQ(static_cast<int8_t>(q[2 + 3]), 0);
  EXPECT_EQ(static_cast<int8_t>(q[2 + 4]), -127);
  // an all-zero block: scale 0, values 0 (no division by zero)
  std::vector<float> z(32, 0.0f);
  ops::quantize_q8_0(z.data(), 32, q.data());
  for (uint8_t v : q) EXPECT_EQ(v, 0);
  // the split form holds the same numbers
  const auto r = randn(96, 11);
  std::vector<uint8_t> blocks(3 * ops::kQ8BlockBytes);
  ops::quantize_q8_0(r.data(), 96, blocks.data());
  std::vector<int8_t> qs(96);
  std::vector<uint16_t> ds(3);
  ops::quantize_q8_0_split(r.data(), 96, qs.data(), ds.data());
  for (int b = 0; b < 3; ++b) {
    EXPECT_EQ(std::memcmp(blocks.data() + b * 34, &ds[b], 2), 0);
    EXPECT_EQ(std::memcmp(blocks.data() + b * 34 + 2, qs.data() + b * 32, 32), 0);
  }
  // the split form (AVX-512 where the CPU has it: the activations of every q8_0 product) on
  // blocks full of ties (x/d = k + 0.5 exactly, both signs), values just below a tie, zeros,
  // and random scales, against the scalar block form, value for value
  for (ops::PackedIsa isa : kIsas) {
    ops::packed_force_isa(isa);
    const std::string kernel = ops::packed_kernel_isa(WeightType::kQ8_0);
    constexpr int kBlocks = 64;
    std::vector<float> t(kBlocks * 32);
    const auto u = randn(t.size(), 12);
    for (size_t i = 0; i < t.size(); ++i) {
      const int b = static_cast<int>(i / 32), j = static_cast<int>(i % 32);
      if (b % 4 == 0)
        t[i] = j == 0 ? 127.0f : (j % 2 ? 1.0f : -1.0f) * (static_cast<float>(j % 17) + 0.5f);  // d = 1: ties
      else if (b % 4 == 1)
        t[i] = j == 0 ? -127.0f : std::nextafter(static_cast<float>(j) + 0.5f, 0.0f);  // just below ties
      else if (b % 4 == 2)
        t[i] = j < 16 ? 0.0f : u[i] * 1e-3f;
      else
        t[i] = u[i] * static_cast<float>(1 + b);
    }
    std::vector<uint8_t> ref(kBlocks * ops::kQ8BlockBytes);
    ops::quantize_q8_0(t.data(), t.size(), ref.data());
    std::vector<int8_t> q2(t.size());
    std::vector<uint16_t> d2(kBlocks);
    ops::quantize_q8_0_split(t.data(), t.size(), q2.data(), d2.data());
    for (int b = 0; b < kBlocks; ++b) {
      EXPECT_EQ(std::memcmp(ref.data() + b * 34, &d2[b], 2), 0) << "block " << b << " kernel " << kernel;
      EXPECT_EQ(std::memcmp(ref.data() + b * 34 + 2, q2.data() + b * 32, 32), 0) << "block " << b << " kernel " << kernel;
    }
  }
  ops::packed_force_isa(ops::PackedIsa::kBest);
}

TEST(Lowbit, ProductsMatchFp64OnDequantizedWeights) {
  aji::set_num_threads(1);
  for (ops::PackedIsa isa : kIsas) {
    ops::packed_force_isa(isa);
    SCOPED_TRACE(std::string(ops::packed_kernel_isa(WeightType::kBF16)) + " / " + ops::packed_kernel_isa(WeightType::kQ8_0));
    for (WeightType t : {WeightType::kBF16, WeightType::kQ8_0}) {
      const std::vector<int> ics = t == WeightType::kBF16 ? std::vector<int>{1, 31, 33, 100, 768}
                                                          : std::vector<int>{32, 64, 96, 544, 768};
      for (int IC : ics)
        for (int N : {1, 2, 5, 16}) check_product(t, N, 7, IC, true, false, WeightLayout::kOutIn);
      // odd pair counts (q8_0: 3 and 17 blocks), more than 16 blocks (scale groups), threads
      check_product(t, 3, 65, 544, false, true, WeightLayout::kInOut);
      check_product(t, 1, 300, 96, true, true, WeightLayout::kOutIn);
      // prompt processing: dequantize + sgemm with fp32 activations
      check_product(t, 17, 33, t == WeightType::kBF16 ? 45 : 64, true, false, WeightLayout::kOutIn);
      check_product(t, 40, 300, 96, true, true, WeightLayout::kInOut);
    }
  }
  ops::packed_force_isa(ops::PackedIsa::kBest);
  // the dequantize + sgemm path with its panel filled by two threads (256 x 160 >= the
  // parallel threshold)
  aji::set_num_threads(2);
  check_product(WeightType::kQ8_0, 33, 600, 160, true, false, WeightLayout::kOutIn);
  check_product(WeightType::kBF16, 20, 600, 160, false, true, WeightLayout::kInOut);
  aji::set_num_threads(1);
}

TEST(Lowbit, RowsAreTheSameBitsAloneOrInABatch) {
  for (int threads : {1, 2}) {
    aji::set_num_threads(threads);
    for (ops::PackedIsa isa : kIsas) {
      ops::packed_force_isa(isa);
      const std::string kernel = ops::packed_kernel_isa(WeightType::kQ8_0);
      for (WeightType t : {WeightType::kBF16, WeightType::kQ8_0}) {
        const int OC = 257, IC = 160;
        const auto w = randn(static_cast<size_t>(OC) * IC, 5, 0.05f);
        const auto b = randn(static_cast<size_t>(OC), 6);
        const PackedWeight p = PackedWeight::pack(w.data(), OC, IC, WeightLayout::kOutIn, t);
        const int N = ops::kPackedRows;
        const auto x = randn(static_cast<size_t>(N) * IC, 7);
        std::vector<float> all(static_cast<size_t>(N) * OC), one(static_cast<size_t>(OC));
        ops::packed_matmul_forward(all.data(), x.data(), p, b.data(), N);
        for (int n : {1, 3, 4, 5, 9, 16}) {
          std::vector<float> some(static_cast<size_t>(n) * OC);
          ops::packed_matmul_forward(some.data(), x.data(), p, b.data(), n);
          EXPECT_EQ(std::memcmp(some.data(), all.data(), sizeof(float) * n * OC), 0) << "n " << n;
        }
        for (int r = 0; r < N; ++r) {
          ops::packed_matmul_forward(one.data(), x.data() + static_cast<size_t>(r) * IC, p, b.data(), 1);
          EXPECT_EQ(std::memcmp(one.data(), all.data() + static_cast<size_t>(r) * OC, sizeof(float) * OC), 0)
              << ops::weight_type_name(t) << " row " << r << " threads " << threads << " kernel " << kernel;
        }
      }
    }
  }
  ops::packed_force_isa(ops::PackedIsa::kBest);
  aji::set_num_threads(1);
}

TEST(Lowbit, RejectsQ8WidthsNotAMultipleOf32AndBadNames) {
  const auto w = randn(3 * 40, 8);
  EXPECT_THROW(PackedWeight::pack(w.data(), 3, 40, WeightLayout::kOutIn, WeightType::kQ8_0), aji::Error);
  EXPECT_NO_THROW(PackedWeight::pack(w.data(), 3, 40, WeightLayout::kOutIn, WeightType::kBF16));
  EXPECT_TRUE(PackedWeight::pack(w.data(), 3, 40, WeightLayout::kOutIn, WeightType::kF32).empty());
  EXPECT_EQ(ops::parse_weight_type("q8_0", "--weights"), WeightType::kQ8_0);
  EXPECT_EQ(ops::parse_weight_type("bf16", "--weights"), WeightType::kBF16);
  EXPECT_EQ(ops::parse_weight_type("fp32", "--weights"), WeightType::kF32);
  EXPECT_THROW(ops::parse_weight_type("q4_0", "--weights"), aji::Error);
  // sizes: q8_0 is 34 bytes per 32 weights, bf16 2 bytes per weight
  const auto v = randn(64 * 64, 9);
  EXPECT_EQ(PackedWeight::pack(v.data(), 64, 64, WeightLayout::kOutIn, WeightType::kQ8_0).bytes(), 64u * 2 * 34);
  EXPECT_EQ(PackedWeight::pack(v.data(), 64, 64, WeightLayout::kOutIn, WeightType::kBF16).bytes(), 64u * 64 * 2);
}
