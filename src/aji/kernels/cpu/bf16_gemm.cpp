#include "aji/kernels/cpu/bf16_gemm.h"

#include <omp.h>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
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

void round_to_bf16(uint16_t* dst, const float* src, int64_t n) {
  if (n <= 0) return;
  constexpr int64_t kChunk = 1 << 15;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  auto run = [&](uint16_t* d, const float* s, int64_t m) {
#if AJI_BF16_X86
    if (have_avx512_bf16()) return to_bf16_avx512(d, s, m);
#endif
    to_bf16_scalar(d, s, m);
  };
#pragma omp parallel for if (chunks > 1 && omp_get_level() == 0) schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i0 = c * kChunk;
    run(dst + i0, src + i0, std::min(kChunk, n - i0));
  }
}

// ---- the matmul primitive ------------------------------------------------------------------

namespace {

using dt = dnnl::memory::data_type;
using Key = std::tuple<char, char, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, bool, int>;

struct Cached {
  dnnl::memory::desc a, b, c, bias;
  dnnl::matmul prim;
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
    throw Error(std::string("oneDNN could not create a bf16 matmul (") + e.what() + ") for M=" + std::to_string(M) +
                " N=" + std::to_string(N) + " K=" + std::to_string(K));
  }
  Cached& ref = *p;
  rt.cache.emplace(key, std::move(p));
  return ref;
}

void run_gemm(char ta, char tb, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B,
              int64_t ldb, bool accumulate, float* C, int64_t ldc, const float* bias) {
  const Key key{ta, tb, M, N, K, lda, ldb, ldc, accumulate, bias != nullptr, omp_get_max_threads()};
  Cached& p = primitive_for(key);
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

void matmul_forward_bf16(float* out, const float* inp, const uint16_t* weight_bf16, const float* bias, int64_t N,
                         int IC, int OC, WeightLayout layout, bool accumulate) {
  if (N <= 0) return;
  uint16_t* x = t_scratch.take_a(N * IC);
  round_to_bf16(x, inp, N * IC);
  if (layout == WeightLayout::kOutIn)
    gemm_bf16('N', 'T', N, OC, IC, x, IC, weight_bf16, IC, accumulate, out, OC, bias);
  else
    gemm_bf16('N', 'N', N, OC, IC, x, IC, weight_bf16, OC, accumulate, out, OC, bias);
}

void matmul_backward_bf16(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                          const uint16_t* weight_bf16, int64_t N, int IC, int OC, WeightLayout layout) {
  if (N <= 0) return;
  uint16_t* dy = t_scratch.take_b(N * OC);
  round_to_bf16(dy, dout, N * OC);
  // dweight first, as the fp32 path does (its inputs are still in cache)
  if (dweight) {
    uint16_t* x = t_scratch.take_a(N * IC);
    round_to_bf16(x, inp, N * IC);
    if (layout == WeightLayout::kOutIn)
      gemm_bf16('T', 'N', OC, IC, N, dy, OC, x, IC, true, dweight, IC);
    else
      gemm_bf16('T', 'N', IC, OC, N, x, IC, dy, OC, true, dweight, OC);
  }
  if (dinp) {
    if (layout == WeightLayout::kOutIn)
      gemm_bf16('N', 'N', N, IC, OC, dy, OC, weight_bf16, IC, false, dinp, IC);
    else
      gemm_bf16('N', 'T', N, IC, OC, dy, OC, weight_bf16, OC, false, dinp, IC);
  }
  // the bias gradient: fp32 column sums of dout (the fp32 path's own reduction)
  if (dbias) matmul_backward(nullptr, nullptr, dbias, dout, nullptr, nullptr, N, IC, OC, layout);
}

}  // namespace aji::kernels::cpu
