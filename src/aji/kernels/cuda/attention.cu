// Causal grouped-query attention of the CUDA backend, fp32, forward and backward, with the
// contract of kernels/cpu/ops.h attention_forward / attention_backward (AttnDims in
// kernels/op_types.h): q head h reads kv head h / (H/KV); query i sits at absolute position
// q_pos0 + i and sees keys [key_start[b,i] (or 0), min(Tk, q_pos0 + i + 1)); scores are
// scaled by 1/sqrt(hd); lse (B,H,Tq) is the natural log-sum-exp of the scaled scores.
//
// Every kernel runs blocks of 4 warps. A warp owns 4 "rows" and its 32 lanes take, in turn,
// 32 "columns" (one each) for the dot products, then the head's dimensions (lane + 32 c) for
// the accumulations, the column values passed between lanes by shuffles:
//   forward  rows = queries of a 16-row tile, columns = keys in tiles of 32 (online softmax);
//   dq       rows = queries, columns = keys (P and dS recomputed from q, k and lse);
//   dk, dv   rows = keys of a 16-key tile, columns = queries in chunks of 32, over every
//            query head of the kv head's group.
// Each output element is written by one thread, summed in a fixed order: no atomics, the same
// bits on every run.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <string>

#include "aji/base/error.h"
#include "aji/kernels/cuda/check.h"
#include "aji/kernels/cuda/launch.h"

namespace aji::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kRows = 4;                   // rows per warp
constexpr int kRowTile = kWarps * kRows;   // rows per block (16)
constexpr int kColTile = 32;               // columns per step: one per lane
constexpr int kMaxHd = 256;                // 8 dimensions per lane
constexpr unsigned kFull = 0xffffffffu;

// Butterfly reductions: every lane ends with the same bits (IEEE + and max commute).
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(kFull, x, o);
  return x;
}
__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(kFull, x, o));
  return x;
}
__device__ __forceinline__ int warp_min_int(int x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = min(x, __shfl_xor_sync(kFull, x, o));
  return x;
}

struct Args {
  float* out = nullptr;  // forward: out; backward: dq
  float* lse_out = nullptr;
  float* dk = nullptr;
  float* dv = nullptr;
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  const float* dout = nullptr;
  const float* o = nullptr;    // backward: the forward's out
  const float* lse = nullptr;  // backward
  const float* dots = nullptr;  // backward: D = dO . O (B,H,Tq)
  const int32_t* key_start = nullptr;
  int B = 0, Tq = 0, Tk = 0, H = 0, KV = 0, hd = 0, q_pos0 = 0, group = 1, n_tiles = 0;
  int64_t q_bs = 0, q_ts = 0, k_bs = 0, k_ts = 0, v_bs = 0, v_ts = 0, o_bs = 0, o_ts = 0;
  float scale = 1.0f;
};

// Row stride (floats) of a tile read both by rows (lane = row, conflict-free: odd stride) and
// by dimensions (lane = dimension): 32 C dimensions (zero past hd) plus one.
template <int C>
__host__ __device__ constexpr int lane_stride() {
  return 32 * C + 1;
}

// The query rows this warp owns: their first visible key and one past their last (an empty
// range for rows past Tq).
template <int R>
__device__ __forceinline__ void row_ranges(const Args& a, int b, int i_first, int* first, int* end) {
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int i = i_first + r;
    if (i < a.Tq) {
      first[r] = a.key_start ? max(0, a.key_start[(int64_t)b * a.Tq + i]) : 0;
      end[r] = min(a.Tk, a.q_pos0 + i + 1);
    } else {
      first[r] = 0;
      end[r] = 0;
    }
  }
}

// Keys [*lo, *hi) that some row of the block's tile [i0, i1) sees. Call from every thread.
__device__ __forceinline__ void block_key_range(const Args& a, int b, int i0, int i1, int* lo, int* hi) {
  __shared__ int s_lo[kWarps];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int m = INT_MAX;
  if (lane < kRows) {
    const int i = i0 + warp * kRows + lane;
    if (i < i1) m = a.key_start ? max(0, a.key_start[(int64_t)b * a.Tq + i]) : 0;
  }
  m = warp_min_int(m);
  if (lane == 0) s_lo[warp] = m;
  __syncthreads();
  int l = s_lo[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) l = min(l, s_lo[w]);
  *lo = l;
  *hi = min(a.Tk, a.q_pos0 + i1);
}

