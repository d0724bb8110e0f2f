// Small AVX-512 helpers shared by the kernels that are compiled function by function for
// AVX-512 (lowbit.cpp, small_gemm.cpp) and taken only when the CPU has it.
#pragma once

#include <immintrin.h>

namespace aji::kernels::cpu {

// The sum of 16 lanes in one fixed order, ((h0+h4)+(h2+h6)) + ((h1+h5)+(h3+h7)) with
// h[i] = v[i] + v[i+8] (a kernel's results must not depend on which rows were computed
// beside it), in registers: a store and 16 scalar reloads stalls on store forwarding, as
// long as a 24-step dot product itself (measured). Masked extracts with an explicit source:
// GCC 12's plain ones (and _mm512_reduce_add_ps, _mm512_castps512_ps256) start from
// _mm*_undefined_*, which -Wuninitialized reports.
__attribute__((target("avx512f"))) inline float hsum512(__m512 v) {
  const __m128 z = _mm_setzero_ps();
  const __m128 q0 = _mm512_mask_extractf32x4_ps(z, 0xF, v, 0), q1 = _mm512_mask_extractf32x4_ps(z, 0xF, v, 1);
  const __m128 q2 = _mm512_mask_extractf32x4_ps(z, 0xF, v, 2), q3 = _mm512_mask_extractf32x4_ps(z, 0xF, v, 3);
  const __m128 a = _mm_add_ps(_mm_add_ps(q0, q2), _mm_add_ps(q1, q3));  // h[j] + h[j+4], h[i] = v[i] + v[i+8]
  const __m128 b = _mm_add_ps(a, _mm_movehl_ps(a, a));                   // a0+a2, a1+a3
  return _mm_cvtss_f32(_mm_add_ss(b, _mm_movehdup_ps(b)));
}

// hsum512 of four vectors at once, lane i of the result the sum of the i-th: the same
// butterfly (lane j + lane j+8, then + j+4, + j+2, + j+1) on the four side by side, so each
// sum is hsum512's bits (float addition commutes exactly). 13 instructions for four sums
// against hsum512's 8 for one: the epilogue of a register tile of dot products. (Masked
// forms with an explicit source, as hsum512's, for GCC 12's -Wuninitialized.)
__attribute__((target("avx512f"))) inline __m128 hsum512x4(__m512 a, __m512 b, __m512 c, __m512 d) {
  // lanes j + j+8: [a h0-7 | b h0-7] and [c h0-7 | d h0-7]
  const __m512 ab = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(0xFFFF, a, b, 0x44), _mm512_maskz_shuffle_f32x4(0xFFFF, a, b, 0xEE));
  const __m512 cd = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(0xFFFF, c, d, 0x44), _mm512_maskz_shuffle_f32x4(0xFFFF, c, d, 0xEE));
  // + j+4: one 128-bit group per vector, [a | b | c | d]
  const __m512 g = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(0xFFFF, ab, cd, 0x88), _mm512_maskz_shuffle_f32x4(0xFFFF, ab, cd, 0xDD));
  // + j+2, then + j+1, within each group
  const __m512 g2 = _mm512_add_ps(g, _mm512_maskz_permute_ps(0xFFFF, g, 0x4E));
  const __m512 g1 = _mm512_add_ps(g2, _mm512_maskz_permute_ps(0xFFFF, g2, 0xB1));
  // lane 0 of each group
  const __m512 r = _mm512_maskz_permutexvar_ps(0xFFFF, _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), g1);
  return _mm512_mask_extractf32x4_ps(_mm_setzero_ps(), 0xF, r, 0);
}

// y[0..3] = s + bias[0..3] (0 without a bias), plus y[0..3] when accumulating: the scalar
// epilogue (v = sum + bias; y = accumulate ? y + v : v) on four outputs, the same bits.
__attribute__((target("avx512f"))) inline void store4(float* y, __m128 s, const float* bias, bool accumulate) {
  __m128 v = _mm_add_ps(s, bias ? _mm_loadu_ps(bias) : _mm_setzero_ps());
  if (accumulate) v = _mm_add_ps(_mm_loadu_ps(y), v);
  _mm_storeu_ps(y, v);
}

// hsum512 of the vector whose lanes 0-7 are lo and 8-15 are hi: the same bits (its first
// step is lo + hi), for a kernel that keeps a 16-lane chain as two 256-bit halves.
__attribute__((target("avx2"))) inline float hsum_halves(__m256 lo, __m256 hi) {
  const __m256 h = _mm256_add_ps(lo, hi);
  const __m128 a = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  const __m128 b = _mm_add_ps(a, _mm_movehl_ps(a, a));
  return _mm_cvtss_f32(_mm_add_ss(b, _mm_movehdup_ps(b)));
}

}  // namespace aji::kernels::cpu
