#include "aji/kernels/cpu/bf16_gemm.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "aji/base/error.h"
#include "aji/base/half.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define AJI_BF16_X86 1
#endif

namespace aji::kernels::cpu {

// ---- support -------------------------------------------------------------------------------

bool bf16_supported() {
  static const bool yes = [] {
    const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    const auto has = [&](dnnl_cpu_isa_t want) { return ((unsigned)isa & (unsigned)want) == (unsigned)want; };
    return has(dnnl_cpu_isa_avx512_core_bf16) || has(dnnl_cpu_isa_avx512_core_amx);
  }();
  return yes;
}

const char* bf16_isa_name() {
  const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
  const auto has = [&](dnnl_cpu_isa_t want) { return ((unsigned)isa & (unsigned)want) == (unsigned)want; };
  if (has(dnnl_cpu_isa_avx512_core_amx)) return "avx512_core_amx";
  if (has(dnnl_cpu_isa_avx512_core_bf16)) return "avx512_core_bf16";
  if (has(dnnl_cpu_isa_avx512_core)) return "avx512_core (no bf16 dot product)";
  if (has(dnnl_cpu_isa_avx2)) return "avx2 (no bf16 dot product)";
  return "no vector bf16";
}

// ---- conversion ----------------------------------------------------------------------------

namespace {

void to_bf16_scalar(uint16_t* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = aji::f32_to_bf16(src[i]);
}

#if AJI_BF16_X86
// vcvtneps2bf16: round to nearest even, NaN quieted (inputs below the smallest normal
// float, ~1.2e-38, become zero: no activation or gradient of a trained model is that small
// relative to its neighbours in a product).
__attribute__((target("avx512f,avx512bf16"))) void to_bf16_avx512(uint16_t* dst, const float* src, int64_t n) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512 lo = _mm512_loadu_ps(src + i), hi = _mm512_loadu_ps(src + i + 16);
    _mm512_storeu_si512(reinterpret_cast<void*>(dst + i), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
  }
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + i)));
  to_bf16_scalar(dst + i, src + i, n - i);
}
bool have_avx512_bf16() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
  return yes;
}
#endif

}  // namespace

void round_to_bf16_row(uint16_t* dst, const float* src, int64_t n) {
#if AJI_BF16_X86
  if (have_avx512_bf16()) return to_bf16_avx512(dst, src, n);
#endif
  to_bf16_scalar(dst, src, n);
}

void round_to_bf16(uint16_t* dst, const float* src, int64_t n) {
  if (n <= 0) return;
  constexpr int64_t kChunk = 1 << 15;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  if (chunks == 1) return round_to_bf16_row(dst, src, n);  // no thread team for one chunk
#pragma omp parallel for if (omp_get_level() == 0) schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i0 = c * kChunk;
    round_to_bf16_row(dst + i0, src + i0, std::min(kChunk, n - i0));
  }
}

// ---- small products on pair-packed operands (attention's tiles) ---------------------------

namespace {

inline float bf16_lo(uint32_t w) {
  const uint32_t u = w << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float bf16_hi(uint32_t w) {
  const uint32_t u = w & 0xFFFF0000u;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

void pair_product_scalar(int M, int N, int pairs, const uint32_t* A, int64_t a_rs, int64_t a_ps, const uint32_t* B,
                         int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float acc = 0.0f;
      for (int p = 0; p < pairs; ++p) {
        const uint32_t a = A[i * a_rs + p * a_ps], b = B[p * ldb + j];
        acc += bf16_lo(a) * bf16_lo(b) + bf16_hi(a) * bf16_hi(b);
      }
      C[i * ldc + j] = accumulate ? C[i * ldc + j] + acc : acc;
    }
}

#if AJI_BF16_X86
// MR rows x NV vectors of 16 columns (the last one masked at the right edge): MR * NV
// accumulators, all in registers (MR = 8, NV = 2: 16 of the 32).
template <int MR, int NV>
__attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl"))) inline void pair_block(
    int pairs, const uint32_t* A, int64_t a_rs, int64_t a_ps, const uint32_t* B, int64_t ldb, float* C, int64_t ldc,
    bool accumulate, __mmask16 m_last) {
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int p = 0; p < pairs; ++p) {
    __m512i b[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v)
      b[v] = _mm512_maskz_loadu_epi32(v + 1 == NV ? m_last : (__mmask16)0xFFFF, B + p * ldb + 16 * v);
    const uint32_t* ap = A + p * a_ps;
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512i a = _mm512_set1_epi32(static_cast<int>(ap[r * a_rs]));
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], (__m512bh)a, (__m512bh)b[v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      float* c = C + r * ldc + 16 * v;
      const __mmask16 m = v + 1 == NV ? m_last : (__mmask16)0xFFFF;
      __m512 x = acc[r][v];
      if (accumulate) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, c));
      _mm512_mask_storeu_ps(c, m, x);
    }
}

