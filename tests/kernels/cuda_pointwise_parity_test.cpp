// The CUDA backend's norms, element-wise ops, embeddings, RoPE, fused softmax-cross-entropy
// and optimizer ops (kernels/cuda/norms.cu, pointwise.cu, loss.cu, optim.cu) against the CPU
// backend on the same random inputs: overwrite outputs poisoned with NaN on the device first
// (an element an op fails to write shows), += outputs filled with the same random values on
// both sides; every output within kFp32ParityTol (relative L2), AdamW bit for bit, the sums of
// squares within 1e-12 of a double sum and the same bits run to run. Skipped (with the reason)
// where there is no CUDA device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "aji/base/error.h"
#include "aji/kernels/backend.h"
#include "aji/kernels/cpu/ops.h"
#include "kernels/backend_parity.h"

namespace aji {
namespace {

using kernels::AdamWScalars;
using kernels::Backend;
using test::DeviceBuffer;
using test::kFp32ParityTol;
using test::nan_vector;
using test::rel_l2;

Backend& cpu() { return kernels::cpu_backend(); }

std::vector<float> randn(size_t n, uint32_t seed, float stddev = 1.0f, float mean = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(mean, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

std::vector<float> uniform(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

std::vector<int32_t> random_ints(size_t n, uint32_t seed, int lo, int hi) {  // [lo, hi]
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = d(rng);
  return v;
}

#define EXPECT_PARITY(gpu_vec, cpu_vec) EXPECT_LE(rel_l2((gpu_vec), (cpu_vec)), kFp32ParityTol) << #cpu_vec

// ---- norms -----------------------------------------------------------------------------------

void layernorm_case(Backend& gpu, int64_t N, int C, bool with_bias, uint32_t seed) {
  SCOPED_TRACE("LayerNorm N=" + std::to_string(N) + " C=" + std::to_string(C) + (with_bias ? " bias" : " no bias"));
  const size_t nc = (size_t)(N * C);
  const float eps = 1e-5f;
  const auto inp = randn(nc, seed, 2.0f, 0.5f), w = randn(C, seed + 1, 0.2f, 1.0f), b = randn(C, seed + 2, 0.1f);
  // forward
  std::vector<float> out(nc), mean(N), rstd(N);
  cpu().layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), w.data(), with_bias ? b.data() : nullptr,
                          N, C, eps);
  DeviceBuffer<float> d_inp(gpu, inp), d_w(gpu, w), d_b(gpu, b);
  DeviceBuffer<float> d_out(gpu, nan_vector(nc)), d_mean(gpu, nan_vector(N)), d_rstd(gpu, nan_vector(N));
  gpu.layernorm_forward(d_out, d_mean, d_rstd, d_inp, d_w, with_bias ? d_b.get() : nullptr, N, C, eps);
  EXPECT_PARITY(d_out.host(), out);
  EXPECT_PARITY(d_mean.host(), mean);
  EXPECT_PARITY(d_rstd.host(), rstd);
  // forward without the saved statistics
  DeviceBuffer<float> d_out2(gpu, nan_vector(nc));
  gpu.layernorm_forward(d_out2, nullptr, nullptr, d_inp, d_w, with_bias ? d_b.get() : nullptr, N, C, eps);
  EXPECT_PARITY(d_out2.host(), out);

  // backward: dinp, dweight, dbias += (prefilled alike); the CPU's mean and rstd on both sides
  const auto dout = randn(nc, seed + 3);
  const auto dinp0 = randn(nc, seed + 4, 0.25f), dw0 = randn(C, seed + 5, 0.25f), db0 = randn(C, seed + 6, 0.25f);
  std::vector<float> dinp = dinp0, dw = dw0, db = db0;
  cpu().layernorm_backward(dinp.data(), dw.data(), with_bias ? db.data() : nullptr, dout.data(), inp.data(), w.data(),
                           mean.data(), rstd.data(), N, C);
  DeviceBuffer<float> d_dout(gpu, dout), d_m(gpu, mean), d_r(gpu, rstd);
  std::vector<float> first_dinp, first_dw, first_db;
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<float> d_dinp(gpu, dinp0), d_dw(gpu, dw0), d_db(gpu, db0);
    gpu.layernorm_backward(d_dinp, d_dw, with_bias ? d_db.get() : nullptr, d_dout, d_inp, d_w, d_m, d_r, N, C);
    const auto g_dinp = d_dinp.host(), g_dw = d_dw.host(), g_db = d_db.host();
    EXPECT_PARITY(g_dinp, dinp);
    EXPECT_PARITY(g_dw, dw);
    EXPECT_PARITY(g_db, db);  // without bias: untouched, equal to db0 on both sides
    if (run == 0) {
      first_dinp = g_dinp, first_dw = g_dw, first_db = g_db;
    } else {  // deterministic: the same bits run to run
      EXPECT_EQ(0, std::memcmp(first_dinp.data(), g_dinp.data(), nc * sizeof(float)));
      EXPECT_EQ(0, std::memcmp(first_dw.data(), g_dw.data(), C * sizeof(float)));
      EXPECT_EQ(0, std::memcmp(first_db.data(), g_db.data(), C * sizeof(float)));
    }
  }
}

TEST(CudaParityNorms, LayerNormGpt2) {
  AJI_CUDA_OR_SKIP(gpu);
  layernorm_case(gpu, 37, 771, true, 100);   // C not a multiple of 32 or 4
  layernorm_case(gpu, 64, 768, true, 110);   // GPT-2 small's width
  layernorm_case(gpu, 1, 5, true, 120);      // one row, fewer channels than a warp
  layernorm_case(gpu, 23, 130, false, 130);  // no bias
  layernorm_case(gpu, 12000, 40, true, 140); // several rows per column chunk (dweight, dbias)
}

void rmsnorm_case(Backend& gpu, int64_t N, int C, uint32_t seed) {
  SCOPED_TRACE("RMSNorm N=" + std::to_string(N) + " C=" + std::to_string(C));
  const size_t nc = (size_t)(N * C);
  const float eps = 1e-6f;
  const auto inp = randn(nc, seed, 1.5f, 0.3f), w = randn(C, seed + 1, 0.2f, 1.0f);
  std::vector<float> out(nc), rstd(N);
  cpu().rmsnorm_forward(out.data(), rstd.data(), inp.data(), w.data(), N, C, eps);
  DeviceBuffer<float> d_inp(gpu, inp), d_w(gpu, w), d_out(gpu, nan_vector(nc)), d_rstd(gpu, nan_vector(N));
  gpu.rmsnorm_forward(d_out, d_rstd, d_inp, d_w, N, C, eps);
  EXPECT_PARITY(d_out.host(), out);
  EXPECT_PARITY(d_rstd.host(), rstd);
  DeviceBuffer<float> d_out2(gpu, nan_vector(nc));
  gpu.rmsnorm_forward(d_out2, nullptr, d_inp, d_w, N, C, eps);  // rstd may be null
  EXPECT_PARITY(d_out2.host(), out);

  const auto dout = randn(nc, seed + 3);
  const auto dinp0 = randn(nc, seed + 4, 0.25f), dw0 = randn(C, seed + 5, 0.25f);
  std::vector<float> dinp = dinp0, dw = dw0;
  cpu().rmsnorm_backward(dinp.data(), dw.data(), dout.data(), inp.data(), w.data(), rstd.data(), N, C);
  DeviceBuffer<float> d_dout(gpu, dout), d_r(gpu, rstd), d_dinp(gpu, dinp0), d_dw(gpu, dw0);
  gpu.rmsnorm_backward(d_dinp, d_dw, d_dout, d_inp, d_w, d_r, N, C);
  EXPECT_PARITY(d_dinp.host(), dinp);
  EXPECT_PARITY(d_dw.host(), dw);
}

TEST(CudaParityNorms, RmsNormLlama) {
  AJI_CUDA_OR_SKIP(gpu);
  rmsnorm_case(gpu, 33, 1000, 200);
  rmsnorm_case(gpu, 16, 2048, 210);
  rmsnorm_case(gpu, 1, 7, 220);
  rmsnorm_case(gpu, 12000, 36, 230);
}

// QK-norm over the n_heads heads at column `col` of rows of `stride` floats; the other columns
// of the buffer must come back as they were.
void head_rmsnorm_case(Backend& gpu, int64_t N, int n_heads, int hd, int col, int64_t stride, uint32_t seed) {
  SCOPED_TRACE("head RMSNorm N=" + std::to_string(N) + " heads=" + std::to_string(n_heads) +
               " hd=" + std::to_string(hd) + " col=" + std::to_string(col) + " stride=" + std::to_string(stride));
  ASSERT_LE(col + (int64_t)n_heads * hd, stride);
  const size_t size = (size_t)(N * stride);
  const float eps = 1e-6f;
  const auto x0 = randn(size, seed, 1.2f, 0.2f), w = randn(hd, seed + 1, 0.2f, 1.0f);
  // forward, in place
  std::vector<float> x = x0;
  cpu().head_rmsnorm_forward(x.data(), w.data(), N, stride, col, n_heads, hd, eps);
  DeviceBuffer<float> d_x(gpu, x0), d_w(gpu, w);
  gpu.head_rmsnorm_forward(d_x, d_w, N, stride, col, n_heads, hd, eps);
  EXPECT_PARITY(d_x.host(), x);
  // backward: d in place (the whole buffer random: other columns untouched), dweight +=
  const auto d0 = randn(size, seed + 2), dw0 = randn(hd, seed + 3, 0.25f);
  std::vector<float> d = d0, dw = dw0;
  cpu().head_rmsnorm_backward(d.data(), dw.data(), x0.data(), w.data(), N, stride, col, n_heads, hd, eps);
  DeviceBuffer<float> d_d(gpu, d0), d_dw(gpu, dw0), d_x0(gpu, x0);
  gpu.head_rmsnorm_backward(d_d, d_dw, d_x0, d_w, N, stride, col, n_heads, hd, eps);
  EXPECT_PARITY(d_d.host(), d);
  EXPECT_PARITY(d_dw.host(), dw);
}

TEST(CudaParityNorms, HeadRmsNormQkNorm) {
  AJI_CUDA_OR_SKIP(gpu);
  // k heads after 4 q heads of a fused qkv row, odd stride
  head_rmsnorm_case(gpu, 19, 4, 64, 4 * 64 + 3, 3 * 4 * 64 + 7, 300);
  head_rmsnorm_case(gpu, 1, 3, 20, 0, 3 * 20, 310);        // hd below a warp, packed heads
  head_rmsnorm_case(gpu, 7, 2, 128, 5, 2 * 128 + 11, 320);  // Qwen3-like hd
  head_rmsnorm_case(gpu, 3000, 8, 36, 8 * 36, 3 * 8 * 36, 330);  // many heads: several rows per chunk
}

// ---- embeddings ------------------------------------------------------------------------------

void embedding_case(Backend& gpu, int B, int T, int C, int V, int max_pos, int max_token, bool with_wpe, int pos0,
                    bool with_positions, uint32_t seed) {
  SCOPED_TRACE("embedding B=" + std::to_string(B) + " T=" + std::to_string(T) + " C=" + std::to_string(C) +
               (with_wpe ? " wpe" : "") + " pos0=" + std::to_string(pos0) + (with_positions ? " positions" : ""));
  const int64_t N = (int64_t)B * T;
  const size_t nc = (size_t)(N * C);
  const auto wte = randn((size_t)V * C, seed), wpe = randn((size_t)max_pos * C, seed + 1, 0.1f);
  const auto tokens = random_ints(N, seed + 2, 0, max_token);  // a small range: tokens repeat
  std::vector<int32_t> positions(N);
  {  // packed rows: segments restarting at 0
    std::mt19937 rng(seed + 3);
    for (int b = 0; b < B; ++b) {
      int p = 0;
      for (int t = 0; t < T; ++t) {
        if (rng() % 5 == 0) p = 0;
        positions[(size_t)b * T + t] = p++;
      }
    }
  }
  const int32_t* pos_h = with_positions ? positions.data() : nullptr;
  DeviceBuffer<int32_t> d_tokens(gpu, tokens), d_positions(gpu, positions);
  const int32_t* pos_d = with_positions ? d_positions.get() : nullptr;
  DeviceBuffer<float> d_wte(gpu, wte), d_wpe(gpu, wpe);
  // forward
  std::vector<float> out(nc);
  cpu().embedding_forward(out.data(), tokens.data(), wte.data(), with_wpe ? wpe.data() : nullptr, B, T, C, pos0,
                          pos_h);
  DeviceBuffer<float> d_out(gpu, nan_vector(nc));
  gpu.embedding_forward(d_out, d_tokens, d_wte, with_wpe ? d_wpe.get() : nullptr, B, T, C, pos0, pos_d);
  EXPECT_PARITY(d_out.host(), out);
  // backward: scatter-add into prefilled tables
  const auto dout = randn(nc, seed + 4);
  const auto dwte0 = randn((size_t)V * C, seed + 5, 0.25f), dwpe0 = randn((size_t)max_pos * C, seed + 6, 0.25f);
  std::vector<float> dwte = dwte0, dwpe = dwpe0;
  cpu().embedding_backward(dwte.data(), with_wpe ? dwpe.data() : nullptr, dout.data(), tokens.data(), B, T, C, pos_h);
  DeviceBuffer<float> d_dout(gpu, dout), d_dwte(gpu, dwte0), d_dwpe(gpu, dwpe0);
  gpu.embedding_backward(d_dwte, with_wpe ? d_dwpe.get() : nullptr, d_dout, d_tokens, B, T, C, pos_d);
  EXPECT_PARITY(d_dwte.host(), dwte);
  EXPECT_PARITY(d_dwpe.host(), dwpe);  // without wpe: untouched on both sides
}

TEST(CudaParityPointwise, Embedding) {
  AJI_CUDA_OR_SKIP(gpu);
  // Llama: no wpe
  embedding_case(gpu, 3, 11, 67, 1000, 40, 30, false, 0, false, 400);
  // GPT-2: wpe at pos0 + t, at pos0 > 0 (decoding), and at packed positions
  embedding_case(gpu, 3, 11, 67, 1000, 40, 30, true, 0, false, 410);
  embedding_case(gpu, 2, 9, 67, 1000, 40, 30, true, 7, false, 420);
  embedding_case(gpu, 3, 11, 67, 1000, 40, 999, true, 0, true, 430);
  // one row; a wide model with more tokens than the scatter's buckets
  embedding_case(gpu, 1, 1, 5, 10, 4, 9, true, 3, false, 440);
  embedding_case(gpu, 4, 64, 768, 1000, 64, 200, true, 0, false, 450);
}

// ---- activations -----------------------------------------------------------------------------

TEST(CudaParityPointwise, Gelu) {
  AJI_CUDA_OR_SKIP(gpu);
  for (const int64_t n : {int64_t{10007}, int64_t{1}, int64_t{1 << 16}}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    auto inp = randn((size_t)n, 500 + (uint32_t)n, 3.0f);
    if (n > 4) inp[0] = 12.0f, inp[1] = -12.0f, inp[2] = 0.0f, inp[3] = -0.5f;
    std::vector<float> out((size_t)n);
    cpu().gelu_forward(out.data(), inp.data(), n);
    DeviceBuffer<float> d_inp(gpu, inp), d_out(gpu, nan_vector((size_t)n));
    gpu.gelu_forward(d_out, d_inp, n);
    EXPECT_PARITY(d_out.host(), out);

    const auto dout = randn((size_t)n, 510 + (uint32_t)n);
    std::vector<float> dinp((size_t)n);
    cpu().gelu_backward(dinp.data(), inp.data(), dout.data(), n);
    DeviceBuffer<float> d_dout(gpu, dout), d_dinp(gpu, nan_vector((size_t)n));
    gpu.gelu_backward(d_dinp, d_inp, d_dout, n);
    EXPECT_PARITY(d_dinp.host(), dinp);
  }
}

TEST(CudaParityPointwise, SwiGlu) {
  AJI_CUDA_OR_SKIP(gpu);
  const std::pair<int64_t, int> shapes[] = {{13, 301}, {1, 1}, {8, 1376}};
  for (const auto& [N, F] : shapes) {
    SCOPED_TRACE("N=" + std::to_string(N) + " F=" + std::to_string(F));
    const size_t nf = (size_t)(N * F);
    const auto gate_up = randn(2 * nf, 600 + (uint32_t)F, 2.5f);
    std::vector<float> out(nf);
    cpu().swiglu_forward(out.data(), gate_up.data(), N, F);
    DeviceBuffer<float> d_gu(gpu, gate_up), d_out(gpu, nan_vector(nf));
    gpu.swiglu_forward(d_out, d_gu, N, F);
    EXPECT_PARITY(d_out.host(), out);

    const auto dout = randn(nf, 610 + (uint32_t)F);
    std::vector<float> dgu(2 * nf);
    cpu().swiglu_backward(dgu.data(), dout.data(), gate_up.data(), N, F);
    DeviceBuffer<float> d_dout(gpu, dout), d_dgu(gpu, nan_vector(2 * nf));
    gpu.swiglu_backward(d_dgu, d_dout, d_gu, N, F);
    EXPECT_PARITY(d_dgu.host(), dgu);
  }
}

// ---- RoPE ------------------------------------------------------------------------------------

struct RopeCase {
  int B, T, n_heads, hd, col;
  int64_t stride;
  int pos0;
  bool inverse, with_positions, with_src;
};

void rope_case(Backend& gpu, const RopeCase& c, uint32_t seed) {
  SCOPED_TRACE("RoPE B=" + std::to_string(c.B) + " T=" + std::to_string(c.T) + " heads=" + std::to_string(c.n_heads) +
               " hd=" + std::to_string(c.hd) + " pos0=" + std::to_string(c.pos0) + (c.inverse ? " inverse" : "") +
               (c.with_positions ? " positions" : "") + (c.with_src ? " src" : ""));
  const int max_pos = 64;
  const int half = c.hd / 2;
  std::vector<float> cos_t((size_t)max_pos * half), sin_t((size_t)max_pos * half);
  kernels::cpu::rope_table(cos_t.data(), sin_t.data(), max_pos, c.hd, 10000.0f);
  const int64_t N = (int64_t)c.B * c.T;
  const size_t size = (size_t)(N * c.stride);
  const auto x0 = randn(size, seed), src = randn(size, seed + 1);
  const auto positions = random_ints(N, seed + 2, 0, max_pos - 1);
  std::vector<float> x = x0;
  cpu().rope_apply(x.data(), cos_t.data(), sin_t.data(), c.B, c.T, c.stride, c.col, c.n_heads, c.hd, c.pos0, c.inverse,
                   c.with_positions ? positions.data() : nullptr, c.with_src ? src.data() : nullptr);
  DeviceBuffer<float> d_x(gpu, x0), d_src(gpu, src), d_cos(gpu, cos_t), d_sin(gpu, sin_t);
  DeviceBuffer<int32_t> d_pos(gpu, positions);
  gpu.rope_apply(d_x, d_cos, d_sin, c.B, c.T, c.stride, c.col, c.n_heads, c.hd, c.pos0, c.inverse,
                 c.with_positions ? d_pos.get() : nullptr, c.with_src ? d_src.get() : nullptr);
  EXPECT_PARITY(d_x.host(), x);  // the whole buffer: the other columns unchanged
}

TEST(CudaParityPointwise, Rope) {
  AJI_CUDA_OR_SKIP(gpu);
  //                 B  T  heads hd  col      stride          pos0 inverse positions src
  const RopeCase cases[] = {
      {2, 9, 3, 16, 3 * 16 + 1, 5 * 3 * 16 + 3, 0, false, false, false},   // forward
      {2, 9, 3, 16, 3 * 16 + 1, 5 * 3 * 16 + 3, 0, true, false, false},    // inverse (backward)
      {1, 5, 3, 16, 0, 3 * 16, 37, false, false, false},                   // pos0 > 0 (decoding)
      {3, 7, 2, 128, 2 * 128, 3 * 2 * 128, 0, false, true, false},         // packed positions
      {3, 7, 2, 128, 2 * 128, 3 * 2 * 128, 0, true, true, false},          // positions, inverse
      {2, 9, 3, 16, 3 * 16 + 1, 5 * 3 * 16 + 3, 2, false, false, true},    // src out of place
      {2, 6, 4, 64, 4 * 64, 9 * 64, 0, true, true, true},                  // src, positions, inverse
  };
  uint32_t seed = 700;
  for (const RopeCase& c : cases) rope_case(gpu, c, seed += 10);
}

// ---- residual, scale -------------------------------------------------------------------------

TEST(CudaParityPointwise, AddInplaceAndScale) {
  AJI_CUDA_OR_SKIP(gpu);
  for (const int64_t n : {int64_t{12345}, int64_t{1}}) {
    const auto a0 = randn((size_t)n, 800), b = randn((size_t)n, 801);
    std::vector<float> a = a0;
    cpu().add_inplace(a.data(), b.data(), n);
    DeviceBuffer<float> d_a(gpu, a0), d_b(gpu, b);
    gpu.add_inplace(d_a, d_b, n);
    EXPECT_EQ(d_a.host(), a);  // one rounded add per element: the same bits

    std::vector<float> s = a0;
    cpu().scale(s.data(), 0.37f, (size_t)n);
    DeviceBuffer<float> d_s(gpu, a0);
    gpu.scale(d_s, 0.37f, (size_t)n);
    EXPECT_EQ(d_s.host(), s);
  }
}

// ---- collectives (NCCL) -------------------------------------------------------------------------

// The device's collective (backend.h; kernels/cuda/nccl.cpp): a communicator of one rank (all
// one GPU allows: NCCL refuses two ranks on one GPU), joined with the id it made; its
// allreduce_mean leaves the data as it is, in place, and a second join is refused. (On the
// emulator the stand-in NCCL of tests/kernels/cuda_emu/nccl_emu.cpp; several ranks need
// several GPUs: never run.)
TEST(CudaParityCollective, OneRankJoinsNcclAndAveragesInPlace) {
  AJI_CUDA_OR_SKIP(gpu);
  std::string why;
  const std::string id = gpu.collective_id(&why);
  if (id.empty()) GTEST_SKIP() << "no NCCL here: " << why;
  EXPECT_EQ(id.size(), 128u) << "NCCL_UNIQUE_ID_BYTES";
  EXPECT_THROW(gpu.join_collective(id.substr(1), 0, 1), Error);  // a truncated id
  EXPECT_THROW(gpu.join_collective(id, 1, 1), Error);             // a rank outside the job
  if (!gpu.in_collective()) gpu.join_collective(id, 0, 1);
  ASSERT_TRUE(gpu.in_collective());
  EXPECT_THROW(gpu.join_collective(id, 0, 1), Error);
  const auto x = randn(10007, 900);
  DeviceBuffer<float> d_x(gpu, x);
  gpu.allreduce_mean(d_x, x.size());
  EXPECT_EQ(d_x.host(), x);  // the mean over one rank
  gpu.allreduce_mean(d_x, 0);
  EXPECT_EQ(d_x.host(), x);
}

// The CPU's: the plain CPU has none (its trainers reduce their host buffers), cpu:separate
// joins the host communicator, whose allreduce_mean works on its memory in place.
TEST(CudaParityCollective, CpuDevicesCollectives) {
  std::string why;
  EXPECT_EQ(cpu().collective_id(&why), "");
  EXPECT_FALSE(why.empty());
  const auto sep = kernels::make_separate_cpu_backend();
  const std::string id = sep->collective_id(&why);
  ASSERT_FALSE(id.empty());
  EXPECT_THROW(sep->join_collective(id, 0, 2), Error);  // not the host communicator's job
  EXPECT_THROW(sep->join_collective("x", 0, 1), Error);
  sep->join_collective(id, 0, 1);
  ASSERT_TRUE(sep->in_collective());
  const auto x = randn(333, 901);
  DeviceBuffer<float> d_x(*sep, x);
  sep->allreduce_mean(d_x, x.size());
  EXPECT_EQ(d_x.host(), x);
}

// ---- softmax cross-entropy -------------------------------------------------------------------

enum class Weights { kNone, kMixed };

void xent_case(Backend& gpu, int64_t n, int V, Weights wmode, float grad_scale, float inv_temperature,
               bool with_losses, uint32_t seed) {
  SCOPED_TRACE("softmax-xent n=" + std::to_string(n) + " V=" + std::to_string(V) +
               (wmode == Weights::kMixed ? " weights" : "") + " grad_scale=" + std::to_string(grad_scale) +
               " inv_temperature=" + std::to_string(inv_temperature) + (with_losses ? "" : " no losses"));
  const size_t nv = (size_t)(n * V);
  const auto logits0 = randn(nv, seed, 3.0f);
  auto targets = random_ints(n, seed + 1, 0, V - 1);
  std::vector<float> weights = uniform(n, seed + 2, 0.2f, 2.0f);
  for (int64_t r = 0; r < n; ++r) {
    if (r % 7 == 3) targets[r] = -1;  // ignored
    if (r % 5 == 1) weights[r] = 0.0f;
    if (r % 4 == 2) weights[r] = -weights[r];  // signed per-token coefficients
  }
  const float* w_h = wmode == Weights::kMixed ? weights.data() : nullptr;
  std::vector<float> logits = logits0, losses(n, 0.0f);
  const double total = cpu().softmax_xent_backward_inplace(logits.data(), with_losses ? losses.data() : nullptr,
                                                           targets.data(), w_h, grad_scale, n, V, inv_temperature);
  DeviceBuffer<int32_t> d_targets(gpu, targets);
  DeviceBuffer<float> d_weights(gpu, weights);
  const float* w_d = wmode == Weights::kMixed ? d_weights.get() : nullptr;
  double first = 0;
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<float> d_logits(gpu, logits0), d_losses(gpu, nan_vector(n));
    const double g_total = gpu.softmax_xent_backward_inplace(d_logits, with_losses ? d_losses.get() : nullptr,
                                                             d_targets, w_d, grad_scale, n, V, inv_temperature);
    const auto g_logits = d_logits.host();
    EXPECT_PARITY(g_logits, logits);
    if (with_losses) {
      EXPECT_PARITY(d_losses.host(), losses);
    }
    // the total: relative to the sum of |w_i loss_i| (signed weights may cancel)
    double mag = 0;
    for (int64_t r = 0; r < n; ++r) mag += std::fabs((w_h ? w_h[r] : 1.0f) * (double)losses[r]);
    if (!with_losses) mag = std::fabs(total);
    EXPECT_LE(std::fabs(g_total - total), 1e-5 * mag + 1e-12) << "total " << g_total << " vs CPU " << total;
    // ignored rows: exactly zero gradient
    for (int64_t r = 0; r < n; ++r)
      if (targets[r] < 0 || (w_h && w_h[r] == 0.0f)) {
        for (int i = 0; i < V; ++i) ASSERT_EQ(g_logits[(size_t)r * V + i], 0.0f) << "ignored row " << r;
      }
    if (run == 0)
      first = g_total;
    else
      EXPECT_EQ(0, std::memcmp(&first, &g_total, sizeof(double))) << "total differs run to run";
  }
}

TEST(CudaParityLoss, SoftmaxCrossEntropy) {
  AJI_CUDA_OR_SKIP(gpu);
  // ignored rows (target -1), zero and negative weights, V not a power of two
  xent_case(gpu, 29, 1000, Weights::kMixed, 1.0f / 29, 1.0f, true, 900);
  // temperature != 1, grad_scale, no weights, no losses
  xent_case(gpu, 17, 1000, Weights::kNone, 0.37f, 0.7f, false, 910);
  xent_case(gpu, 17, 1000, Weights::kMixed, 2.0f, 1.6f, true, 920);
  // GPT-2's vocabulary: rows longer than a block's stride
  xent_case(gpu, 4, 50257, Weights::kNone, 1.0f, 1.0f, true, 930);
  // one row of one logit
  xent_case(gpu, 1, 1, Weights::kNone, 1.0f, 1.0f, true, 940);
}

// ---- optimizer -------------------------------------------------------------------------------

// The scalars as train/optimizer.cpp AdamW::step computes them at step t.
AdamWScalars adamw_scalars(int64_t t, float lr, float weight_decay, bool decay) {
  AdamWScalars s;
  s.beta1 = 0.9f, s.beta2 = 0.95f, s.eps = 1e-8f;
  const double bc1 = 1.0 - std::pow(static_cast<double>(s.beta1), static_cast<double>(t));
  const double bc2 = 1.0 - std::pow(static_cast<double>(s.beta2), static_cast<double>(t));
  s.step_size = static_cast<float>(lr / bc1);
  s.bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  s.one_minus_beta1 = 1.0f - s.beta1;
  s.one_minus_beta2 = 1.0f - s.beta2;
  s.decay_mul = decay ? static_cast<float>(1.0 - static_cast<double>(lr) * weight_decay) : 1.0f;
  return s;
}

// One element of the CPU's AdamW as the project's build computes it (GCC contracts three of
// its expressions into FMAs; kernels/cuda/optim.cu mirrors them): explicit std::fma here, and no
// a * b + c left for the compiler to contract, so this is the same bits with any flags.
void adamw_reference(float& p, float& m, float& v, float g, const AdamWScalars& s) {
  const float gs1 = s.one_minus_beta1 * g;
  const float mi = std::fma(m, s.beta1, gs1);
  const float g2 = g * g;
  const float gs2 = s.one_minus_beta2 * g2;
  const float vi = std::fma(v, s.beta2, gs2);
  m = mi;
  v = vi;
  const float denom = std::sqrt(vi) / s.bc2_sqrt + s.eps;
  const float upd = (-s.step_size * mi) / denom;
  p = std::fma(p, s.decay_mul, upd);
}

// Elements whose bits differ, with the first of them described.
size_t bit_mismatches(const std::vector<float>& a, const std::vector<float>& b, std::string* first) {
  size_t count = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) == 0) continue;
    if (count++ == 0 && first) {
      std::ostringstream os;
      os << "[" << i << "] " << a[i] << " vs " << b[i];
      *first = os.str();
    }
  }
  return count + (a.size() != b.size() ? 1 : 0);
}

