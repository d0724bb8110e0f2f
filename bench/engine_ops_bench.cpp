// Micro-benchmarks of the engine's non-GEMM ops at the shapes of one `tiny` layer
// (B=8, T=256, C=384, 6 heads of 64, SwiGLU 1024, vocab 8192); attention also at T=1024:
//   build/bench/engine_ops_bench [--benchmark_filter=Attention]
// Run with AJI_THREADS=1 (or 2) to fix the thread count.
#include <benchmark/benchmark.h>

#include <vector>

#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "aji/kernels/cpu/lowbit.h"
#include "aji/kernels/cpu/ops.h"
#include "aji/kernels/cpu/vec_math.h"

namespace ops = aji::kernels::cpu;

namespace {

constexpr int B = 8, T = 256, C = 384, H = 6, KV = 6, HD = 64, F = 1024, V = 8192;
constexpr int64_t N = (int64_t)B * T;

std::vector<float> randn(size_t n, uint64_t seed) {
  aji::Rng r(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = (float)r.normal();
  return v;
}

// The tiny layer's attention at sequence length seq over the same 2048 tokens (B = 2048/seq).
ops::AttnDims dims(int seq) {
  ops::AttnDims d;
  const int qkv = (H + 2 * KV) * HD;
  d.B = (int)(N / seq), d.Tq = seq, d.Tk = seq, d.H = H, d.KV = KV, d.hd = HD;
  d.q_bs = d.k_bs = d.v_bs = (int64_t)seq * qkv;
  d.q_ts = d.k_ts = d.v_ts = qkv;
  d.o_bs = (int64_t)seq * H * HD, d.o_ts = H * HD;
  return d;
}

// QK^T and PV over the causal half, per product
double causal_product_flops(const ops::AttnDims& d) { return 2.0 * d.B * d.H * (double)d.Tq * d.Tk / 2 * d.hd; }

void BM_AttentionForward(benchmark::State& st) {
  (void)aji::num_threads();
  const int qkv = (H + 2 * KV) * HD;
  auto x = randn(N * qkv, 1);
  std::vector<float> out(N * H * HD), lse(N * H);
  const auto d = dims((int)st.range(0));
  for (auto _ : st)
    ops::attention_forward(out.data(), lse.data(), x.data(), x.data() + H * HD, x.data() + (H + KV) * HD, d);
  st.counters["GFLOP/s"] = benchmark::Counter(2 * causal_product_flops(d), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AttentionForward)->Arg(256)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_AttentionBackward(benchmark::State& st) {
  (void)aji::num_threads();
  const int qkv = (H + 2 * KV) * HD;
  auto x = randn(N * qkv, 1), dout = randn(N * H * HD, 2);
  std::vector<float> out(N * H * HD), lse(N * H), dx(N * qkv);
  const auto d = dims((int)st.range(0));
  ops::attention_forward(out.data(), lse.data(), x.data(), x.data() + H * HD, x.data() + (H + KV) * HD, d);
  for (auto _ : st)
    ops::attention_backward(dx.data(), dx.data() + H * HD, dx.data() + (H + KV) * HD, dout.data(), x.data(),
                            x.data() + H * HD, x.data() + (H + KV) * HD, out.data(), lse.data(), d);
  st.counters["GFLOP/s"] = benchmark::Counter(5 * causal_product_flops(d), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AttentionBackward)->Arg(256)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_SoftmaxXent(benchmark::State& st) {
  const int rows = 1024;
  auto logits = randn((size_t)rows * V, 3);
  std::vector<float> work(logits.size()), losses(rows);
  std::vector<int32_t> targets(rows, 7);
  for (auto _ : st) {
    st.PauseTiming();
    work = logits;
    st.ResumeTiming();
    benchmark::DoNotOptimize(
        ops::softmax_xent_backward_inplace(work.data(), losses.data(), targets.data(), nullptr, 1.0f, rows, V));
  }
  st.SetBytesProcessed(st.iterations() * (int64_t)rows * V * 4);
}
BENCHMARK(BM_SoftmaxXent)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_RmsNormFwdBwd(benchmark::State& st) {
  auto x = randn(N * C, 4), w = randn(C, 5), dy = randn(N * C, 6);
  std::vector<float> y(N * C), rstd(N), dx(N * C), dw(C);
  for (auto _ : st) {
    ops::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, C, 1e-5f);
    ops::rmsnorm_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), N, C);
  }
  st.SetBytesProcessed(st.iterations() * N * C * 4 * 6);
}
BENCHMARK(BM_RmsNormFwdBwd)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_SwigluFwdBwd(benchmark::State& st) {
  auto gu = randn(N * 2 * F, 7), dy = randn(N * F, 8);
  std::vector<float> y(N * F), dgu(N * 2 * F);
  for (auto _ : st) {
    ops::swiglu_forward(y.data(), gu.data(), N, F);
    ops::swiglu_backward(dgu.data(), dy.data(), gu.data(), N, F);
  }
  st.SetBytesProcessed(st.iterations() * N * F * 4 * 8);
}
BENCHMARK(BM_SwigluFwdBwd)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_RopeQK(benchmark::State& st) {
  const int qkv = (H + 2 * KV) * HD;
  auto x = randn(N * qkv, 9);
  std::vector<float> cs(T * HD / 2), sn(T * HD / 2);
  ops::rope_table(cs.data(), sn.data(), T, HD, 10000.0f);
  for (auto _ : st) {
    ops::rope_apply(x.data(), cs.data(), sn.data(), B, T, qkv, 0, H, HD, 0, false);
    ops::rope_apply(x.data(), cs.data(), sn.data(), B, T, qkv, H * HD, KV, HD, 0, false);
  }
  st.SetBytesProcessed(st.iterations() * N * (H + KV) * HD * 4 * 2);
}
BENCHMARK(BM_RopeQK)->Unit(benchmark::kMillisecond)->UseRealTime();

// A decode batch's products: `rows` activation rows against one weight (OC, IC) of the tiny
// model's shapes, through matmul_forward (the small-row kernels up to kFewRows rows)
// against the peer, oneDNN's sgemm, on the same data (mode 0: matmul_forward, 1: sgemm,
// 2: one AVX2 dot product per row and output, the portable few-row loop; 3: matmul_forward_rows,
// the small-row kernels at any N).
// Weights of every layer are cycled (6 layers' worth, 8 MB+) so they come from L3/DRAM as
// in a real decode step. Counter GFLOP/s.
void BM_SmallRows(benchmark::State& st) {
  const int rows = (int)st.range(0), IC = (int)st.range(1), OC = (int)st.range(2), mode = (int)st.range(3);
  (void)aji::num_threads();  // AJI_THREADS
  constexpr int kLayers = 6;
  std::vector<std::vector<float>> w;
  for (int l = 0; l < kLayers; ++l) w.push_back(randn((size_t)OC * IC, 10 + l));
  auto x = randn((size_t)rows * IC, 1);
  std::vector<float> y((size_t)rows * OC);
  int l = 0;
  for (auto _ : st) {
    const float* wl = w[(size_t)l].data();
    if (mode == 0)
      ops::matmul_forward(y.data(), x.data(), wl, nullptr, rows, IC, OC, ops::WeightLayout::kOutIn);
    else if (mode == 3)
      ops::matmul_forward_rows(y.data(), x.data(), wl, nullptr, rows, IC, OC, ops::WeightLayout::kOutIn);
    else if (mode == 1)
      ops::sgemm('N', 'T', rows, OC, IC, 1.0f, x.data(), IC, wl, IC, 0.0f, y.data(), OC);
    else
      for (int o = 0; o < OC; ++o)
        for (int r = 0; r < rows; ++r)
          y[(size_t)r * OC + o] = ops::vm::dot(x.data() + (size_t)r * IC, wl + (size_t)o * IC, IC);
    benchmark::DoNotOptimize(y.data());
    l = (l + 1) % kLayers;
  }
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * rows * IC * OC * (double)st.iterations() / 1e9,
                                              benchmark::Counter::kIsRate);
}
BENCHMARK(BM_SmallRows)
    ->ArgNames({"rows", "IC", "OC", "mode"})
    ->ArgsProduct({{1, 4, 8, 16, 32, 64}, {384}, {1152}, {0, 1}})
    ->ArgsProduct({{1, 16}, {1024}, {384}, {0, 1}})
    ->ArgsProduct({{1}, {384}, {1152, 8192}, {0, 1, 2}})
    ->ArgsProduct({{16, 64, 256}, {384, 1024}, {384, 1152}, {1, 3}})
    ->UseRealTime();

