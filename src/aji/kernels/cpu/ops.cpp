#include "aji/kernels/cpu/ops.h"

#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "aji/base/error.h"
#include "aji/kernels/cpu/vec_math.h"

namespace aji::kernels::cpu {

namespace {
// Below this many elements of work an OpenMP team costs more than it saves (a wake-up of
// the other threads is microseconds; on a busy machine much more).
inline bool parallel_worth(int64_t work) { return work >= 32768; }
constexpr int kFewRows = 4;  // measured: at 8-16 rows dnnl_sgemm is 2x faster than streaming
}  // namespace

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

void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N, int IC, int OC,
                    WeightLayout layout, bool accumulate) {
  Prof prof(OpKind::kGemm);
  if (N <= kFewRows) {
    // A few rows (token-by-token decoding): stream each weight element once. A GEMM
    // library packs the whole weight on every call, as costly as the product itself here.
    if (layout == WeightLayout::kOutIn) {
#pragma omp parallel for if (parallel_worth((int64_t)OC * IC)) schedule(static)
      for (int o = 0; o < OC; ++o) {
        const float* w = weight + (int64_t)o * IC;
        for (int64_t r = 0; r < N; ++r) {
          const float v = vm::dot(inp + r * IC, w, IC) + (bias ? bias[o] : 0.0f);
          out[r * OC + o] = accumulate ? out[r * OC + o] + v : v;
        }
      }
    } else {
      constexpr int kCols = 64;
      const int n_blocks = (OC + kCols - 1) / kCols;
#pragma omp parallel for if (parallel_worth((int64_t)OC * IC)) schedule(static)
      for (int cb = 0; cb < n_blocks; ++cb) {
        const int c0 = cb * kCols, nc = std::min(kCols, OC - c0);
        float acc[kFewRows][kCols] = {};
        for (int k = 0; k < IC; ++k) {
          const float* w = weight + (int64_t)k * OC + c0;
          for (int64_t r = 0; r < N; ++r) {
            const float x = inp[r * IC + k];
            for (int j = 0; j < nc; ++j) acc[r][j] += x * w[j];
          }
        }
        for (int64_t r = 0; r < N; ++r)
          for (int j = 0; j < nc; ++j) {
            const float v = acc[r][j] + (bias ? bias[c0 + j] : 0.0f);
            out[r * OC + c0 + j] = accumulate ? out[r * OC + c0 + j] + v : v;
          }
      }
    }
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

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                       int64_t N, int C, float eps) {
  Prof prof(OpKind::kNorm);
#pragma omp parallel for if (parallel_worth(N * C)) schedule(static)
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
    float* o = out + r * C;
    for (int i = 0; i < C; ++i) o[i] = (x[i] - m) * rs * weight[i] + (bias ? bias[i] : 0.0f);
    if (mean) mean[r] = m;
    if (rstd) rstd[r] = rs;
  }
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
  Prof prof(OpKind::kNorm);
#pragma omp parallel for if (parallel_worth(N * C)) schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    const float* x = inp + r * C;
    const float rs = 1.0f / std::sqrt(vm::dot(x, x, C) / C + eps);
    float* o = out + r * C;
    for (int i = 0; i < C; ++i) o[i] = x[i] * rs * weight[i];
    if (rstd) rstd[r] = rs;
  }
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

void gelu_forward(float* out, const float* inp, int64_t n) {
  Prof prof(OpKind::kActivation);
  const int64_t chunk = 4096;
  const int64_t n_chunks = (n + chunk - 1) / chunk;
#pragma omp parallel for if (parallel_worth(n)) schedule(static)
  for (int64_t c = 0; c < n_chunks; ++c) {
    int64_t i = c * chunk;
    const int64_t end = std::min(n, i + chunk);
#if AJI_VEC_AVX2
    const __m256 k = _mm256_set1_ps(kGeluK), cc = _mm256_set1_ps(kGeluC), half = _mm256_set1_ps(0.5f),
                 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= end; i += 8) {
      __m256 x = _mm256_loadu_ps(inp + i);
      __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
      __m256 u = _mm256_mul_ps(k, _mm256_fmadd_ps(cc, x3, x));
      __m256 t = tanh8(u);
      _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_add_ps(one, t)));
    }
