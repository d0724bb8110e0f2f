// Small-row fp32 products (small_gemm.h): AVX-512F tiles, compiled for that ISA function by
// function and taken only when the CPU has it, and AVX2 tiles (the shipped binary's
// x86-64-v3 baseline) computing the same bits.
#include "aji/kernels/cpu/small_gemm.h"

#include <immintrin.h>

#include <algorithm>

#include "aji/kernels/cpu/avx512.h"
#include "aji/kernels/cpu/parallel.h"

namespace aji::kernels::cpu {

namespace {

#define AJI_AVX512 __attribute__((target("avx512f")))

// ---- W stored (OC, IC): dot products along k --------------------------------------------

constexpr int kRowsOI = 4, kOutsOI = 4;  // 16 accumulators + 4 weight vectors + 1 input

// R rows x O outputs (weight rows o0..o0+O-1). Output (r, o) is acc = fma(x[r, k:k+16],
// w[o, k:k+16], acc) over the 16-lane chunks of k in order (the tail chunk zero-masked),
// then hsum, then + bias, then + out when accumulating: the same operations whatever R and O
// are, so one row alone (R = O = 1) gets the bits it gets in any tile.
template <int R, int O>
AJI_AVX512 inline void tile_outin(float* out, const float* x, const float* w, const float* bias, int64_t IC, int64_t OC,
                                  int64_t r0, int64_t o0, int64_t nfull, __mmask16 tail, bool accumulate) {
  __m512 acc[R][O];
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < O; ++o) acc[r][o] = _mm512_setzero_ps();
  const float* xr = x + r0 * IC;
  const float* wo = w + o0 * IC;
  // O > 1: the block of weight rows two blocks ahead, one line per row per step, into L2
  // while this block is read (first row tile only; later ones find the block in L1): O
  // interleaved short streams defeat the hardware prefetcher (measured 13% slower decode
  // steps without this; prefetching into L1 (T0) one block ahead instead: the tiny model's
  // 4-row decode 1.7x as long, 16 rows 1.13-1.2x). O = 1 is one sequential stream, which the
  // hardware prefetches better alone.
  const float* next = O > 1 && r0 == 0 && o0 + 3 * O <= OC ? wo + 2 * O * IC : nullptr;
  for (int64_t k = 0; k < nfull; ++k) {
    __m512 wv[O];
    if (next)
      for (int o = 0; o < O; ++o) _mm_prefetch(reinterpret_cast<const char*>(next + o * IC + k * 16), _MM_HINT_T2);
    for (int o = 0; o < O; ++o) wv[o] = _mm512_loadu_ps(wo + o * IC + k * 16);
    for (int r = 0; r < R; ++r) {
      const __m512 xv = _mm512_loadu_ps(xr + r * IC + k * 16);
      for (int o = 0; o < O; ++o) acc[r][o] = _mm512_fmadd_ps(xv, wv[o], acc[r][o]);
    }
  }
  if (tail) {
    __m512 wv[O];
    for (int o = 0; o < O; ++o) wv[o] = _mm512_maskz_loadu_ps(tail, wo + o * IC + nfull * 16);
    for (int r = 0; r < R; ++r) {
      const __m512 xv = _mm512_maskz_loadu_ps(tail, xr + r * IC + nfull * 16);
      for (int o = 0; o < O; ++o) acc[r][o] = _mm512_fmadd_ps(xv, wv[o], acc[r][o]);
    }
  }
  for (int r = 0; r < R; ++r) {
    if constexpr (O == 4) {  // four sums at once, the same bits (hsum512x4)
      store4(out + (r0 + r) * OC + o0, hsum512x4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]), bias ? bias + o0 : nullptr,
             accumulate);
    } else {
      for (int o = 0; o < O; ++o) {
        const float v = hsum512(acc[r][o]) + (bias ? bias[o0 + o] : 0.0f);
        float& y = out[(r0 + r) * OC + o0 + o];
        y = accumulate ? y + v : v;
      }
    }
  }
}

