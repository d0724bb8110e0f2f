// AdamW over one contiguous range and the sum of squares (the global gradient norm), with the
// contracts of kernels/backend.h (every pointer device memory).
#include <algorithm>
#include <cstdint>

#include "aji/kernels/cuda/check.h"
#include "aji/kernels/cuda/launch.h"

namespace aji::kernels::cuda {

namespace {

constexpr int kThreads = 256;

// ---- AdamW -----------------------------------------------------------------------------------
//
// Bit-identical to the CPU's per-element arithmetic (train/optimizer.cpp AdamW::step and the
// CPU backend's adamw_update) given the same inputs and scalars: both spell out the same three
// fused multiply-adds (std::fma there, __fmaf_rn here) and round every other step on its own, in
// the same order, so neither compiler chooses a contraction:
//   mi = fma(m, beta1, (1 - beta1) * g)
//   vi = fma(v, beta2, (1 - beta2) * (g * g))
//   p  = fma(p, decay_mul, ((-step_size) * mi) / (sqrt(vi) / bc2_sqrt + eps))
// (Never build this file with --use_fast_math or -ftz: flushed denormals would differ.)
__global__ void adamw_kernel(float* params, const float* grads, float* m, float* v, int64_t n, AdamWScalars s) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float g = grads[i];
    const float p = params[i];
    const float mi = __fmaf_rn(m[i], s.beta1, __fmul_rn(s.one_minus_beta1, g));
    const float vi = __fmaf_rn(v[i], s.beta2, __fmul_rn(s.one_minus_beta2, __fmul_rn(g, g)));
    m[i] = mi;
    v[i] = vi;
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), s.bc2_sqrt), s.eps);
    const float upd = __fdiv_rn(__fmul_rn(-s.step_size, mi), denom);  // torch's addcdiv order
    params[i] = __fmaf_rn(p, s.decay_mul, upd);
  }
}

// ---- sum of squares --------------------------------------------------------------------------
//
// Two fixed-order passes: kSumBlocks(n) blocks (a function of n only), each thread a strided
// double sum, a fixed tree per block into part[block]; then one block sums the parts.
constexpr int kMaxSumBlocks = 1024;
constexpr int kTotalThreads = 1024;

int sum_blocks(int64_t n) {
  return (int)std::clamp<int64_t>((n + kThreads * 16 - 1) / (kThreads * 16), 1, kMaxSumBlocks);
}

__global__ void __launch_bounds__(kThreads) sum_squares_partial_kernel(double* part, const float* x, int64_t n) {
  __shared__ double sm[kThreads];
  double s = 0.0;
  for (int64_t i = (int64_t)blockIdx.x * kThreads + threadIdx.x; i < n; i += (int64_t)gridDim.x * kThreads) {
    const double d = x[i];
    s += d * d;  // exact product (24-bit mantissas), so fused or not gives the same bits
  }
  sm[threadIdx.x] = s;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if ((int)threadIdx.x < w) sm[threadIdx.x] += sm[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) part[blockIdx.x] = sm[0];
}

// *total = sum of x (n) in a fixed order: thread j sums x[j], x[j + kTotalThreads], ... in order,
// then a fixed tree over the thread sums. One block of kTotalThreads.
__global__ void __launch_bounds__(kTotalThreads) sum_doubles_kernel(double* total, const double* x, int64_t n) {
  __shared__ double sm[kTotalThreads];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kTotalThreads) s += x[i];
  sm[threadIdx.x] = s;
  __syncthreads();
  for (int w = kTotalThreads / 2; w > 0; w >>= 1) {
    if ((int)threadIdx.x < w) sm[threadIdx.x] += sm[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) *total = sm[0];
}

}  // namespace

void adamw_update(Context& ctx, float* params, const float* grads, float* m, float* v, size_t n,
                  const AdamWScalars& s) {
  if (n == 0) return;
  const int64_t len = (int64_t)n;
  const unsigned blocks = (unsigned)std::min<int64_t>((len + kThreads - 1) / kThreads, (int64_t)1 << 20);
  adamw_kernel<<<blocks, kThreads, 0, ctx.stream>>>(params, grads, m, v, len, s);
  ctx.launched("adamw_update");
}

void sum_squares(Context& ctx, double* total_dev, const float* x, size_t n) {
  if (n == 0) {
    AJI_CUDA_CHECK(cudaMemsetAsync(total_dev, 0, sizeof(double), ctx.stream));
    return;
  }
  const int64_t len = (int64_t)n;
  const int blocks = sum_blocks(len);
  double* part = static_cast<double*>(ctx.workspace((size_t)blocks * sizeof(double)));
  sum_squares_partial_kernel<<<blocks, kThreads, 0, ctx.stream>>>(part, x, len);
  ctx.launched("sum_squares");
  sum_doubles(ctx, total_dev, part, blocks);
}

void sum_doubles(Context& ctx, double* total_dev, const double* x, int64_t n) {
  if (n <= 0) {
    AJI_CUDA_CHECK(cudaMemsetAsync(total_dev, 0, sizeof(double), ctx.stream));
    return;
  }
  sum_doubles_kernel<<<1, kTotalThreads, 0, ctx.stream>>>(total_dev, x, n);
  ctx.launched("sum_doubles");
}

}  // namespace aji::kernels::cuda
