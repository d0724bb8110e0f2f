// Fused softmax + cross-entropy backward, in place (kernels/cpu/ops.h
// softmax_xent_backward_inplace's contract; every pointer device memory), never a
// probability tensor: one block per row, the CPU's passes in fp32 over the row's V logits
//   m = a * max(row), sum = sum exp(a * x - m), loss = m + log(sum) - a * x[target],
//   row = exp(a * x - m) * (g / sum), row[target] -= g, g = weight * grad_scale * a,
// then the total sum_i weight_i * loss_i in double with a fixed order: per-row terms into
// ctx.workspace, one single-block kernel sums them (the same bits every run).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "aji/kernels/cuda/check.h"
#include "aji/kernels/cuda/launch.h"

namespace aji::kernels::cuda {

namespace {

constexpr int kXentThreads = 512;   // per row

struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct AddOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};

// Butterfly: every lane ends with the same value.
template <class Op>
__device__ __forceinline__ float warp_reduce(float v, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The reduction of v over the block, returned to every thread (each warp reduces the warps'
// results itself, in the same order). sm: 32 floats of shared memory, reusable right after.
template <class Op>
__device__ float block_reduce(float v, float* sm, Op op, float identity) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  v = warp_reduce(v, op);
  __syncthreads();  // the previous call's readers are done with sm
  if (lane == 0) sm[warp] = v;
  __syncthreads();
  v = lane < n_warps ? sm[lane] : identity;
  return warp_reduce(v, op);
}

// logits (n,V) in place; losses (n) if not null; wl (n) = weight_i * loss_i (double).
// Row-uniform branches only (target and weight are the block's), so every barrier is reached
// by the whole block.
__global__ void __launch_bounds__(kXentThreads)
    softmax_xent_kernel(float* logits, float* losses, double* wl, const int32_t* targets, const float* weights,
                        float grad_scale, int64_t n, int V, float a) {
  __shared__ float sm[32];
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    float* row = logits + r * V;
    const int t = targets[r];
    const float w = weights ? weights[r] : 1.0f;
    if (t < 0 || w == 0.0f) {  // ignored row: gradient 0, loss 0
      for (int i = threadIdx.x; i < V; i += blockDim.x) row[i] = 0.0f;
      if (threadIdx.x == 0) {
        if (losses) losses[r] = 0.0f;
        wl[r] = 0.0;
      }
      continue;
    }
    // read before any thread writes the row (the writes follow two block barriers)
    const float target_logit = row[t];
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, row[i]);
    // a > 0: max(a * x) = a * max(x)
    const float m = a * block_reduce(mx, sm, MaxOp(), -INFINITY);
    float s = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) s += expf(fmaf(row[i], a, -m));
    const float sum = block_reduce(s, sm, AddOp(), 0.0f);
    const float loss = m + logf(sum) - a * target_logit;
    const float g = w * grad_scale * a;
    const float gs = g / sum;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
      float d = expf(fmaf(row[i], a, -m)) * gs;
      if (i == t) d -= g;
      row[i] = d;
    }
    if (threadIdx.x == 0) {
      if (losses) losses[r] = loss;
      wl[r] = (double)w * (double)loss;
    }
  }
}

}  // namespace

void softmax_xent_backward_inplace(Context& ctx, double* total_dev, float* logits, float* losses,
                                   const int32_t* targets, const float* weights, float grad_scale, int64_t n, int V,
                                   float inv_temperature) {
  if (n <= 0 || V <= 0) {  // nothing to do, but the total is still written
    AJI_CUDA_CHECK(cudaMemsetAsync(total_dev, 0, sizeof(double), ctx.stream));
    return;
  }
  double* wl = static_cast<double*>(ctx.workspace((size_t)n * sizeof(double)));
  const unsigned blocks = (unsigned)std::min<int64_t>(n, (int64_t)1 << 20);
  softmax_xent_kernel<<<blocks, kXentThreads, 0, ctx.stream>>>(logits, losses, wl, targets, weights, grad_scale, n,
                                                               V, inv_temperature);
  ctx.launched("softmax_xent_backward_inplace");
  sum_doubles(ctx, total_dev, wl, n);
}

}  // namespace aji::kernels::cuda