// rows [i0, i0 + kRowTile) of x (row stride ts, hd wide) -> tile (kRowTile, hd), zeros past n
__device__ __forceinline__ void load_row_tile(float* tile, const float* x, int64_t ts, int i0, int n, int hd) {
  for (int idx = threadIdx.x; idx < kRowTile * hd; idx += kThreads) {
    const int r = idx / hd, e = idx - r * hd;
    const int i = i0 + r;
    tile[idx] = i < n ? x[(int64_t)i * ts + e] : 0.0f;
  }
}

// rows [j0, j0 + 32) of x -> tile (32, lane_stride<C>), zeros past n and past hd
template <int C>
__device__ __forceinline__ void load_lane_tile(float* tile, const float* x, int64_t ts, int j0, int n, int hd) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int j = warp; j < kColTile; j += kWarps) {
    const bool ok = j0 + j < n;
    const float* row = x + (int64_t)(j0 + j) * ts;
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int e = lane + 32 * c;
      tile[j * lane_stride<C>() + e] = (ok && e < hd) ? row[e] : 0.0f;
    }
  }
}

// ---- forward ------------------------------------------------------------------------------
// Block: (b, h, query tile); flash-attention's online softmax over key tiles of 32.
// smem: q tile (16, hd), k and v tiles (32, 32C+1).
template <int C>
__global__ void __launch_bounds__(kThreads, 1) attention_forward_kernel(const Args a) {
  extern __shared__ float smem[];
  constexpr int LS = lane_stride<C>();
  const int hd = a.hd;
  float* qs = smem;
  float* ks = qs + kRowTile * hd;
  float* vs = ks + kColTile * LS;

  const int64_t unit = blockIdx.x;
  const int tile = a.n_tiles - 1 - (int)(unit % a.n_tiles);  // the longest tiles first
  const int h = (int)((unit / a.n_tiles) % a.H);
  const int b = (int)(unit / ((int64_t)a.n_tiles * a.H));
  const int kvh = h / a.group;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int i0 = tile * kRowTile, i1 = min(a.Tq, i0 + kRowTile);
  const int iw = i0 + warp * kRows;  // this warp's first row
  const bool active = iw < a.Tq;     // warp-uniform

  const float* qb = a.q + b * a.q_bs + (int64_t)h * hd;
  const float* kb = a.k + b * a.k_bs + (int64_t)kvh * hd;
  const float* vb = a.v + b * a.v_bs + (int64_t)kvh * hd;
  load_row_tile(qs, qb, a.q_ts, i0, a.Tq, hd);

  int first[kRows], end[kRows];
  row_ranges<kRows>(a, b, iw, first, end);
  int k_lo, k_hi;
  block_key_range(a, b, i0, i1, &k_lo, &k_hi);

  float m[kRows], l[kRows], acc[kRows][C];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int c = 0; c < C; ++c) acc[r][c] = 0.0f;
  }

  for (int kt0 = k_lo; kt0 < k_hi; kt0 += kColTile) {
    __syncthreads();  // the previous tile's k, v read (and, the first time, the q tile written)
    load_lane_tile<C>(ks, kb, a.k_ts, kt0, k_hi, hd);
    load_lane_tile<C>(vs, vb, a.v_ts, kt0, k_hi, hd);
    __syncthreads();
    if (!active) continue;
    // scores of this lane's key with the warp's rows
    float s[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) s[r] = 0.0f;
    const float* kr = ks + lane * LS;
    const float* qw = qs + warp * kRows * hd;
#pragma unroll 4
    for (int e = 0; e < hd; ++e) {
      const float kv = kr[e];
#pragma unroll
      for (int r = 0; r < kRows; ++r) s[r] = fmaf(qw[r * hd + e], kv, s[r]);
    }
    const int key = kt0 + lane;
    float p[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const bool vis = key >= first[r] && key < end[r];
      const float sc = vis ? a.scale * s[r] : -INFINITY;
      const float m_new = fmaxf(m[r], warp_max(sc));
      // m_new = -inf: no key seen yet (the row's keys start later): nothing to add or rescale
      const bool none = m_new == -INFINITY;
      p[r] = (vis && !none) ? expf(sc - m_new) : 0.0f;
      const float alpha = none ? 1.0f : expf(m[r] - m_new);
      l[r] = l[r] * alpha + warp_sum(p[r]);
      m[r] = m_new;
#pragma unroll
      for (int c = 0; c < C; ++c) acc[r][c] *= alpha;
    }
    // acc += p v over the tile's keys
    const int nk = min(kColTile, k_hi - kt0);
    for (int j = 0; j < nk; ++j) {
      float vj[C];
#pragma unroll
      for (int c = 0; c < C; ++c) vj[c] = vs[j * LS + lane + 32 * c];
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const float pj = __shfl_sync(kFull, p[r], j);
#pragma unroll
        for (int c = 0; c < C; ++c) acc[r][c] = fmaf(pj, vj[c], acc[r][c]);
      }
    }
  }
  if (!active) return;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int i = iw + r;
    if (i >= a.Tq) break;
    // a row that sees no key (an empty key_start range) gets 0 and lse -inf
    const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
    float* o = a.out + b * a.o_bs + (int64_t)i * a.o_ts + (int64_t)h * hd;
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int e = lane + 32 * c;
      if (e < hd) o[e] = acc[r][c] * inv;
    }
    if (a.lse_out && lane == 0) a.lse_out[((int64_t)b * a.H + h) * a.Tq + i] = m[r] + logf(l[r]);
  }
}

