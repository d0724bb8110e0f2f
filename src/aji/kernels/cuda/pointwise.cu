// Embeddings, GELU, SwiGLU, RoPE, residual add and scale, with the contracts of
// kernels/cpu/ops.h (every pointer device memory). Element-wise kernels are grid-stride loops
// over int64 indices (any n), row ops a block per row with threads over the columns (no
// per-element 64-bit division); each computes the CPU's scalar formula in fp32.
#include <algorithm>
#include <cstdint>

#include "aji/kernels/cuda/launch.h"

namespace aji::kernels::cuda {

namespace {

constexpr int kThreads = 256;

// Blocks of a grid-stride loop over n items (capped: the loop covers the rest).
unsigned grid_for(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + kThreads - 1) / kThreads, (int64_t)1 << 20));
}

// Row kernels (a block per row, threads over its columns): blocks for N rows (a grid-stride
// loop covers more), threads for `cols` columns (a warp at least, kThreads at most).
unsigned row_grid(int64_t N) { return static_cast<unsigned>(std::min<int64_t>(N, (int64_t)1 << 20)); }
int row_threads(int64_t cols) { return (int)std::clamp<int64_t>((cols + 31) / 32 * 32, 32, kThreads); }

#define AJI_GRID_STRIDE(i, n)                                                        \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);            \
       i += (int64_t)gridDim.x * blockDim.x)

// ---- embeddings ------------------------------------------------------------------------------

// out (N,C) = wte[tokens[r]] (+ wpe[pos]), pos = positions[r] or pos0 + r % T. A block per row.
__global__ void embedding_forward_kernel(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                                         int64_t N, int T, int C, int pos0, const int32_t* positions) {
  for (int64_t r = blockIdx.x; r < N; r += gridDim.x) {
    const float* e = wte + (int64_t)tokens[r] * C;
    float* o = out + r * C;
    if (wpe) {
      const float* p = wpe + (positions ? (int64_t)positions[r] : (int64_t)pos0 + r % T) * C;
      for (int c = threadIdx.x; c < C; c += blockDim.x) o[c] = e[c] + p[c];
    } else {
      for (int c = threadIdx.x; c < C; c += blockDim.x) o[c] = e[c];
    }
  }
}

// Deterministic scatter-add without atomics: dst[idx(r), c] += dout[r, c] for r = 0..N-1 in row
// order (the CPU's order for every (index, c)), idx(r) = idx[r], or r % T when idx is null.
// Thread (c, bucket j = blockIdx.y) owns the rows whose index is j mod kBuckets, so no two
// threads touch the same element. blockIdx.z picks the table: 0 = (dst0, idx0), 1 = (dst1, idx1).
// Cost: every thread scans all N indices (a uniform, cached load per warp) and does its rows'
// read-modify-writes in sequence (~N / kBuckets dependent global round trips): O(N) time with
// only C * kBuckets threads (not measured yet; estimated around a millisecond at N = 64K rows).
// A sort-by-token segmented reduction would scale better if this ever shows in a profile.
constexpr int kBuckets = 64;

__global__ void embedding_backward_kernel(float* dst0, const int32_t* __restrict__ idx0, float* dst1,
                                          const int32_t* __restrict__ idx1, const float* __restrict__ dout,
                                          int64_t N, int T, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float* dst = blockIdx.z == 0 ? dst0 : dst1;
  const int32_t* idx = blockIdx.z == 0 ? idx0 : idx1;
  const unsigned j = blockIdx.y;
  int t = 0;  // r % T, kept incrementally
  for (int64_t r = 0; r < N; ++r) {
    const int64_t k = idx ? (int64_t)idx[r] : (int64_t)t;
    if (++t == T) t = 0;
    if ((unsigned)(k % kBuckets) != j) continue;
    float* p = dst + k * C + c;
    *p = *p + dout[r * C + c];
  }
}

// ---- GELU (tanh approximation) ---------------------------------------------------------------

constexpr float kGeluK = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kGeluC = 0.044715f;

__global__ void gelu_forward_kernel(float* out, const float* inp, int64_t n) {
  AJI_GRID_STRIDE(i, n) {
    const float x = inp[i];
    const float u = kGeluK * (x + kGeluC * x * x * x);
    out[i] = 0.5f * x * (1.0f + tanhf(u));
  }
}

// dinp (n) = gelu'(x) * dout (overwrite)
__global__ void gelu_backward_kernel(float* dinp, const float* inp, const float* dout, int64_t n) {
  AJI_GRID_STRIDE(i, n) {
    const float x = inp[i];
    const float u = kGeluK * (x + kGeluC * x * x * x);
    const float t = tanhf(u);
    const float g = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * kGeluK * (1.0f + 3.0f * kGeluC * x * x);
    dinp[i] = g * dout[i];
  }
}

// ---- SwiGLU ----------------------------------------------------------------------------------

// gate_up (N,2F) = [gate | up]; out (N,F) = silu(gate) * up. A block per row.
__global__ void swiglu_forward_kernel(float* out, const float* gate_up, int64_t N, int F) {
  for (int64_t r = blockIdx.x; r < N; r += gridDim.x) {
    const float* g = gate_up + r * 2 * F;
    float* o = out + r * F;
    for (int i = threadIdx.x; i < F; i += blockDim.x) {
      const float x = g[i];
      o[i] = x / (1.0f + expf(-x)) * g[F + i];
    }
  }
}

