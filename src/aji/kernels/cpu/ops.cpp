#include "aji/kernels/cpu/ops.h"

#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "aji/base/error.h"
#include "aji/kernels/cpu/bf16_gemm.h"
#include "aji/kernels/cpu/parallel.h"
#include "aji/kernels/cpu/small_gemm.h"
#include "aji/kernels/cpu/vec_math.h"

namespace aji::kernels::cpu {

// ---- profiling -----------------------------------------------------------------------

namespace {
bool g_profile = false;
OpStats g_stats;
std::vector<GemmShape>* g_gemm_sink = nullptr;
thread_local int t_depth = 0;

double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct Prof {
  OpKind kind;
  bool on;
  std::chrono::steady_clock::time_point t0;
  double c0 = 0;
  explicit Prof(OpKind k) : kind(k), on(g_profile && t_depth == 0 && omp_get_level() == 0) {
    ++t_depth;
    if (on) {
      t0 = std::chrono::steady_clock::now();
      c0 = thread_cpu_seconds();
    }
  }
  ~Prof() {
    --t_depth;
    if (on) {
      g_stats.seconds[(int)kind] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      g_stats.cpu_seconds[(int)kind] += thread_cpu_seconds() - c0;
      g_stats.calls[(int)kind] += 1;
    }
  }
};
}  // namespace

const char* op_kind_name(OpKind k) {
  static const char* names[] = {"gemm", "attention fwd", "attention bwd", "norms", "activations",
                                "rope", "embedding", "softmax-CE", "other"};
  return names[(int)k];
}
void profile_enable(bool on) { g_profile = on; }
void profile_reset() { g_stats = OpStats(); }
OpStats profile_stats() { return g_stats; }
void record_gemm_shapes(std::vector<GemmShape>* sink) { g_gemm_sink = sink; }

// ---- matrix products ------------------------------------------------------------------

void sgemm(char trans_a, char trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // C = beta * C
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  const bool record = g_gemm_sink && omp_get_level() == 0;
  const auto t0 = record ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
  Prof prof(OpKind::kGemm);
  dnnl_status_t st;
  if (M * N * K < (1 << 18) && omp_get_level() == 0 && omp_get_max_threads() > 1) {
    // A small product finishes before a thread team wakes up: run it on this thread
    // (dnnl_sgemm sizes its team from omp_get_max_threads, a per-thread setting).
    const int keep = omp_get_max_threads();
    omp_set_num_threads(1);
    st = dnnl_sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    omp_set_num_threads(keep);
  } else {
    st = dnnl_sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  if (record)
    g_gemm_sink->push_back(GemmShape{trans_a, trans_b, M, N, K, beta,
                                     std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()});
  if (st != dnnl_success)
    throw Error("dnnl_sgemm failed (status " + std::to_string((int)st) + ") for M=" + std::to_string(M) +
                " N=" + std::to_string(N) + " K=" + std::to_string(K));
}

namespace {
// Per-thread partial vectors (e.g. a weight gradient summed over rows), added into the
// destination in thread order after the parallel loop. With static scheduling each
// thread's rows are fixed, so the result is bit-identical run to run for a given thread
// count (a critical section would add the partials in arrival order, and float addition
// is not associative) — `--resume` relies on it.
struct Partials {
  int n_threads, width;
  std::vector<float> buf;
  explicit Partials(int w) : n_threads(omp_get_max_threads()), width(w), buf((size_t)n_threads * w, 0.0f) {}
  float* mine() { return buf.data() + (size_t)omp_get_thread_num() * width; }
  // acc[i] += sum over threads of partial[t][offset + i], for i < n
  void add_to(float* acc, int offset, int n) const {
    if (!acc) return;
    for (int t = 0; t < n_threads; ++t) {
      const float* p = buf.data() + (size_t)t * width + offset;
      for (int i = 0; i < n; ++i) acc[i] += p[i];
    }
  }
};

// Per-thread partial sums of a (C) vector over rows, reduced into acc at the end.
template <typename RowFn>
void reduce_rows(float* acc, int C, int64_t N, RowFn fn) {
  Partials part(C);
#pragma omp parallel if (parallel_worth(N * C))
  {
    float* local = part.mine();
#pragma omp for schedule(static)
    for (int64_t r = 0; r < N; ++r) fn(r, local);
  }
  part.add_to(acc, 0, C);
}
}  // namespace

void matmul_forward_rows(float* out, const float* inp, const float* weight, const float* bias, int64_t N, int IC, int OC,
                         WeightLayout layout, bool accumulate) {
  Prof prof(OpKind::kGemm);
  if (layout == WeightLayout::kOutIn)
    small_rows_outin(out, inp, weight, bias, N, IC, OC, accumulate);
  else
    small_rows_inout(out, inp, weight, bias, N, IC, OC, accumulate);
}

void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N, int IC, int OC,
                    WeightLayout layout, bool accumulate) {
  Prof prof(OpKind::kGemm);
  if (N <= kFewRows) {
    // A few rows (token-by-token decoding): stream each weight element once. A GEMM library
    // packs the whole weight on every call, as costly as the product itself here. Each row's
    // result is the one it gets alone (matmul_forward_rows).
    if (layout == WeightLayout::kOutIn)
      small_rows_outin(out, inp, weight, bias, N, IC, OC, accumulate);
    else
      small_rows_inout(out, inp, weight, bias, N, IC, OC, accumulate);
    return;
  }
  float beta = accumulate ? 1.0f : 0.0f;
  if (bias && !accumulate) {
#pragma omp parallel for if (parallel_worth(N * OC)) schedule(static)
    for (int64_t r = 0; r < N; ++r) std::memcpy(out + r * OC, bias, sizeof(float) * OC);
    beta = 1.0f;
  }
  if (layout == WeightLayout::kOutIn)
    sgemm('N', 'T', N, OC, IC, 1.0f, inp, IC, weight, IC, beta, out, OC);
  else
    sgemm('N', 'N', N, OC, IC, 1.0f, inp, IC, weight, OC, beta, out, OC);
  if (bias && accumulate) {
#pragma omp parallel for if (parallel_worth(N * OC)) schedule(static)
    for (int64_t r = 0; r < N; ++r)
      for (int j = 0; j < OC; ++j) out[r * OC + j] += bias[j];
  }
}

void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp, const float* weight,
                     int64_t N, int IC, int OC, WeightLayout layout) {
  Prof prof(OpKind::kGemm);
  // dweight first: its inputs (often just recomputed, e.g. the MLP activation) are still
  // in cache; the dinp product's output would evict them (measured: the MLP down
  // projection's dW product ran 25% slower in the step than alone when it came second).
  if (layout == WeightLayout::kOutIn) {
    if (dweight) sgemm('T', 'N', OC, IC, N, 1.0f, dout, OC, inp, IC, 1.0f, dweight, IC);
    if (dinp) sgemm('N', 'N', N, IC, OC, 1.0f, dout, OC, weight, IC, 0.0f, dinp, IC);
  } else {
    if (dweight) sgemm('T', 'N', IC, OC, N, 1.0f, inp, IC, dout, OC, 1.0f, dweight, OC);
    if (dinp) sgemm('N', 'T', N, IC, OC, 1.0f, dout, OC, weight, OC, 0.0f, dinp, IC);
  }
  if (dbias) {
    reduce_rows(dbias, OC, N, [&](int64_t r, float* acc) {
      const float* d = dout + r * OC;
      for (int j = 0; j < OC; ++j) acc[j] += d[j];
    });
  }
}

// ---- embeddings ----------------------------------------------------------------------

void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B, int T, int C,
                       int pos0, const int32_t* positions) {
  Prof prof(OpKind::kEmbedding);
  const int64_t N = (int64_t)B * T;
#pragma omp parallel for if (parallel_worth(N * C)) schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    float* o = out + r * C;
    const float* e = wte + (int64_t)tokens[r] * C;
    if (wpe) {
      const float* p = wpe + (int64_t)(positions ? positions[r] : pos0 + r % T) * C;
      for (int i = 0; i < C; ++i) o[i] = e[i] + p[i];
    } else {
      std::memcpy(o, e, sizeof(float) * C);
    }
  }
}