template <int NV>
__attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl"))) void pair_rows(
    int M, int pairs, const uint32_t* A, int64_t a_rs, int64_t a_ps, const uint32_t* B, int64_t ldb, float* C,
    int64_t ldc, bool accumulate, __mmask16 m_last) {
  constexpr int kMR = 8;
  int i0 = 0;
  for (; i0 + kMR <= M; i0 += kMR)
    pair_block<kMR, NV>(pairs, A + i0 * a_rs, a_rs, a_ps, B, ldb, C + i0 * ldc, ldc, accumulate, m_last);
  const uint32_t* a = A + i0 * a_rs;
  float* c = C + i0 * ldc;
  switch (M - i0) {
    case 7: pair_block<7, NV>(pairs, a, a_rs, a_ps, B, ldb, c, ldc, accumulate, m_last); break;
    case 6: pair_block<6, NV>(pairs, a, a_rs, a_ps, B, ldb, c, ldc, accumulate, m_last); break;
    case 5: pair_block<5, NV>(pairs, a, a_rs, a_ps, B, ldb, c, ldc, accumulate, m_last); break;
    case 4: pair_block<4, NV>(pairs, a, a_rs, a_ps, B, ldb, c, ldc, accumulate, m_last); break;
    case 3: pair_block<3, NV>(pairs, a, a_rs, a_ps, B, ldb, c, ldc, accumulate, m_last); break;
    case 2: pair_block<2, NV>(pairs, a, a_rs, a_ps, B, ldb, c, ldc, accumulate, m_last); break;
    case 1: pair_block<1, NV>(pairs, a, a_rs, a_ps, B, ldb, c, ldc, accumulate, m_last); break;
    default: break;
  }
}

__attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl"))) void pair_product_avx512(
    int M, int N, int pairs, const uint32_t* A, int64_t a_rs, int64_t a_ps, const uint32_t* B, int64_t ldb, float* C,
    int64_t ldc, bool accumulate) {
  for (int j0 = 0; j0 < N; j0 += 32) {
    const int nj = std::min(32, N - j0);
    if (nj > 16) {
      const __mmask16 m = nj == 32 ? (__mmask16)0xFFFF : (__mmask16)((1u << (nj - 16)) - 1);
      pair_rows<2>(M, pairs, A, a_rs, a_ps, B + j0, ldb, C + j0, ldc, accumulate, m);
    } else {
      const __mmask16 m = nj == 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nj) - 1);
      pair_rows<1>(M, pairs, A, a_rs, a_ps, B + j0, ldb, C + j0, ldc, accumulate, m);
    }
  }
}
#endif

}  // namespace

namespace {
inline uint32_t pair_word(float lo, float hi) {
  return static_cast<uint32_t>(aji::f32_to_bf16(lo)) | (static_cast<uint32_t>(aji::f32_to_bf16(hi)) << 16);
}
#if AJI_BF16_X86
__attribute__((target("avx512f,avx512bf16,avx512bw,avx512vl"))) void pack_pair_rows_avx512(
    uint32_t* out, int64_t ld, const float* x, int64_t ts, int n, int w) {
  for (int p = 0; p < (n + 1) / 2; ++p) {
    const float* r0 = x + (int64_t)(2 * p) * ts;
    const float* r1 = 2 * p + 1 < n ? r0 + ts : nullptr;
    uint32_t* o = out + p * ld;
    for (int e = 0; e < w; e += 16) {
      const __mmask16 m = w - e >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (w - e)) - 1);
      const __m256i lo = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, r0 + e));
      const __m256i hi = r1 ? (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, r1 + e)) : _mm256_setzero_si256();
      // (the maskz forms: GCC 12 warns about the plain ones' undefined pass-through operand)
      const __m512i word = _mm512_or_si512(_mm512_maskz_cvtepu16_epi32(m, lo),
                                           _mm512_maskz_slli_epi32(m, _mm512_maskz_cvtepu16_epi32(m, hi), 16));
      _mm512_mask_storeu_epi32(o + e, m, word);
    }
  }
}
#endif
}  // namespace