// One row against weight row o with 256-bit loads: lanes 0-7 and 8-15 of every 16-lane chunk
// in two accumulators, which is tile_outin's 16-lane chain split in halves, so the sum
// (hsum512's first step adds the halves) is the same bits. One row streams the weight from
// memory, and 256-bit loads measured faster there than 512-bit ones.
inline void row_outin(float* out, const float* x, const float* w, const float* bias, int64_t IC, int64_t o,
                                 int64_t nfull, int rem, bool accumulate) {
  __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
  const float* wo = w + o * IC;
  for (int64_t k = 0; k < nfull; ++k) {
    lo = _mm256_fmadd_ps(_mm256_loadu_ps(x + k * 16), _mm256_loadu_ps(wo + k * 16), lo);
    hi = _mm256_fmadd_ps(_mm256_loadu_ps(x + k * 16 + 8), _mm256_loadu_ps(wo + k * 16 + 8), hi);
  }
  if (rem) {  // lanes past the end load as zero: fma(0, 0, acc) leaves them as tile_outin does
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i mlo = _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), lane);
    const __m256i mhi = _mm256_cmpgt_epi32(_mm256_set1_epi32(rem - 8), lane);
    const float* xt = x + nfull * 16;
    const float* wt = wo + nfull * 16;
    lo = _mm256_fmadd_ps(_mm256_maskload_ps(xt, mlo), _mm256_maskload_ps(wt, mlo), lo);
    hi = _mm256_fmadd_ps(_mm256_maskload_ps(xt + 8, mhi), _mm256_maskload_ps(wt + 8, mhi), hi);
  }
  const float v = hsum_halves(lo, hi) + (bias ? bias[o] : 0.0f);
  out[o] = accumulate ? out[o] + v : v;
}

using OutInFn = void (*)(float*, const float*, const float*, const float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                         __mmask16, bool);

template <int R>
constexpr OutInFn outin_for(int o) {
  return o == 1 ? tile_outin<R, 1> : o == 2 ? tile_outin<R, 2> : o == 3 ? tile_outin<R, 3> : tile_outin<R, 4>;
}

AJI_AVX512 void outin(float* out, const float* inp, const float* w, const float* bias, int64_t N, int IC, int OC,
                      bool accumulate) {
  static const OutInFn table[kRowsOI][kOutsOI] = {
      {outin_for<1>(1), outin_for<1>(2), outin_for<1>(3), outin_for<1>(4)},
      {outin_for<2>(1), outin_for<2>(2), outin_for<2>(3), outin_for<2>(4)},
      {outin_for<3>(1), outin_for<3>(2), outin_for<3>(3), outin_for<3>(4)},
      {outin_for<4>(1), outin_for<4>(2), outin_for<4>(3), outin_for<4>(4)},
  };
  const int64_t nfull = IC / 16;
  const __mmask16 tail = IC % 16 ? static_cast<__mmask16>((1u << (IC % 16)) - 1) : 0;
  if (N == 1) {  // one row: one weight row after another, a single stream through memory
#pragma omp parallel for if (parallel_worth((int64_t)OC * IC)) schedule(dynamic, 32)
    for (int64_t o = 0; o < OC; ++o) row_outin(out, inp, w, bias, IC, o, nfull, IC % 16, accumulate);
    return;
  }
  for_tiles<kRowsOI, kOutsOI>(N, OC, (int64_t)OC * IC, [&](int nr, int no, int64_t r0, int64_t o0) {
    table[nr - 1][no - 1](out, inp, w, bias, IC, OC, r0, o0, nfull, tail, accumulate);
  });
}

// ---- W stored (IC, OC): outer products along k ------------------------------------------

constexpr int kRowsIO = 8, kColsIO = 32;  // 16 accumulators + 2 weight vectors + 1 broadcast