void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B, int T, int C,
                        const int32_t* positions) {
  Prof prof(OpKind::kEmbedding);
  const int64_t N = (int64_t)B * T;
  // Scatter-add: rows may repeat a token, so parallelise over column blocks, not rows.
  const int block = 64;
  const int n_blocks = (C + block - 1) / block;
#pragma omp parallel for if (parallel_worth(N * C)) schedule(static)
  for (int cb = 0; cb < n_blocks; ++cb) {
    const int c0 = cb * block, c1 = std::min(C, c0 + block);
    for (int64_t r = 0; r < N; ++r) {
      const float* d = dout + r * C;
      float* e = dwte + (int64_t)tokens[r] * C;
      for (int i = c0; i < c1; ++i) e[i] += d[i];
      if (dwpe) {
        float* p = dwpe + (int64_t)(positions ? positions[r] : r % T) * C;
        for (int i = c0; i < c1; ++i) p[i] += d[i];
      }
    }
  }
}

// ---- norms ---------------------------------------------------------------------------

namespace {
// Outputs computed in fp32 and stored as the caller's type: fp32 as they are, bf16 (the
// inputs of a bf16 product, which rounds them anyway) rounded to nearest even through a
// row of fp32 scratch, so a bf16 output is the bits of round_to_bf16(fp32 output).
template <class Out>
struct RowOut {
  static constexpr bool kBf16 = std::is_same_v<Out, uint16_t>;
  std::vector<float> row;
  float* at(Out* out, int64_t offset, int64_t n) {
    if constexpr (kBf16) {
      if ((int64_t)row.size() < n) row.resize((size_t)n);
      return row.data();
    } else {
      (void)n;
      return out + offset;
    }
  }
  void store(Out* out, int64_t offset, int64_t n) {
    if constexpr (kBf16) round_to_bf16_row(out + offset, row.data(), n);
    (void)out, (void)offset, (void)n;
  }
};

template <class Out>
void layernorm_forward_impl(Out* out, float* mean, float* rstd, const float* inp, const float* weight,
                            const float* bias, int64_t N, int C, float eps) {
  Prof prof(OpKind::kNorm);
#pragma omp parallel if (parallel_worth(N * C))
  {
    RowOut<Out> dst;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < N; ++r) {
      const float* x = inp + r * C;
      float s = 0.0f;
      for (int i = 0; i < C; ++i) s += x[i];
      const float m = s / C;
      float v = 0.0f;
      for (int i = 0; i < C; ++i) {
        float d = x[i] - m;
        v += d * d;
      }
      const float rs = 1.0f / std::sqrt(v / C + eps);
      float* o = dst.at(out, r * C, C);
      for (int i = 0; i < C; ++i) o[i] = (x[i] - m) * rs * weight[i] + (bias ? bias[i] : 0.0f);
      dst.store(out, r * C, C);
      if (mean) mean[r] = m;
      if (rstd) rstd[r] = rs;
    }
  }
}

template <class Out>
void rmsnorm_forward_impl(Out* out, float* rstd, const float* inp, const float* weight, int64_t N, int C, float eps) {
  Prof prof(OpKind::kNorm);
#pragma omp parallel if (parallel_worth(N * C))
  {
    RowOut<Out> dst;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < N; ++r) {
      const float* x = inp + r * C;
      const float rs = 1.0f / std::sqrt(vm::dot(x, x, C) / C + eps);
      float* o = dst.at(out, r * C, C);
      for (int i = 0; i < C; ++i) o[i] = x[i] * rs * weight[i];
      dst.store(out, r * C, C);
      if (rstd) rstd[r] = rs;
    }
  }
}
}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                       int64_t N, int C, float eps) {
  layernorm_forward_impl(out, mean, rstd, inp, weight, bias, N, C, eps);
}
void layernorm_forward(uint16_t* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int64_t N, int C, float eps) {
  layernorm_forward_impl(out, mean, rstd, inp, weight, bias, N, C, eps);
}

void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int64_t N, int C) {
  Prof prof(OpKind::kNorm);
  Partials part(2 * C);  // [dweight | dbias] per thread
#pragma omp parallel if (parallel_worth(N * C))
  {
    float* dw = part.mine();
    float* db = dw + C;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < N; ++r) {
      const float* x = inp + r * C;
      const float* dy = dout + r * C;
      const float m = mean[r], rs = rstd[r];
      float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
      for (int i = 0; i < C; ++i) {
        const float nrm = (x[i] - m) * rs;
        const float dn = weight[i] * dy[i];
        dnorm_mean += dn;
        dnorm_norm_mean += dn * nrm;
      }
      dnorm_mean /= C;
      dnorm_norm_mean /= C;
      float* dx = dinp + r * C;
      for (int i = 0; i < C; ++i) {
        const float nrm = (x[i] - m) * rs;
        const float dn = weight[i] * dy[i];
        db[i] += dy[i];
        dw[i] += nrm * dy[i];
        dx[i] += (dn - dnorm_mean - nrm * dnorm_norm_mean) * rs;
      }
    }
  }
  part.add_to(dweight, 0, C);
  part.add_to(dbias, C, C);
}

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t N, int C, float eps) {
  rmsnorm_forward_impl(out, rstd, inp, weight, N, C, eps);
}
void rmsnorm_forward(uint16_t* out, float* rstd, const float* inp, const float* weight, int64_t N, int C, float eps) {
  rmsnorm_forward_impl(out, rstd, inp, weight, N, C, eps);
}

void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                      const float* rstd, int64_t N, int C) {
  Prof prof(OpKind::kNorm);
  Partials part(C);
#pragma omp parallel if (parallel_worth(N * C))
  {
    float* dw = part.mine();
#pragma omp for schedule(static)
    for (int64_t r = 0; r < N; ++r) {
      const float* x = inp + r * C;
      const float* dy = dout + r * C;
      const float rs = rstd[r];
      float dot = 0.0f;  // sum_i dy_i w_i x_i
      for (int i = 0; i < C; ++i) dot += dy[i] * weight[i] * x[i];
      const float k = dot * rs * rs * rs / C;
      float* dx = dinp + r * C;
      for (int i = 0; i < C; ++i) {
        dx[i] += dy[i] * weight[i] * rs - x[i] * k;
        dw[i] += dy[i] * x[i] * rs;
      }
    }
  }
  part.add_to(dweight, 0, C);
}

void head_rmsnorm_forward(float* x, const float* weight, int64_t N, int64_t stride, int col, int n_heads, int hd,
                          float eps) {
  Prof prof(OpKind::kNorm);
#pragma omp parallel for if (parallel_worth(N * stride)) schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + r * stride + col + (int64_t)h * hd;
      const float rs = 1.0f / std::sqrt(vm::dot(v, v, hd) / hd + eps);
      for (int i = 0; i < hd; ++i) v[i] = v[i] * rs * weight[i];
    }
  }
}

void head_rmsnorm_backward(float* d, float* dweight, const float* x_in, const float* weight, int64_t N, int64_t stride,
                           int col, int n_heads, int hd, float eps) {
  Prof prof(OpKind::kNorm);
  Partials part(hd);
#pragma omp parallel if (parallel_worth(N * stride))
  {
    float* dw = part.mine();
#pragma omp for schedule(static)
    for (int64_t r = 0; r < N; ++r) {
      for (int h = 0; h < n_heads; ++h) {
        const int64_t off = r * stride + col + (int64_t)h * hd;
        const float* x = x_in + off;
        float* dy = d + off;
        const float rs = 1.0f / std::sqrt(vm::dot(x, x, hd) / hd + eps);
        float dot = 0.0f;
        for (int i = 0; i < hd; ++i) dot += dy[i] * weight[i] * x[i];
        const float k = dot * rs * rs * rs / hd;
        for (int i = 0; i < hd; ++i) {
          dw[i] += dy[i] * x[i] * rs;
          dy[i] = dy[i] * weight[i] * rs - x[i] * k;  // in place: dy[i] read before written
        }
      }
    }
  }
  part.add_to(dweight, 0, hd);
}

// ---- activations ---------------------------------------------------------------------

namespace {
constexpr float kGeluK = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kGeluC = 0.044715f;

inline float gelu_scalar(float x) {
  const float u = kGeluK * (x + kGeluC * x * x * x);
  return 0.5f * x * (1.0f + std::tanh(u));
}
inline float gelu_grad_scalar(float x) {
  const float u = kGeluK * (x + kGeluC * x * x * x);
  const float t = std::tanh(u);
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * kGeluK * (1.0f + 3.0f * kGeluC * x * x);
}
#if AJI_VEC_AVX2
// tanh(u) = 2 / (1 + exp(-2u)) - 1: exact limits ±1, no overflow trouble (exp clamps).
inline __m256 tanh8(__m256 u) {
  const __m256 one = _mm256_set1_ps(1.0f);
  __m256 e = vm::exp8(_mm256_mul_ps(u, _mm256_set1_ps(-2.0f)));
  return _mm256_sub_ps(_mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(one, e)), one);
}
#endif
}  // namespace

