// Matrix products of the CUDA backend: cuBLASLt in fp32 (CUBLAS_COMPUTE_32F, no TF32), so a
// product is the CPU's to rounding; the bias gradient is a deterministic column sum. With
// ctx.tf32 (Backend::set_matmul_tf32, --precision tf32) CUBLAS_COMPUTE_32F_FAST_TF32: the
// operands rounded to TF32 on the tensor cores, fp32 accumulation and output. The bf16
// products (matmul_forward_bf16 / matmul_backward_bf16, --precision bf16) take the weight's
// bf16 copy and round the activation operand (inp, dout) to bf16 into the workspace first,
// then run cuBLASLt with bf16 A and B, fp32 accumulation (CUBLAS_COMPUTE_32F) and fp32 C/D:
// the CPU's bf16_gemm.h contract (round to nearest even, fp32 sums, fp32 bias).
//
// cuBLASLt is column-major and our matrices are row-major: a row-major (R, C) matrix is the
// column-major (C, R) one, its transpose, with the same leading dimension. So each product
// Y = X W is computed as Y^T = W^T X^T with the operands swapped.
//
// The heuristic's choice for each configuration (shape, transposes, leading dimensions, the
// operands' alignments, beta, bias) is cached: the algorithm struct is plain data, reusable
// with fresh descriptors of the same configuration, and the same choice for the same shape
// keeps the results bit-identical from call to call.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "aji/base/error.h"
#include "aji/kernels/cuda/check.h"
#include "aji/kernels/cuda/launch.h"

namespace aji::kernels::cuda {
namespace {

// ---- kernels ------------------------------------------------------------------------------

// out (N,OC) = (keep ? out : 0) + bias (when not null), over every element: the bias of a
// product whose epilogue could not take it, and the whole product when IC = 0.
__global__ void bias_rows_kernel(float* out, const float* bias, int64_t N, int OC, bool keep) {
  const int64_t total = N * (int64_t)OC;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const float b = bias ? bias[i % OC] : 0.0f;
    out[i] = keep ? out[i] + b : b;
  }
}

// Column sums of dout (N,OC), stage 1: block (x = column block of 32, y = row block) sums its
// rows [y * rows_per_block, ...) of 32 columns; partial (row_blocks, OC). Thread (tx, ty) takes
// the rows ty, ty + 8, ... in order, then the 8 partial sums are added in ty order.
constexpr int kColsumCols = 32, kColsumRows = 8;
__global__ void colsum_partial_kernel(float* partial, const float* dout, int64_t N, int OC, int64_t rows_per_block) {
  __shared__ float sh[kColsumRows][kColsumCols + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int c = blockIdx.x * kColsumCols + tx;
  const int64_t r0 = (int64_t)blockIdx.y * rows_per_block;
  const int64_t r1 = r0 + rows_per_block < N ? r0 + rows_per_block : N;
  float s = 0.0f;
  if (c < OC)
    for (int64_t r = r0 + ty; r < r1; r += kColsumRows) s += dout[r * OC + c];
  sh[ty][tx] = s;
  __syncthreads();
  if (ty == 0 && c < OC) {
    float t = sh[0][tx];
    for (int i = 1; i < kColsumRows; ++i) t += sh[i][tx];
    partial[(int64_t)blockIdx.y * OC + c] = t;
  }
}

// Stage 2: dbias (OC) += the row blocks' partial sums, added in row-block order.
__global__ void colsum_finish_kernel(float* dbias, const float* partial, int row_blocks, int OC) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= OC) return;
  float s = 0.0f;
  for (int rb = 0; rb < row_blocks; ++rb) s += partial[(int64_t)rb * OC + c];
  dbias[c] += s;
}