// R rows x 32 columns (masked at the right edge). Output (r, j) is acc = fma(x[r, k],
// w[k, j], acc) for k = 0.. in order, then + bias, then + out when accumulating.
template <int R>
AJI_AVX512 inline void tile_inout(float* out, const float* x, const float* w, const float* bias, int64_t IC, int64_t OC,
                                  int64_t r0, int64_t c0, __mmask16 m0, __mmask16 m1, bool accumulate) {
  __m512 a0[R], a1[R];
  for (int r = 0; r < R; ++r) a0[r] = a1[r] = _mm512_setzero_ps();
  const float* xr = x + r0 * IC;
  const float* wc = w + c0;
  for (int64_t k = 0; k < IC; ++k) {
    const __m512 w0 = _mm512_maskz_loadu_ps(m0, wc + k * OC), w1 = _mm512_maskz_loadu_ps(m1, wc + k * OC + 16);
    for (int r = 0; r < R; ++r) {
      const __m512 xb = _mm512_set1_ps(xr[r * IC + k]);
      a0[r] = _mm512_fmadd_ps(xb, w0, a0[r]);
      a1[r] = _mm512_fmadd_ps(xb, w1, a1[r]);
    }
  }
  const __m512 b0 = bias ? _mm512_maskz_loadu_ps(m0, bias + c0) : _mm512_setzero_ps();
  const __m512 b1 = bias ? _mm512_maskz_loadu_ps(m1, bias + c0 + 16) : _mm512_setzero_ps();
  for (int r = 0; r < R; ++r) {
    float* y = out + (r0 + r) * OC + c0;
    __m512 v0 = _mm512_add_ps(a0[r], b0), v1 = _mm512_add_ps(a1[r], b1);
    if (accumulate) {
      v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, y), v0);
      v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, y + 16), v1);
    }
    _mm512_mask_storeu_ps(y, m0, v0);
    _mm512_mask_storeu_ps(y + 16, m1, v1);
  }
}

using InOutFn = void (*)(float*, const float*, const float*, const float*, int64_t, int64_t, int64_t, int64_t, __mmask16,
                         __mmask16, bool);

AJI_AVX512 void inout(float* out, const float* inp, const float* w, const float* bias, int64_t N, int IC, int OC,
                      bool accumulate) {
  static const InOutFn table[kRowsIO] = {tile_inout<1>, tile_inout<2>, tile_inout<3>, tile_inout<4>,
                                         tile_inout<5>, tile_inout<6>, tile_inout<7>, tile_inout<8>};
  const int64_t blocks = (OC + kColsIO - 1) / kColsIO;
  auto mask = [](int64_t n) -> __mmask16 {
    return n >= 16 ? static_cast<__mmask16>(0xFFFF) : n <= 0 ? 0 : static_cast<__mmask16>((1u << n) - 1);
  };
#pragma omp parallel for if (parallel_worth((int64_t)OC * IC)) schedule(dynamic, 2)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t c0 = b * kColsIO, nc = std::min<int64_t>(kColsIO, OC - c0);
    const __mmask16 m0 = mask(nc), m1 = mask(nc - 16);
    for (int64_t r0 = 0; r0 < N; r0 += kRowsIO) {
      const int nr = static_cast<int>(std::min<int64_t>(kRowsIO, N - r0));
      table[nr - 1](out, inp, w, bias, IC, OC, r0, c0, m0, m1, accumulate);
    }
  }
}

#undef AJI_AVX512

// ---- AVX2 + FMA (x86-64-v3: every CPU the binary runs on) --------------------------------
// The same chains as the AVX-512 tiles, each 16-lane accumulator kept as two 256-bit halves
// (lanes 0-7, 8-15), the tail loaded zero-masked, hsum_halves = hsum512's order, the same
// scalar epilogue: on an AVX-512 CPU these give the AVX-512 kernels' bits exactly.

// A tile runs the lanes 0-7 chains over all k, then the lanes 8-15 ones (independent
// chains, so the same bits as side by side): one accumulator per output in each pass, which
// leaves registers for 4 rows x 3 outputs (AVX2 has 16).
constexpr int kRowsOI2 = 4, kOutsOI2 = 3;  // 12 accumulators + 3 weight vectors + 1 input