namespace {
template <class Out>
void gelu_forward_impl(Out* dst, const float* inp, int64_t n) {
  Prof prof(OpKind::kActivation);
  const int64_t chunk = 4096;
  const int64_t n_chunks = (n + chunk - 1) / chunk;
#pragma omp parallel if (parallel_worth(n))
  {
  RowOut<Out> rows;
#pragma omp for schedule(static)
  for (int64_t c = 0; c < n_chunks; ++c) {
    const int64_t c0 = c * chunk, m = std::min(n, c0 + chunk) - c0;
    float* out = rows.at(dst, c0, m);  // out[i] is element c0 + i
    const float* x_in = inp + c0;
    int64_t i = 0;
#if AJI_VEC_AVX2
    const __m256 k = _mm256_set1_ps(kGeluK), cc = _mm256_set1_ps(kGeluC), half = _mm256_set1_ps(0.5f),
                 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= m; i += 8) {
      __m256 x = _mm256_loadu_ps(x_in + i);
      __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
      __m256 u = _mm256_mul_ps(k, _mm256_fmadd_ps(cc, x3, x));
      __m256 t = tanh8(u);
      _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_add_ps(one, t)));
    }
#endif
    for (; i < m; ++i) out[i] = gelu_scalar(x_in[i]);
    rows.store(dst, c0, m);
  }
  }
}
}  // namespace

void gelu_forward(float* out, const float* inp, int64_t n) { gelu_forward_impl(out, inp, n); }
void gelu_forward(uint16_t* out, const float* inp, int64_t n) { gelu_forward_impl(out, inp, n); }

void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
  Prof prof(OpKind::kActivation);
  const int64_t chunk = 4096;
  const int64_t n_chunks = (n + chunk - 1) / chunk;
#pragma omp parallel for if (parallel_worth(n)) schedule(static)
  for (int64_t c = 0; c < n_chunks; ++c) {
    int64_t i = c * chunk;
    const int64_t end = std::min(n, i + chunk);
#if AJI_VEC_AVX2
    const __m256 k = _mm256_set1_ps(kGeluK), cc = _mm256_set1_ps(kGeluC), half = _mm256_set1_ps(0.5f),
                 one = _mm256_set1_ps(1.0f), c3 = _mm256_set1_ps(3.0f * kGeluC);
    for (; i + 8 <= end; i += 8) {
      __m256 x = _mm256_loadu_ps(inp + i);
      __m256 x2 = _mm256_mul_ps(x, x);
      __m256 u = _mm256_mul_ps(k, _mm256_fmadd_ps(cc, _mm256_mul_ps(x2, x), x));
      __m256 t = tanh8(u);
      __m256 sech2 = _mm256_fnmadd_ps(t, t, one);
      __m256 g = _mm256_fmadd_ps(half, _mm256_add_ps(one, t),
                                 _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(half, x), sech2),
                                               _mm256_mul_ps(k, _mm256_fmadd_ps(c3, x2, one))));
      _mm256_storeu_ps(dinp + i, _mm256_mul_ps(g, _mm256_loadu_ps(dout + i)));
    }
#endif
    for (; i < end; ++i) dinp[i] = gelu_grad_scalar(inp[i]) * dout[i];
  }
}

namespace {
template <class Out>
void swiglu_forward_impl(Out* out, const float* gate_up, int64_t N, int F) {
  Prof prof(OpKind::kActivation);
#pragma omp parallel if (parallel_worth(N * F))
  {
  RowOut<Out> dst;
#pragma omp for schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    const float* g = gate_up + r * 2 * F;
    const float* u = g + F;
    float* o = dst.at(out, r * F, F);
    int i = 0;
#if AJI_VEC_AVX2
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= F; i += 8) {
      __m256 x = _mm256_loadu_ps(g + i);
      __m256 e = vm::exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
      __m256 silu = _mm256_div_ps(x, _mm256_add_ps(one, e));
      _mm256_storeu_ps(o + i, _mm256_mul_ps(silu, _mm256_loadu_ps(u + i)));
    }
#endif
    for (; i < F; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    dst.store(out, r * F, F);
  }
  }
}
}  // namespace

void swiglu_forward(float* out, const float* gate_up, int64_t N, int F) { swiglu_forward_impl(out, gate_up, N, F); }
void swiglu_forward(uint16_t* out, const float* gate_up, int64_t N, int F) {
  swiglu_forward_impl(out, gate_up, N, F);
}

namespace {
template <class Out>
void swiglu_backward_impl(Out* dgate_up, const float* dout, const float* gate_up, int64_t N, int F) {
  Prof prof(OpKind::kActivation);
#pragma omp parallel if (parallel_worth(N * F))
  {
  RowOut<Out> dst;
#pragma omp for schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    const float* g = gate_up + r * 2 * F;
    const float* u = g + F;
    const float* dy = dout + r * F;
    float* dg = dst.at(dgate_up, r * 2 * F, 2 * F);
    float* du = dg + F;
    int i = 0;
#if AJI_VEC_AVX2
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= F; i += 8) {
      __m256 x = _mm256_loadu_ps(g + i);
      __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, vm::exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
      __m256 silu = _mm256_mul_ps(x, s);
      __m256 d = _mm256_loadu_ps(dy + i);
      // d silu/dx = s * (1 + x * (1 - s))
      __m256 dsilu = _mm256_mul_ps(s, _mm256_fmadd_ps(x, _mm256_sub_ps(one, s), one));
      _mm256_storeu_ps(dg + i, _mm256_mul_ps(_mm256_mul_ps(d, _mm256_loadu_ps(u + i)), dsilu));
      _mm256_storeu_ps(du + i, _mm256_mul_ps(d, silu));
    }
#endif
    for (; i < F; ++i) {
      const float x = g[i];
      const float s = 1.0f / (1.0f + std::exp(-x));
      dg[i] = dy[i] * u[i] * s * (1.0f + x * (1.0f - s));
      du[i] = dy[i] * x * s;
    }
    dst.store(dgate_up, r * 2 * F, 2 * F);
  }
  }
}
}  // namespace

void swiglu_backward(float* dgate_up, const float* dout, const float* gate_up, int64_t N, int F) {
  swiglu_backward_impl(dgate_up, dout, gate_up, N, F);
}
void swiglu_backward(uint16_t* dgate_up, const float* dout, const float* gate_up, int64_t N, int F) {
  swiglu_backward_impl(dgate_up, dout, gate_up, N, F);
}

// ---- RoPE ----------------------------------------------------------------------------

void rope_table(float* cos_out, float* sin_out, int max_pos, int hd, float theta) {
  const int half = hd / 2;
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i) {
    // transformers: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all in fp32
    const float expo = static_cast<float>(2 * i) / static_cast<float>(hd);
    inv_freq[i] = 1.0f / std::pow(theta, expo);
  }
  for (int p = 0; p < max_pos; ++p)
    for (int i = 0; i < half; ++i) {
      const float angle = static_cast<float>(p) * inv_freq[i];
      cos_out[(int64_t)p * half + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      sin_out[(int64_t)p * half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
}

void rope_apply(float* x, const float* cos_t, const float* sin_t, int B, int T, int64_t stride, int col, int n_heads,
                int hd, int pos0, bool inverse, const int32_t* positions, const float* src) {
  if (!src) src = x;
  Prof prof(OpKind::kRope);
  const int half = hd / 2;
  const int64_t N = (int64_t)B * T;
  const float sgn = inverse ? -1.0f : 1.0f;
#pragma omp parallel for if (parallel_worth(N * stride)) schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    const int64_t pos = positions ? positions[r] : pos0 + r % T;
    const float* c = cos_t + pos * half;
    const float* s = sin_t + pos * half;
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + r * stride + col + (int64_t)h * hd;
      const float* in = src + r * stride + col + (int64_t)h * hd;
      for (int i = 0; i < half; ++i) {
        const float a = in[i], b = in[i + half];
        const float si = sgn * s[i];
        v[i] = a * c[i] - b * si;
        v[i + half] = b * c[i] + a * si;
      }
    }
  }
}

// ---- attention -----------------------------------------------------------------------

