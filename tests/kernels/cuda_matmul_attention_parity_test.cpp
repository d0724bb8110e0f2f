// The CUDA backend's matrix products and attention against the CPU ops (kernels/cpu/ops.h),
// in fp32: the same random inputs on both devices, each result within kFp32ParityTol (relative
// L2). Outputs an op overwrites start as NaN on both sides (an element it fails to write shows);
// outputs it adds into (+=) start as the same random values on both. Skipped where there is no
// CUDA device (tests/kernels/backend_parity.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "aji/kernels/backend.h"
#include "kernels/backend_parity.h"

namespace aji::test {
namespace {

using kernels::AttnDims;
using kernels::Backend;
using kernels::WeightLayout;

std::vector<float> random_vector(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = scale * normal(gen);
  return v;
}

const char* layout_name(WeightLayout l) { return l == WeightLayout::kOutIn ? "kOutIn" : "kInOut"; }

// ---- matrix products ----------------------------------------------------------------------

struct MatmulShape {
  int64_t N;
  int IC, OC;
};
// N = 1 and 3 (the CPU's few-row kernels), 4 / 5 (either side of kFewRows), 257; IC and OC not
// multiples of 4; a long inner dimension (a split-K candidate) and a larger square-ish one.
const MatmulShape kGemmShapes[] = {{1, 33, 65},  {3, 33, 65},   {4, 64, 48},     {5, 64, 48},
                                 {257, 33, 65}, {7, 1, 5},    {64, 1024, 96},  {300, 256, 384}};
const WeightLayout kLayouts[] = {WeightLayout::kOutIn, WeightLayout::kInOut};

TEST(CudaParityMatmul, Forward) {
  AJI_CUDA_OR_SKIP(gpu);
  Backend& cpu = kernels::cpu_backend();
  uint64_t seed = 1;
  for (const MatmulShape& s : kGemmShapes)
    for (WeightLayout layout : kLayouts)
      for (bool with_bias : {false, true})
        for (bool accumulate : {false, true}) {
          SCOPED_TRACE("N=" + std::to_string(s.N) + " IC=" + std::to_string(s.IC) + " OC=" + std::to_string(s.OC) +
                       " " + layout_name(layout) + (with_bias ? " bias" : "") + (accumulate ? " accumulate" : ""));
          const size_t n_out = (size_t)s.N * s.OC;
          const auto inp = random_vector((size_t)s.N * s.IC, seed++);    // (N,IC)
          const auto w = random_vector((size_t)s.OC * s.IC, seed++);     // (OC,IC) or (IC,OC)
          const auto bias = random_vector((size_t)s.OC, seed++);         // (OC)
          const auto out0 = accumulate ? random_vector(n_out, seed++) : nan_vector(n_out);  // (N,OC)

          std::vector<float> ref = out0;
          cpu.matmul_forward(ref.data(), inp.data(), w.data(), with_bias ? bias.data() : nullptr, s.N, s.IC, s.OC,
                             layout, accumulate);

          DeviceBuffer<float> d_inp(gpu, inp), d_w(gpu, w), d_bias(gpu, bias), d_out(gpu, out0);
          gpu.matmul_forward(d_out, d_inp, d_w, with_bias ? d_bias.get() : nullptr, s.N, s.IC, s.OC, layout,
                             accumulate);
          EXPECT_LE(rel_l2(d_out.host(), ref), kFp32ParityTol);
        }
}

TEST(CudaParityMatmul, Backward) {
  AJI_CUDA_OR_SKIP(gpu);
  Backend& cpu = kernels::cpu_backend();
  uint64_t seed = 1000;
  for (const MatmulShape& s : kGemmShapes)
    for (WeightLayout layout : kLayouts)
      for (bool with_bias : {false, true})
        for (bool with_dinp : {true, false}) {
          SCOPED_TRACE("N=" + std::to_string(s.N) + " IC=" + std::to_string(s.IC) + " OC=" + std::to_string(s.OC) +
                       " " + layout_name(layout) + (with_bias ? " dbias" : "") + (with_dinp ? " dinp" : ""));
          const size_t n_w = (size_t)s.OC * s.IC;
          const auto inp = random_vector((size_t)s.N * s.IC, seed++);   // (N,IC)
          const auto w = random_vector(n_w, seed++);                    // (OC,IC) or (IC,OC)
          const auto dout = random_vector((size_t)s.N * s.OC, seed++);  // (N,OC)
          const auto dw0 = random_vector(n_w, seed++);                  // += targets
          const auto db0 = random_vector((size_t)s.OC, seed++);
          const auto dinp0 = nan_vector((size_t)s.N * s.IC);            // overwritten

          std::vector<float> dinp_ref = dinp0, dw_ref = dw0, db_ref = db0;
          cpu.matmul_backward(with_dinp ? dinp_ref.data() : nullptr, dw_ref.data(),
                              with_bias ? db_ref.data() : nullptr, dout.data(), inp.data(), w.data(), s.N, s.IC,
                              s.OC, layout);

          DeviceBuffer<float> d_inp(gpu, inp), d_w(gpu, w), d_dout(gpu, dout), d_dw(gpu, dw0), d_db(gpu, db0),
              d_dinp(gpu, dinp0);
          gpu.matmul_backward(with_dinp ? d_dinp.get() : nullptr, d_dw, with_bias ? d_db.get() : nullptr, d_dout,
                              d_inp, d_w, s.N, s.IC, s.OC, layout);
          EXPECT_LE(rel_l2(d_dw.host(), dw_ref), kFp32ParityTol) << "dweight";
          if (with_bias) {
            EXPECT_LE(rel_l2(d_db.host(), db_ref), kFp32ParityTol) << "dbias";
          } else {
            EXPECT_EQ(d_db.host(), db0) << "dbias changed although none was passed";
          }
          if (with_dinp) {
            EXPECT_LE(rel_l2(d_dinp.host(), dinp_ref), kFp32ParityTol) << "dinp";
          }
        }
}

// TF32 products (Backend::set_matmul_tf32, --precision tf32): within TF32's rounding of the
// CPU's fp32 (an operand keeps 10 mantissa bits: a relative error near 5e-4 per product), and
// on the emulator equal, to fp32 rounding, to the CPU's products of operands rounded to TF32
// (and not to the unrounded ones: the rounding took effect). Off again afterwards.
float round_tf32(float x) {  // to nearest, ties away (cvt.rna.tf32.f32)
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u = (u + 0x1000u) & 0xffffe000u;
  std::memcpy(&x, &u, 4);
  return x;
}
std::vector<float> rounded_tf32(std::vector<float> v) {
  for (float& x : v) x = round_tf32(x);
  return v;
}
constexpr double kTf32Tol = 5e-3;

TEST(CudaParityMatmul, Tf32ProductsAreFp32WithTf32Operands) {
  AJI_CUDA_OR_SKIP(gpu);
  Backend& cpu = kernels::cpu_backend();
  ASSERT_FALSE(gpu.matmul_tf32());
  gpu.set_matmul_tf32(true);
  ASSERT_TRUE(gpu.matmul_tf32());
  uint64_t seed = 9000;
  for (const MatmulShape& s : {MatmulShape{5, 64, 48}, MatmulShape{64, 1024, 96}, MatmulShape{300, 256, 384}})
    for (WeightLayout layout : kLayouts) {
      SCOPED_TRACE("N=" + std::to_string(s.N) + " IC=" + std::to_string(s.IC) + " OC=" + std::to_string(s.OC) + " " +
                   layout_name(layout));
      const auto inp = random_vector((size_t)s.N * s.IC, seed++);
      const auto w = random_vector((size_t)s.OC * s.IC, seed++);
      const auto dout = random_vector((size_t)s.N * s.OC, seed++);
      // forward
      std::vector<float> ref = nan_vector((size_t)s.N * s.OC), ref_t = ref;
      cpu.matmul_forward(ref.data(), inp.data(), w.data(), nullptr, s.N, s.IC, s.OC, layout, false);
      cpu.matmul_forward(ref_t.data(), rounded_tf32(inp).data(), rounded_tf32(w).data(), nullptr, s.N, s.IC, s.OC,
                         layout, false);
      DeviceBuffer<float> d_inp(gpu, inp), d_w(gpu, w), d_dout(gpu, dout), d_out(gpu, nan_vector(ref.size()));
      gpu.matmul_forward(d_out, d_inp, d_w, nullptr, s.N, s.IC, s.OC, layout, false);
      const auto out = d_out.host();
      EXPECT_LE(rel_l2(out, ref), kTf32Tol) << "forward";
      // backward (no bias: its gradient is a column sum in fp32, not a product)
      std::vector<float> dinp_ref = nan_vector(inp.size()), dw_ref(w.size(), 0.0f);
      std::vector<float> dinp_t = dinp_ref, dw_t = dw_ref;
      cpu.matmul_backward(dinp_ref.data(), dw_ref.data(), nullptr, dout.data(), inp.data(), w.data(), s.N, s.IC, s.OC,
                          layout);
      cpu.matmul_backward(dinp_t.data(), dw_t.data(), nullptr, rounded_tf32(dout).data(), rounded_tf32(inp).data(),
                          rounded_tf32(w).data(), s.N, s.IC, s.OC, layout);
      DeviceBuffer<float> d_dinp(gpu, nan_vector(inp.size())), d_dw(gpu, dw_ref.size());
      gpu.zero(d_dw, sizeof(float) * dw_ref.size());
      gpu.matmul_backward(d_dinp, d_dw, nullptr, d_dout, d_inp, d_w, s.N, s.IC, s.OC, layout);
      const auto dinp = d_dinp.host(), dw = d_dw.host();
      EXPECT_LE(rel_l2(dinp, dinp_ref), kTf32Tol) << "dinp";
      EXPECT_LE(rel_l2(dw, dw_ref), kTf32Tol) << "dweight";
#ifdef AJI_CUDA_EMU
      EXPECT_LE(rel_l2(out, ref_t), kFp32ParityTol) << "forward, TF32 operands";
      EXPECT_LE(rel_l2(dinp, dinp_t), kFp32ParityTol) << "dinp, TF32 operands";
      EXPECT_LE(rel_l2(dw, dw_t), kFp32ParityTol) << "dweight, TF32 operands";
      EXPECT_GT(rel_l2(out, ref), 1e-5) << "TF32 did not round the operands";
#endif
    }
  gpu.set_matmul_tf32(false);
  // fp32 again: the products are the CPU's to fp32 rounding (the algorithm cache keys on it)
  const auto inp = random_vector(64 * 256, 9900), w = random_vector(96 * 256, 9901);
  std::vector<float> ref(64 * 96);
  cpu.matmul_forward(ref.data(), inp.data(), w.data(), nullptr, 64, 256, 96, WeightLayout::kOutIn, false);
  DeviceBuffer<float> d_inp(gpu, inp), d_w(gpu, w), d_out(gpu, nan_vector(ref.size()));
  gpu.matmul_forward(d_out, d_inp, d_w, nullptr, 64, 256, 96, WeightLayout::kOutIn, false);
  EXPECT_LE(rel_l2(d_out.host(), ref), kFp32ParityTol);
}

// bf16 products (--precision bf16: Backend::matmul_forward_bf16 / matmul_backward_bf16): the
// weight's bf16 copy (round_to_bf16, the same bits on both devices), the activation operand
// (inp, dout) rounded to bf16 by the op, fp32 accumulation. A product of two bf16 values is
// exact in fp32, so the devices differ only in the order of the fp32 sums: within the fp32
// tolerance of the CPU's bf16 products (kernels/cpu/bf16_gemm.h), and (checked on the emulator,
// whose sums are plain) measurably apart from the fp32 products.
TEST(CudaParityMatmul, Bf16ProductsAreTheCpusBf16Products) {
  AJI_CUDA_OR_SKIP(gpu);
  Backend& cpu = kernels::cpu_backend();
  // round_to_bf16: bit for bit, ties to even, NaN kept a NaN, infinities, signed zero, the
  // largest finite value (to infinity). (Not subnormal inputs: the CPU's AVX512-BF16
  // conversion flushes them to zero, its scalar tail and CUDA keep them.)
  {
    std::vector<float> x = random_vector(1000, 8000, 3.0f);
    const uint32_t specials[] = {0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7f800000u, 0xff800000u, 0x80000000u,
                                 0x3f808000u, 0x3f818000u, 0x3f80ffffu, 0x7f7fffffu, 0xbf808000u, 0x40490fdbu};
    for (uint32_t u : specials) {
      float f;
      std::memcpy(&f, &u, 4);
      x.push_back(f);
    }
    std::vector<uint16_t> ref(x.size());
    cpu.round_to_bf16(ref.data(), x.data(), x.size());
    DeviceBuffer<float> d_x(gpu, x);
    DeviceBuffer<uint16_t> d_r(gpu, x.size());
    gpu.round_to_bf16(d_r, d_x, x.size());
    EXPECT_EQ(d_r.host(), ref) << "round_to_bf16";
  }
  uint64_t seed = 8100;
  for (const MatmulShape& s : kGemmShapes)
    for (WeightLayout layout : kLayouts)
      for (bool with_bias : {false, true}) {
        const bool accumulate = with_bias;  // both ways, over the shapes
        SCOPED_TRACE("N=" + std::to_string(s.N) + " IC=" + std::to_string(s.IC) + " OC=" + std::to_string(s.OC) +
                     " " + layout_name(layout) + (with_bias ? " bias, accumulate" : ""));
        const size_t n_w = (size_t)s.OC * s.IC, n_out = (size_t)s.N * s.OC, n_in = (size_t)s.N * s.IC;
        const auto inp = random_vector(n_in, seed++), w = random_vector(n_w, seed++);
        const auto bias = random_vector((size_t)s.OC, seed++), dout = random_vector(n_out, seed++);
        const auto out0 = accumulate ? random_vector(n_out, seed++) : nan_vector(n_out);
        const auto dw0 = random_vector(n_w, seed++), db0 = random_vector((size_t)s.OC, seed++);
        std::vector<uint16_t> w16(n_w);
        cpu.round_to_bf16(w16.data(), w.data(), n_w);
        // the CPU's bf16 products, and its fp32 ones (to see the rounding take effect)
        std::vector<float> ref = out0, ref32 = out0, dinp_ref = nan_vector(n_in), dw_ref = dw0, db_ref = db0;
        const float* b = with_bias ? bias.data() : nullptr;
        cpu.matmul_forward_bf16(ref.data(), inp.data(), w16.data(), b, s.N, s.IC, s.OC, layout, accumulate);
        cpu.matmul_forward(ref32.data(), inp.data(), w.data(), b, s.N, s.IC, s.OC, layout, accumulate);
        cpu.matmul_backward_bf16(dinp_ref.data(), dw_ref.data(), with_bias ? db_ref.data() : nullptr, dout.data(),
                                 inp.data(), w16.data(), s.N, s.IC, s.OC, layout);
        DeviceBuffer<float> d_inp(gpu, inp), d_bias(gpu, bias), d_dout(gpu, dout), d_out(gpu, out0),
            d_dinp(gpu, nan_vector(n_in)), d_dw(gpu, dw0), d_db(gpu, db0), d_w(gpu, w);
        DeviceBuffer<uint16_t> d_w16(gpu, n_w);
        gpu.round_to_bf16(d_w16, d_w, n_w);
        ASSERT_EQ(d_w16.host(), w16);
        gpu.matmul_forward_bf16(d_out, d_inp, d_w16, with_bias ? d_bias.get() : nullptr, s.N, s.IC, s.OC, layout,
                                accumulate);
        gpu.matmul_backward_bf16(d_dinp, d_dw, with_bias ? d_db.get() : nullptr, d_dout, d_inp, d_w16, s.N, s.IC,
                                 s.OC, layout);
        const auto out = d_out.host();
        EXPECT_LE(rel_l2(out, ref), kFp32ParityTol) << "forward";
        EXPECT_LE(rel_l2(d_dinp.host(), dinp_ref), kFp32ParityTol) << "dinp";
        EXPECT_LE(rel_l2(d_dw.host(), dw_ref), kFp32ParityTol) << "dweight";
        if (with_bias) {
          EXPECT_LE(rel_l2(d_db.host(), db_ref), kFp32ParityTol) << "dbias";
        }
        if (s.IC >= 32) {
          EXPECT_GT(rel_l2(out, ref32), 1e-4) << "the products were not bf16";
        }
      }
}

// Operands at odd float offsets inside larger buffers (4-byte aligned only, as a product on a
// slice of the fused QKV buffer or a bias inside the parameter block is): the products must not
// assume cuBLASLt's default 256-byte alignment, and a bias the epilogue cannot take still counts.
TEST(CudaParityMatmul, UnalignedOperands) {
  AJI_CUDA_OR_SKIP(gpu);
  Backend& cpu = kernels::cpu_backend();
  const int64_t N = 37;
  const int IC = 33, OC = 65;
  uint64_t seed = 2000;
  for (WeightLayout layout : kLayouts)
    for (bool accumulate : {false, true}) {
      SCOPED_TRACE(std::string(layout_name(layout)) + (accumulate ? " accumulate" : ""));
      const int off = 1;  // floats
      const auto inp = random_vector(off + (size_t)N * IC, seed++);
      const auto w = random_vector(off + (size_t)OC * IC, seed++);
      const auto bias = random_vector(off + (size_t)OC, seed++);
      const auto out0 = accumulate ? random_vector(off + (size_t)N * OC, seed++) : nan_vector(off + (size_t)N * OC);
      std::vector<float> ref = out0;
      cpu.matmul_forward(ref.data() + off, inp.data() + off, w.data() + off, bias.data() + off, N, IC, OC, layout,
                         accumulate);
      DeviceBuffer<float> d_inp(gpu, inp), d_w(gpu, w), d_bias(gpu, bias), d_out(gpu, out0);
      gpu.matmul_forward(d_out.get() + off, d_inp.get() + off, d_w.get() + off, d_bias.get() + off, N, IC, OC, layout,
                         accumulate);
      auto got = d_out.host();
      EXPECT_LE(rel_l2(std::vector<float>(got.begin() + off, got.end()), std::vector<float>(ref.begin() + off, ref.end())),
                kFp32ParityTol)
          << "forward";

      const auto dout = random_vector(off + (size_t)N * OC, seed++);
      const auto dw0 = random_vector(off + (size_t)OC * IC, seed++);
      const auto db0 = random_vector(off + (size_t)OC, seed++);
      const auto dinp0 = nan_vector(off + (size_t)N * IC);
      std::vector<float> dinp_ref = dinp0, dw_ref = dw0, db_ref = db0;
      cpu.matmul_backward(dinp_ref.data() + off, dw_ref.data() + off, db_ref.data() + off, dout.data() + off,
                          inp.data() + off, w.data() + off, N, IC, OC, layout);
      DeviceBuffer<float> d_dout(gpu, dout), d_dw(gpu, dw0), d_db(gpu, db0), d_dinp(gpu, dinp0);
      gpu.matmul_backward(d_dinp.get() + off, d_dw.get() + off, d_db.get() + off, d_dout.get() + off,
                          d_inp.get() + off, d_w.get() + off, N, IC, OC, layout);
      auto tail = [&](const std::vector<float>& v) { return std::vector<float>(v.begin() + off, v.end()); };
      EXPECT_LE(rel_l2(tail(d_dinp.host()), tail(dinp_ref)), kFp32ParityTol) << "dinp";
      EXPECT_LE(rel_l2(tail(d_dw.host()), tail(dw_ref)), kFp32ParityTol) << "dweight";
      EXPECT_LE(rel_l2(tail(d_db.host()), tail(db_ref)), kFp32ParityTol) << "dbias";
    }
}

// ---- attention ----------------------------------------------------------------------------

struct AttnCase {
  const char* name;
  int B, Tq, Tk, H, KV, hd, q_pos0;
  // true: q, k, v inside one fused (B, T, (H + 2 KV) hd) buffer, as the model's training
  // forward has them (Tq = Tk = T); false: q rows of a fused (B, Tq, (H + 2 KV) hd) buffer
  // and k, v in separate caches (B, max_len, KV hd), as decoding has them.
  bool fused;
  int max_len;  // cache rows per sequence (not fused)
  // key_start[b][i] for packed rows: segment starts per sequence (empty: none)
  std::vector<std::vector<int>> segments;
};

const std::vector<AttnCase>& attn_cases() {
  static const std::vector<AttnCase> cases = {
      {"mha_hd64", 2, 37, 37, 4, 4, 64, 0, true, 0, {}},
      {"gqa_kv2_hd64", 2, 50, 50, 4, 2, 64, 0, true, 0, {}},
      {"mqa_kv1_hd32", 1, 70, 70, 4, 1, 32, 0, true, 0, {}},
      {"gqa_hd48", 2, 33, 33, 4, 2, 48, 0, true, 0, {}},
      {"hd8", 2, 19, 19, 2, 1, 8, 0, true, 0, {}},
      {"hd128", 1, 40, 40, 2, 1, 128, 0, true, 0, {}},
      {"hd256", 1, 40, 40, 2, 2, 256, 0, true, 0, {}},
      {"long_t300", 1, 300, 300, 2, 2, 64, 0, true, 0, {}},
      {"packed_two_segments", 2, 45, 45, 4, 2, 32, 0, true, 0, {{0, 20}, {0, 7}}},
      {"packed_three_segments_hd64", 2, 61, 61, 4, 4, 64, 0, true, 0, {{0, 17, 40}, {0, 33, 34}}},
      {"decode_tq1", 2, 1, 18, 4, 2, 64, 17, false, 32, {}},
      {"decode_tq3_kv1", 2, 3, 43, 4, 1, 32, 40, false, 64, {}},
      {"decode_tq3_hd48", 1, 3, 23, 2, 2, 48, 20, false, 30, {}},
      {"prefill_chunk_tq20", 2, 20, 33, 4, 2, 64, 13, false, 40, {}},
      {"decode_tq3_key_start", 1, 3, 13, 2, 1, 32, 10, false, 16, {{0, 5, 12}}},
  };
  return cases;
}

// One case's buffers, strides and dims (host side), with a device copy made on demand.
struct AttnSetup {
  AttnDims d;
  int QKV = 0;  // floats per row of the fused buffer
  std::vector<float> qbuf, kbuf, vbuf;  // fused: qbuf holds q, k and v; kbuf, vbuf unused
  int64_t k_off = 0, v_off = 0;         // k, v start in their buffer
  std::vector<int32_t> key_start;       // (B, Tq) or empty
  size_t out_size = 0, lse_size = 0;