template <int R, int O>
inline void tile_outin_avx2(float* out, const float* x, const float* w, const float* bias, int64_t IC, int64_t OC,
                            int64_t r0, int64_t o0, int64_t nfull, int rem, bool accumulate) {
  const float* xr = x + r0 * IC;
  const float* wo = w + o0 * IC;
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256 halves[2][R][O];
  for (int h = 0; h < 2; ++h) {
    __m256 acc[R][O];
    for (int r = 0; r < R; ++r)
      for (int o = 0; o < O; ++o) acc[r][o] = _mm256_setzero_ps();
    for (int64_t k = 0; k < nfull; ++k) {
      __m256 wv[O];
      for (int o = 0; o < O; ++o) wv[o] = _mm256_loadu_ps(wo + o * IC + k * 16 + 8 * h);
      for (int r = 0; r < R; ++r) {
        const __m256 xv = _mm256_loadu_ps(xr + r * IC + k * 16 + 8 * h);
        for (int o = 0; o < O; ++o) acc[r][o] = _mm256_fmadd_ps(xv, wv[o], acc[r][o]);
      }
    }
    if (rem) {  // lanes past the end load as zero: fma(0, 0, acc) leaves them
      const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(rem - 8 * h), lane);
      __m256 wv[O];
      for (int o = 0; o < O; ++o) wv[o] = _mm256_maskload_ps(wo + o * IC + nfull * 16 + 8 * h, m);
      for (int r = 0; r < R; ++r) {
        const __m256 xv = _mm256_maskload_ps(xr + r * IC + nfull * 16 + 8 * h, m);
        for (int o = 0; o < O; ++o) acc[r][o] = _mm256_fmadd_ps(xv, wv[o], acc[r][o]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int o = 0; o < O; ++o) halves[h][r][o] = acc[r][o];
  }
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < O; ++o) {
      const float v = hsum_halves(halves[0][r][o], halves[1][r][o]) + (bias ? bias[o0 + o] : 0.0f);
      float& y = out[(r0 + r) * OC + o0 + o];
      y = accumulate ? y + v : v;
    }
}

using OutInAvx2Fn = void (*)(float*, const float*, const float*, const float*, int64_t, int64_t, int64_t, int64_t,
                             int64_t, int, bool);
template <int R>
constexpr OutInAvx2Fn outin_avx2_for(int o) {
  return o == 1 ? tile_outin_avx2<R, 1> : o == 2 ? tile_outin_avx2<R, 2> : tile_outin_avx2<R, 3>;
}

void outin_avx2(float* out, const float* inp, const float* w, const float* bias, int64_t N, int IC, int OC,
                bool accumulate) {
  static const OutInAvx2Fn table[kRowsOI2][kOutsOI2] = {
      {outin_avx2_for<1>(1), outin_avx2_for<1>(2), outin_avx2_for<1>(3)},
      {outin_avx2_for<2>(1), outin_avx2_for<2>(2), outin_avx2_for<2>(3)},
      {outin_avx2_for<3>(1), outin_avx2_for<3>(2), outin_avx2_for<3>(3)},
      {outin_avx2_for<4>(1), outin_avx2_for<4>(2), outin_avx2_for<4>(3)},
  };
  const int64_t nfull = IC / 16;
  if (N == 1) {  // one row: one weight row after another (row_outin), a single stream
#pragma omp parallel for if (parallel_worth((int64_t)OC * IC)) schedule(dynamic, 32)
    for (int64_t o = 0; o < OC; ++o) row_outin(out, inp, w, bias, IC, o, nfull, IC % 16, accumulate);
    return;
  }
  for_tiles<kRowsOI2, kOutsOI2>(N, OC, (int64_t)OC * IC, [&](int nr, int no, int64_t r0, int64_t o0) {
    table[nr - 1][no - 1](out, inp, w, bias, IC, OC, r0, o0, nfull, IC % 16, accumulate);
  });
}

constexpr int kRowsIO2 = 3;  // x 32 columns: 12 accumulators + 4 weight vectors