namespace {
constexpr int kQueryTile = 32;
// Up to this many query rows per (sequence, head) — token-by-token decoding over a KV
// cache — the scores are plain dot products: a BLAS call per row packs the whole K and V
// of the cache, several times the arithmetic (measured on the 17M model: at context 512
// those calls took over a quarter of each decoding step; this path cut it by a third).
constexpr int kFewQueries = 4;

// Keys and values are read as fp32 (training, an fp32 KV cache) or bf16 bits (a bf16 KV
// cache, Model::set_kv_cache): every read below goes through these, so one code serves both
// and the fp32 instantiation is the same operations as before.
inline float kv_f32(float x) { return x; }
inline float kv_f32(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
#if AJI_VEC_AVX2
inline __m256 kv_load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 kv_load8(const uint16_t* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
#endif
// vm::dot with y read through kv_load8 / kv_f32 (the same operations for fp32)
template <class KV>
inline float kv_dot(const float* x, const KV* y, int64_t n) {
  int64_t i = 0;
  float s = 0.0f;
#if AJI_VEC_AVX2
  __m256 acc = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), kv_load8(y + i), acc);
  s = vm::hsum8(acc);
#endif
  for (; i < n; ++i) s = std::fma(x[i], kv_f32(y[i]), s);  // explicit: the same for both element types
  return s;
}

// One cached row's hd values (keys or values of one head) towards L2.
template <class KV>
inline void prefetch_head_row(const KV* row, int hd) {
  const char* p = reinterpret_cast<const char*>(row);
  for (int64_t off = 0; off < (int64_t)hd * (int64_t)sizeof(KV); off += 64) __builtin_prefetch(p + off, 0, 2);
}

// out (nq rows, stride d.o_ts) = softmax(scale q k^T) v for nq query rows whose first
// sits at absolute position pos0; row r sees keys first_r .. pos0+r (first_r from
// key_start, else 0). S: scratch of at least kn floats. lse (nq) may be null.
// k_next / v_next (may be null): the keys and values of the (sequence, head) this thread
// takes next, fetched towards L2 row by row beside this one's reads (each head's hd values
// of a cached row are a strided walk that otherwise waits on memory for every row; a burst
// of prefetches up front instead delayed the current head's own loads).
template <class KV>
void attention_rows_direct(float* out, float* lse, const float* q, const KV* k, const KV* v, float* S, int nq,
                           int kn, int pos0, const int32_t* key_start, float scale, const AttnDims& d,
                           const KV* k_next = nullptr, const KV* v_next = nullptr) {
  const int hd = d.hd;
  for (int r = 0; r < nq; ++r) {
    const bool pf = r == 0 && k_next;
    const float* qr = q + (int64_t)r * d.q_ts;
    const int visible = std::min(kn, pos0 + r + 1);
    const int first = key_start ? key_start[r] : 0;
    int j = first;
#if AJI_VEC_AVX2
    // eight keys at a time: eight independent FMA chains (one chain is latency-bound), the
    // eight sums reduced together (hsum8x8: hsum8's additions on all eight, the same bits)
    if (hd % 8 == 0)
      for (; j + 8 <= visible; j += 8) {
        const KV* k0 = k + (int64_t)j * d.k_ts;
        if (pf)
          for (int i = 0; i < 8; ++i) prefetch_head_row(k_next + (int64_t)(j + i) * d.k_ts, hd);
        __m256 a[8];
        for (int i = 0; i < 8; ++i) a[i] = _mm256_setzero_ps();
        for (int e = 0; e < hd; e += 8) {
          const __m256 x = _mm256_loadu_ps(qr + e);
          for (int i = 0; i < 8; ++i) a[i] = _mm256_fmadd_ps(x, kv_load8(k0 + i * d.k_ts + e), a[i]);
        }
        _mm256_storeu_ps(S + j, _mm256_mul_ps(_mm256_set1_ps(scale), vm::hsum8x8(a)));
      }
    if (hd % 8 == 0)
      for (; j + 4 <= visible; j += 4) {
        const KV* k0 = k + (int64_t)j * d.k_ts;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int e = 0; e < hd; e += 8) {
          const __m256 x = _mm256_loadu_ps(qr + e);
          a0 = _mm256_fmadd_ps(x, kv_load8(k0 + e), a0);
          a1 = _mm256_fmadd_ps(x, kv_load8(k0 + d.k_ts + e), a1);
          a2 = _mm256_fmadd_ps(x, kv_load8(k0 + 2 * d.k_ts + e), a2);
          a3 = _mm256_fmadd_ps(x, kv_load8(k0 + 3 * d.k_ts + e), a3);
        }
        S[j] = scale * vm::hsum8(a0);
        S[j + 1] = scale * vm::hsum8(a1);
        S[j + 2] = scale * vm::hsum8(a2);
        S[j + 3] = scale * vm::hsum8(a3);
      }
#endif
    for (; j < visible; ++j) S[j] = scale * kv_dot(qr, k + (int64_t)j * d.k_ts, hd);
    const float m = vm::max_of(S + first, visible - first);
    const float sum = vm::exp_shift_sum(S + first, S + first, visible - first, m);
    vm::scale(S + first, visible - first, 1.0f / sum);
    // o = sum_j p_j v_j, 32 output columns at a time held in registers across all keys
    float* o = out + (int64_t)r * d.o_ts;
    int e0 = 0;
#if AJI_VEC_AVX2
    // 64 columns at a time: eight chains, one FMA each per key (the latency of one is then
    // covered); each column's chain over the keys in order, as with 32 at a time
    for (; e0 + 64 <= hd; e0 += 64) {
      __m256 c[8];
      for (int i = 0; i < 8; ++i) c[i] = _mm256_setzero_ps();
      for (int jj = first; jj < visible; ++jj) {
        const __m256 p = _mm256_set1_ps(S[jj]);
        const KV* vj = v + (int64_t)jj * d.v_ts + e0;
        if (pf && e0 == 0) prefetch_head_row(v_next + (int64_t)jj * d.v_ts, hd);
        for (int i = 0; i < 8; ++i) c[i] = _mm256_fmadd_ps(p, kv_load8(vj + 8 * i), c[i]);
      }
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(o + e0 + 8 * i, c[i]);
    }
    for (; e0 + 32 <= hd; e0 += 32) {
      __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
      for (int jj = first; jj < visible; ++jj) {
        const __m256 p = _mm256_set1_ps(S[jj]);
        const KV* vj = v + (int64_t)jj * d.v_ts + e0;
        c0 = _mm256_fmadd_ps(p, kv_load8(vj), c0);
        c1 = _mm256_fmadd_ps(p, kv_load8(vj + 8), c1);
        c2 = _mm256_fmadd_ps(p, kv_load8(vj + 16), c2);
        c3 = _mm256_fmadd_ps(p, kv_load8(vj + 24), c3);
      }
      _mm256_storeu_ps(o + e0, c0);
      _mm256_storeu_ps(o + e0 + 8, c1);
      _mm256_storeu_ps(o + e0 + 16, c2);
      _mm256_storeu_ps(o + e0 + 24, c3);
    }
#endif
    if (e0 < hd) {
      std::fill(o + e0, o + hd, 0.0f);
      for (int jj = first; jj < visible; ++jj) {
        const float p = S[jj];
        const KV* vj = v + (int64_t)jj * d.v_ts;
        for (int e = e0; e < hd; ++e) o[e] = std::fma(p, kv_f32(vj[e]), o[e]);
      }
    }
    if (lse) lse[r] = m + std::log(sum);
  }
}

// ---- the tiles' layout ----
// K^T, V (forward) and K^T, V^T, K (backward) are packed once per (sequence, kv head) or
// key block, and every tile's products read the packed copies: dnnl_sgemm re-packs its
// operands on each call, and from the fused QKV buffer it read rows 1152 floats apart.
// Measured against per-tile dnnl_sgemm calls on the unpacked buffers (tiny's heads, 2048
// tokens, 1 thread, five interleaved rounds): backward -10% at T=256 and 1024, forward
// -12% at T=1024, unchanged at 256. A hand-written AVX-512 kernel for the products (8 x 16,
// the broadcast inside the FMA) on this layout was within 5% of dnnl_sgemm, so the products
// stay with the library.

constexpr int kKeyBlock = 256;  // keys per block in the backward
// A row stride of an odd number of cache lines for rows of n floats: at a power-of-two
// stride the rows of an operand fall into a few L1 sets and evict each other (256-float
// rows: 4 of the 64 sets; the fused QKV buffer's 1152: 8).
inline int64_t spread_ld(int64_t n) {
  const int64_t lines = (n + 15) / 16;
  return 16 * (lines % 2 ? lines : lines + 1);
}

