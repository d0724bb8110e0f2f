// LayerNorm, RMSNorm and per-head RMSNorm (QK-norm), forward and backward, with the
// contracts of kernels/cpu/ops.h (every pointer device memory).
//
// Forwards: one warp per row (or per head), the row's statistics as the CPU computes them
// (LayerNorm: the mean, then the mean of squared deviations; RMSNorm: the mean of squares),
// in fp32, reduced across the warp with a butterfly so every lane holds the same bits.
// Backwards: dinp / the in-place head gradient per row as above, and the parameter gradients
// (a sum over rows) deterministically without atomics: the rows are cut into a fixed number
// of chunks (a function of the row count only), each chunk's per-column sum goes to
// ctx.workspace (col_partials_kernel), and one pass adds the chunks' sums in chunk order into
// dweight / dbias (col_finish_kernel, +=). The parameter gradients are reduced before the
// input gradient is written, so a caller that passes dinp == dout still gets them from the
// original dout.
#include <algorithm>
#include <cstdint>

#include "aji/kernels/cuda/launch.h"

namespace aji::kernels::cuda {

namespace {

constexpr int kRowWarps = 8;  // warps (rows) per block in the row kernels
constexpr int kRowThreads = kRowWarps * 32;

// Butterfly sum: every lane ends with the same value (a + b == b + a bit for bit).
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

unsigned row_blocks(int64_t rows) { return static_cast<unsigned>((rows + kRowWarps - 1) / kRowWarps); }

// ---- deterministic column sums (parameter gradients) ----------------------------------------

constexpr int kColY = 8;                 // threads over rows per column in a block (block 32 x 8)
constexpr int kMaxChunks = 256;          // row chunks at most (gridDim.y)
constexpr int64_t kMinChunkRows = 32;

struct ColPlan {
  int64_t rows_per_chunk = 0;
  int n_chunks = 0;
};
// Depends on the row count only, so the sums' order (and bits) do not change run to run.
ColPlan col_plan(int64_t rows) {
  ColPlan p;
  p.rows_per_chunk = std::max<int64_t>(kMinChunkRows, (rows + kMaxChunks - 1) / kMaxChunks);
  p.n_chunks = static_cast<int>((rows + p.rows_per_chunk - 1) / p.rows_per_chunk);
  return p;
}

// part (n_chunks, K, ncols): part[chunk, k, c] = sum over the chunk's rows r of f(r, c)[k], the
// rows r0+ty, r0+ty+8, ... per thread, then the 8 thread sums in ty order.
template <int K, class F>
__global__ void __launch_bounds__(32 * kColY) col_partials_kernel(float* part, int64_t rows, int ncols,
                                                                    int64_t rows_per_chunk, F f) {
  __shared__ float sm[K][kColY][32];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int c = blockIdx.x * 32 + tx;
  const int64_t r0 = (int64_t)blockIdx.y * rows_per_chunk;
  const int64_t r1 = min(rows, r0 + rows_per_chunk);
  float acc[K];
#pragma unroll
  for (int k = 0; k < K; ++k) acc[k] = 0.0f;
  if (c < ncols)
    for (int64_t r = r0 + ty; r < r1; r += kColY) f(r, c, acc);
#pragma unroll
  for (int k = 0; k < K; ++k) sm[k][ty][tx] = acc[k];
  __syncthreads();
  if (ty == 0 && c < ncols) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      float s = sm[k][0][tx];
#pragma unroll
      for (int j = 1; j < kColY; ++j) s += sm[k][j][tx];
      part[((int64_t)blockIdx.y * K + k) * ncols + c] = s;
    }
  }
}

// out_k[c] += sum over chunks (in order) of part[chunk, k, c]; a null out_k is skipped.
template <int K>
__global__ void col_finish_kernel(float* out0, float* out1, const float* part, int n_chunks, int ncols) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= ncols) return;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    float* out = k == 0 ? out0 : out1;
    if (!out) continue;
    float s = 0.0f;
#pragma unroll 8  // (the loads run ahead; the adds stay in chunk order)
    for (int ch = 0; ch < n_chunks; ++ch) s += part[((int64_t)ch * K + k) * ncols + c];
    out[c] += s;
  }
}

// Queues the column sums of f over `rows` rows and `ncols` columns, added into out0 (and out1
// for K = 2). part: workspace of col_partial_floats(rows, ncols, K) floats.
size_t col_partial_floats(int64_t rows, int ncols, int K) { return (size_t)col_plan(rows).n_chunks * K * ncols; }