void pack_bf16_pair_rows(uint32_t* out, int64_t ld, const float* x, int64_t ts, int n, int w) {
#if AJI_BF16_X86
  if (have_avx512_bf16()) return pack_pair_rows_avx512(out, ld, x, ts, n, w);
#endif
  for (int p = 0; p < (n + 1) / 2; ++p)
    for (int e = 0; e < w; ++e)
      out[p * ld + e] = pair_word(x[(int64_t)(2 * p) * ts + e], 2 * p + 1 < n ? x[(int64_t)(2 * p + 1) * ts + e] : 0.0f);
}

void pack_bf16_pairs_transposed(uint32_t* out, int64_t ld, const float* x, int64_t ts, int n, int w) {
  uint16_t row[512];
  for (int j = 0; j < n; ++j) {
    const float* r = x + (int64_t)j * ts;
    for (int e0 = 0; e0 < w; e0 += 512) {
      const int m = std::min(512, w - e0);
      round_to_bf16_row(row, r + e0, m);
      for (int p = 0; p < m / 2; ++p)
        out[(int64_t)(e0 / 2 + p) * ld + j] = static_cast<uint32_t>(row[2 * p]) | (static_cast<uint32_t>(row[2 * p + 1]) << 16);
    }
  }
}

void pair_product_bf16(int M, int N, int pairs, const uint32_t* A, int64_t a_rs, int64_t a_ps, const uint32_t* B,
                       int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (pairs <= 0) {
    if (!accumulate)
      for (int i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.0f);
    return;
  }
#if AJI_BF16_X86
  if (have_avx512_bf16()) return pair_product_avx512(M, N, pairs, A, a_rs, a_ps, B, ldb, C, ldc, accumulate);
#endif
  pair_product_scalar(M, N, pairs, A, a_rs, a_ps, B, ldb, C, ldc, accumulate);
}

// ---- the matmul primitive ------------------------------------------------------------------

namespace {

using dt = dnnl::memory::data_type;
using Key = std::tuple<char, char, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, bool, int>;

struct Cached {
  dnnl::memory::desc a, b, c, bias;
  dnnl::matmul prim;
  // oneDNN has no bf16 matmul on this CPU (an AVX2-only x86-64-v3 CPU, e.g. AMD Zen 3): the
  // product runs as fp32 sgemm on the operands widened to fp32 (exactly: a bf16 value is an
  // fp32 value), so it is the same sum of the same bf16 products, in fp32, slower.
  bool widen = false;
};

struct Runtime {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::mutex mu;
  std::map<Key, std::unique_ptr<Cached>> cache;
};

Runtime& runtime() {
  static Runtime r;
  return r;
}

Cached& primitive_for(const Key& key) {
  Runtime& rt = runtime();
  std::lock_guard<std::mutex> lock(rt.mu);
  auto it = rt.cache.find(key);
  if (it != rt.cache.end()) return *it->second;
  const auto [ta, tb, M, N, K, lda, ldb, ldc, accumulate, has_bias, threads] = key;
  (void)threads;
  auto p = std::make_unique<Cached>();
  using dims = dnnl::memory::dims;
  p->a = dnnl::memory::desc(dims{M, K}, dt::bf16, ta == 'N' ? dims{lda, 1} : dims{1, lda});
  p->b = dnnl::memory::desc(dims{K, N}, dt::bf16, tb == 'N' ? dims{ldb, 1} : dims{1, ldb});
  p->c = dnnl::memory::desc(dims{M, N}, dt::f32, dims{ldc, 1});
  if (has_bias) p->bias = dnnl::memory::desc(dims{1, N}, dt::f32, dims{N, 1});
  dnnl::primitive_attr attr;
  if (accumulate) {
    dnnl::post_ops po;
    po.append_sum(1.0f);
    attr.set_post_ops(po);
  }
  try {
    const dnnl::matmul::desc d = has_bias ? dnnl::matmul::desc(p->a, p->b, p->bias, p->c)
                                          : dnnl::matmul::desc(p->a, p->b, p->c);
    const dnnl::matmul::primitive_desc pd(d, attr, rt.engine);
    p->prim = dnnl::matmul(pd);
  } catch (const dnnl::error& e) {
    if (bf16_supported())
      throw Error(std::string("oneDNN could not create a bf16 matmul (") + e.what() + ") for M=" + std::to_string(M) +
                  " N=" + std::to_string(N) + " K=" + std::to_string(K));
    p->widen = true;
  }
  Cached& ref = *p;
  rt.cache.emplace(key, std::move(p));
  return ref;
}

// A stored bf16 operand (rows of cols values, ld apart) widened to fp32 with the same ld.
void widen_operand(std::vector<float>& out, const uint16_t* x, int64_t rows, int64_t cols, int64_t ld) {
  out.assign((size_t)((rows - 1) * ld + cols), 0.0f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[(size_t)(r * ld + c)] = bf16_to_f32(x[r * ld + c]);
}

void run_widened(char ta, char tb, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B,
                 int64_t ldb, bool accumulate, float* C, int64_t ldc, const float* bias) {
  thread_local std::vector<float> a, b;
  widen_operand(a, A, ta == 'N' ? M : K, ta == 'N' ? K : M, lda);
  widen_operand(b, B, tb == 'N' ? K : N, tb == 'N' ? N : K, ldb);
  sgemm(ta, tb, M, N, K, 1.0f, a.data(), lda, b.data(), ldb, accumulate ? 1.0f : 0.0f, C, ldc);
  if (bias)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] += bias[j];
}

void run_gemm(char ta, char tb, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B,
              int64_t ldb, bool accumulate, float* C, int64_t ldc, const float* bias) {
  const Key key{ta, tb, M, N, K, lda, ldb, ldc, accumulate, bias != nullptr, omp_get_max_threads()};
  Cached& p = primitive_for(key);
  if (p.widen) return run_widened(ta, tb, M, N, K, A, lda, B, ldb, accumulate, C, ldc, bias);
  Runtime& rt = runtime();
  dnnl::memory a(p.a, rt.engine, const_cast<uint16_t*>(A));
  dnnl::memory b(p.b, rt.engine, const_cast<uint16_t*>(B));
  dnnl::memory c(p.c, rt.engine, C);
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}};
  if (bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory(p.bias, rt.engine, const_cast<float*>(bias)));
  p.prim.execute(rt.stream, args);
  rt.stream.wait();
}