// ---- backward -----------------------------------------------------------------------------

// D (B,H,Tq) = dO . O per query row: one warp per row.
__global__ void attention_dots_kernel(float* dots, const Args a) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + warp;
  if (row >= (int64_t)a.B * a.H * a.Tq) return;  // warp-uniform
  const int i = (int)(row % a.Tq);
  const int h = (int)((row / a.Tq) % a.H);
  const int b = (int)(row / ((int64_t)a.Tq * a.H));
  const int64_t at = b * a.o_bs + (int64_t)i * a.o_ts + (int64_t)h * a.hd;
  float s = 0.0f;
  for (int e = lane; e < a.hd; e += 32) s = fmaf(a.dout[at + e], a.o[at + e], s);
  s = warp_sum(s);
  if (lane == 0) dots[row] = s;
}

// dq: block (b, h, query tile); over the key tiles the tile's rows see,
// dq_i = sum_j dS_ij k_j with P_ij = exp(scale q_i.k_j - lse_i), dS_ij = scale P_ij (dO_i.v_j - D_i).
// smem: q and dO tiles (16, hd), k and v tiles (32, 32C+1).
template <int C>
__global__ void __launch_bounds__(kThreads, 1) attention_dq_kernel(const Args a) {
  extern __shared__ float smem[];
  constexpr int LS = lane_stride<C>();
  const int hd = a.hd;
  float* qs = smem;
  float* dos = qs + kRowTile * hd;
  float* ks = dos + kRowTile * hd;
  float* vs = ks + kColTile * LS;

  const int64_t unit = blockIdx.x;
  const int tile = a.n_tiles - 1 - (int)(unit % a.n_tiles);
  const int h = (int)((unit / a.n_tiles) % a.H);
  const int b = (int)(unit / ((int64_t)a.n_tiles * a.H));
  const int kvh = h / a.group;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int i0 = tile * kRowTile, i1 = min(a.Tq, i0 + kRowTile);
  const int iw = i0 + warp * kRows;
  const bool active = iw < a.Tq;

  const float* qb = a.q + b * a.q_bs + (int64_t)h * hd;
  const float* dob = a.dout + b * a.o_bs + (int64_t)h * hd;
  const float* kb = a.k + b * a.k_bs + (int64_t)kvh * hd;
  const float* vb = a.v + b * a.v_bs + (int64_t)kvh * hd;
  load_row_tile(qs, qb, a.q_ts, i0, a.Tq, hd);
  load_row_tile(dos, dob, a.o_ts, i0, a.Tq, hd);

  int first[kRows], end[kRows];
  row_ranges<kRows>(a, b, iw, first, end);
  float lse[kRows], dot[kRows], acc[kRows][C];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t at = ((int64_t)b * a.H + h) * a.Tq + iw + r;
    lse[r] = iw + r < a.Tq ? a.lse[at] : 0.0f;
    dot[r] = iw + r < a.Tq ? a.dots[at] : 0.0f;
#pragma unroll
    for (int c = 0; c < C; ++c) acc[r][c] = 0.0f;
  }
  int k_lo, k_hi;
  block_key_range(a, b, i0, i1, &k_lo, &k_hi);

  for (int kt0 = k_lo; kt0 < k_hi; kt0 += kColTile) {
    __syncthreads();
    load_lane_tile<C>(ks, kb, a.k_ts, kt0, k_hi, hd);
    load_lane_tile<C>(vs, vb, a.v_ts, kt0, k_hi, hd);
    __syncthreads();
    if (!active) continue;
    float s[kRows], dp[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) s[r] = dp[r] = 0.0f;
    const float* kr = ks + lane * LS;
    const float* vr = vs + lane * LS;
    const float* qw = qs + warp * kRows * hd;
    const float* dw = dos + warp * kRows * hd;
#pragma unroll 4
    for (int e = 0; e < hd; ++e) {
      const float kv = kr[e], vv = vr[e];
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        s[r] = fmaf(qw[r * hd + e], kv, s[r]);
        dp[r] = fmaf(dw[r * hd + e], vv, dp[r]);
      }
    }
    const int key = kt0 + lane;
    float ds[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const bool vis = key >= first[r] && key < end[r];
      const float p = vis ? expf(fmaf(s[r], a.scale, -lse[r])) : 0.0f;
      ds[r] = vis ? a.scale * p * (dp[r] - dot[r]) : 0.0f;
    }
    const int nk = min(kColTile, k_hi - kt0);
    for (int j = 0; j < nk; ++j) {
      float kj[C];
#pragma unroll
      for (int c = 0; c < C; ++c) kj[c] = ks[j * LS + lane + 32 * c];
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const float dsj = __shfl_sync(kFull, ds[r], j);
#pragma unroll
        for (int c = 0; c < C; ++c) acc[r][c] = fmaf(dsj, kj[c], acc[r][c]);
      }
    }
  }
  if (!active) return;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int i = iw + r;
    if (i >= a.Tq) break;
    float* o = a.out + b * a.q_bs + (int64_t)i * a.q_ts + (int64_t)h * hd;  // dq has q's layout
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int e = lane + 32 * c;
      if (e < hd) o[e] = acc[r][c];
    }
  }
}

