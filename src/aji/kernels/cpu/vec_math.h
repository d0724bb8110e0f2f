// Vectorised exp for the element-wise ops (softmax, GELU's tanh, SiLU). glibc's expf is
// not vectorised without -ffast-math, and these loops are the hot element-wise work.
// Cephes-style: exp(x) = 2^n * p(r), |r| <= ln2/2, degree-6 polynomial; max relative
// error ~2e-7 on [-87, 88]; inputs below -87.3 (including -inf) give 0.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define AJI_VEC_AVX2 1
#endif

namespace aji::kernels::cpu::vm {

#if AJI_VEC_AVX2
inline __m256 exp8(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.3762626647949f);
  const __m256 lo = _mm256_set1_ps(-87.33654475f);
  const __m256 is_tiny = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);  // also true for -inf; NaN stays NaN below
  x = _mm256_min_ps(x, hi);
  x = _mm256_max_ps(x, lo);
  __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
  fx = _mm256_floor_ps(fx);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 z = _mm256_mul_ps(x, x);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
  y = _mm256_fmadd_ps(y, z, x);
  y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
  __m256i n = _mm256_cvttps_epi32(fx);
  n = _mm256_add_epi32(n, _mm256_set1_epi32(127));
  n = _mm256_slli_epi32(n, 23);
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(n));
  return _mm256_andnot_ps(is_tiny, y);
}
inline float hsum8(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  __m128 sh = _mm_movehdup_ps(lo);
  lo = _mm_add_ps(lo, sh);
  sh = _mm_movehl_ps(sh, lo);
  lo = _mm_add_ss(lo, sh);
  return _mm_cvtss_f32(lo);
}
// hsum8 of eight vectors at once, lane i the sum of a[i]: hsum8's additions (lanes j +
// j+4, then (0+1) + (2+3)) on the eight side by side, so each is hsum8's bits.
inline __m256 hsum8x8(const __m256* a) {
  __m256 p[4];
  for (int i = 0; i < 4; ++i)  // [a lo + a hi | b lo + b hi] for the pair (2i, 2i+1)
    p[i] = _mm256_add_ps(_mm256_permute2f128_ps(a[2 * i], a[2 * i + 1], 0x20),
                         _mm256_permute2f128_ps(a[2 * i], a[2 * i + 1], 0x31));
  // lanes 0-3 of p[i] hold vector 2i, lanes 4-7 vector 2i+1: (x0+x1), (x2+x3) pairwise, then
  // their sum; hadd's result order is [0, 2, 4, 6 | 1, 3, 5, 7] of the vectors
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(p[0], p[1]), _mm256_hadd_ps(p[2], p[3]));
  return _mm256_permutevar8x32_ps(h, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}
inline float hmax8(__m256 v) {
  __m128 lo = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_max_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_max_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}
#endif

// out[i] = exp(mul * in[i] - shift); returns the sum of the outputs. out may equal in.
// (mul folds a score scale into the same pass; mul = 1 gives exactly exp(in[i] - shift).)
inline float exp_shift_sum(float* out, const float* in, int64_t n, float shift, float mul = 1.0f) {
  int64_t i = 0;
  float sum = 0.0f;
#if AJI_VEC_AVX2
  __m256 acc = _mm256_setzero_ps();
  const __m256 s = _mm256_set1_ps(shift), a = _mm256_set1_ps(mul);
  for (; i + 8 <= n; i += 8) {
    __m256 e = exp8(_mm256_fmsub_ps(_mm256_loadu_ps(in + i), a, s));
    _mm256_storeu_ps(out + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  sum = hsum8(acc);
#endif
  for (; i < n; ++i) {
    out[i] = std::exp(std::fma(in[i], mul, -shift));
    sum += out[i];
  }
  return sum;
}

// Attention backward for one score row, in one pass: p[i] = exp(mul * p[i] - shift) (the
// probabilities recomputed from raw scores) and g[i] = mul * p[i] * (g[i] - d) (the score
// gradient from dL/dp, d = sum_i p_i dL/dp_i).
inline void softmax_grad_row(float* p, float* g, int64_t n, float mul, float shift, float d) {
  int64_t i = 0;
#if AJI_VEC_AVX2
  const __m256 a = _mm256_set1_ps(mul), s = _mm256_set1_ps(shift), dv = _mm256_set1_ps(d);
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp8(_mm256_fmsub_ps(_mm256_loadu_ps(p + i), a, s));
    _mm256_storeu_ps(p + i, e);
    _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_mul_ps(a, e), _mm256_sub_ps(_mm256_loadu_ps(g + i), dv)));
  }
#endif
  for (; i < n; ++i) {
    p[i] = std::exp(std::fma(p[i], mul, -shift));
    g[i] = mul * p[i] * (g[i] - d);
  }
}

inline float max_of(const float* x, int64_t n) {
  int64_t i = 0;
  float m = -INFINITY;
#if AJI_VEC_AVX2
  if (n >= 8) {
    __m256 acc = _mm256_loadu_ps(x);
    for (i = 8; i + 8 <= n; i += 8) acc = _mm256_max_ps(acc, _mm256_loadu_ps(x + i));
    m = hmax8(acc);
  }
#endif
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// x[i] *= s
inline void scale(float* x, int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

// sum of x[i]*y[i] in float with 8 lanes (vectorised reduction)
inline float dot(const float* x, const float* y, int64_t n) {
  int64_t i = 0;
  float s = 0.0f;
#if AJI_VEC_AVX2
  __m256 acc = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), acc);
  s = hsum8(acc);
#endif
  for (; i < n; ++i) s += x[i] * y[i];
  return s;
}

// Scalar-or-vector exp of one array (out may equal in).
inline void exp_array(float* out, const float* in, int64_t n) {
  int64_t i = 0;
#if AJI_VEC_AVX2
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, exp8(_mm256_loadu_ps(in + i)));
#endif
  for (; i < n; ++i) out[i] = std::exp(in[i]);
}

}  // namespace aji::kernels::cpu::vm