// Per-thread scratch for the bf16 copies of activations and output gradients.
struct Scratch {
  std::vector<uint16_t> a, b;
  uint16_t* take_a(int64_t n) {
    if ((int64_t)a.size() < n) a.resize((size_t)n);
    return a.data();
  }
  uint16_t* take_b(int64_t n) {
    if ((int64_t)b.size() < n) b.resize((size_t)n);
    return b.data();
  }
};
thread_local Scratch t_scratch;

}  // namespace

size_t bf16_primitive_cache_size() {
  Runtime& rt = runtime();
  std::lock_guard<std::mutex> lock(rt.mu);
  return rt.cache.size();
}

void gemm_bf16(char trans_a, char trans_b, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, bool accumulate, float* C, int64_t ldc, const float* bias) {
  if (M <= 0 || N <= 0) return;
  AJI_CHECK(K > 0, "gemm_bf16: K must be positive");
  AJI_CHECK((trans_a == 'N' || trans_a == 'T') && (trans_b == 'N' || trans_b == 'T'), "gemm_bf16: trans is N or T");
  if (M * N * K < (1 << 18) && omp_get_level() == 0 && omp_get_max_threads() > 1) {
    // A small product finishes before a thread team wakes up (as ops.cpp's sgemm does).
    const int keep = omp_get_max_threads();
    omp_set_num_threads(1);
    try {
      run_gemm(trans_a, trans_b, M, N, K, A, lda, B, ldb, accumulate, C, ldc, bias);
    } catch (...) {
      omp_set_num_threads(keep);
      throw;
    }
    omp_set_num_threads(keep);
    return;
  }
  run_gemm(trans_a, trans_b, M, N, K, A, lda, B, ldb, accumulate, C, ldc, bias);
}

void matmul_forward_bf16(float* out, const uint16_t* x, const uint16_t* weight_bf16, const float* bias, int64_t N,
                         int IC, int OC, WeightLayout layout, bool accumulate) {
  if (N <= 0) return;
  if (layout == WeightLayout::kOutIn)
    gemm_bf16('N', 'T', N, OC, IC, x, IC, weight_bf16, IC, accumulate, out, OC, bias);
  else
    gemm_bf16('N', 'N', N, OC, IC, x, IC, weight_bf16, OC, accumulate, out, OC, bias);
}