// rows (n, stride ts, width hd) -> out (n x hd, rows ld apart)
void pack_rows(float* out, int64_t ld, const float* x, int64_t ts, int n, int hd) {
  for (int j = 0; j < n; ++j) std::memcpy(out + j * ld, x + j * ts, sizeof(float) * hd);
}
void pack_rows(float* out, int64_t ld, const uint16_t* x, int64_t ts, int n, int hd) {
  for (int j = 0; j < n; ++j)
    for (int e = 0; e < hd; ++e) out[j * ld + e] = kv_f32(x[j * ts + e]);
}

// rows (n, stride ts, width hd) -> out (hd x n, rows ld apart), transposed: out[e][j] = x[j][e]
template <class KV>
void pack_transposed(float* out, int64_t ld, const KV* x, int64_t ts, int n, int hd) {
  int j0 = 0;
#if AJI_VEC_AVX2
  // 8 x 8 blocks through registers
  for (; j0 + 8 <= n; j0 += 8) {
    int e0 = 0;
    for (; e0 + 8 <= hd; e0 += 8) {
      __m256 r[8], t[8];
      for (int i = 0; i < 8; ++i) r[i] = kv_load8(x + (j0 + i) * ts + e0);
      for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
      }
      for (int i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
      }
      for (int i = 0; i < 4; ++i) {
        _mm256_storeu_ps(out + (e0 + i) * ld + j0, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
        _mm256_storeu_ps(out + (e0 + i + 4) * ld + j0, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
      }
    }
    for (int j = j0; j < j0 + 8; ++j)  // columns past the last multiple of 8
      for (int e = e0; e < hd; ++e) out[e * ld + j] = kv_f32(x[j * ts + e]);
  }
#endif
  for (int j = j0; j < n; ++j)
    for (int e = 0; e < hd; ++e) out[e * ld + j] = kv_f32(x[j * ts + e]);
}

// Per-thread scratch that only grows: attention runs once per layer and step, and fresh
// buffers of this size would be page-faulted in every time.
float* scratch(std::vector<float>& buf, size_t n) {
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}
}  // namespace

namespace {
// Steps both tile paths (fp32 and bf16 products) share.

// A forward tile's scores S (nq rows, ld apart; columns [0, kn) computed) become
// exp(scale (s - max)) over each row's visible keys and 0 elsewhere up to column `pad`;
// row_sum gets each row's sum, lp (if not null) its log-sum-exp. Normalised later, after the
// value product, on hd numbers instead of kn.
void softmax_tile_rows(float* S, int64_t ld, int nq, int kn, int pad, int first_query_pos, const int32_t* ks,
                       float scale, float* row_sum, float* lp) {
  for (int r = 0; r < nq; ++r) {
    float* row = S + r * ld;
    const int visible = std::min(kn, first_query_pos + r + 1);
    const int first = ks ? ks[r] : 0;
    const float m = scale * vm::max_of(row + first, visible - first);
    row_sum[r] = vm::exp_shift_sum(row + first, row + first, visible - first, m, scale);
    std::fill(row, row + first, 0.0f);
    std::fill(row + visible, row + pad, 0.0f);
    if (lp) lp[r] = m + std::log(row_sum[r]);
  }
}

// A backward tile's recomputed scores P and dO V^T (dP), nq rows ld apart over the key block
// [kb0, kb0 + kbn): P = exp(scale s - lse), dP = dS = P * (dP - dO . O) * scale over each row's
// visible keys, both 0 elsewhere up to column `pad`.
void softmax_grad_tile_rows(float* P, float* dP, int64_t ld, int nq, int kn, int kb0, int kbn, int pad,
                            int first_query_pos, const int32_t* ks, float scale, const float* lrow, const float* drow) {
  for (int r = 0; r < nq; ++r) {
    float* prow = P + r * ld;
    float* dprow = dP + r * ld;
    // the row's visible keys [first, visible) within this block, as [lo, hi)
    const int visible = std::min(kn, first_query_pos + r + 1);
    const int first = ks ? ks[r] : 0;
    const int lo = std::min(kbn, std::max(0, first - kb0));
    const int hi = std::max(lo, std::min(kbn, visible - kb0));
    // dS = P * (dP - dO . O), times the score scale, which both dq and dk carry
    vm::softmax_grad_row(prow + lo, dprow + lo, hi - lo, scale, lrow[r], drow[r]);
    std::fill(prow, prow + lo, 0.0f);
    std::fill(prow + hi, prow + pad, 0.0f);
    std::fill(dprow, dprow + lo, 0.0f);
    std::fill(dprow + hi, dprow + pad, 0.0f);
  }
}

// A backward unit (sequence b, kv head kvh): dots[h - h0][i] = dO . O of each query row of the
// group's heads, and dq of those rows zeroed (it sums over key blocks).
void backward_unit_start(float* dots, float* dq, const float* dout, const float* out, int b, int h0, int group,
                         const AttnDims& d) {
  for (int h = h0; h < h0 + group; ++h)
    for (int i = 0; i < d.Tq; ++i) {
      const int64_t at = b * d.o_bs + (int64_t)i * d.o_ts + (int64_t)h * d.hd;
      dots[(int64_t)(h - h0) * d.Tq + i] = vm::dot(dout + at, out + at, d.hd);
      std::memset(dq + b * d.q_bs + (int64_t)i * d.q_ts + (int64_t)h * d.hd, 0, sizeof(float) * d.hd);
    }
}

// A key block's dk and dv rows (kw of them) zeroed before its tiles add into them.
void zero_block_rows(float* dkb, float* dvb, int kw, const AttnDims& d) {
  for (int j = 0; j < kw; ++j) {
    std::memset(dkb + (int64_t)j * d.k_ts, 0, sizeof(float) * d.hd);
    std::memset(dvb + (int64_t)j * d.v_ts, 0, sizeof(float) * d.hd);
  }
}

// attention_forward's tiles with bf16 products (AttnDims::bf16_products): the same steps as
// the fp32 path below, its operands packed as pair_product_bf16 reads them.
void attention_forward_bf16(float* out, float* lse, const float* q, const float* k, const float* v,
                            const AttnDims& d) {
  Prof prof(OpKind::kAttentionFwd);
  const int n_tiles = (d.Tq + kQueryTile - 1) / kQueryTile;
  const int group = d.H / d.KV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.hd));
  const int hp = d.hd / 2;                         // pairs of a head's dimensions
  const int64_t ld_k = spread_ld(d.Tk);            // K^T pairs: (hp, Tk) words
  const int64_t ld_v = spread_ld(d.hd);            // V pair rows: ((Tk+1)/2, hd) words
  const int64_t ld_t = spread_ld(d.Tk + 1);        // scores (fp32) and their bf16 copy
  const int64_t kt_size = hp * ld_k, v_size = ((d.Tk + 1) / 2) * ld_v;
  const int64_t n_packs = (int64_t)d.B * d.KV;
  const int64_t units = (int64_t)d.B * d.H * n_tiles;
  static thread_local std::vector<uint32_t> kt_buf, v_buf;
  if ((int64_t)kt_buf.size() < n_packs * kt_size) kt_buf.resize((size_t)(n_packs * kt_size));
  if ((int64_t)v_buf.size() < n_packs * v_size) v_buf.resize((size_t)(n_packs * v_size));
  uint32_t* kt_all = kt_buf.data();
  uint32_t* v_all = v_buf.data();
#pragma omp parallel for if (parallel_worth(n_packs * d.Tk * d.hd)) schedule(static)
  for (int64_t u = 0; u < n_packs; ++u) {
    const int b = (int)(u / d.KV), kvh = (int)(u % d.KV);
    pack_bf16_pairs_transposed(kt_all + u * kt_size, ld_k, k + b * d.k_bs + (int64_t)kvh * d.hd, d.k_ts, d.Tk, d.hd);
    pack_bf16_pair_rows(v_all + u * v_size, ld_v, v + b * d.v_bs + (int64_t)kvh * d.hd, d.v_ts, d.Tk, d.hd);
  }