#endif
    for (; i < end; ++i) out[i] = gelu_scalar(inp[i]);
  }
}

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

void swiglu_forward(float* out, const float* gate_up, int64_t N, int F) {
  Prof prof(OpKind::kActivation);
#pragma omp parallel for if (parallel_worth(N * F)) schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    const float* g = gate_up + r * 2 * F;
    const float* u = g + F;
    float* o = out + r * F;
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
  }
}

void swiglu_backward(float* dgate_up, const float* dout, const float* gate_up, int64_t N, int F) {
  Prof prof(OpKind::kActivation);
#pragma omp parallel for if (parallel_worth(N * F)) schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    const float* g = gate_up + r * 2 * F;
    const float* u = g + F;
    const float* dy = dout + r * F;
    float* dg = dgate_up + r * 2 * F;
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
  }
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
                int hd, int pos0, bool inverse, const int32_t* positions) {
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
      for (int i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
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

// out (nq rows, stride d.o_ts) = softmax(scale q k^T) v for nq query rows whose first
// sits at absolute position pos0; row r sees keys first_r .. pos0+r (first_r from
// key_start, else 0). S: scratch of at least kn floats. lse (nq) may be null.
void attention_rows_direct(float* out, float* lse, const float* q, const float* k, const float* v, float* S, int nq,
                           int kn, int pos0, const int32_t* key_start, float scale, const AttnDims& d) {
  const int hd = d.hd;
  for (int r = 0; r < nq; ++r) {
    const float* qr = q + (int64_t)r * d.q_ts;
    const int visible = std::min(kn, pos0 + r + 1);
    const int first = key_start ? key_start[r] : 0;
    int j = first;
#if AJI_VEC_AVX2
    // four keys at a time: four independent FMA chains (one chain is latency-bound)
    if (hd % 8 == 0)
      for (; j + 4 <= visible; j += 4) {
        const float* k0 = k + (int64_t)j * d.k_ts;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int e = 0; e < hd; e += 8) {
          const __m256 x = _mm256_loadu_ps(qr + e);
          a0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k0 + e), a0);
          a1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k0 + d.k_ts + e), a1);
          a2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k0 + 2 * d.k_ts + e), a2);
          a3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(k0 + 3 * d.k_ts + e), a3);
        }
        S[j] = scale * vm::hsum8(a0);
        S[j + 1] = scale * vm::hsum8(a1);
        S[j + 2] = scale * vm::hsum8(a2);
        S[j + 3] = scale * vm::hsum8(a3);
      }
#endif
    for (; j < visible; ++j) S[j] = scale * vm::dot(qr, k + (int64_t)j * d.k_ts, hd);
    const float m = vm::max_of(S + first, visible - first);
    const float sum = vm::exp_shift_sum(S + first, S + first, visible - first, m);
    vm::scale(S + first, visible - first, 1.0f / sum);
    // o = sum_j p_j v_j, 32 output columns at a time held in registers across all keys
    float* o = out + (int64_t)r * d.o_ts;
    int e0 = 0;
#if AJI_VEC_AVX2
    for (; e0 + 32 <= hd; e0 += 32) {
      __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
      for (int jj = first; jj < visible; ++jj) {
        const __m256 p = _mm256_set1_ps(S[jj]);
        const float* vj = v + (int64_t)jj * d.v_ts + e0;
        c0 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vj), c0);
        c1 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vj + 8), c1);
        c2 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vj + 16), c2);
        c3 = _mm256_fmadd_ps(p, _mm256_loadu_ps(vj + 24), c3);
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
        const float* vj = v + (int64_t)jj * d.v_ts;
        for (int e = e0; e < hd; ++e) o[e] += p * vj[e];
      }
    }
    if (lse) lse[r] = m + std::log(sum);
  }
}