  explicit AttnSetup(const AttnCase& c, uint64_t seed) {
    QKV = (c.H + 2 * c.KV) * c.hd;
    d.B = c.B, d.Tq = c.Tq, d.Tk = c.Tk, d.H = c.H, d.KV = c.KV, d.hd = c.hd, d.q_pos0 = c.q_pos0;
    if (c.fused) {
      qbuf = random_vector((size_t)c.B * c.Tq * QKV, seed);  // (B, T, QKV)
      d.q_bs = d.k_bs = d.v_bs = (int64_t)c.Tq * QKV;
      d.q_ts = d.k_ts = d.v_ts = QKV;
      k_off = (int64_t)c.H * c.hd;
      v_off = (int64_t)(c.H + c.KV) * c.hd;
    } else {
      qbuf = random_vector((size_t)c.B * c.Tq * QKV, seed);  // (B, Tq, QKV): q in its first H hd columns
      const size_t cache = (size_t)c.B * c.max_len * c.KV * c.hd;
      kbuf = random_vector(cache, seed + 1);  // (B, max_len, KV hd)
      vbuf = random_vector(cache, seed + 2);
      d.q_bs = (int64_t)c.Tq * QKV;
      d.q_ts = QKV;
      d.k_bs = d.v_bs = (int64_t)c.max_len * c.KV * c.hd;
      d.k_ts = d.v_ts = (int64_t)c.KV * c.hd;
    }
    d.o_ts = (int64_t)c.H * c.hd;  // out (B, Tq, H hd)
    d.o_bs = (int64_t)c.Tq * d.o_ts;
    out_size = (size_t)c.B * c.Tq * c.H * c.hd;
    lse_size = (size_t)c.B * c.H * c.Tq;
    if (!c.segments.empty()) {
      key_start.resize((size_t)c.B * c.Tq);
      for (int b = 0; b < c.B; ++b)
        for (int i = 0; i < c.Tq; ++i) {
          int start = 0;
          for (int s : c.segments[b])
            if (s <= c.q_pos0 + i) start = s;
          key_start[(size_t)b * c.Tq + i] = start;
        }
    }
  }
  bool fused() const { return kbuf.empty(); }
};

// rows [0, rows) of each of B sequences, columns [col, col + width), out of a strided buffer
std::vector<float> gather(const std::vector<float>& buf, int B, int rows, int64_t bs, int64_t ts, int64_t col,
                          int width) {
  std::vector<float> out;
  out.reserve((size_t)B * rows * width);
  for (int b = 0; b < B; ++b)
    for (int r = 0; r < rows; ++r) {
      const float* p = buf.data() + b * bs + r * ts + col;
      out.insert(out.end(), p, p + width);
    }
  return out;
}

TEST(CudaParityAttention, Forward) {
  AJI_CUDA_OR_SKIP(gpu);
  Backend& cpu = kernels::cpu_backend();
  uint64_t seed = 3000;
  for (const AttnCase& c : attn_cases()) {
    SCOPED_TRACE(c.name);
    AttnSetup s(c, seed);
    seed += 10;
    const std::vector<float>& kb = s.fused() ? s.qbuf : s.kbuf;
    const std::vector<float>& vb = s.fused() ? s.qbuf : s.vbuf;

    AttnDims dc = s.d;
    dc.key_start = s.key_start.empty() ? nullptr : s.key_start.data();
    std::vector<float> out_ref = nan_vector(s.out_size), lse_ref = nan_vector(s.lse_size);
    cpu.attention_forward(out_ref.data(), lse_ref.data(), s.qbuf.data(), kb.data() + s.k_off, vb.data() + s.v_off,
                          dc);

    DeviceBuffer<float> d_q(gpu, s.qbuf), d_k(gpu, s.fused() ? std::vector<float>() : s.kbuf),
        d_v(gpu, s.fused() ? std::vector<float>() : s.vbuf);
    DeviceBuffer<int32_t> d_ks(gpu, s.key_start);
    const float* gk = (s.fused() ? d_q.get() : d_k.get()) + s.k_off;
    const float* gv = (s.fused() ? d_q.get() : d_v.get()) + s.v_off;
    AttnDims dg = s.d;
    dg.key_start = s.key_start.empty() ? nullptr : d_ks.get();
    DeviceBuffer<float> d_out(gpu, nan_vector(s.out_size)), d_lse(gpu, nan_vector(s.lse_size));
    gpu.attention_forward(d_out, d_lse, d_q, gk, gv, dg);
    EXPECT_LE(rel_l2(d_out.host(), out_ref), kFp32ParityTol) << "out";
    EXPECT_LE(rel_l2(d_lse.host(), lse_ref), kFp32ParityTol) << "lse";

    // lse is optional
    DeviceBuffer<float> d_out2(gpu, nan_vector(s.out_size));
    gpu.attention_forward(d_out2, nullptr, d_q, gk, gv, dg);
    EXPECT_LE(rel_l2(d_out2.host(), out_ref), kFp32ParityTol) << "out without lse";
  }
}

TEST(CudaParityAttention, Backward) {
  AJI_CUDA_OR_SKIP(gpu);
  Backend& cpu = kernels::cpu_backend();
  uint64_t seed = 4000;
  for (const AttnCase& c : attn_cases()) {
    SCOPED_TRACE(c.name);
    AttnSetup s(c, seed);
    seed += 10;
    const std::vector<float>& kb = s.fused() ? s.qbuf : s.kbuf;
    const std::vector<float>& vb = s.fused() ? s.qbuf : s.vbuf;
    AttnDims dc = s.d;
    dc.key_start = s.key_start.empty() ? nullptr : s.key_start.data();

    // the forward's out and lse (the CPU's, given to both backwards) and a random dout
    std::vector<float> out(s.out_size), lse(s.lse_size);
    cpu.attention_forward(out.data(), lse.data(), s.qbuf.data(), kb.data() + s.k_off, vb.data() + s.v_off, dc);
    const auto dout = random_vector(s.out_size, seed + 5);  // (B, Tq, H hd)

    // gradients in the inputs' layouts, poisoned: fused, one (B, T, QKV) buffer; else dq in a
    // (B, Tq, QKV) buffer and dk, dv in (B, max_len, KV hd) caches
    std::vector<float> dq_ref = nan_vector(s.qbuf.size()), dk_ref = nan_vector(s.kbuf.size()),
                       dv_ref = nan_vector(s.vbuf.size());
    float* dk_c = (s.fused() ? dq_ref.data() : dk_ref.data()) + s.k_off;
    float* dv_c = (s.fused() ? dq_ref.data() : dv_ref.data()) + s.v_off;
    cpu.attention_backward(dq_ref.data(), dk_c, dv_c, dout.data(), s.qbuf.data(), kb.data() + s.k_off,
                           vb.data() + s.v_off, out.data(), lse.data(), dc);

    DeviceBuffer<float> d_q(gpu, s.qbuf), d_k(gpu, s.kbuf), d_v(gpu, s.vbuf), d_dout(gpu, dout), d_out(gpu, out),
        d_lse(gpu, lse);
    DeviceBuffer<int32_t> d_ks(gpu, s.key_start);
    DeviceBuffer<float> d_dq(gpu, nan_vector(s.qbuf.size())), d_dk(gpu, nan_vector(s.kbuf.size())),
        d_dv(gpu, nan_vector(s.vbuf.size()));
    const float* gk = (s.fused() ? d_q.get() : d_k.get()) + s.k_off;
    const float* gv = (s.fused() ? d_q.get() : d_v.get()) + s.v_off;
    float* gdk = (s.fused() ? d_dq.get() : d_dk.get()) + s.k_off;
    float* gdv = (s.fused() ? d_dq.get() : d_dv.get()) + s.v_off;
    AttnDims dg = s.d;
    dg.key_start = s.key_start.empty() ? nullptr : d_ks.get();
    gpu.attention_backward(d_dq, gdk, gdv, d_dout, d_q, gk, gv, d_out, d_lse, dg);

    const std::vector<float> dq_got = d_dq.host();
    const std::vector<float> dk_got = s.fused() ? dq_got : d_dk.host();
    const std::vector<float> dv_got = s.fused() ? dq_got : d_dv.host();
    const std::vector<float>& dk_all = s.fused() ? dq_ref : dk_ref;
    const std::vector<float>& dv_all = s.fused() ? dq_ref : dv_ref;
    const int hw = c.H * c.hd, kw = c.KV * c.hd;
    EXPECT_LE(rel_l2(gather(dq_got, c.B, c.Tq, s.d.q_bs, s.d.q_ts, 0, hw),
                     gather(dq_ref, c.B, c.Tq, s.d.q_bs, s.d.q_ts, 0, hw)),
              kFp32ParityTol)
        << "dq";
    EXPECT_LE(rel_l2(gather(dk_got, c.B, c.Tk, s.d.k_bs, s.d.k_ts, s.k_off, kw),
                     gather(dk_all, c.B, c.Tk, s.d.k_bs, s.d.k_ts, s.k_off, kw)),
              kFp32ParityTol)
        << "dk";
    EXPECT_LE(rel_l2(gather(dv_got, c.B, c.Tk, s.d.v_bs, s.d.v_ts, s.v_off, kw),
                     gather(dv_all, c.B, c.Tk, s.d.v_bs, s.d.v_ts, s.v_off, kw)),
              kFp32ParityTol)
        << "dv";
    if (s.fused()) {
      // every element of the fused gradient is written (Tq = Tk): none stays NaN
      EXPECT_LE(rel_l2(dq_got, dq_ref), kFp32ParityTol) << "the whole fused dqkv";
    }
  }
}

// Two runs of the same backward give the same bits (no atomics in the reductions).
TEST(CudaParityAttention, BackwardIsDeterministic) {
  AJI_CUDA_OR_SKIP(gpu);
  const AttnCase& c = attn_cases()[1];  // GQA: dk, dv summed over two query heads
  AttnSetup s(c, 5000);
  const auto dout = random_vector(s.out_size, 5001);
  DeviceBuffer<float> d_qkv(gpu, s.qbuf), d_dout(gpu, dout), d_out(gpu, s.out_size), d_lse(gpu, s.lse_size);
  gpu.attention_forward(d_out, d_lse, d_qkv, d_qkv.get() + s.k_off, d_qkv.get() + s.v_off, s.d);
  std::vector<float> first;
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<float> d_dqkv(gpu, nan_vector(s.qbuf.size()));
    gpu.attention_backward(d_dqkv, d_dqkv.get() + s.k_off, d_dqkv.get() + s.v_off, d_dout, d_qkv,
                           d_qkv.get() + s.k_off, d_qkv.get() + s.v_off, d_out, d_lse, s.d);
    if (run == 0) {
      first = d_dqkv.host();
    } else {
      const auto second = d_dqkv.host();
      ASSERT_EQ(first.size(), second.size());
      EXPECT_EQ(0, std::memcmp(first.data(), second.data(), sizeof(float) * first.size()));
    }
  }
}


// ---- over KV caches that live apart (Backend::kv_append, attention_cached) ------------------

// Five sequences, each in a cache of its own (the model's layout: 2 layers x 2 rows x max_len
// positions of keys, then of values; each sequence in row 1 of its cache), with 1-3 new rows
// at positions 0 .. 63, the new rows of all of them in one fused projection (N, QKV). The CPU
// (attention_forward per sequence, the host path's call) against the CUDA launches; the
// appended caches must be equal bit for bit (a copy), and attention within kFp32ParityTol.
// The attention table holds a subset (as the model gives it the sequences of few rows only),
// so its row space differs from the output rows.
TEST(CudaParityAttention, CachedRaggedBatch) {
  AJI_CUDA_OR_SKIP(gpu);
  Backend& cpu = kernels::cpu_backend();
  struct Heads {
    int H, KV, hd;
  };
  uint64_t seed = 7000;
  for (const Heads hs : {Heads{4, 2, 64}, Heads{4, 1, 48}, Heads{2, 2, 256}, Heads{3, 3, 8}}) {
    SCOPED_TRACE("H " + std::to_string(hs.H) + " KV " + std::to_string(hs.KV) + " hd " + std::to_string(hs.hd));
    const int KVW = hs.KV * hs.hd, QW = hs.H * hs.hd, QKV = QW + 2 * KVW;
    const int n_layer = 2, batch = 2, max_len = 70, layer = 1;
    const std::vector<int> counts = {1, 3, 1, 2, 1}, pos0 = {0, 5, 17, 40, 63};
    const int n = (int)counts.size();
    const size_t cache_floats = 2 * (size_t)n_layer * batch * max_len * KVW;
    const int64_t layer_stride = (int64_t)batch * max_len * KVW;
    std::vector<std::vector<float>> host_caches;
    std::vector<std::unique_ptr<DeviceBuffer<float>>> dev_caches;
    for (int i = 0; i < n; ++i) {
      host_caches.push_back(random_vector(cache_floats, seed++));
      dev_caches.push_back(std::make_unique<DeviceBuffer<float>>(gpu, host_caches.back()));
    }
    int64_t N = 0;
    for (int c : counts) N += c;
    const std::vector<float> qkv = random_vector((size_t)N * QKV, seed++);
    // the tables: every sequence (append), then sequences 0, 2, 3, 4 (attention)
    auto table = [&](bool device) {
      std::vector<kernels::CachedSeq> t;
      int64_t row = 0;
      for (int i = 0; i < n; ++i) {
        float* base = device ? dev_caches[i]->get() : host_caches[i].data();
        kernels::CachedSeq e;
        e.k = base + (size_t)max_len * KVW;  // row 1 of layer 0
        e.v = e.k + (size_t)n_layer * batch * max_len * KVW;
        e.layer_stride = layer_stride;
        e.row0 = e.first = row;
        e.count = counts[i];
        e.pos0 = pos0[i];
        row += counts[i];
        t.push_back(e);
      }
      int64_t first = 0;
      for (int i : {0, 2, 3, 4}) {
        kernels::CachedSeq e = t[i];
        e.first = first;
        first += e.count;
        t.push_back(e);
      }
      return t;
    };
    const std::vector<kernels::CachedSeq> host_table = table(false), dev_table = table(true);
    const int64_t att_rows = N - counts[1];
    AttnDims d;
    d.H = hs.H, d.KV = hs.KV, d.hd = hs.hd;
    d.q_ts = QKV, d.k_ts = d.v_ts = KVW, d.o_ts = QW;
    d.Tk = 64;  // the most keys a row of the attention table sees
    std::vector<float> out_ref((size_t)N * QW, 0.0f);
    cpu.kv_append(host_table.data(), n, N, layer, qkv.data() + QW, QKV, KVW);
    cpu.attention_cached(out_ref.data(), qkv.data(), host_table.data() + n, n - 1, att_rows, layer, d);

    DeviceBuffer<kernels::CachedSeq> d_table(gpu, dev_table);
    DeviceBuffer<float> d_qkv(gpu, qkv);
    std::vector<float> first;
    for (int run = 0; run < 2; ++run) {
      DeviceBuffer<float> d_out(gpu, std::vector<float>((size_t)N * QW, 0.0f));
      if (run == 0) gpu.kv_append(d_table, n, N, layer, d_qkv.get() + QW, QKV, KVW);
      gpu.attention_cached(d_out, d_qkv, d_table.get() + n, n - 1, att_rows, layer, d);
      const std::vector<float> out = d_out.host();
      EXPECT_LE(rel_l2(out, out_ref), kFp32ParityTol) << "attention_cached";
      // sequence 1 (not in the attention table) left alone
      for (int r = 1; r < 4; ++r)
        for (int e = 0; e < QW; ++e) ASSERT_EQ(out[(size_t)r * QW + e], 0.0f) << "row " << r;
      if (run == 0)
        first = out;
      else
        EXPECT_EQ(0, std::memcmp(first.data(), out.data(), sizeof(float) * out.size())) << "two runs differ";
    }
    for (int i = 0; i < n; ++i) {
      const std::vector<float> got = dev_caches[i]->host();
      EXPECT_EQ(0, std::memcmp(got.data(), host_caches[i].data(), sizeof(float) * cache_floats)) << "cache " << i;
      // the appended rows really are the projection's (the CPU's copy is the reference)
      const float* krow = host_caches[i].data() + (size_t)max_len * KVW + layer * layer_stride + (size_t)pos0[i] * KVW;
      int64_t r0 = 0;
      for (int j = 0; j < i; ++j) r0 += counts[j];
      EXPECT_EQ(0, std::memcmp(krow, qkv.data() + r0 * QKV + QW, sizeof(float) * KVW)) << "cache " << i;
    }
    // the CPU's attention_cached is attention_forward over each sequence's cache
    for (int i : {0, 3}) {
      int64_t r0 = 0;
      for (int j = 0; j < i; ++j) r0 += counts[j];
      AttnDims one = d;
      one.B = 1, one.Tq = counts[i], one.Tk = pos0[i] + counts[i], one.q_pos0 = pos0[i];
      std::vector<float> o((size_t)counts[i] * QW);
      const float* k = host_table[i].k + layer * layer_stride;
      const float* v = host_table[i].v + layer * layer_stride;
      cpu.attention_forward(o.data(), nullptr, qkv.data() + r0 * QKV, k, v, one);
      EXPECT_EQ(0, std::memcmp(o.data(), out_ref.data() + r0 * QW, sizeof(float) * o.size())) << "sequence " << i;
    }
  }
}


// One or two long contexts (a chat at batch 1): too few rows and heads to fill the device, so
// each row's keys are split over several blocks and the partial results combined (the CUDA
// launcher chooses the split from d.Tk; on the emulator's 132 multiprocessors, 8 splits at
// 1000 keys). Against the CPU, and two runs bitwise equal.
TEST(CudaParityAttention, CachedLongContextSplitsKeys) {
  AJI_CUDA_OR_SKIP(gpu);
  Backend& cpu = kernels::cpu_backend();
  const int H = 2, KV = 1, hd = 64, KVW = KV * hd, QW = H * hd, QKV = QW + 2 * KVW, max_len = 1024;
  for (const std::vector<int>& pos0 : {std::vector<int>{999}, std::vector<int>{700, 1000}, std::vector<int>{130}}) {
    SCOPED_TRACE("first position " + std::to_string(pos0[0]));
    const int n = (int)pos0.size();
    std::vector<std::vector<float>> caches;
    std::vector<std::unique_ptr<DeviceBuffer<float>>> dev;
    for (int i = 0; i < n; ++i) {
      caches.push_back(random_vector(2 * (size_t)max_len * KVW, 8000 + i));
      dev.push_back(std::make_unique<DeviceBuffer<float>>(gpu, caches.back()));
    }
    const std::vector<float> qkv = random_vector((size_t)n * QKV, 8100);
    auto table = [&](bool device) {
      std::vector<kernels::CachedSeq> t;
      for (int i = 0; i < n; ++i) {
        kernels::CachedSeq e;
        e.k = device ? dev[i]->get() : caches[i].data();
        e.v = e.k + (size_t)max_len * KVW;
        e.layer_stride = (int64_t)max_len * KVW;
        e.row0 = e.first = i;
        e.count = 1;
        e.pos0 = pos0[i];
        t.push_back(e);
      }
      return t;
    };
    AttnDims d;
    d.H = H, d.KV = KV, d.hd = hd, d.q_ts = QKV, d.k_ts = d.v_ts = KVW, d.o_ts = QW;
    d.Tk = *std::max_element(pos0.begin(), pos0.end()) + 1;
    const auto host_table = table(false);
    std::vector<float> ref = nan_vector((size_t)n * QW);
    cpu.attention_cached(ref.data(), qkv.data(), host_table.data(), n, n, 0, d);
    DeviceBuffer<kernels::CachedSeq> d_table(gpu, table(true));
    DeviceBuffer<float> d_qkv(gpu, qkv);
    std::vector<float> first;
    for (int run = 0; run < 2; ++run) {
      DeviceBuffer<float> d_out(gpu, nan_vector((size_t)n * QW));
      gpu.attention_cached(d_out, d_qkv, d_table, n, n, 0, d);
      const auto out = d_out.host();
      EXPECT_LE(rel_l2(out, ref), kFp32ParityTol);
      if (run == 0)
        first = out;
      else
        EXPECT_EQ(0, std::memcmp(first.data(), out.data(), sizeof(float) * out.size())) << "two runs differ";
    }
  }
}

}  // namespace
}  // namespace aji::test