// dk, dv: block (b, kv head, key tile of 16); over the group's query heads and the queries
// that can see the tile (absolute position >= its first key), in chunks of 32:
// dv_j = sum_i P_ij dO_i, dk_j = sum_i dS_ij q_i. Keys no query sees get 0.
// smem: k and v tiles (16, hd), q and dO chunks (32, 32C+1).
template <int C>
__global__ void __launch_bounds__(kThreads, 1) attention_dkdv_kernel(const Args a) {
  extern __shared__ float smem[];
  constexpr int LS = lane_stride<C>();
  const int hd = a.hd;
  float* ks = smem;
  float* vs = ks + kRowTile * hd;
  float* qs = vs + kRowTile * hd;
  float* dos = qs + kColTile * LS;

  const int64_t unit = blockIdx.x;
  const int tile = (int)(unit % a.n_tiles);
  const int kvh = (int)((unit / a.n_tiles) % a.KV);
  const int b = (int)(unit / ((int64_t)a.n_tiles * a.KV));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int j0 = tile * kRowTile;
  const int jw = j0 + warp * kRows;  // this warp's first key
  const bool active = jw < a.Tk;

  const float* kb = a.k + b * a.k_bs + (int64_t)kvh * hd;
  const float* vb = a.v + b * a.v_bs + (int64_t)kvh * hd;
  load_row_tile(ks, kb, a.k_ts, j0, a.Tk, hd);
  load_row_tile(vs, vb, a.v_ts, j0, a.Tk, hd);

  float dk[kRows][C], dv[kRows][C];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int c = 0; c < C; ++c) dk[r][c] = dv[r][c] = 0.0f;

  // queries before i_begin sit before the tile's first key and see none of it
  const int i_begin = max(0, j0 - a.q_pos0);
  for (int h = kvh * a.group; h < (kvh + 1) * a.group; ++h) {
    const float* qb = a.q + b * a.q_bs + (int64_t)h * hd;
    const float* dob = a.dout + b * a.o_bs + (int64_t)h * hd;
    const int64_t row_at = ((int64_t)b * a.H + h) * a.Tq;  // lse, D of (b, h, 0)
    for (int ic0 = i_begin; ic0 < a.Tq; ic0 += kColTile) {
      __syncthreads();  // the previous chunk read (and, the first time, the k, v tiles written)
      load_lane_tile<C>(qs, qb, a.q_ts, ic0, a.Tq, hd);
      load_lane_tile<C>(dos, dob, a.o_ts, ic0, a.Tq, hd);
      __syncthreads();
      if (!active) continue;
      // this lane's query
      const int i = ic0 + lane;
      const bool qvalid = i < a.Tq;
      const int first = qvalid && a.key_start ? max(0, a.key_start[(int64_t)b * a.Tq + i]) : 0;
      const int end = qvalid ? min(a.Tk, a.q_pos0 + i + 1) : 0;
      const float lse = qvalid ? a.lse[row_at + i] : 0.0f;
      const float dot = qvalid ? a.dots[row_at + i] : 0.0f;
      float s[kRows], dp[kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r) s[r] = dp[r] = 0.0f;
      const float* qr = qs + lane * LS;
      const float* dr = dos + lane * LS;
      const float* kw = ks + warp * kRows * hd;
      const float* vw = vs + warp * kRows * hd;
#pragma unroll 4
      for (int e = 0; e < hd; ++e) {
        const float qe = qr[e], de = dr[e];
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          s[r] = fmaf(qe, kw[r * hd + e], s[r]);
          dp[r] = fmaf(de, vw[r * hd + e], dp[r]);
        }
      }
      float p[kRows], ds[kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const int j = jw + r;
        const bool vis = j >= first && j < end;  // end <= Tk, and 0 for a lane past Tq
        p[r] = vis ? expf(fmaf(s[r], a.scale, -lse)) : 0.0f;
        ds[r] = vis ? a.scale * p[r] * (dp[r] - dot) : 0.0f;
      }
      const int nq = min(kColTile, a.Tq - ic0);
      for (int qi = 0; qi < nq; ++qi) {
        float qv[C], dov[C];
#pragma unroll
        for (int c = 0; c < C; ++c) {
          qv[c] = qs[qi * LS + lane + 32 * c];
          dov[c] = dos[qi * LS + lane + 32 * c];
        }
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          const float pq = __shfl_sync(kFull, p[r], qi);
          const float dsq = __shfl_sync(kFull, ds[r], qi);
#pragma unroll
          for (int c = 0; c < C; ++c) {
            dv[r][c] = fmaf(pq, dov[c], dv[r][c]);
            dk[r][c] = fmaf(dsq, qv[c], dk[r][c]);
          }
        }
      }
    }
  }
  if (!active) return;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int j = jw + r;
    if (j >= a.Tk) break;
    float* dkr = a.dk + b * a.k_bs + (int64_t)j * a.k_ts + (int64_t)kvh * hd;  // dk, dv: k's, v's layouts
    float* dvr = a.dv + b * a.v_bs + (int64_t)j * a.v_ts + (int64_t)kvh * hd;
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int e = lane + 32 * c;
      if (e < hd) {
        dkr[e] = dk[r][c];
        dvr[e] = dv[r][c];
      }
    }
  }
}

