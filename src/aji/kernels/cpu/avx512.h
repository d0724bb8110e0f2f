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

// hsum512 of the vector whose lanes 0-7 are lo and 8-15 are hi: the same bits (its first
// step is lo + hi), for a kernel that keeps a 16-lane chain as two 256-bit halves.
__attribute__((target("avx2"))) inline float hsum_halves(__m256 lo, __m256 hi) {
  const __m256 h = _mm256_add_ps(lo, hi);
  const __m128 a = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  const __m128 b = _mm_add_ps(a, _mm_movehl_ps(a, a));
  return _mm_cvtss_f32(_mm_add_ss(b, _mm_movehdup_ps(b)));
}

}  // namespace aji::kernels::cpu