// ---- the tile products of attention ----
// Attention's products are small (a 32-row query tile against up to T keys, inner
// dimension hd or 32) and come five to a tile; through dnnl_sgemm each call re-packs its
// operands. Here K and V are packed once per (sequence, kv head) into 16-float-wide
// panels and one register-blocked kernel, with operand A read through any strides, does
// every product. On AVX-512 the kernel is up to 16 rows x 16 columns with the A element
// broadcast inside the FMA; AVX2 has no such FMA, and its separate broadcasts share the
// FMA ports (measured on Zen 4, M32 N256 K64 from L1: ~100 GFLOP/s against ~70 for a
// 6 x 16 AVX2 kernel and 55-86 for dnnl_sgemm).

constexpr int kPanel = 16;
inline int64_t round_up_panel(int64_t n) { return (n + kPanel - 1) / kPanel * kPanel; }
// A row stride (for a width that is a multiple of 16 floats) of an odd number of cache
// lines: at a power-of-two stride the rows of a panel fall into a few L1 sets and evict
// each other (measured: 256-float rows made the kernels run from L2).
constexpr int kKeyBlock = 256;  // keys per block in the backward
inline int64_t spread_ld(int64_t width16) { return (width16 / kPanel) % 2 ? width16 : width16 + kPanel; }

#if AJI_VEC_AVX2
// C (MR x 16, ldc) = / += sum_k A(r, k) B(k, 0..15); A(r, k) = a[r * a_rs + k * a_ks].
template <int MR>
void tile_product_avx2(int K, const float* a, int64_t a_rs, int64_t a_ks, const float* b, int64_t ldb, float* c,
                       int64_t ldc, bool accumulate) {
  __m256 lo[MR], hi[MR];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    lo[r] = accumulate ? _mm256_loadu_ps(c + r * ldc) : _mm256_setzero_ps();
    hi[r] = accumulate ? _mm256_loadu_ps(c + r * ldc + 8) : _mm256_setzero_ps();
  }
  for (int k = 0; k < K; ++k) {
    const __m256 b0 = _mm256_loadu_ps(b + k * ldb), b1 = _mm256_loadu_ps(b + k * ldb + 8);
    const float* ak = a + k * a_ks;
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const __m256 x = _mm256_broadcast_ss(ak + r * a_rs);
      lo[r] = _mm256_fmadd_ps(x, b0, lo[r]);
      hi[r] = _mm256_fmadd_ps(x, b1, hi[r]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    _mm256_storeu_ps(c + r * ldc, lo[r]);
    _mm256_storeu_ps(c + r * ldc + 8, hi[r]);
  }
}

void panel_product_avx2(int M, int N, int K, const float* a, int64_t a_rs, int64_t a_ks, const float* b, int64_t ldb,
                        float* c, int64_t ldc, bool accumulate) {
  for (int c0 = 0; c0 < N; c0 += 16)
    for (int r0 = 0; r0 < M; r0 += 6) {
      const float* ar = a + r0 * a_rs;
      float* cr = c + r0 * ldc + c0;
      switch (std::min(6, M - r0)) {
        case 6: tile_product_avx2<6>(K, ar, a_rs, a_ks, b + c0, ldb, cr, ldc, accumulate); break;
        case 5: tile_product_avx2<5>(K, ar, a_rs, a_ks, b + c0, ldb, cr, ldc, accumulate); break;
        case 4: tile_product_avx2<4>(K, ar, a_rs, a_ks, b + c0, ldb, cr, ldc, accumulate); break;
        case 3: tile_product_avx2<3>(K, ar, a_rs, a_ks, b + c0, ldb, cr, ldc, accumulate); break;
        case 2: tile_product_avx2<2>(K, ar, a_rs, a_ks, b + c0, ldb, cr, ldc, accumulate); break;
        default: tile_product_avx2<1>(K, ar, a_rs, a_ks, b + c0, ldb, cr, ldc, accumulate); break;
      }
    }
}