// ---- over KV caches that live apart (backend.h CachedSeq; serving's decode) ----------------

// The entry whose rows [first, first + count) hold row r: the last with first <= r (entries
// are in row order; one with no rows shares its first with the next and is passed over).
__device__ __forceinline__ int find_seq(const CachedSeq* seqs, int n, int64_t r) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (seqs[mid].first <= r)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

// Block r: the new row r's key and value into its cache's position pos0 + i.
__global__ void kv_append_kernel(const CachedSeq* seqs, int n, int layer, const float* src, int64_t src_ts, int kvw) {
  const int64_t r = blockIdx.x;
  const CachedSeq e = seqs[find_seq(seqs, n, r)];
  const int i = (int)(r - e.first);
  const float* s = src + (e.row0 + i) * src_ts;
  const int64_t at = layer * e.layer_stride + (int64_t)(e.pos0 + i) * kvw;
  for (int c = threadIdx.x; c < kvw; c += blockDim.x) {
    e.k[at + c] = s[c];
    e.v[at + c] = s[kvw + c];
  }
}

struct CachedArgs {
  float* out = nullptr;
  const float* q = nullptr;
  const CachedSeq* seqs = nullptr;
  float* partial = nullptr;  // splits > 1: (rows, H, splits) partial results of 2 + 32 C floats
  int n = 0, layer = 0, H = 0, group = 1, hd = 0, splits = 1;
  int64_t q_ts = 0, kv_ts = 0, o_ts = 0;
  float scale = 1.0f;
};

// Partial results of one query row over disjoint key ranges, each (m, l, acc[32 C]) at `stride`
// floats: m the largest score, l the sum of exp(score - m), acc the sum of exp(score - m) v.
// Combined in order (a fixed order: the same bits on every run) into the same form: M, L and
// o (unnormalized), the same in every lane.
template <int C>
__device__ __forceinline__ void combine_partials(const float* p, int stride, int count, int lane, float* o,
                                                 float* L, float* M_out) {
  float M = -INFINITY;
  for (int w = 0; w < count; ++w) M = fmaxf(M, p[w * stride]);
  *L = 0.0f;
#pragma unroll
  for (int c = 0; c < C; ++c) o[c] = 0.0f;
  for (int w = 0; w < count; ++w) {
    const float* pw = p + w * stride;
    if (pw[0] == -INFINITY) continue;  // a range with no keys
    const float f = expf(pw[0] - M);
    *L = fmaf(pw[1], f, *L);
#pragma unroll
    for (int c = 0; c < C; ++c) o[c] = fmaf(pw[2 + lane + 32 * c], f, o[c]);
  }
  *M_out = M;
}

// orow[d] = o[c] / L for this lane's dimensions d = lane + 32 c < hd.
template <int C>
__device__ __forceinline__ void write_normalized(float* orow, const float* o, float L, int hd, int lane) {
  const float inv = 1.0f / L;
#pragma unroll
  for (int c = 0; c < C; ++c) {
    const int d = lane + 32 * c;
    if (d < hd) orow[d] = o[c] * inv;
  }
}