TEST(CudaParityOptim, AdamWBitwise) {
  AJI_CUDA_OR_SKIP(gpu);
  const size_t n = 100003;
  for (const bool decay : {true, false}) {
    SCOPED_TRACE(decay ? "decayed range" : "range without decay");
    const AdamWScalars s = adamw_scalars(5, 6e-4f, 0.1f, decay);
    const auto p0 = randn(n, 1000), m0 = randn(n, 1001, 1e-3f), v0 = uniform(n, 1002, 0.0f, 1e-4f);
    auto g = randn(n, 1003, 1e-2f);
    for (size_t i = 0; i < n; i += 97) g[i] = 0.0f;
    // the CPU backend
    std::vector<float> p_c = p0, m_c = m0, v_c = v0;
    cpu().adamw_update(p_c.data(), g.data(), m_c.data(), v_c.data(), n, s);
    // the explicit reference
    std::vector<float> p_r = p0, m_r = m0, v_r = v0;
    for (size_t i = 0; i < n; ++i) adamw_reference(p_r[i], m_r[i], v_r[i], g[i], s);
    // the GPU, two steps' worth of calls to check m and v carry over as on the CPU
    DeviceBuffer<float> d_p(gpu, p0), d_g(gpu, g), d_m(gpu, m0), d_v(gpu, v0);
    gpu.adamw_update(d_p, d_g, d_m, d_v, n, s);
    const auto p_g = d_p.host(), m_g = d_m.host(), v_g = d_v.host();
    std::string first;
    EXPECT_EQ(0u, bit_mismatches(p_g, p_c, &first)) << "params, GPU vs CPU backend: " << first;
    EXPECT_EQ(0u, bit_mismatches(m_g, m_c, &first)) << "m, GPU vs CPU backend: " << first;
    EXPECT_EQ(0u, bit_mismatches(v_g, v_c, &first)) << "v, GPU vs CPU backend: " << first;
    // Which side moved, if the above fail: the GPU against the FMA pattern it mirrors, and the
    // CPU build against it (a CPU built with another contraction fails only the second).
    EXPECT_EQ(0u, bit_mismatches(p_g, p_r, &first)) << "params, GPU vs reference: " << first;
    EXPECT_EQ(0u, bit_mismatches(p_c, p_r, &first))
        << "params, CPU backend vs reference (the CPU build contracts AdamW differently from what "
           "kernels/cuda/optim.cu kCpuFusesAdamW mirrors): "
        << first;
    // a second step from the updated state
    const AdamWScalars s2 = adamw_scalars(6, 6e-4f, 0.1f, decay);
    cpu().adamw_update(p_c.data(), g.data(), m_c.data(), v_c.data(), n, s2);
    gpu.adamw_update(d_p, d_g, d_m, d_v, n, s2);
    EXPECT_EQ(0u, bit_mismatches(d_p.host(), p_c, &first)) << "params after step 2: " << first;
    EXPECT_EQ(0u, bit_mismatches(d_m.host(), m_c, &first)) << "m after step 2: " << first;
    EXPECT_EQ(0u, bit_mismatches(d_v.host(), v_c, &first)) << "v after step 2: " << first;
  }
}