// C (MR x 16) as above with AVX-512 (compiled for it, called only where the CPU has it):
// one B vector per k, each A element broadcast inside its FMA ({1to16}, used once, so the
// compiler folds it), up to 8 rows (16 spilled the rows' offsets out of the integer registers).
template <int MR>
__attribute__((target("avx512f"))) void tile_product_avx512(int K, const float* a, int64_t a_rs, int64_t a_ks,
                                                            const float* b, int64_t ldb, float* c, int64_t ldc,
                                                            bool accumulate) {
  __m512 acc[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) acc[r] = accumulate ? _mm512_loadu_ps(c + r * ldc) : _mm512_setzero_ps();
  for (int k = 0; k < K; ++k) {
    const __m512 b0 = _mm512_loadu_ps(b + k * ldb);
    const float* ak = a + k * a_ks;
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(ak[r * a_rs]), b0, acc[r]);
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) _mm512_storeu_ps(c + r * ldc, acc[r]);
}

template <int MR>
__attribute__((target("avx512f"))) void row_block_avx512(int rows, int K, const float* a, int64_t a_rs, int64_t a_ks,
                                                         const float* b, int64_t ldb, float* c, int64_t ldc,
                                                         bool accumulate) {
  if constexpr (MR > 1)
    if (rows < MR) return row_block_avx512<MR - 1>(rows, K, a, a_rs, a_ks, b, ldb, c, ldc, accumulate);
  tile_product_avx512<MR>(K, a, a_rs, a_ks, b, ldb, c, ldc, accumulate);
}

__attribute__((target("avx512f"))) void panel_product_avx512(int M, int N, int K, const float* a, int64_t a_rs,
                                                             int64_t a_ks, const float* b, int64_t ldb, float* c,
                                                             int64_t ldc, bool accumulate) {
  for (int c0 = 0; c0 < N; c0 += 16)
    for (int r0 = 0; r0 < M; r0 += 8)
      row_block_avx512<8>(M - r0, K, a + r0 * a_rs, a_rs, a_ks, b + c0, ldb, c + r0 * ldc + c0, ldc, accumulate);
}

const bool g_has_avx512 = __builtin_cpu_supports("avx512f");
#endif

// C (M x N, ldc) = / += A (M x K) B (K x N, rows of ldb): N a multiple of kPanel, B's rows
// contiguous, A(r, k) = a[r * a_rs + k * a_ks] (row-major, transposed or strided alike).
// Column panel outermost, so that B's K x 16 panel stays in L1 across all row blocks.
void panel_product(int M, int N, int K, const float* a, int64_t a_rs, int64_t a_ks, const float* b, int64_t ldb,
                   float* c, int64_t ldc, bool accumulate) {
#if AJI_VEC_AVX2
  if (g_has_avx512)
    panel_product_avx512(M, N, K, a, a_rs, a_ks, b, ldb, c, ldc, accumulate);
  else
    panel_product_avx2(M, N, K, a, a_rs, a_ks, b, ldb, c, ldc, accumulate);
#else
  for (int r = 0; r < M; ++r) {
    float* cr = c + r * ldc;
    if (!accumulate) std::fill(cr, cr + N, 0.0f);
    for (int k = 0; k < K; ++k) {
      const float x = a[r * a_rs + k * a_ks];
      const float* bk = b + k * ldb;
      for (int j = 0; j < N; ++j) cr[j] += x * bk[j];
    }
  }
#endif
}

// rows (n, stride ts, width hd) -> out (n_pad x width) zero-padded: out[j][e] = x[j][e]
void pack_rows(float* out, int64_t width, const float* x, int64_t ts, int n, int n_pad, int hd) {
  for (int j = 0; j < n; ++j) {
    std::memcpy(out + j * width, x + j * ts, sizeof(float) * hd);
    std::fill(out + j * width + hd, out + (j + 1) * width, 0.0f);
  }
  std::fill(out + n * width, out + n_pad * width, 0.0f);
}