// Block (row r, head h, split sp), for a few query rows per sequence (decoding): the tiled
// kernel above would use one of its 16 rows. The row's keys are cut into `splits` ranges (more
// than one only when there are too few rows and heads to fill the GPU: long contexts at small
// batch, flash-decoding); the block's 4 warps take a contiguous quarter of its range each,
// lanes over the head's dimensions (lane + 32 c, so every key and value row is read
// coalesced); one key at a time, its score summed by a butterfly, an online softmax. The four
// warps' results are combined in warp order, then written out (one split) or left as a
// partial result for attention_combine_kernel.
template <int C>
__global__ void __launch_bounds__(kThreads) attention_cached_kernel(const CachedArgs a) {
  constexpr int kStride = 2 + 32 * C;
  __shared__ float part[kWarps * kStride];
  const int64_t unit = blockIdx.x / a.splits;  // r * H + h
  const int sp = (int)(blockIdx.x % a.splits);
  const int64_t r = unit / a.H;
  const int h = (int)(unit % a.H);
  const CachedSeq e = a.seqs[find_seq(a.seqs, a.n, r)];
  const int i = (int)(r - e.first);
  const int64_t row = e.row0 + i;
  const int n_keys = e.pos0 + i + 1;
  const int kvh = h / a.group;
  const int hd = a.hd;
  const float* qr = a.q + row * a.q_ts + (int64_t)h * hd;
  const float* kb = e.k + a.layer * e.layer_stride + (int64_t)kvh * hd;
  const float* vb = e.v + a.layer * e.layer_stride + (int64_t)kvh * hd;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float qv[C], acc[C];
#pragma unroll
  for (int c = 0; c < C; ++c) {
    const int d = lane + 32 * c;
    qv[c] = d < hd ? qr[d] : 0.0f;
    acc[c] = 0.0f;
  }
  const int chunk = (n_keys + a.splits - 1) / a.splits;
  const int s0 = min(n_keys, sp * chunk), s1 = min(n_keys, s0 + chunk);
  const int per = (s1 - s0 + kWarps - 1) / kWarps;
  const int j0 = min(s1, s0 + warp * per), j1 = min(s1, j0 + per);
  float m = -INFINITY, l = 0.0f;
  for (int j = j0; j < j1; ++j) {
    const float* kr = kb + (int64_t)j * a.kv_ts;
    float s = 0.0f;
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int d = lane + 32 * c;
      if (d < hd) s = fmaf(qv[c], kr[d], s);
    }
    s = a.scale * warp_sum(s);
    const float m_new = fmaxf(m, s);
    const float alpha = expf(m - m_new);  // 0 at the first key (m = -inf)
    const float p = expf(s - m_new);
    l = fmaf(l, alpha, p);
    const float* vr = vb + (int64_t)j * a.kv_ts;
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int d = lane + 32 * c;
      if (d < hd) acc[c] = fmaf(p, vr[d], acc[c] * alpha);
    }
    m = m_new;
  }
  float* mine = part + warp * kStride;
  if (lane == 0) {
    mine[0] = m;
    mine[1] = l;
  }
#pragma unroll
  for (int c = 0; c < C; ++c) mine[2 + lane + 32 * c] = acc[c];
  __syncthreads();
  if (warp != 0) return;
  float o[C], L, M;
  combine_partials<C>(part, kStride, kWarps, lane, o, &L, &M);
  if (a.splits > 1) {  // the block's partial result
    float* dst = a.partial + (unit * a.splits + sp) * kStride;
    if (lane == 0) {
      dst[0] = M;
      dst[1] = L;
    }
#pragma unroll
    for (int c = 0; c < C; ++c) dst[2 + lane + 32 * c] = o[c];
    return;
  }
  write_normalized<C>(a.out + row * a.o_ts + (int64_t)h * hd, o, L, hd, lane);
}

// One warp per (row r, head h): the splits' partial results combined in split order.
template <int C>
__global__ void attention_combine_kernel(const CachedArgs a) {
  constexpr int kStride = 2 + 32 * C;
  const int64_t unit = blockIdx.x;
  const int64_t r = unit / a.H;
  const int h = (int)(unit % a.H);
  const CachedSeq e = a.seqs[find_seq(a.seqs, a.n, r)];
  const int64_t row = e.row0 + (r - e.first);
  const int lane = threadIdx.x;
  float o[C], L, M;
  combine_partials<C>(a.partial + unit * a.splits * kStride, kStride, a.splits, lane, o, &L, &M);
  write_normalized<C>(a.out + row * a.o_ts + (int64_t)h * a.hd, o, L, a.hd, lane);
}