template <int K, class F>
void column_sums(Context& ctx, float* part, float* out0, float* out1, int64_t rows, int ncols, F f, const char* op) {
  const ColPlan p = col_plan(rows);
  const dim3 grid((ncols + 31) / 32, p.n_chunks);
  col_partials_kernel<K><<<grid, dim3(32, kColY), 0, ctx.stream>>>(part, rows, ncols, p.rows_per_chunk, f);
  ctx.launched(op);
  col_finish_kernel<K><<<(ncols + 255) / 256, 256, 0, ctx.stream>>>(out0, out1, part, p.n_chunks, ncols);
  ctx.launched(op);
}

// f(r, c): [ norm * dy, dy ] of LayerNorm (norm = (x - mean) * rstd)
struct LayerNormParamGrad {
  const float* dout;
  const float* inp;
  const float* mean;
  const float* rstd;
  int C;
  __device__ void operator()(int64_t r, int c, float* acc) const {
    const int64_t i = r * C + c;
    const float dy = dout[i];
    const float nrm = (inp[i] - mean[r]) * rstd[r];
    acc[0] += nrm * dy;
    acc[1] += dy;
  }
};

// f(r, c): dy * x * rstd of RMSNorm
struct RmsNormParamGrad {
  const float* dout;
  const float* inp;
  const float* rstd;
  int C;
  __device__ void operator()(int64_t r, int c, float* acc) const {
    const int64_t i = r * C + c;
    acc[0] += dout[i] * inp[i] * rstd[r];
  }
};

// f(u, i) over the heads u = row * n_heads + h: dy * x * rs[u] (rs_k: [rs, k] per head)
struct HeadRmsNormParamGrad {
  const float* d;
  const float* x_in;
  const float* rs_k;
  int64_t stride;
  int col, n_heads, hd;
  __device__ void operator()(int64_t u, int i, float* acc) const {
    const int64_t r = u / n_heads;
    const int h = (int)(u - r * n_heads);
    const int64_t off = r * stride + col + (int64_t)h * hd + i;
    acc[0] += d[off] * x_in[off] * rs_k[2 * u];
  }
};

// ---- LayerNorm -------------------------------------------------------------------------------

// out (N,C) = (x - mean) * rstd * weight (+ bias); mean, rstd (N) if not null. A warp per row.
__global__ void __launch_bounds__(kRowThreads)
    layernorm_forward_kernel(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                             const float* bias, int64_t N, int C, float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t r = (int64_t)blockIdx.x * kRowWarps + (threadIdx.x >> 5);
  if (r >= N) return;
  const float* x = inp + r * C;
  float s = 0.0f;
  for (int i = lane; i < C; i += 32) s += x[i];
  const float m = warp_sum(s) / C;
  float v = 0.0f;
  for (int i = lane; i < C; i += 32) {
    const float d = x[i] - m;
    v += d * d;
  }
  const float rs = 1.0f / sqrtf(warp_sum(v) / C + eps);
  float* o = out + r * C;
  for (int i = lane; i < C; i += 32) o[i] = (x[i] - m) * rs * weight[i] + (bias ? bias[i] : 0.0f);
  if (lane == 0) {
    if (mean) mean[r] = m;
    if (rstd) rstd[r] = rs;
  }
}

// dinp (N,C) += (dn - mean(dn) - norm * mean(dn * norm)) * rstd with dn = weight * dy. A warp per row.
__global__ void __launch_bounds__(kRowThreads)
    layernorm_backward_kernel(float* dinp, const float* dout, const float* inp, const float* weight,
                              const float* mean, const float* rstd, int64_t N, int C) {
  const int lane = threadIdx.x & 31;
  const int64_t r = (int64_t)blockIdx.x * kRowWarps + (threadIdx.x >> 5);
  if (r >= N) return;
  const float* x = inp + r * C;
  const float* dy = dout + r * C;
  const float m = mean[r], rs = rstd[r];
  float dm = 0.0f, dnm = 0.0f;
  for (int i = lane; i < C; i += 32) {
    const float nrm = (x[i] - m) * rs;
    const float dn = weight[i] * dy[i];
    dm += dn;
    dnm += dn * nrm;
  }
  dm = warp_sum(dm) / C;
  dnm = warp_sum(dnm) / C;
  float* dx = dinp + r * C;
  for (int i = lane; i < C; i += 32) {
    const float nrm = (x[i] - m) * rs;
    const float dn = weight[i] * dy[i];
    dx[i] += (dn - dm - nrm * dnm) * rs;
  }
}

// ---- RMSNorm ---------------------------------------------------------------------------------