// dst[i] = bf16(src[i]), round to nearest even, NaN stays a quiet NaN: base/half.cpp's
// f32_to_bf16 bit for bit (so the devices' bf16 copies of the weights are the same bits).
__device__ __forceinline__ uint16_t bf16_rne(float f) {
  uint32_t x = __float_as_uint(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

__global__ void round_bf16_kernel(uint16_t* dst, const float* src, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    dst[i] = bf16_rne(src[i]);
}

int elementwise_blocks(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return (int)std::min<int64_t>(std::max<int64_t>(blocks, 1), int64_t(1) << 20);  // grid-stride beyond
}

void bias_rows(Context& ctx, float* out, const float* bias, int64_t N, int OC, bool keep) {
  const int threads = 256;
  bias_rows_kernel<<<elementwise_blocks(N * (int64_t)OC, threads), threads, 0, ctx.stream>>>(out, bias, N, OC, keep);
  ctx.launched("matmul_forward (bias)");
}

void round_bf16(Context& ctx, uint16_t* dst, const float* src, int64_t n, const char* what) {
  if (n <= 0) return;
  const int threads = 256;
  round_bf16_kernel<<<elementwise_blocks(n, threads), threads, 0, ctx.stream>>>(dst, src, n);
  ctx.launched(what);
}

// dbias (OC) += column sums of dout (N,OC), in a fixed order (no atomics).
void bias_grad(Context& ctx, float* dbias, const float* dout, int64_t N, int OC) {
  const int col_blocks = (OC + kColsumCols - 1) / kColsumCols;
  // Row blocks: enough blocks to fill the GPU, few enough that the partials stay small. A
  // function of the shape only, so the order of the additions is too.
  const int64_t want = (N + 63) / 64;
  const int64_t cap = std::max(1, 2048 / col_blocks);
  const int row_blocks = (int)std::max<int64_t>(1, std::min(want, cap));  // <= 2048 < 65535 (gridDim.y)
  const int64_t rows_per_block = (N + row_blocks - 1) / row_blocks;
  float* partial = static_cast<float*>(ctx.workspace(sizeof(float) * (size_t)row_blocks * (size_t)OC));
  colsum_partial_kernel<<<dim3(col_blocks, row_blocks), dim3(kColsumCols, kColsumRows), 0, ctx.stream>>>(
      partial, dout, N, OC, rows_per_block);
  ctx.launched("matmul_backward (dbias partial sums)");
  const int threads = 256;
  colsum_finish_kernel<<<(OC + threads - 1) / threads, threads, 0, ctx.stream>>>(dbias, partial, row_blocks, OC);
  ctx.launched("matmul_backward (dbias)");
}

// ---- cuBLASLt -----------------------------------------------------------------------------

// The largest power of two up to 256 that divides the address (cuBLASLt's heuristic assumes
// 256-byte aligned operands unless told otherwise; ours are often offsets into larger buffers).
uint32_t alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al != 0) al >>= 1;
  return al;
}

// Descriptors released on every path, exceptions included.
struct MatmulDesc {
  cublasLtMatmulDesc_t h = nullptr;
  ~MatmulDesc() {
    if (h) cublasLtMatmulDescDestroy(h);
  }
};
struct Layout {
  cublasLtMatrixLayout_t h = nullptr;
  ~Layout() {
    if (h) cublasLtMatrixLayoutDestroy(h);
  }
};
struct Preference {
  cublasLtMatmulPreference_t h = nullptr;
  ~Preference() {
    if (h) cublasLtMatmulPreferenceDestroy(h);
  }
};

// One column-major product D (m,n) = op(A) op(B) + beta D (+ bias (m) broadcast over columns).
// op(A) is (m,k): A is stored (m,k) when ta = N, (k,m) when T; op(B) is (k,n) likewise.
struct Gemm {
  cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
  int64_t m = 0, n = 0, k = 0;
  cudaDataType_t ab_type = CUDA_R_32F;  // A's and B's elements: fp32, or CUDA_R_16BF (bf16 products)
  const void* A = nullptr;
  int64_t lda = 0;
  const void* B = nullptr;
  int64_t ldb = 0;
  float* D = nullptr;
  int64_t ldd = 0;
  float beta = 0.0f;
  const float* bias = nullptr;  // CUBLASLT_EPILOGUE_BIAS when not null
};

struct CachedAlgo {
  bool found = false;
  cublasLtMatmulAlgo_t algo{};
};
using AlgoKey = std::array<int64_t, 20>;
std::mutex g_algo_mutex;
std::map<AlgoKey, CachedAlgo> g_algos;

std::string describe(const Gemm& g, const char* what) {
  return std::string(what) + (g.ab_type == CUDA_R_16BF ? " (bf16 operands)" : "") +
         ": column-major m=" + std::to_string(g.m) + " n=" + std::to_string(g.n) +
         " k=" + std::to_string(g.k) + " op(A)=" + (g.ta == CUBLAS_OP_T ? "T" : "N") +
         " op(B)=" + (g.tb == CUBLAS_OP_T ? "T" : "N") + " lda=" + std::to_string(g.lda) +
         " ldb=" + std::to_string(g.ldb) + " ldd=" + std::to_string(g.ldd) + " beta=" + std::to_string(g.beta) +
         (g.bias ? " with the bias epilogue" : "");
}