// rows (n, stride ts, width hd) -> out (hd x ld), transposed, zero-padded to ld: out[e][j] = x[j][e]
void pack_transposed(float* out, int64_t ld, const float* x, int64_t ts, int n, int hd) {
  for (int e = 0; e < hd; ++e) std::fill(out + e * ld + n, out + (e + 1) * ld, 0.0f);
  int j0 = 0, e0 = 0;
#if AJI_VEC_AVX2
  // 8 x 8 blocks through registers
  for (; j0 + 8 <= n; j0 += 8)
    for (e0 = 0; e0 + 8 <= hd; e0 += 8) {
      __m256 r[8], t[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(x + (j0 + i) * ts + e0);
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
  // columns past the last multiple of 8, for the rows done above
  for (int j = 0; j < j0; ++j)
    for (int e = hd / 8 * 8; e < hd; ++e) out[e * ld + j] = x[j * ts + e];
#endif
  (void)e0;
  for (int j = j0; j < n; ++j)
    for (int e = 0; e < hd; ++e) out[e * ld + j] = x[j * ts + e];
}

// Per-thread scratch that only grows: attention runs once per layer and step, and fresh
// buffers of this size would be page-faulted in every time.
float* scratch(std::vector<float>& buf, size_t n) {
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}
}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, const AttnDims& d) {
  Prof prof(OpKind::kAttentionFwd);
  const int n_tiles = (d.Tq + kQueryTile - 1) / kQueryTile;
  const int group = d.H / d.KV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.hd));
  const int64_t tk16 = round_up_panel(d.Tk), hd16 = round_up_panel(d.hd);
  const int64_t ld_tk = spread_ld(tk16), ld_hd = spread_ld(hd16);  // row strides of the packed buffers
  // Head widths that fill whole panels (64, 128, ...) write the output in place; others
  // through a zero-padded tile.
  const bool whole_panels = d.hd % kPanel == 0;
  const int64_t units = (int64_t)d.B * d.H * n_tiles;
  const bool tiled = d.Tq > kFewQueries;  // else every tile takes the direct path
  // K^T (hd x tk16, rows ld_tk apart) and V (tk16 x hd16, rows ld_hd apart) of every
  // (sequence, kv head), packed once for all heads and tiles that read them. V is the B
  // operand of a product over up to T keys: in place its rows, one fused-qkv row apart,
  // can share a few L1 sets (tiny: 72 cache lines apart, so 8 of the 64 sets).
  static thread_local std::vector<float> kt_buf, v_buf;
  const int64_t kt_size = d.hd * ld_tk, v_size = tk16 * ld_hd;
  const int64_t n_packs = (int64_t)d.B * d.KV;
  float* kt_all = tiled ? scratch(kt_buf, (size_t)(n_packs * kt_size)) : nullptr;
  float* v_all = tiled ? scratch(v_buf, (size_t)(n_packs * v_size)) : nullptr;
  if (tiled) {
#pragma omp parallel for if (parallel_worth(n_packs * d.Tk * d.hd)) schedule(static)
    for (int64_t u = 0; u < n_packs; ++u) {
      const int b = (int)(u / d.KV), kvh = (int)(u % d.KV);
      pack_transposed(kt_all + u * kt_size, ld_tk, k + b * d.k_bs + (int64_t)kvh * d.hd, d.k_ts, d.Tk, d.hd);
      pack_rows(v_all + u * v_size, ld_hd, v + b * d.v_bs + (int64_t)kvh * d.hd, d.v_ts, d.Tk, (int)tk16, d.hd);
    }
  }