TEST(CudaParityOptim, SumSquares) {
  AJI_CUDA_OR_SKIP(gpu);
  for (const size_t n : {size_t{1000003}, size_t{1}, size_t{4097}, size_t{0}}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    const auto x = randn(n, 1100 + (uint32_t)n, 0.3f);
    long double ref = 0;
    for (float f : x) ref += (long double)f * f;
    DeviceBuffer<float> d_x(gpu, x);
    const double a = gpu.sum_squares(d_x, n), b = gpu.sum_squares(d_x, n);
    EXPECT_LE(std::fabs(a - (double)ref), 1e-12 * (double)ref) << a << " vs " << (double)ref;
    EXPECT_EQ(0, std::memcmp(&a, &b, sizeof(double))) << "sum of squares differs run to run";
    const double c = cpu().sum_squares(x.data(), n);
    EXPECT_LE(std::fabs(a - c), 1e-12 * c);
    if (n == 1) {
      EXPECT_EQ(a, (double)x[0] * x[0]);
    }
    if (n == 0) {
      EXPECT_EQ(a, 0.0);
    }
  }
}

// ---- empty inputs ----------------------------------------------------------------------------

TEST(CudaParityPointwise, EmptyInputsQueueNothing) {
  AJI_CUDA_OR_SKIP(gpu);
  DeviceBuffer<float> f(gpu, std::vector<float>(64, 1.0f));
  DeviceBuffer<int32_t> i(gpu, std::vector<int32_t>(8, 0));
  gpu.layernorm_forward(f, f, f, f, f, f, 0, 8, 1e-5f);
  gpu.layernorm_backward(f, f, f, f, f, f, f, f, 0, 8);
  gpu.rmsnorm_forward(f, f, f, f, 0, 8, 1e-5f);
  gpu.rmsnorm_backward(f, f, f, f, f, f, 0, 8);
  gpu.head_rmsnorm_forward(f, f, 0, 8, 0, 1, 8, 1e-5f);
  gpu.head_rmsnorm_backward(f, f, f, f, 0, 8, 0, 1, 8, 1e-5f);
  gpu.embedding_forward(f, i, f, f, 0, 4, 8, 0, nullptr);
  gpu.embedding_backward(f, f, f, i, 0, 4, 8, nullptr);
  gpu.gelu_forward(f, f, 0);
  gpu.gelu_backward(f, f, f, 0);
  gpu.swiglu_forward(f, f, 0, 8);
  gpu.swiglu_backward(f, f, f, 0, 8);
  gpu.rope_apply(f, f, f, 0, 4, 8, 0, 1, 8, 0, false, nullptr, nullptr);
  gpu.add_inplace(f, f, 0);
  gpu.scale(f, 2.0f, 0);
  gpu.adamw_update(f, f, f, f, 0, adamw_scalars(1, 1e-3f, 0.1f, true));
  EXPECT_EQ(gpu.softmax_xent_backward_inplace(f, f, i, nullptr, 1.0f, 0, 8, 1.0f), 0.0);
  EXPECT_EQ(gpu.sum_squares(f, 0), 0.0);
  gpu.synchronize();
  EXPECT_EQ(f.host(), std::vector<float>(64, 1.0f));  // nothing written
}

}  // namespace
}  // namespace aji