#pragma omp parallel if (parallel_worth(units * d.Tk * d.hd))
  {
    static thread_local std::vector<float> s_buf;
    static thread_local std::vector<uint16_t> q16_buf, p16_buf;
    float* S = scratch(s_buf, (size_t)(kQueryTile * ld_t));
    if (q16_buf.size() < (size_t)(kQueryTile * d.hd)) q16_buf.resize((size_t)(kQueryTile * d.hd));
    if (p16_buf.size() < (size_t)(kQueryTile * ld_t)) p16_buf.resize((size_t)(kQueryTile * ld_t));
    uint16_t* q16 = q16_buf.data();
    uint16_t* p16 = p16_buf.data();
    float row_sum[kQueryTile];
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < units; ++u) {
      const int tile = n_tiles - 1 - (int)(u % n_tiles);
      const int h = (int)((u / n_tiles) % d.H);
      const int b = (int)(u / ((int64_t)n_tiles * d.H));
      const int kvh = h / group;
      const int i0 = tile * kQueryTile, i1 = std::min(d.Tq, i0 + kQueryTile), nq = i1 - i0;
      const int kn = std::min(d.Tk, d.q_pos0 + i1);
      const int kn2 = (kn + 1) / 2;  // key pairs
      const float* qp = q + b * d.q_bs + (int64_t)i0 * d.q_ts + (int64_t)h * d.hd;
      float* op = out + b * d.o_bs + (int64_t)i0 * d.o_ts + (int64_t)h * d.hd;
      float* lp = lse ? lse + ((int64_t)b * d.H + h) * d.Tq + i0 : nullptr;
      const int32_t* ks = d.key_start ? d.key_start + (int64_t)b * d.Tq + i0 : nullptr;
      const int64_t pack = (int64_t)b * d.KV + kvh;
      for (int r = 0; r < nq; ++r) round_to_bf16_row(q16 + r * d.hd, qp + r * d.q_ts, d.hd);
      // S (nq, kn) = q k^T, unscaled
      pair_product_bf16(nq, kn, hp, reinterpret_cast<const uint32_t*>(q16), hp, 1, kt_all + pack * kt_size, ld_k, S,
                        ld_t, false);
      // (zeros up to the odd key count's pad)
      softmax_tile_rows(S, ld_t, nq, kn, 2 * kn2, d.q_pos0 + i0, ks, scale, row_sum, lp);
      for (int r = 0; r < nq; ++r) round_to_bf16_row(p16 + r * ld_t, S + r * ld_t, 2 * kn2);
      // out (nq, hd) = P v / row sums
      pair_product_bf16(nq, d.hd, kn2, reinterpret_cast<const uint32_t*>(p16), ld_t / 2, 1, v_all + pack * v_size,
                        ld_v, op, d.o_ts, false);
      for (int r = 0; r < nq; ++r) vm::scale(op + r * d.o_ts, d.hd, 1.0f / row_sum[r]);
    }
  }
}

template <class KV>
void attention_forward_impl(float* out, float* lse, const float* q, const KV* k, const KV* v, const AttnDims& d) {
  Prof prof(OpKind::kAttentionFwd);
  const int n_tiles = (d.Tq + kQueryTile - 1) / kQueryTile;
  const int group = d.H / d.KV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.hd));
  const int64_t ld_t = spread_ld(d.Tk), ld_hd = spread_ld(d.hd);
  const int64_t units = (int64_t)d.B * d.H * n_tiles;
  const bool tiled = d.Tq > kFewQueries;  // else every tile takes the direct path
  // K^T (hd x Tk) and V (Tk x hd) of every (sequence, kv head), packed once for all heads
  // and tiles that read them
  static thread_local std::vector<float> kt_buf, v_buf;
  const int64_t kt_size = d.hd * ld_t, v_size = d.Tk * ld_hd;
  const int64_t n_packs = (int64_t)d.B * d.KV;
  float* kt_all = tiled ? scratch(kt_buf, (size_t)(n_packs * kt_size)) : nullptr;
  float* v_all = tiled ? scratch(v_buf, (size_t)(n_packs * v_size)) : nullptr;
  if (tiled) {
#pragma omp parallel for if (parallel_worth(n_packs * d.Tk * d.hd)) schedule(static)
    for (int64_t u = 0; u < n_packs; ++u) {
      const int b = (int)(u / d.KV), kvh = (int)(u % d.KV);
      pack_transposed(kt_all + u * kt_size, ld_t, k + b * d.k_bs + (int64_t)kvh * d.hd, d.k_ts, d.Tk, d.hd);
      pack_rows(v_all + u * v_size, ld_hd, v + b * d.v_bs + (int64_t)kvh * d.hd, d.v_ts, d.Tk, d.hd);
    }
  }
#pragma omp parallel if (parallel_worth(units * d.Tk * d.hd))
  {
    static thread_local std::vector<float> s_buf;
    float* S = scratch(s_buf, (size_t)(kQueryTile * ld_t));
    float row_sum[kQueryTile];
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < units; ++u) {
      // Last tiles first: they are the largest, so dynamic scheduling balances better.
      const int tile = n_tiles - 1 - (int)(u % n_tiles);
      const int h = (int)((u / n_tiles) % d.H);
      const int b = (int)(u / ((int64_t)n_tiles * d.H));
      const int kvh = h / group;
      const int i0 = tile * kQueryTile, i1 = std::min(d.Tq, i0 + kQueryTile), nq = i1 - i0;
      const int kn = std::min(d.Tk, d.q_pos0 + i1);  // keys visible to the tile's last row
      const float* qp = q + b * d.q_bs + (int64_t)i0 * d.q_ts + (int64_t)h * d.hd;
      float* op = out + b * d.o_bs + (int64_t)i0 * d.o_ts + (int64_t)h * d.hd;
      float* lp = lse ? lse + ((int64_t)b * d.H + h) * d.Tq + i0 : nullptr;
      const int32_t* ks = d.key_start ? d.key_start + (int64_t)b * d.Tq + i0 : nullptr;
      if (nq <= kFewQueries) {
        // decoding: the unit this thread likely takes next (the team takes them in turn) is
        // `threads` on; its keys and values fetched beside this unit's reads
        const int64_t un = u + omp_get_num_threads();
        const KV *k_next = nullptr, *v_next = nullptr;
        if (!tiled && un < units) {
          const int hn = (int)((un / n_tiles) % d.H), bn = (int)(un / ((int64_t)n_tiles * d.H));
          k_next = k + bn * d.k_bs + (int64_t)(hn / group) * d.hd;
          v_next = v + bn * d.v_bs + (int64_t)(hn / group) * d.hd;
        }
        attention_rows_direct(op, lp, qp, k + b * d.k_bs + (int64_t)kvh * d.hd, v + b * d.v_bs + (int64_t)kvh * d.hd,
                              S, nq, kn, d.q_pos0 + i0, ks, scale, d, k_next, v_next);
        continue;
      }
      const int64_t pack = (int64_t)b * d.KV + kvh;
      // S (nq, kn) = q k^T, unscaled
      sgemm('N', 'N', nq, kn, d.hd, 1.0f, qp, d.q_ts, kt_all + pack * kt_size, ld_t, 0.0f, S, ld_t);
      softmax_tile_rows(S, ld_t, nq, kn, kn, d.q_pos0 + i0, ks, scale, row_sum, lp);
      // out (nq, hd) = P v / row sums
      sgemm('N', 'N', nq, d.hd, kn, 1.0f, S, ld_t, v_all + pack * v_size, ld_hd, 0.0f, op, d.o_ts);
      for (int r = 0; r < nq; ++r) vm::scale(op + r * d.o_ts, d.hd, 1.0f / row_sum[r]);
    }
  }
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, const AttnDims& d) {
  if (d.bf16_products && d.Tq > kFewQueries && d.hd % 2 == 0) return attention_forward_bf16(out, lse, q, k, v, d);
  attention_forward_impl(out, lse, q, k, v, d);
}
void attention_forward(float* out, float* lse, const float* q, const uint16_t* k, const uint16_t* v,
                       const AttnDims& d) {
  attention_forward_impl(out, lse, q, k, v, d);
}

namespace {
// attention_backward with bf16 products (AttnDims::bf16_products): the fp32 path's blocks and
// tiles, every product on pair-packed bf16 operands.
void attention_backward_bf16(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                             const float* v, const float* out, const float* lse, const AttnDims& d) {
  Prof prof(OpKind::kAttentionBwd);
  const int n_tiles = (d.Tq + kQueryTile - 1) / kQueryTile;
  const int group = d.H / d.KV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.hd));
  const int hp = d.hd / 2;
  const int kb_max = std::min(d.Tk, kKeyBlock);
  const int64_t ld_kb = spread_ld(kb_max + 1);  // words of a pairs-transposed block; floats of P, dP
  const int64_t ld_hd = spread_ld(d.hd);        // words of a pair row of hd values
  const int64_t units = (int64_t)d.B * d.KV;