// Runs g on ctx's stream. Returns false, having queued nothing, when cuBLASLt has no algorithm
// for it and may_fail is set (the caller then does without the bias epilogue); otherwise no
// algorithm is an aji::Error naming the shape.
bool lt_matmul(Context& ctx, const Gemm& g, const char* what, bool may_fail) {
  MatmulDesc desc;
  const bool bf16 = g.ab_type == CUDA_R_16BF;  // bf16 operands: fp32 accumulation (TF32 is moot)
  const cublasComputeType_t compute = ctx.tf32 && !bf16 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  AJI_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc.h, compute, CUDA_R_32F));
  const int32_t ta = g.ta, tb = g.tb;
  AJI_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.h, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  AJI_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.h, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  if (g.bias) {
    const uint32_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    AJI_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.h, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                                    sizeof(epilogue)));
    const void* bias = g.bias;
    AJI_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.h, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  // Stored shapes: A (m,k) or (k,m), B (k,n) or (n,k), D (m,n); column-major.
  const uint64_t a_rows = g.ta == CUBLAS_OP_N ? g.m : g.k, a_cols = g.ta == CUBLAS_OP_N ? g.k : g.m;
  const uint64_t b_rows = g.tb == CUBLAS_OP_N ? g.k : g.n, b_cols = g.tb == CUBLAS_OP_N ? g.n : g.k;
  Layout a, b, d;
  AJI_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&a.h, g.ab_type, a_rows, a_cols, g.lda));
  AJI_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&b.h, g.ab_type, b_rows, b_cols, g.ldb));
  AJI_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d.h, CUDA_R_32F, (uint64_t)g.m, (uint64_t)g.n, g.ldd));

  const uint32_t al_a = alignment_of(g.A), al_b = alignment_of(g.B), al_d = alignment_of(g.D);
  const uint32_t al_bias = g.bias ? alignment_of(g.bias) : 0;
  const AlgoKey key{(int64_t)compute,
                    (int64_t)g.ab_type,
                    ctx.device,
                    ctx.sm_count,
                    (int64_t) reinterpret_cast<uintptr_t>(ctx.lt),
                    (int64_t)ctx.lt_workspace_bytes,
                    (int64_t)g.ta,
                    (int64_t)g.tb,
                    g.m,
                    g.n,
                    g.k,
                    g.lda,
                    g.ldb,
                    g.ldd,
                    g.beta != 0.0f,
                    g.bias != nullptr,
                    al_a,
                    al_b,
                    al_d,
                    al_bias};
  CachedAlgo chosen;
  bool cached = false;
  {
    std::lock_guard<std::mutex> lock(g_algo_mutex);
    auto it = g_algos.find(key);
    if (it != g_algos.end()) chosen = it->second, cached = true;
  }
  if (!cached) {
    Preference pref;
    AJI_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref.h));
    const uint64_t ws = ctx.lt_workspace_bytes;
    AJI_CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    AJI_CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof(al_a)));
    AJI_CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof(al_b)));
    AJI_CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, sizeof(al_d)));
    AJI_CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref.h, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, sizeof(al_d)));
    cublasLtMatmulHeuristicResult_t result{};
    int count = 0;
    const cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(ctx.lt, desc.h, a.h, b.h, d.h, d.h, pref.h, 1, &result, &count);
    if (st != CUBLAS_STATUS_SUCCESS && st != CUBLAS_STATUS_NOT_SUPPORTED)
      throw_cublas(st, "cublasLtMatmulAlgoGetHeuristic", __FILE__, __LINE__);
    chosen.found = st == CUBLAS_STATUS_SUCCESS && count > 0 && result.state == CUBLAS_STATUS_SUCCESS;
    if (chosen.found) chosen.algo = result.algo;
    std::lock_guard<std::mutex> lock(g_algo_mutex);
    g_algos.emplace(key, chosen);
  }
  if (!chosen.found) {
    if (may_fail) return false;
    throw Error(std::string("cuBLASLt found no ") +
                (bf16 ? "bf16 (CUDA_R_16BF operands, CUBLAS_COMPUTE_32F)"
                      : ctx.tf32 ? "TF32 (CUBLAS_COMPUTE_32F_FAST_TF32)" : "fp32 (CUBLAS_COMPUTE_32F)") +
                " algorithm for " + describe(g, what));
  }
  const float alpha = 1.0f;
  AJI_CUBLAS_CHECK(cublasLtMatmul(ctx.lt, desc.h, &alpha, g.A, a.h, g.B, b.h, &g.beta, g.D, d.h, g.D, d.h,
                                  &chosen.algo, ctx.lt_workspace, ctx.lt_workspace_bytes, ctx.stream));
  ctx.launched(what);
  return true;
}