// out (N,C) = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps) (N, if not null). A warp per row.
__global__ void __launch_bounds__(kRowThreads)
    rmsnorm_forward_kernel(float* out, float* rstd, const float* inp, const float* weight, int64_t N, int C,
                           float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t r = (int64_t)blockIdx.x * kRowWarps + (threadIdx.x >> 5);
  if (r >= N) return;
  const float* x = inp + r * C;
  float s = 0.0f;
  for (int i = lane; i < C; i += 32) s += x[i] * x[i];
  const float rs = 1.0f / sqrtf(warp_sum(s) / C + eps);
  float* o = out + r * C;
  for (int i = lane; i < C; i += 32) o[i] = x[i] * rs * weight[i];
  if (lane == 0 && rstd) rstd[r] = rs;
}

// dinp (N,C) += dy * weight * rstd - x * k, k = sum(dy * weight * x) * rstd^3 / C. A warp per row.
__global__ void __launch_bounds__(kRowThreads)
    rmsnorm_backward_kernel(float* dinp, const float* dout, const float* inp, const float* weight,
                            const float* rstd, int64_t N, int C) {
  const int lane = threadIdx.x & 31;
  const int64_t r = (int64_t)blockIdx.x * kRowWarps + (threadIdx.x >> 5);
  if (r >= N) return;
  const float* x = inp + r * C;
  const float* dy = dout + r * C;
  const float rs = rstd[r];
  float dot = 0.0f;
  for (int i = lane; i < C; i += 32) dot += dy[i] * weight[i] * x[i];
  const float k = warp_sum(dot) * rs * rs * rs / C;
  float* dx = dinp + r * C;
  for (int i = lane; i < C; i += 32) dx[i] += dy[i] * weight[i] * rs - x[i] * k;
}

// ---- per-head RMSNorm (QK-norm) ----------------------------------------------------------------

// x: N rows of `stride`, n_heads heads of hd at column col; a warp per head u = r * n_heads + h.
__device__ __forceinline__ int64_t head_offset(int64_t u, int64_t stride, int col, int n_heads, int hd) {
  const int64_t r = u / n_heads;
  const int h = (int)(u - r * n_heads);
  return r * stride + col + (int64_t)h * hd;
}

// x (heads, hd) = x * rs * weight in place, rs = 1 / sqrt(mean(x^2) + eps) per head.
__global__ void __launch_bounds__(kRowThreads)
    head_rmsnorm_forward_kernel(float* x, const float* weight, int64_t units, int64_t stride, int col, int n_heads,
                                int hd, float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t u = (int64_t)blockIdx.x * kRowWarps + (threadIdx.x >> 5);
  if (u >= units) return;
  float* v = x + head_offset(u, stride, col, n_heads, hd);
  float s = 0.0f;
  for (int i = lane; i < hd; i += 32) s += v[i] * v[i];
  const float rs = 1.0f / sqrtf(warp_sum(s) / hd + eps);  // every lane has read v before any writes below
  for (int i = lane; i < hd; i += 32) v[i] = v[i] * rs * weight[i];
}

// rs_k (units, 2) = [rs, k] per head: rs recomputed from x_in as forward did, k = sum(dy * w * x) * rs^3 / hd.
__global__ void __launch_bounds__(kRowThreads)
    head_rmsnorm_stats_kernel(float* rs_k, const float* d, const float* x_in, const float* weight, int64_t units,
                              int64_t stride, int col, int n_heads, int hd, float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t u = (int64_t)blockIdx.x * kRowWarps + (threadIdx.x >> 5);
  if (u >= units) return;
  const int64_t off = head_offset(u, stride, col, n_heads, hd);
  const float* x = x_in + off;
  const float* dy = d + off;
  float s = 0.0f, dot = 0.0f;
  for (int i = lane; i < hd; i += 32) {
    s += x[i] * x[i];
    dot += dy[i] * weight[i] * x[i];
  }
  const float rs = 1.0f / sqrtf(warp_sum(s) / hd + eps);
  const float k = warp_sum(dot) * rs * rs * rs / hd;
  if (lane == 0) {
    rs_k[2 * u] = rs;
    rs_k[2 * u + 1] = k;
  }
}

// d (heads, hd) = dy * weight * rs - x * k in place. A warp per head.
__global__ void __launch_bounds__(kRowThreads)
    head_rmsnorm_apply_kernel(float* d, const float* x_in, const float* weight, const float* rs_k, int64_t units,
                              int64_t stride, int col, int n_heads, int hd) {
  const int lane = threadIdx.x & 31;
  const int64_t u = (int64_t)blockIdx.x * kRowWarps + (threadIdx.x >> 5);
  if (u >= units) return;
  const int64_t off = head_offset(u, stride, col, n_heads, hd);
  const float* x = x_in + off;
  float* dy = d + off;
  const float rs = rs_k[2 * u], k = rs_k[2 * u + 1];
  for (int i = lane; i < hd; i += 32) dy[i] = dy[i] * weight[i] * rs - x[i] * k;
}

}  // namespace