#pragma omp parallel if (parallel_worth(units * d.Tk * d.hd * group))
  {
    static thread_local std::vector<float> fbuf;
    static thread_local std::vector<uint32_t> wbuf;
    const int64_t s_size = kQueryTile * ld_kb, dot_size = (int64_t)group * d.Tq;
    float* P = scratch(fbuf, (size_t)(2 * s_size + dot_size));
    float* dP = P + s_size;
    float* dots = dP + s_size;
    // words: K^T, V^T pairs (hp x ld_kb); K pair rows (kb/2 x ld_hd); q, dO pair rows and
    // rows (kQueryTile/2 x ld_hd, kQueryTile x hd/2); dS, P pair rows (kQueryTile/2 x ld_kb);
    // dS rows (kQueryTile x ld_kb/2)
    const int64_t t_w = hp * ld_kb, kpr_w = ((kb_max + 1) / 2) * ld_hd, qpr_w = (kQueryTile / 2) * ld_hd,
                  qrow_w = kQueryTile * hp, spr_w = (kQueryTile / 2) * ld_kb, srow_w = kQueryTile * (ld_kb / 2);
    const size_t words = (size_t)(2 * t_w + kpr_w + 2 * qpr_w + 2 * qrow_w + 2 * spr_w + srow_w);
    if (wbuf.size() < words) wbuf.resize(words);
    uint32_t* kt = wbuf.data();
    uint32_t* vt = kt + t_w;
    uint32_t* kpr = vt + t_w;
    uint32_t* qpr = kpr + kpr_w;
    uint32_t* dopr = qpr + qpr_w;
    uint32_t* qrow = dopr + qpr_w;
    uint32_t* dorow = qrow + qrow_w;
    uint32_t* dspr = dorow + qrow_w;
    uint32_t* ppr = dspr + spr_w;
    uint32_t* dsrow = ppr + spr_w;
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < units; ++u) {
      const int b = (int)(u / d.KV), kvh = (int)(u % d.KV);
      const int h0 = kvh * group;
      const float* kp = k + b * d.k_bs + (int64_t)kvh * d.hd;
      const float* vp = v + b * d.v_bs + (int64_t)kvh * d.hd;
      float* dkp = dk + b * d.k_bs + (int64_t)kvh * d.hd;
      float* dvp = dv + b * d.v_bs + (int64_t)kvh * d.hd;
      backward_unit_start(dots, dq, dout, out, b, h0, group, d);
      for (int kb0 = 0; kb0 < d.Tk; kb0 += kKeyBlock) {
        const int kw = std::min(kKeyBlock, d.Tk - kb0);
        pack_bf16_pairs_transposed(kt, ld_kb, kp + (int64_t)kb0 * d.k_ts, d.k_ts, kw, d.hd);
        pack_bf16_pairs_transposed(vt, ld_kb, vp + (int64_t)kb0 * d.v_ts, d.v_ts, kw, d.hd);
        pack_bf16_pair_rows(kpr, ld_hd, kp + (int64_t)kb0 * d.k_ts, d.k_ts, kw, d.hd);
        float* dkb = dkp + (int64_t)kb0 * d.k_ts;
        float* dvb = dvp + (int64_t)kb0 * d.v_ts;
        zero_block_rows(dkb, dvb, kw, d);
        for (int h = h0; h < h0 + group; ++h) {
          for (int tile = 0; tile < n_tiles; ++tile) {
            const int i0 = tile * kQueryTile, i1 = std::min(d.Tq, i0 + kQueryTile), nq = i1 - i0;
            const int kn = std::min(d.Tk, d.q_pos0 + i1);
            if (kn <= kb0) continue;
            const int kbn = std::min(kn, kb0 + kw) - kb0;
            const int kbn2 = (kbn + 1) / 2, nq2 = (nq + 1) / 2;
            const float* qp = q + b * d.q_bs + (int64_t)i0 * d.q_ts + (int64_t)h * d.hd;
            const float* dop = dout + b * d.o_bs + (int64_t)i0 * d.o_ts + (int64_t)h * d.hd;
            float* dqp = dq + b * d.q_bs + (int64_t)i0 * d.q_ts + (int64_t)h * d.hd;
            const float* lrow = lse + ((int64_t)b * d.H + h) * d.Tq + i0;
            const float* drow = dots + (int64_t)(h - h0) * d.Tq + i0;
            const int32_t* ks = d.key_start ? d.key_start + (int64_t)b * d.Tq + i0 : nullptr;
            // the tile's q and dO as rows (score products) and pair rows (dK, dV)
            for (int r = 0; r < nq; ++r) {
              round_to_bf16_row(reinterpret_cast<uint16_t*>(qrow + r * hp), qp + r * d.q_ts, d.hd);
              round_to_bf16_row(reinterpret_cast<uint16_t*>(dorow + r * hp), dop + r * d.o_ts, d.hd);
            }
            pack_bf16_pair_rows(qpr, ld_hd, qp, d.q_ts, nq, d.hd);
            pack_bf16_pair_rows(dopr, ld_hd, dop, d.o_ts, nq, d.hd);
            // P = exp(scale q k^T - lse), recomputed; dP = dO V^T
            pair_product_bf16(nq, kbn, hp, qrow, hp, 1, kt, ld_kb, P, ld_kb, false);
            pair_product_bf16(nq, kbn, hp, dorow, hp, 1, vt, ld_kb, dP, ld_kb, false);
            // (zeros up to the odd key count's pad)
            softmax_grad_tile_rows(P, dP, ld_kb, nq, kn, kb0, kbn, 2 * kbn2, d.q_pos0 + i0, ks, scale, lrow, drow);
            for (int r = 0; r < nq; ++r)
              round_to_bf16_row(reinterpret_cast<uint16_t*>(dsrow + r * (ld_kb / 2)), dP + r * ld_kb, 2 * kbn2);
            pack_bf16_pair_rows(dspr, ld_kb, dP, ld_kb, nq, kbn);
            pack_bf16_pair_rows(ppr, ld_kb, P, ld_kb, nq, kbn);
            // dq (nq, hd) += dS K;  dK += dS^T q;  dV += P^T dO
            pair_product_bf16(nq, d.hd, kbn2, dsrow, ld_kb / 2, 1, kpr, ld_hd, dqp, d.q_ts, true);
            pair_product_bf16(kbn, d.hd, nq2, dspr, 1, ld_kb, qpr, ld_hd, dkb, d.k_ts, true);
            pair_product_bf16(kbn, d.hd, nq2, ppr, 1, ld_kb, dopr, ld_hd, dvb, d.v_ts, true);
          }
        }
      }
    }
  }
}
}  // namespace

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, const AttnDims& d) {
  Prof prof(OpKind::kAttentionBwd);
  if (d.bf16_products && d.Tq > kFewQueries && d.hd % 2 == 0) return attention_backward_bf16(dq, dk, dv, dout, q, k, v, out, lse, d);
  const int n_tiles = (d.Tq + kQueryTile - 1) / kQueryTile;
  const int group = d.H / d.KV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.hd));
  // Keys in blocks of at most kKeyBlock (FlashAttention-2's order: dK, dV of a block
  // finished before the next, dq summed over blocks), so that the working set stays in L2
  // at any context length (whole rows at T=1024: ~1.1 MB, and slower than the old path).
  const int kb_max = std::min(d.Tk, kKeyBlock);
  const int64_t ld_kb = spread_ld(kb_max), ld_hd = spread_ld(d.hd);
  const int64_t units = (int64_t)d.B * d.KV;  // dq, dk, dv of one kv head group are written by one thread