// ---- launchers ----------------------------------------------------------------------------

Args make_args(const AttnDims& d, const char* op) {
  if (d.hd <= 0 || d.hd > kMaxHd)
    throw Error(std::string(op) + ": head dimension " + std::to_string(d.hd) +
                " is not supported by the CUDA kernels (1.." + std::to_string(kMaxHd) + ")");
  if (d.H <= 0 || d.KV <= 0 || d.H % d.KV != 0)
    throw Error(std::string(op) + ": " + std::to_string(d.H) + " query heads cannot share " + std::to_string(d.KV) +
                " kv heads (H must be a positive multiple of KV)");
  if (d.B < 0 || d.Tq < 0 || d.Tk < 0) throw Error(std::string(op) + ": negative B, Tq or Tk");
  Args a;
  a.key_start = d.key_start;
  a.B = d.B, a.Tq = d.Tq, a.Tk = d.Tk, a.H = d.H, a.KV = d.KV, a.hd = d.hd, a.q_pos0 = d.q_pos0;
  a.group = d.H / d.KV;
  a.q_bs = d.q_bs, a.q_ts = d.q_ts, a.k_bs = d.k_bs, a.k_ts = d.k_ts;
  a.v_bs = d.v_bs, a.v_ts = d.v_ts, a.o_bs = d.o_bs, a.o_ts = d.o_ts;
  a.scale = 1.0f / std::sqrt(static_cast<float>(d.hd));  // the CPU's float
  return a;
}

int checked_grid(int64_t blocks, const char* op) {
  if (blocks > INT_MAX) throw Error(std::string(op) + ": " + std::to_string(blocks) + " thread blocks is too many");
  return (int)blocks;
}

// The dynamic shared memory a launch needs (up to 98.5 KiB at hd = 256; past 48 KiB, static
// included, a kernel must opt in). Set before every launch: a host-side attribute, read when
// the launch is queued.
template <class Kernel>
void set_smem(Kernel kernel, size_t bytes) {
  AJI_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

template <int C>
void launch_forward(Context& ctx, const Args& a, int grid) {
  const size_t smem = sizeof(float) * ((size_t)kRowTile * a.hd + 2 * (size_t)kColTile * lane_stride<C>());
  set_smem(attention_forward_kernel<C>, smem);
  attention_forward_kernel<C><<<grid, kThreads, smem, ctx.stream>>>(a);
  ctx.launched("attention_forward");
}
template <int C>
void launch_dq(Context& ctx, const Args& a, int grid) {
  const size_t smem = sizeof(float) * (2 * (size_t)kRowTile * a.hd + 2 * (size_t)kColTile * lane_stride<C>());
  set_smem(attention_dq_kernel<C>, smem);
  attention_dq_kernel<C><<<grid, kThreads, smem, ctx.stream>>>(a);
  ctx.launched("attention_backward (dq)");
}
template <int C>
void launch_dkdv(Context& ctx, const Args& a, int grid) {
  const size_t smem = sizeof(float) * (2 * (size_t)kRowTile * a.hd + 2 * (size_t)kColTile * lane_stride<C>());
  set_smem(attention_dkdv_kernel<C>, smem);
  attention_dkdv_kernel<C><<<grid, kThreads, smem, ctx.stream>>>(a);
  ctx.launched("attention_backward (dk, dv)");
}
template <int C>
void launch_cached(Context& ctx, CachedArgs a, int64_t units) {
  if (a.splits > 1)
    a.partial = static_cast<float*>(ctx.workspace(sizeof(float) * (size_t)(units * a.splits) * (2 + 32 * C)));
  attention_cached_kernel<C><<<checked_grid(units * a.splits, "attention_cached"), kThreads, 0, ctx.stream>>>(a);
  ctx.launched("attention_cached");
  if (a.splits > 1) {
    attention_combine_kernel<C><<<checked_grid(units, "attention_cached"), 32, 0, ctx.stream>>>(a);
    ctx.launched("attention_cached (combine)");
  }
}

// launch<C>(...) with C = ceil(hd / 32), the dimensions per lane
#define AJI_ATTN_DISPATCH(launch, ...)                 \
  switch ((a.hd + 31) / 32) {                          \
    case 1: launch<1>(__VA_ARGS__); break;             \
    case 2: launch<2>(__VA_ARGS__); break;             \
    case 3: launch<3>(__VA_ARGS__); break;             \
    case 4: launch<4>(__VA_ARGS__); break;             \
    case 5: launch<5>(__VA_ARGS__); break;             \
    case 6: launch<6>(__VA_ARGS__); break;             \
    case 7: launch<7>(__VA_ARGS__); break;             \
    default: launch<8>(__VA_ARGS__); break;            \
  }

}  // namespace