// ---- launchers -------------------------------------------------------------------------------

void layernorm_forward(Context& ctx, float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int64_t N, int C, float eps) {
  if (N <= 0 || C <= 0) return;
  layernorm_forward_kernel<<<row_blocks(N), kRowThreads, 0, ctx.stream>>>(out, mean, rstd, inp, weight, bias, N, C,
                                                                          eps);
  ctx.launched("layernorm_forward");
}

void layernorm_backward(Context& ctx, float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int64_t N, int C) {
  if (N <= 0 || C <= 0) return;
  if (dweight || dbias) {  // before dinp is written (dinp may be dout)
    float* part = static_cast<float*>(ctx.workspace(col_partial_floats(N, C, 2) * sizeof(float)));
    column_sums<2>(ctx, part, dweight, dbias, N, C, LayerNormParamGrad{dout, inp, mean, rstd, C},
                   "layernorm_backward");
  }
  if (dinp) {
    layernorm_backward_kernel<<<row_blocks(N), kRowThreads, 0, ctx.stream>>>(dinp, dout, inp, weight, mean, rstd, N,
                                                                             C);
    ctx.launched("layernorm_backward");
  }
}

void rmsnorm_forward(Context& ctx, float* out, float* rstd, const float* inp, const float* weight, int64_t N, int C,
                     float eps) {
  if (N <= 0 || C <= 0) return;
  rmsnorm_forward_kernel<<<row_blocks(N), kRowThreads, 0, ctx.stream>>>(out, rstd, inp, weight, N, C, eps);
  ctx.launched("rmsnorm_forward");
}

void rmsnorm_backward(Context& ctx, float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int64_t N, int C) {
  if (N <= 0 || C <= 0) return;
  if (dweight) {  // before dinp is written (dinp may be dout)
    float* part = static_cast<float*>(ctx.workspace(col_partial_floats(N, C, 1) * sizeof(float)));
    column_sums<1>(ctx, part, dweight, nullptr, N, C, RmsNormParamGrad{dout, inp, rstd, C}, "rmsnorm_backward");
  }
  if (dinp) {
    rmsnorm_backward_kernel<<<row_blocks(N), kRowThreads, 0, ctx.stream>>>(dinp, dout, inp, weight, rstd, N, C);
    ctx.launched("rmsnorm_backward");
  }
}

void head_rmsnorm_forward(Context& ctx, float* x, const float* weight, int64_t N, int64_t stride, int col, int n_heads,
                          int hd, float eps) {
  const int64_t units = N * n_heads;
  if (units <= 0 || hd <= 0) return;
  head_rmsnorm_forward_kernel<<<row_blocks(units), kRowThreads, 0, ctx.stream>>>(x, weight, units, stride, col,
                                                                                 n_heads, hd, eps);
  ctx.launched("head_rmsnorm_forward");
}

void head_rmsnorm_backward(Context& ctx, float* d, float* dweight, const float* x_in, const float* weight, int64_t N,
                           int64_t stride, int col, int n_heads, int hd, float eps) {
  const int64_t units = N * n_heads;
  if (units <= 0 || hd <= 0) return;
  // workspace: rs_k (units, 2), then the column partials of dweight (256-byte aligned start)
  const size_t rs_bytes = ((size_t)units * 2 * sizeof(float) + 255) / 256 * 256;
  const size_t part_bytes = dweight ? col_partial_floats(units, hd, 1) * sizeof(float) : 0;
  char* ws = static_cast<char*>(ctx.workspace(rs_bytes + part_bytes));
  float* rs_k = reinterpret_cast<float*>(ws);
  head_rmsnorm_stats_kernel<<<row_blocks(units), kRowThreads, 0, ctx.stream>>>(rs_k, d, x_in, weight, units, stride,
                                                                               col, n_heads, hd, eps);
  ctx.launched("head_rmsnorm_backward");
  if (dweight)  // from d(out), before d is overwritten
    column_sums<1>(ctx, reinterpret_cast<float*>(ws + rs_bytes), dweight, nullptr, units, hd,
                   HeadRmsNormParamGrad{d, x_in, rs_k, stride, col, n_heads, hd}, "head_rmsnorm_backward");
  head_rmsnorm_apply_kernel<<<row_blocks(units), kRowThreads, 0, ctx.stream>>>(d, x_in, weight, rs_k, units, stride,
                                                                               col, n_heads, hd);
  ctx.launched("head_rmsnorm_backward");
}

}  // namespace aji::kernels::cuda