// The same decode products with bf16 (type 0) or q8_0 (type 1) weights (lowbit.h's row
// kernels up to kPackedRows rows), weights of 6 layers cycled as above. Counter GFLOP/s and
// the weight bytes streamed per second.
void BM_PackedRows(benchmark::State& st) {
  const int rows = (int)st.range(0), IC = (int)st.range(1), OC = (int)st.range(2);
  const ops::WeightType t = st.range(3) == 0 ? ops::WeightType::kBF16 : ops::WeightType::kQ8_0;
  (void)aji::num_threads();  // AJI_THREADS
  constexpr int kLayers = 6;
  std::vector<ops::PackedWeight> w;
  for (int l = 0; l < kLayers; ++l) {
    const auto f = randn((size_t)OC * IC, 10 + l);
    w.push_back(ops::PackedWeight::pack(f.data(), OC, IC, ops::WeightLayout::kOutIn, t));
  }
  auto x = randn((size_t)rows * IC, 1);
  std::vector<float> y((size_t)rows * OC);
  int l = 0;
  for (auto _ : st) {
    ops::packed_matmul_forward(y.data(), x.data(), w[(size_t)l], nullptr, rows);
    benchmark::DoNotOptimize(y.data());
    l = (l + 1) % kLayers;
  }
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * rows * IC * OC * (double)st.iterations() / 1e9,
                                              benchmark::Counter::kIsRate);
  st.counters["GB/s"] = benchmark::Counter((double)w[0].bytes() * (double)st.iterations() / 1e9,
                                           benchmark::Counter::kIsRate);
}
BENCHMARK(BM_PackedRows)
    ->ArgNames({"rows", "IC", "OC", "type"})
    ->ArgsProduct({{1, 4, 16}, {384}, {1152, 8192}, {0, 1}})
    ->ArgsProduct({{1, 16}, {1024}, {384}, {0, 1}})
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