// out (layout of q, H heads), lse (B,H,Tq) (may be null) = causal GQA attention of q, k, v.
void attention_forward(Context& ctx, float* out, float* lse, const float* q, const float* k, const float* v,
                       const AttnDims& d) {
  Args a = make_args(d, "attention_forward");
  if (d.B == 0 || d.Tq == 0) return;
  a.out = out, a.lse_out = lse, a.q = q, a.k = k, a.v = v;
  a.n_tiles = (d.Tq + kRowTile - 1) / kRowTile;
  const int grid = checked_grid((int64_t)d.B * d.H * a.n_tiles, "attention_forward");
  AJI_ATTN_DISPATCH(launch_forward, ctx, a, grid);
}

// dq, dk, dv (overwrite; layouts of q, k, v) from dout (layout of out), recomputing the
// probabilities from q, k and lse.
void attention_backward(Context& ctx, float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* out, const float* lse, const AttnDims& d) {
  Args a = make_args(d, "attention_backward");
  if (d.B == 0) return;
  if (!lse && d.Tq > 0) throw Error("attention_backward needs the forward's log-sum-exp (lse is null)");
  a.q = q, a.k = k, a.v = v, a.dout = dout, a.lse = lse;
  float* dots = nullptr;
  const int64_t rows = (int64_t)d.B * d.H * d.Tq;
  if (rows > 0) {
    dots = static_cast<float*>(ctx.workspace(sizeof(float) * (size_t)rows));  // (B,H,Tq)
    a.o = out;
    const int rows_per_block = 8;
    attention_dots_kernel<<<checked_grid((rows + rows_per_block - 1) / rows_per_block, "attention_backward"),
                            32 * rows_per_block, 0, ctx.stream>>>(dots, a);
    ctx.launched("attention_backward (dO . O)");
  }
  a.dots = dots;
  if (rows > 0) {
    a.out = dq;
    a.n_tiles = (d.Tq + kRowTile - 1) / kRowTile;
    const int grid = checked_grid((int64_t)d.B * d.H * a.n_tiles, "attention_backward");
    AJI_ATTN_DISPATCH(launch_dq, ctx, a, grid);
  }
  if (d.Tk > 0) {
    a.out = nullptr;
    a.dk = dk, a.dv = dv;
    a.n_tiles = (d.Tk + kRowTile - 1) / kRowTile;
    const int grid = checked_grid((int64_t)d.B * d.KV * a.n_tiles, "attention_backward");
    AJI_ATTN_DISPATCH(launch_dkdv, ctx, a, grid);
  }
}

void kv_append(Context& ctx, const CachedSeq* seqs, int n, int64_t rows, int layer, const float* src, int64_t src_ts,
               int kvw) {
  if (n <= 0 || rows <= 0 || kvw <= 0) return;
  kv_append_kernel<<<checked_grid(rows, "kv_append"), 128, 0, ctx.stream>>>(seqs, n, layer, src, src_ts, kvw);
  ctx.launched("kv_append");
}

void attention_cached(Context& ctx, float* out, const float* q, const CachedSeq* seqs, int n, int64_t rows, int layer,
                      const AttnDims& d) {
  AttnDims shape;  // the checks of make_args on the heads (B, Tq, Tk are not used here)
  shape.H = d.H, shape.KV = d.KV, shape.hd = d.hd;
  const Args checked = make_args(shape, "attention_cached");
  if (n <= 0 || rows <= 0) return;
  CachedArgs a;
  a.out = out, a.q = q, a.seqs = seqs, a.n = n, a.layer = layer;
  a.H = d.H, a.group = checked.group, a.hd = d.hd;
  a.q_ts = d.q_ts, a.kv_ts = d.k_ts, a.o_ts = d.o_ts;
  a.scale = checked.scale;
  // Rows x heads blocks; where they are fewer than twice the multiprocessors, each row's keys
  // are split over up to 32 blocks of at least 128 keys (d.Tk: the most keys a row sees).
  const int64_t units = rows * d.H;
  const int64_t want = (2 * (int64_t)std::max(ctx.sm_count, 1) + units - 1) / units;
  const int64_t most = std::max<int64_t>(1, ((int64_t)d.Tk + 127) / 128);
  a.splits = (int)std::max<int64_t>(1, std::min<int64_t>({want, most, 32}));
  AJI_ATTN_DISPATCH(launch_cached, ctx, a, units);
}

#undef AJI_ATTN_DISPATCH

}  // namespace aji::kernels::cuda