#pragma omp parallel if (parallel_worth(units * d.Tk * d.hd))
  {
    static thread_local std::vector<float> s_buf, o_buf;
    float* S = scratch(s_buf, (size_t)(kQueryTile * ld_tk));
    float* O = whole_panels ? nullptr : scratch(o_buf, (size_t)(kQueryTile * ld_hd));
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
      const float* vp = v + b * d.v_bs + (int64_t)kvh * d.hd;
      float* op = out + b * d.o_bs + (int64_t)i0 * d.o_ts + (int64_t)h * d.hd;
      float* lp = lse ? lse + ((int64_t)b * d.H + h) * d.Tq + i0 : nullptr;
      const int32_t* ks = d.key_start ? d.key_start + (int64_t)b * d.Tq + i0 : nullptr;
      if (nq <= kFewQueries) {
        attention_rows_direct(op, lp, qp, k + b * d.k_bs + (int64_t)kvh * d.hd, vp, S, nq, kn, d.q_pos0 + i0, ks,
                              scale, d);
        continue;
      }
      const int64_t pack = (int64_t)b * d.KV + kvh;
      // S (nq, kn rounded up to 16) = q k^T, unscaled
      panel_product(nq, (int)round_up_panel(kn), d.hd, qp, d.q_ts, 1, kt_all + pack * kt_size, ld_tk, S, ld_tk, false);
      for (int r = 0; r < nq; ++r) {
        float* row = S + r * ld_tk;
        const int visible = std::min(kn, d.q_pos0 + i0 + r + 1);
        const int first = ks ? ks[r] : 0;
        // exp(scale (s - max)); normalised after the value product, on hd numbers instead of kn
        const float m = scale * vm::max_of(row + first, visible - first);
        row_sum[r] = vm::exp_shift_sum(row + first, row + first, visible - first, m, scale);
        std::fill(row, row + first, 0.0f);
        std::fill(row + visible, row + kn, 0.0f);
        if (lp) lp[r] = m + std::log(row_sum[r]);
      }
      // out (nq, hd) = P v / row sums
      if (whole_panels) {
        panel_product(nq, d.hd, kn, S, ld_tk, 1, v_all + pack * v_size, ld_hd, op, d.o_ts, false);
        for (int r = 0; r < nq; ++r) vm::scale(op + r * d.o_ts, d.hd, 1.0f / row_sum[r]);
      } else {
        panel_product(nq, (int)hd16, kn, S, ld_tk, 1, v_all + pack * v_size, ld_hd, O, ld_hd, false);
        for (int r = 0; r < nq; ++r) {
          const float inv = 1.0f / row_sum[r];
          float* o = op + r * d.o_ts;
          for (int e = 0; e < d.hd; ++e) o[e] = O[r * ld_hd + e] * inv;
        }
      }
    }
  }
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, const AttnDims& d) {
  Prof prof(OpKind::kAttentionBwd);
  const int n_tiles = (d.Tq + kQueryTile - 1) / kQueryTile;
  const int group = d.H / d.KV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.hd));
  // Keys in blocks of at most kKeyBlock (FlashAttention-2's order: dK, dV of a block
  // finished before the next, dq accumulated over blocks), so that the working set stays
  // in L2 at any context length.
  const int kb_max = std::min(d.Tk, kKeyBlock);
  const int64_t kb16 = round_up_panel(kb_max), hd16 = round_up_panel(d.hd);
  const int64_t ld_kb = spread_ld(kb16), ld_hd = spread_ld(hd16);  // row strides of the packed buffers
  // as in the forward: whole-panel head widths use q, dout, dq, dk and dv in place
  const bool whole_panels = d.hd % kPanel == 0;
  const int64_t units = (int64_t)d.B * d.KV;  // dq, dk, dv of one kv head group are written by one thread