// out (N,OC) = inp (N,IC) x W (+ bias (OC)); accumulate: out += (inp x W + bias); inp and W
// of element type t (fp32, or bf16 for the bf16 products).
// Column-major, out^T (OC,N) = op(A) (OC,IC) x inp^T (IC,N), inp^T being inp as stored (ld IC):
//   kOutIn: W (OC,IC) row-major is (IC,OC) column-major (ld IC): op(A) = T.
//   kInOut: W (IC,OC) row-major is (OC,IC) column-major (ld OC): op(A) = N.
void forward_gemm(Context& ctx, float* out, const void* inp, const void* weight, cudaDataType_t t, const float* bias,
                  int64_t N, int IC, int OC, WeightLayout layout, bool accumulate, const char* what) {
  Gemm g;
  g.ab_type = t;
  g.m = OC;
  g.n = N;
  g.k = IC;
  g.A = weight;
  if (layout == WeightLayout::kOutIn) {
    g.ta = CUBLAS_OP_T;
    g.lda = IC;
  } else {
    g.ta = CUBLAS_OP_N;
    g.lda = OC;
  }
  g.tb = CUBLAS_OP_N;
  g.B = inp;  // (IC,N) column-major
  g.ldb = IC;
  g.D = out;  // (OC,N) column-major
  g.ldd = OC;
  g.beta = accumulate ? 1.0f : 0.0f;
  // The bias in the epilogue: D = (A B + beta D) + bias, the CPU's order for both
  // accumulate = false (bias + product) and true ((out + product) + bias). cuBLASLt's bias
  // wants a 16-byte aligned vector; otherwise (or without an algorithm for it) a second pass.
  if (bias && alignment_of(bias) >= 16) {
    g.bias = bias;
    if (lt_matmul(ctx, g, what, true)) return;
    g.bias = nullptr;
  }
  lt_matmul(ctx, g, what, false);
  if (bias) bias_rows(ctx, out, bias, N, OC, true);
}

// dweight += dout^T inp (kOutIn) or inp^T dout (kInOut), operands of element type t.
void dweight_gemm(Context& ctx, float* dweight, const void* dout, const void* inp, cudaDataType_t t, int64_t N, int IC,
                  int OC, WeightLayout layout, const char* what) {
  Gemm g;
  g.ab_type = t;
  g.beta = 1.0f;
  if (layout == WeightLayout::kOutIn) {
    // dW (OC,IC) += dout^T inp  ->  column-major dW^T (IC,OC) = inp^T (IC,N) x dout (N,OC)
    g.m = IC, g.n = OC, g.k = N;
    g.ta = CUBLAS_OP_N, g.A = inp, g.lda = IC;    // inp^T: (IC,N) column-major
    g.tb = CUBLAS_OP_T, g.B = dout, g.ldb = OC;   // dout^T stored (OC,N) column-major, transposed
    g.D = dweight, g.ldd = IC;
  } else {
    // dW (IC,OC) += inp^T dout  ->  column-major dW^T (OC,IC) = dout^T (OC,N) x inp (N,IC)
    g.m = OC, g.n = IC, g.k = N;
    g.ta = CUBLAS_OP_N, g.A = dout, g.lda = OC;   // dout^T: (OC,N) column-major
    g.tb = CUBLAS_OP_T, g.B = inp, g.ldb = IC;    // inp^T stored (IC,N) column-major, transposed
    g.D = dweight, g.ldd = OC;
  }
  lt_matmul(ctx, g, what, false);
}

// dinp (N,IC) = dout (N,OC) x op(W) (overwrite), operands of element type t; OC > 0.
void dinp_gemm(Context& ctx, float* dinp, const void* dout, const void* weight, cudaDataType_t t, int64_t N, int IC,
               int OC, WeightLayout layout, const char* what) {
  Gemm g;
  g.ab_type = t;
  g.beta = 0.0f;
  g.m = IC, g.n = N, g.k = OC;
  // column-major dinp^T (IC,N) = op(W) (IC,OC) x dout^T (OC,N)
  if (layout == WeightLayout::kOutIn) {
    g.ta = CUBLAS_OP_N, g.A = weight, g.lda = IC;  // W (OC,IC) row-major = (IC,OC) column-major
  } else {
    g.ta = CUBLAS_OP_T, g.A = weight, g.lda = OC;  // W (IC,OC) row-major = (OC,IC) column-major
  }
  g.tb = CUBLAS_OP_N, g.B = dout, g.ldb = OC;
  g.D = dinp, g.ldd = IC;
  lt_matmul(ctx, g, what, false);
}