void matmul_forward_bf16(float* out, const float* inp, const uint16_t* weight_bf16, const float* bias, int64_t N,
                         int IC, int OC, WeightLayout layout, bool accumulate) {
  if (N <= 0) return;
  uint16_t* x = t_scratch.take_a(N * IC);
  round_to_bf16(x, inp, N * IC);
  matmul_forward_bf16(out, static_cast<const uint16_t*>(x), weight_bf16, bias, N, IC, OC, layout, accumulate);
}

namespace {
// matmul_backward_bf16 with the input either fp32 (rounded here, only when dweight needs it)
// or already bf16.
template <class In, class Dout>
void matmul_backward_bf16_impl(float* dinp, float* dweight, float* dbias, const Dout* dout, const In* inp,
                               const uint16_t* weight_bf16, int64_t N, int IC, int OC, WeightLayout layout,
                               int64_t ldd = 0) {
  if (N <= 0) return;
  const uint16_t* dy;
  if (ldd == 0) ldd = OC;
  if constexpr (std::is_same_v<Dout, uint16_t>) {
    dy = dout;
  } else {
    AJI_CHECK(ldd == OC, "matmul_backward_bf16: an fp32 output gradient is dense");
    uint16_t* dr = t_scratch.take_b(N * OC);
    round_to_bf16(dr, dout, N * OC);
    dy = dr;
  }
  // dweight first, as the fp32 path does (its inputs are still in cache)
  if (dweight) {
    const uint16_t* x;
    if constexpr (std::is_same_v<In, uint16_t>) {
      x = inp;
    } else {
      uint16_t* xr = t_scratch.take_a(N * IC);
      round_to_bf16(xr, inp, N * IC);
      x = xr;
    }
    if (layout == WeightLayout::kOutIn)
      gemm_bf16('T', 'N', OC, IC, N, dy, ldd, x, IC, true, dweight, IC);
    else
      gemm_bf16('T', 'N', IC, OC, N, x, IC, dy, ldd, true, dweight, OC);
  }
  if (dinp) {
    if (layout == WeightLayout::kOutIn)
      gemm_bf16('N', 'N', N, IC, OC, dy, ldd, weight_bf16, IC, false, dinp, IC);
    else
      gemm_bf16('N', 'T', N, IC, OC, dy, ldd, weight_bf16, OC, false, dinp, IC);
  }
  // the bias gradient: fp32 column sums of dout (the fp32 path's own reduction)
  if constexpr (std::is_same_v<Dout, float>) {
    if (dbias) matmul_backward(nullptr, nullptr, dbias, dout, nullptr, nullptr, N, IC, OC, layout);
  } else {
    AJI_CHECK(!dbias, "matmul_backward_bf16: a bias gradient needs the fp32 output gradient");
  }
}
}  // namespace

void matmul_backward_bf16(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                          const uint16_t* weight_bf16, int64_t N, int IC, int OC, WeightLayout layout) {
  matmul_backward_bf16_impl(dinp, dweight, dbias, dout, inp, weight_bf16, N, IC, OC, layout);
}
void matmul_backward_bf16(float* dinp, float* dweight, float* dbias, const float* dout, const uint16_t* inp,
                          const uint16_t* weight_bf16, int64_t N, int IC, int OC, WeightLayout layout) {
  matmul_backward_bf16_impl(dinp, dweight, dbias, dout, inp, weight_bf16, N, IC, OC, layout);
}
void matmul_backward_bf16(float* dinp, float* dweight, const uint16_t* dout, const uint16_t* inp,
                          const uint16_t* weight_bf16, int64_t N, int IC, int OC, WeightLayout layout,
                          int64_t ld_dout) {
  matmul_backward_bf16_impl(dinp, dweight, static_cast<float*>(nullptr), dout, inp, weight_bf16, N, IC, OC, layout,
                            ld_dout);
}
void matmul_backward_bf16(float* dinp, float* dweight, const uint16_t* dout, const float* inp,
                          const uint16_t* weight_bf16, int64_t N, int IC, int OC, WeightLayout layout,
                          int64_t ld_dout) {
  matmul_backward_bf16_impl(dinp, dweight, static_cast<float*>(nullptr), dout, inp, weight_bf16, N, IC, OC, layout,
                            ld_dout);
}

}  // namespace aji::kernels::cpu