// R rows x 32 columns (masked at the right edge), as tile_inout: output (r, j) is
// acc = fma(x[r, k], w[k, j], acc) for k = 0.. in order, + bias, + out when accumulating.
template <int R>
inline void tile_inout_avx2(float* out, const float* x, const float* w, const float* bias, int64_t IC, int64_t OC,
                            int64_t r0, int64_t c0, const __m256i (&m)[4], bool accumulate) {
  __m256 a[R][4];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < 4; ++q) a[r][q] = _mm256_setzero_ps();
  const float* xr = x + r0 * IC;
  const float* wc = w + c0;
  for (int64_t k = 0; k < IC; ++k) {
    __m256 wv[4];
    for (int q = 0; q < 4; ++q) wv[q] = _mm256_maskload_ps(wc + k * OC + 8 * q, m[q]);
    for (int r = 0; r < R; ++r) {
      const __m256 xb = _mm256_broadcast_ss(xr + r * IC + k);
      for (int q = 0; q < 4; ++q) a[r][q] = _mm256_fmadd_ps(xb, wv[q], a[r][q]);
    }
  }
  __m256 b[4];
  for (int q = 0; q < 4; ++q) b[q] = bias ? _mm256_maskload_ps(bias + c0 + 8 * q, m[q]) : _mm256_setzero_ps();
  for (int r = 0; r < R; ++r) {
    float* y = out + (r0 + r) * OC + c0;
    for (int q = 0; q < 4; ++q) {
      __m256 v = _mm256_add_ps(a[r][q], b[q]);
      if (accumulate) v = _mm256_add_ps(_mm256_maskload_ps(y + 8 * q, m[q]), v);
      _mm256_maskstore_ps(y + 8 * q, m[q], v);
    }
  }
}

void inout_avx2(float* out, const float* inp, const float* w, const float* bias, int64_t N, int IC, int OC,
                bool accumulate) {
  using Fn = void (*)(float*, const float*, const float*, const float*, int64_t, int64_t, int64_t, int64_t,
                      const __m256i (&)[4], bool);
  static const Fn table[kRowsIO2] = {tile_inout_avx2<1>, tile_inout_avx2<2>, tile_inout_avx2<3>};
  const int64_t blocks = (OC + kColsIO - 1) / kColsIO;
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
#pragma omp parallel for if (parallel_worth((int64_t)OC * IC)) schedule(dynamic, 2)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t c0 = b * kColsIO, nc = std::min<int64_t>(kColsIO, OC - c0);
    __m256i m[4];
    for (int q = 0; q < 4; ++q) m[q] = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(nc - 8 * q)), lane);
    for (int64_t r0 = 0; r0 < N; r0 += kRowsIO2) {
      const int nr = static_cast<int>(std::min<int64_t>(kRowsIO2, N - r0));
      table[nr - 1](out, inp, w, bias, IC, OC, r0, c0, m, accumulate);
    }
  }
}

bool g_force_avx2 = false;

bool have_avx512f() {
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok && !g_force_avx2;
}

}  // namespace

// Rows in blocks of kRowBlock: a block's activations stay in L2 while every weight row
// passes (64 rows x 1024 inputs = 256 KiB); the weight is streamed once per block.
constexpr int64_t kRowBlock = 64;

void small_rows_outin(float* out, const float* inp, const float* w, const float* bias, int64_t N, int IC, int OC,
                      bool accumulate) {
  const bool wide = have_avx512f();
  for (int64_t r0 = 0; r0 < N; r0 += kRowBlock)
    (wide ? outin : outin_avx2)(out + r0 * OC, inp + r0 * IC, w, bias, std::min(kRowBlock, N - r0), IC, OC, accumulate);
}

void small_rows_inout(float* out, const float* inp, const float* w, const float* bias, int64_t N, int IC, int OC,
                      bool accumulate) {
  const bool wide = have_avx512f();
  for (int64_t r0 = 0; r0 < N; r0 += kRowBlock)
    (wide ? inout : inout_avx2)(out + r0 * OC, inp + r0 * IC, w, bias, std::min(kRowBlock, N - r0), IC, OC, accumulate);
}

const char* small_rows_isa() { return have_avx512f() ? "avx512f" : "avx2"; }
void small_rows_force_avx2(bool on) { g_force_avx2 = on; }

}  // namespace aji::kernels::cpu