#pragma omp parallel if (parallel_worth(units * d.Tk * d.hd * group))
  {
    // Of one key block: K^T, V^T (hd x kb16) for the score products, K (kb16 x hd16) for
    // dq (packed for the reason V is in the forward); P and dP (32 x kb16); dO . O of every
    // query row of the group; for other head widths also dK and dV (kb16 x hd16) and the
    // tile's q, dout and dq as (32 x hd16) panels.
    static thread_local std::vector<float> buf;
    const int64_t t_size = d.hd * ld_kb, s_size = kQueryTile * ld_kb, k_size = kb16 * ld_hd;
    const int64_t r_size = whole_panels ? 0 : kb16 * ld_hd, q_size = whole_panels ? 0 : kQueryTile * ld_hd;
    const int64_t dot_size = (int64_t)group * d.Tq;
    float* kt = scratch(buf, (size_t)(2 * t_size + 2 * s_size + k_size + 2 * r_size + 3 * q_size + dot_size));
    float* vt = kt + t_size;
    float* P = vt + t_size;
    float* dP = P + s_size;
    float* kr = dP + s_size;
    float* dkr = kr + k_size;
    float* dvr = dkr + r_size;
    float* qr = dvr + r_size;
    float* dor = qr + q_size;
    float* dqr = dor + q_size;
    float* dots = dqr + q_size;
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < units; ++u) {
      const int b = (int)(u / d.KV), kvh = (int)(u % d.KV);
      const int h0 = kvh * group;
      const float* kp = k + b * d.k_bs + (int64_t)kvh * d.hd;
      const float* vp = v + b * d.v_bs + (int64_t)kvh * d.hd;
      float* dkp = dk + b * d.k_bs + (int64_t)kvh * d.hd;
      float* dvp = dv + b * d.v_bs + (int64_t)kvh * d.hd;
      // sum_j P_j dP_j = dO . O per query row; dq starts at 0 (it sums over key blocks)
      for (int h = h0; h < h0 + group; ++h)
        for (int i = 0; i < d.Tq; ++i) {
          const int64_t at = b * d.o_bs + (int64_t)i * d.o_ts + (int64_t)h * d.hd;
          dots[(int64_t)(h - h0) * d.Tq + i] = vm::dot(dout + at, out + at, d.hd);
          std::memset(dq + b * d.q_bs + (int64_t)i * d.q_ts + (int64_t)h * d.hd, 0, sizeof(float) * d.hd);
        }
      for (int kb0 = 0; kb0 < d.Tk; kb0 += kKeyBlock) {
        const int kw = std::min(kKeyBlock, d.Tk - kb0);
        pack_transposed(kt, ld_kb, kp + (int64_t)kb0 * d.k_ts, d.k_ts, kw, d.hd);
        pack_transposed(vt, ld_kb, vp + (int64_t)kb0 * d.v_ts, d.v_ts, kw, d.hd);
        pack_rows(kr, ld_hd, kp + (int64_t)kb0 * d.k_ts, d.k_ts, kw, (int)round_up_panel(kw), d.hd);
        // where this block's dk, dv accumulate
        float* dk_acc = dkp + (int64_t)kb0 * d.k_ts;
        float* dv_acc = dvp + (int64_t)kb0 * d.v_ts;
        int64_t dk_ld = d.k_ts, dv_ld = d.v_ts;
        if (whole_panels) {
          for (int j = 0; j < kw; ++j) {
            std::memset(dk_acc + (int64_t)j * d.k_ts, 0, sizeof(float) * d.hd);
            std::memset(dv_acc + (int64_t)j * d.v_ts, 0, sizeof(float) * d.hd);
          }
        } else {
          std::fill(dkr, dkr + 2 * r_size, 0.0f);  // dkr and dvr
          dk_acc = dkr, dv_acc = dvr, dk_ld = dv_ld = ld_hd;
        }
        for (int h = h0; h < h0 + group; ++h) {
          for (int tile = 0; tile < n_tiles; ++tile) {
            const int i0 = tile * kQueryTile, i1 = std::min(d.Tq, i0 + kQueryTile), nq = i1 - i0;
            const int kn = std::min(d.Tk, d.q_pos0 + i1);  // keys visible to the tile's last row
            if (kn <= kb0) continue;                        // none of them in this block
            const int kbn = std::min(kn, kb0 + kw) - kb0;   // of this block
            const int kbn16 = (int)round_up_panel(kbn);
            const float* qp = q + b * d.q_bs + (int64_t)i0 * d.q_ts + (int64_t)h * d.hd;
            const float* dop = dout + b * d.o_bs + (int64_t)i0 * d.o_ts + (int64_t)h * d.hd;
            float* dqp = dq + b * d.q_bs + (int64_t)i0 * d.q_ts + (int64_t)h * d.hd;
            const float* lrow = lse + ((int64_t)b * d.H + h) * d.Tq + i0;
            const float* drow = dots + (int64_t)(h - h0) * d.Tq + i0;
            const int32_t* ks = d.key_start ? d.key_start + (int64_t)b * d.Tq + i0 : nullptr;
            const float* q_rows = qp;
            const float* do_rows = dop;
            int64_t q_ld = d.q_ts, do_ld = d.o_ts;
            if (!whole_panels) {
              pack_rows(qr, ld_hd, qp, d.q_ts, nq, nq, d.hd);
              pack_rows(dor, ld_hd, dop, d.o_ts, nq, nq, d.hd);
              q_rows = qr, do_rows = dor, q_ld = do_ld = ld_hd;
            }
            // P = exp(scale q k^T - lse), recomputed; dP = dO V^T
            panel_product(nq, kbn16, d.hd, qp, d.q_ts, 1, kt, ld_kb, P, ld_kb, false);
            panel_product(nq, kbn16, d.hd, dop, d.o_ts, 1, vt, ld_kb, dP, ld_kb, false);
            for (int r = 0; r < nq; ++r) {
              float* prow = P + r * ld_kb;
              float* dprow = dP + r * ld_kb;
              // the row's visible keys [first, visible) within this block, as [lo, hi)
              const int visible = std::min(kn, d.q_pos0 + i0 + r + 1);
              const int first = ks ? ks[r] : 0;
              const int lo = std::min(kbn, std::max(0, first - kb0));
              const int hi = std::max(lo, std::min(kbn, visible - kb0));
              // dS = P * (dP - dO . O), times the score scale, which both dq and dk carry
              vm::softmax_grad_row(prow + lo, dprow + lo, hi - lo, scale, lrow[r], drow[r]);
              std::fill(prow, prow + lo, 0.0f);
              std::fill(prow + hi, prow + kbn, 0.0f);
              std::fill(dprow, dprow + lo, 0.0f);
              std::fill(dprow + hi, dprow + kbn, 0.0f);
            }
            // dq (nq, hd) += dS K;  dK += dS^T q;  dV += P^T dO
            if (whole_panels) {
              panel_product(nq, d.hd, kbn, dP, ld_kb, 1, kr, ld_hd, dqp, d.q_ts, true);
            } else {
              panel_product(nq, (int)hd16, kbn, dP, ld_kb, 1, kr, ld_hd, dqr, ld_hd, false);
              for (int r = 0; r < nq; ++r)
                for (int e = 0; e < d.hd; ++e) dqp[r * d.q_ts + e] += dqr[r * ld_hd + e];
            }
            panel_product(kbn, (int)hd16, nq, dP, 1, ld_kb, q_rows, q_ld, dk_acc, dk_ld, true);
            panel_product(kbn, (int)hd16, nq, P, 1, ld_kb, do_rows, do_ld, dv_acc, dv_ld, true);
          }
        }
        if (!whole_panels)
          for (int j = 0; j < kw; ++j) {
            std::memcpy(dkp + (int64_t)(kb0 + j) * d.k_ts, dkr + j * ld_hd, sizeof(float) * d.hd);
            std::memcpy(dvp + (int64_t)(kb0 + j) * d.v_ts, dvr + j * ld_hd, sizeof(float) * d.hd);
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

double softmax_xent_backward_inplace(float* logits, float* losses, const int32_t* targets, const float* weights,
                                     float grad_scale, int64_t n, int V) {
  Prof prof(OpKind::kLoss);
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
      std::memset(row, 0, sizeof(float) * V);
      if (losses) losses[r] = 0.0f;
      continue;
    }
    const float target_logit = row[t];
    const float m = vm::max_of(row, V);
    const float sum = vm::exp_shift_sum(row, row, V, m);
    const float loss = m + std::log(sum) - target_logit;
    const float k = w * grad_scale / sum;
    vm::scale(row, V, k);
    row[t] -= w * grad_scale;
    if (losses) losses[r] = loss;
    total += (double)w * loss;
  }
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

void log_softmax_pick(float* out, const float* logits, const int32_t* targets, int64_t n, int V) {
  Prof prof(OpKind::kLoss);
#pragma omp parallel if (parallel_worth(n * V))
  {
    std::vector<float> scratch(V);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < n; ++r) {
      const float* row = logits + r * V;
      const float m = vm::max_of(row, V);
      const float sum = vm::exp_shift_sum(scratch.data(), row, V, m);
      out[r] = row[targets[r]] - m - std::log(sum);
    }
  }
}

}  // namespace aji::kernels::cpu