size_t round_up_256(size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace

void matmul_forward(Context& ctx, float* out, const float* inp, const float* weight, const float* bias, int64_t N,
                    int IC, int OC, WeightLayout layout, bool accumulate) {
  if (N <= 0 || OC <= 0) return;
  if (IC <= 0) {  // an empty product: out = (out if accumulating, else 0) + bias
    bias_rows(ctx, out, bias, N, OC, accumulate);
    return;
  }
  forward_gemm(ctx, out, inp, weight, CUDA_R_32F, bias, N, IC, OC, layout, accumulate, "matmul_forward");
}

// dinp (N,IC) = dout (N,OC) x W^T-or-W (overwrite, skipped if null); dweight += ; dbias += .
void matmul_backward(Context& ctx, float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int64_t N, int IC, int OC, WeightLayout layout) {
  if (N <= 0 || IC < 0 || OC < 0) return;  // nothing to add, no rows to write
  if (dweight && IC > 0 && OC > 0)
    dweight_gemm(ctx, dweight, dout, inp, CUDA_R_32F, N, IC, OC, layout, "matmul_backward (dweight)");
  if (dinp && IC > 0) {
    if (OC == 0)
      AJI_CUDA_CHECK(cudaMemsetAsync(dinp, 0, sizeof(float) * (size_t)N * (size_t)IC, ctx.stream));
    else
      dinp_gemm(ctx, dinp, dout, weight, CUDA_R_32F, N, IC, OC, layout, "matmul_backward (dinp)");
  }
  if (dbias && OC > 0) bias_grad(ctx, dbias, dout, N, OC);
}

void round_to_bf16(Context& ctx, uint16_t* dst, const float* src, size_t n) {
  round_bf16(ctx, dst, src, (int64_t)n, "round_to_bf16");
}

// The bf16 products: inp rounded into the workspace, the weight's bf16 copy, fp32 out.
void matmul_forward_bf16(Context& ctx, float* out, const float* inp, const uint16_t* weight_bf16, const float* bias,
                         int64_t N, int IC, int OC, WeightLayout layout, bool accumulate) {
  if (N <= 0 || OC <= 0) return;
  if (IC <= 0) {
    bias_rows(ctx, out, bias, N, OC, accumulate);
    return;
  }
  uint16_t* inp16 = static_cast<uint16_t*>(ctx.workspace(sizeof(uint16_t) * (size_t)N * (size_t)IC));
  round_bf16(ctx, inp16, inp, N * (int64_t)IC, "matmul_forward_bf16 (inp to bf16)");
  forward_gemm(ctx, out, inp16, weight_bf16, CUDA_R_16BF, bias, N, IC, OC, layout, accumulate,
               "matmul_forward_bf16");
}

// dbias from the fp32 dout first (its partial sums use the workspace), then dout and inp
// rounded into one workspace for the two bf16 products.
void matmul_backward_bf16(Context& ctx, float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                          const uint16_t* weight_bf16, int64_t N, int IC, int OC, WeightLayout layout) {
  if (N <= 0 || IC < 0 || OC < 0) return;
  if (dbias && OC > 0) bias_grad(ctx, dbias, dout, N, OC);
  const bool want_dw = dweight && IC > 0 && OC > 0, want_dinp = dinp && IC > 0 && OC > 0;
  if (dinp && IC > 0 && OC == 0)
    AJI_CUDA_CHECK(cudaMemsetAsync(dinp, 0, sizeof(float) * (size_t)N * (size_t)IC, ctx.stream));
  if (!want_dw && !want_dinp) return;
  const size_t dout_bytes = round_up_256(sizeof(uint16_t) * (size_t)N * (size_t)OC);
  const size_t inp_bytes = want_dw ? sizeof(uint16_t) * (size_t)N * (size_t)IC : 0;
  char* ws = static_cast<char*>(ctx.workspace(dout_bytes + inp_bytes));
  uint16_t* dout16 = reinterpret_cast<uint16_t*>(ws);
  round_bf16(ctx, dout16, dout, N * (int64_t)OC, "matmul_backward_bf16 (dout to bf16)");
  if (want_dw) {
    uint16_t* inp16 = reinterpret_cast<uint16_t*>(ws + dout_bytes);
    round_bf16(ctx, inp16, inp, N * (int64_t)IC, "matmul_backward_bf16 (inp to bf16)");
    dweight_gemm(ctx, dweight, dout16, inp16, CUDA_R_16BF, N, IC, OC, layout, "matmul_backward_bf16 (dweight)");
  }
  if (want_dinp)
    dinp_gemm(ctx, dinp, dout16, weight_bf16, CUDA_R_16BF, N, IC, OC, layout, "matmul_backward_bf16 (dinp)");
}

}  // namespace aji::kernels::cuda