#pragma omp parallel if (parallel_worth(units * d.Tk * d.hd * group))
  {
    // Of one key block: K^T, V^T (hd x block) for the score products, K (block x hd) for
    // dq; P and dP (32 x block); dO . O of every query row of the group.
    static thread_local std::vector<float> buf;
    const int64_t t_size = d.hd * ld_kb, s_size = kQueryTile * ld_kb, k_size = kb_max * ld_hd;
    const int64_t dot_size = (int64_t)group * d.Tq;
    float* kt = scratch(buf, (size_t)(2 * t_size + 2 * s_size + k_size + dot_size));
    float* vt = kt + t_size;
    float* P = vt + t_size;
    float* dP = P + s_size;
    float* kr = dP + s_size;
    float* dots = kr + k_size;
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < units; ++u) {
      const int b = (int)(u / d.KV), kvh = (int)(u % d.KV);
      const int h0 = kvh * group;
      const float* kp = k + b * d.k_bs + (int64_t)kvh * d.hd;
      const float* vp = v + b * d.v_bs + (int64_t)kvh * d.hd;
      float* dkp = dk + b * d.k_bs + (int64_t)kvh * d.hd;
      float* dvp = dv + b * d.v_bs + (int64_t)kvh * d.hd;
      // sum_j P_j dP_j = dO . O per query row; dq starts at 0 (it sums over key blocks)
      backward_unit_start(dots, dq, dout, out, b, h0, group, d);
      for (int kb0 = 0; kb0 < d.Tk; kb0 += kKeyBlock) {
        const int kw = std::min(kKeyBlock, d.Tk - kb0);
        pack_transposed(kt, ld_kb, kp + (int64_t)kb0 * d.k_ts, d.k_ts, kw, d.hd);
        pack_transposed(vt, ld_kb, vp + (int64_t)kb0 * d.v_ts, d.v_ts, kw, d.hd);
        pack_rows(kr, ld_hd, kp + (int64_t)kb0 * d.k_ts, d.k_ts, kw, d.hd);
        float* dkb = dkp + (int64_t)kb0 * d.k_ts;  // this block's dk, dv
        float* dvb = dvp + (int64_t)kb0 * d.v_ts;
        zero_block_rows(dkb, dvb, kw, d);
        for (int h = h0; h < h0 + group; ++h) {
          for (int tile = 0; tile < n_tiles; ++tile) {
            const int i0 = tile * kQueryTile, i1 = std::min(d.Tq, i0 + kQueryTile), nq = i1 - i0;
            const int kn = std::min(d.Tk, d.q_pos0 + i1);  // keys visible to the tile's last row
            if (kn <= kb0) continue;                        // none of them in this block
            const int kbn = std::min(kn, kb0 + kw) - kb0;   // of this block
            const float* qp = q + b * d.q_bs + (int64_t)i0 * d.q_ts + (int64_t)h * d.hd;
            const float* dop = dout + b * d.o_bs + (int64_t)i0 * d.o_ts + (int64_t)h * d.hd;
            float* dqp = dq + b * d.q_bs + (int64_t)i0 * d.q_ts + (int64_t)h * d.hd;
            const float* lrow = lse + ((int64_t)b * d.H + h) * d.Tq + i0;
            const float* drow = dots + (int64_t)(h - h0) * d.Tq + i0;
            const int32_t* ks = d.key_start ? d.key_start + (int64_t)b * d.Tq + i0 : nullptr;
            // P = exp(scale q k^T - lse), recomputed; dP = dO V^T
            sgemm('N', 'N', nq, kbn, d.hd, 1.0f, qp, d.q_ts, kt, ld_kb, 0.0f, P, ld_kb);
            sgemm('N', 'N', nq, kbn, d.hd, 1.0f, dop, d.o_ts, vt, ld_kb, 0.0f, dP, ld_kb);
            softmax_grad_tile_rows(P, dP, ld_kb, nq, kn, kb0, kbn, kbn, d.q_pos0 + i0, ks, scale, lrow, drow);
            // dq (nq, hd) += dS K;  dK += dS^T q;  dV += P^T dO
            sgemm('N', 'N', nq, d.hd, kbn, 1.0f, dP, ld_kb, kr, ld_hd, 1.0f, dqp, d.q_ts);
            sgemm('T', 'N', kbn, d.hd, nq, 1.0f, dP, ld_kb, qp, d.q_ts, 1.0f, dkb, d.k_ts);
            sgemm('T', 'N', kbn, d.hd, nq, 1.0f, P, ld_kb, dop, d.o_ts, 1.0f, dvb, d.v_ts);
          }
        }
      }
    }
  }
}

// ---- residual ------------------------------------------------------------------------

void add_inplace(float* a, const float* b, int64_t n) {
  Prof prof(OpKind::kOther);
#pragma omp parallel for if (parallel_worth(n)) schedule(static)
  for (int64_t i = 0; i < n; ++i) a[i] += b[i];
}

// ---- losses --------------------------------------------------------------------------

namespace {
// Row r's fp32 values rounded to bf16 over the first half of the row's own memory, in blocks
// through a local buffer: block b (values [b, b + 256)) lands on bytes [2b, 2b + 512), i.e.
// on fp32 values [b/2, b/2 + 128), all read already (by this block or earlier ones). memcpy
// makes the overlapping write well defined.
void round_row_to_bf16_over_itself(float* row, int V) {
  constexpr int kBlock = 256;
  uint16_t tmp[kBlock];
  char* dst = reinterpret_cast<char*>(row);
  for (int b = 0; b < V; b += kBlock) {
    const int w = std::min(kBlock, V - b);
    round_to_bf16_row(tmp, row + b, w);
    std::memcpy(dst + 2 * (size_t)b, tmp, sizeof(uint16_t) * w);
  }
}

template <bool kBf16Out>
double softmax_xent_rows(float* logits, float* losses, const int32_t* targets, const float* weights,
                         float grad_scale, int64_t n, int V, float inv_temperature) {
  Prof prof(OpKind::kLoss);
  const float a = inv_temperature;
  // per-thread partial totals summed in thread order: deterministic (see Partials)
  const int n_threads = omp_get_max_threads();
  std::vector<double> partial(n_threads, 0.0);
#pragma omp parallel for if (parallel_worth(n * V)) schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    double& total = partial[omp_get_thread_num()];
    float* row = logits + r * V;
    const int32_t t = targets[r];
    const float w = weights ? weights[r] : 1.0f;
    if (t < 0 || w == 0.0f) {
      std::memset(row, 0, sizeof(float) * (kBf16Out ? (V + 1) / 2 : V));  // bf16 zeros are zero bytes too
      if (losses) losses[r] = 0.0f;
      continue;
    }
    const float target_logit = row[t];
    // a > 0, so max(a * x) = a * max(x); with a = 1 every step is the plain softmax exactly
    const float m = a * vm::max_of(row, V);
    const float sum = vm::exp_shift_sum(row, row, V, m, a);
    const float loss = m + std::log(sum) - a * target_logit;
    const float g = w * grad_scale * a;
    vm::scale(row, V, g / sum);
    row[t] -= g;
    if constexpr (kBf16Out) round_row_to_bf16_over_itself(row, V);  // while the row is in cache
    if (losses) losses[r] = loss;
    total += (double)w * loss;
  }
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}
}  // namespace

double softmax_xent_backward_inplace(float* logits, float* losses, const int32_t* targets, const float* weights,
                                     float grad_scale, int64_t n, int V, float inv_temperature) {
  return softmax_xent_rows<false>(logits, losses, targets, weights, grad_scale, n, V, inv_temperature);
}

double softmax_xent_backward_inplace_bf16(float* logits, float* losses, const int32_t* targets, const float* weights,
                                          float grad_scale, int64_t n, int V, float inv_temperature) {
  return softmax_xent_rows<true>(logits, losses, targets, weights, grad_scale, n, V, inv_temperature);
}

float exp_logits_row(float* scratch, const float* row, int V, float a, float* m_out) {
  const float m = a * vm::max_of(row, V);
  *m_out = m;
  return vm::exp_shift_sum(scratch, row, V, m, a);
}

void log_softmax_pick(float* out, const float* logits, const int32_t* targets, int64_t n, int V,
                      float inv_temperature, float* entropy) {
  Prof prof(OpKind::kLoss);
  const float a = inv_temperature;
#pragma omp parallel if (parallel_worth(n * V))
  {
    std::vector<float> scratch(V);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < n; ++r) {
      if (targets[r] < 0) {
        out[r] = 0.0f;
        if (entropy) entropy[r] = 0.0f;
        continue;
      }
      const float* row = logits + r * V;
      float m = 0.0f;
      const float sum = exp_logits_row(scratch.data(), row, V, a, &m);
      const float log_sum = std::log(sum);
      out[r] = a * row[targets[r]] - m - log_sum;
      if (entropy) {
        // H = log Z - E_p[z] with z = a*x, both relative to the max: log(sum) - a * E_p[x - max]
        const float mx = vm::max_of(row, V);
        double acc = 0.0;
        for (int v = 0; v < V; ++v) acc += (double)scratch[v] * (double)(row[v] - mx);
        entropy[r] = static_cast<float>((double)log_sum - (double)a * acc / (double)sum);
      }
    }
  }
}

}  // namespace aji::kernels::cpu