// dgate_up (N,2F) from dout (N,F) (overwrite). A block per row.
__global__ void swiglu_backward_kernel(float* dgate_up, const float* dout, const float* gate_up, int64_t N, int F) {
  for (int64_t r = blockIdx.x; r < N; r += gridDim.x) {
    const float* g = gate_up + r * 2 * F;
    const float* dy = dout + r * F;
    float* dg = dgate_up + r * 2 * F;
    for (int i = threadIdx.x; i < F; i += blockDim.x) {
      const float x = g[i], u = g[F + i], d = dy[i];
      const float s = 1.0f / (1.0f + expf(-x));
      dg[i] = d * u * s * (1.0f + x * (1.0f - s));
      dg[F + i] = d * x * s;
    }
  }
}

// ---- RoPE ------------------------------------------------------------------------------------

// A block per row r, a thread per rotated pair (head h, i < hd/2): x[.., i], x[.., i + hd/2]
// from src's (src may be x: the thread reads both values before it writes them).
__global__ void rope_kernel(float* x, const float* cos_t, const float* sin_t, int64_t N, int T, int64_t stride,
                            int col, int n_heads, int hd, int pos0, float sgn, const int32_t* positions,
                            const float* src) {
  const int half = hd / 2;
  const int pairs = n_heads * half;
  for (int64_t r = blockIdx.x; r < N; r += gridDim.x) {
    const int64_t pos = positions ? (int64_t)positions[r] : (int64_t)pos0 + r % T;
    const float* cs = cos_t + pos * half;
    const float* sn = sin_t + pos * half;
    const int64_t row = r * stride + col;
    for (int e = threadIdx.x; e < pairs; e += blockDim.x) {
      const int h = e / half, i = e - h * half;
      const float c = cs[i];
      const float si = sgn * sn[i];
      const int64_t off = row + (int64_t)h * hd + i;
      const float a = src[off], b = src[off + half];
      x[off] = a * c - b * si;
      x[off + half] = b * c + a * si;
    }
  }
}

// ---- residual, scale -------------------------------------------------------------------------

__global__ void add_inplace_kernel(float* a, const float* b, int64_t n) {
  AJI_GRID_STRIDE(i, n) a[i] += b[i];
}

__global__ void scale_kernel(float* x, float a, int64_t n) {
  AJI_GRID_STRIDE(i, n) x[i] *= a;
}

}  // namespace

// ---- launchers -------------------------------------------------------------------------------

void embedding_forward(Context& ctx, float* out, const int32_t* tokens, const float* wte, const float* wpe, int B,
                       int T, int C, int pos0, const int32_t* positions) {
  const int64_t N = (int64_t)B * T;
  if (N <= 0 || C <= 0) return;
  embedding_forward_kernel<<<row_grid(N), row_threads(C), 0, ctx.stream>>>(out, tokens, wte, wpe, N, T, C, pos0,
                                                                           positions);
  ctx.launched("embedding_forward");
}

void embedding_backward(Context& ctx, float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B,
                        int T, int C, const int32_t* positions) {
  const int64_t N = (int64_t)B * T;
  if (N <= 0 || C <= 0) return;
  // z = 0: dwte by tokens; z = 1: dwpe by positions (or r % T), when dwpe is given
  const dim3 grid((C + kThreads - 1) / kThreads, kBuckets, dwpe ? 2 : 1);
  embedding_backward_kernel<<<grid, kThreads, 0, ctx.stream>>>(dwte, tokens, dwpe, positions, dout, N, T, C);
  ctx.launched("embedding_backward");
}

void gelu_forward(Context& ctx, float* out, const float* inp, int64_t n) {
  if (n <= 0) return;
  gelu_forward_kernel<<<grid_for(n), kThreads, 0, ctx.stream>>>(out, inp, n);
  ctx.launched("gelu_forward");
}

void gelu_backward(Context& ctx, float* dinp, const float* inp, const float* dout, int64_t n) {
  if (n <= 0) return;
  gelu_backward_kernel<<<grid_for(n), kThreads, 0, ctx.stream>>>(dinp, inp, dout, n);
  ctx.launched("gelu_backward");
}

void swiglu_forward(Context& ctx, float* out, const float* gate_up, int64_t N, int F) {
  if (N <= 0 || F <= 0) return;
  swiglu_forward_kernel<<<row_grid(N), row_threads(F), 0, ctx.stream>>>(out, gate_up, N, F);
  ctx.launched("swiglu_forward");
}

void swiglu_backward(Context& ctx, float* dgate_up, const float* dout, const float* gate_up, int64_t N, int F) {
  if (N <= 0 || F <= 0) return;
  swiglu_backward_kernel<<<row_grid(N), row_threads(F), 0, ctx.stream>>>(dgate_up, dout, gate_up, N, F);
  ctx.launched("swiglu_backward");
}

void rope_apply(Context& ctx, float* x, const float* cos_t, const float* sin_t, int B, int T, int64_t stride, int col,
                int n_heads, int hd, int pos0, bool inverse, const int32_t* positions, const float* src) {
  const int64_t N = (int64_t)B * T;
  if (N <= 0 || n_heads <= 0 || hd / 2 <= 0) return;
  rope_kernel<<<row_grid(N), row_threads((int64_t)n_heads * (hd / 2)), 0, ctx.stream>>>(
      x, cos_t, sin_t, N, T, stride, col, n_heads, hd, pos0, inverse ? -1.0f : 1.0f, positions, src ? src : x);
  ctx.launched("rope_apply");
}

void add_inplace(Context& ctx, float* a, const float* b, int64_t n) {
  if (n <= 0) return;
  add_inplace_kernel<<<grid_for(n), kThreads, 0, ctx.stream>>>(a, b, n);
  ctx.launched("add_inplace");
}

void scale(Context& ctx, float* x, float a, size_t n) {
  if (n == 0) return;
  scale_kernel<<<grid_for((int64_t)n), kThreads, 0, ctx.stream>>>(x, a, (int64_t)n);
  ctx.launched("scale");
}

}  // namespace aji::kernels::cuda
