// A stand-in cuBLASLt for the CUDA emulator (README.md): the calls matmul.cu makes, checked
// the way the real library checks them (descriptor attributes and sizes, layouts against each
// other, workspace size, pointer alignment against the chosen algorithm, C == D), and the
// product computed in column-major order with an fma per term (CUBLAS_COMPUTE_32F_FAST_TF32: of
// the operands rounded to TF32; CUDA_R_16BF operands: of their values widened to fp32). It is
// not cuBLASLt: its
// heuristics, algorithms and rounding order are not the real library's.
// AJI_CUDA_EMU_BIAS_MODE=1 makes it offer no algorithm for the bias epilogue, =2 refuse it
// (NOT_SUPPORTED), to exercise matmul.cu's fallback.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

// ---- a reference cuBLASLt ------------------------------------------------------------------
namespace {
int g_fake_bias_mode = 0;  // 0: bias epilogue works; 1: no algorithm (count 0); 2: NOT_SUPPORTED
struct FakeDesc {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  int32_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
  uint32_t epi = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
};
struct FakeLayout {
  cudaDataType type;
  uint64_t rows, cols;
  int64_t ld;
};
struct FakePref {
  uint64_t ws = 0;
  uint32_t al[4] = {256, 256, 256, 256};
};
FakeDesc* D_(cublasLtMatmulDesc_t d) { return reinterpret_cast<FakeDesc*>(d); }
FakeLayout* L_(cublasLtMatrixLayout_t d) { return reinterpret_cast<FakeLayout*>(d); }
FakePref* P_(cublasLtMatmulPreference_t d) { return reinterpret_cast<FakePref*>(d); }
// CUBLAS_COMPUTE_32F_FAST_TF32: the operands rounded to TF32 (10 explicit mantissa bits, to
// nearest, ties away from zero as cvt.rna.tf32.f32 does), products accumulated in fp32.
float to_tf32(float x) {
  if (!std::isfinite(x)) return x;
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u = (u + 0x1000u) & 0xffffe000u;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}
uint32_t align_of(const void* p) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al) al >>= 1;
  return al;
}
bool valid(const FakeDesc* d, const FakeLayout* a, const FakeLayout* b, const FakeLayout* c, const FakeLayout* dd,
           uint64_t* m, uint64_t* n, uint64_t* k) {
  if ((d->compute != CUBLAS_COMPUTE_32F && d->compute != CUBLAS_COMPUTE_32F_FAST_TF32) || d->scale != CUDA_R_32F)
    return false;
  // A and B both fp32, or both bf16 (CUDA_R_16BF; not with the TF32 compute type); C, D fp32
  if (a->type != b->type || (a->type != CUDA_R_32F && a->type != CUDA_R_16BF)) return false;
  if (a->type == CUDA_R_16BF && d->compute != CUBLAS_COMPUTE_32F) return false;
  for (auto* l : {c, dd})
    if (l->type != CUDA_R_32F) return false;
  for (auto* l : {a, b, c, dd})
    if (l->ld < (int64_t)std::max<uint64_t>(1, l->rows)) return false;
  *m = dd->rows, *n = dd->cols;
  *k = d->ta == CUBLAS_OP_N ? a->cols : a->rows;
  const uint64_t am = d->ta == CUBLAS_OP_N ? a->rows : a->cols;
  const uint64_t bk = d->tb == CUBLAS_OP_N ? b->rows : b->cols, bn = d->tb == CUBLAS_OP_N ? b->cols : b->rows;
  if (am != *m || bk != *k || bn != *n) return false;
  if (c->rows != dd->rows || c->cols != dd->cols || c->ld != dd->ld) return false;
  return true;
}
}  // namespace

extern "C" {
cublasStatus_t cublasLtCreate(cublasLtHandle_t* h) {
  static int handle_token;
  *h = reinterpret_cast<cublasLtHandle_t>(&handle_token);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t) { return CUBLAS_STATUS_SUCCESS; }
const char* cublasLtGetStatusName(cublasStatus_t) { return "CUBLAS_STATUS_EMU"; }
const char* cublasLtGetStatusString(cublasStatus_t) { return "emulated failure"; }
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* d, cublasComputeType_t c, cudaDataType_t s) {
  auto* f = new FakeDesc;
  f->compute = c;
  f->scale = s;
  *d = reinterpret_cast<cublasLtMatmulDesc_t>(f);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
  delete D_(d);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t size) {
  FakeDesc* f = D_(d);
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
      if (size != 4) return CUBLAS_STATUS_INVALID_VALUE;
      std::memcpy(&f->ta, buf, 4);
      return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_TRANSB:
      if (size != 4) return CUBLAS_STATUS_INVALID_VALUE;
      std::memcpy(&f->tb, buf, 4);
      return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
      if (size != 4) return CUBLAS_STATUS_INVALID_VALUE;
      std::memcpy(&f->epi, buf, 4);
      return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
      if (size != sizeof(void*)) return CUBLAS_STATUS_INVALID_VALUE;
      std::memcpy(&f->bias, buf, sizeof(void*));
      return CUBLAS_STATUS_SUCCESS;
    default:
      return CUBLAS_STATUS_NOT_SUPPORTED;
  }
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* l, cudaDataType type, uint64_t rows, uint64_t cols,
                                          int64_t ld) {
  *l = reinterpret_cast<cublasLtMatrixLayout_t>(new FakeLayout{type, rows, cols, ld});
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
  delete L_(l);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* p) {
  *p = reinterpret_cast<cublasLtMatmulPreference_t>(new FakePref);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
  delete P_(p);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
                                                    size_t size) {
  FakePref* f = P_(p);
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
      if (size != 8) return CUBLAS_STATUS_INVALID_VALUE;
      std::memcpy(&f->ws, buf, 8);
      return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
      if (size != 4) return CUBLAS_STATUS_INVALID_VALUE;
      std::memcpy(&f->al[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES], buf, 4);
      return CUBLAS_STATUS_SUCCESS;
    default:
      return CUBLAS_STATUS_NOT_SUPPORTED;
  }
}
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
                                              cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c,
                                              cublasLtMatrixLayout_t d, cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t* results, int* count) {
  uint64_t m, n, k;
  if (requested < 1 || !valid(D_(desc), L_(a), L_(b), L_(c), L_(d), &m, &n, &k)) return CUBLAS_STATUS_INVALID_VALUE;
  if (P_(pref)->ws < 4 * 1024 * 1024) return CUBLAS_STATUS_INVALID_VALUE;  // we always offer 32 MiB
  *count = 0;
  if (D_(desc)->epi == CUBLASLT_EPILOGUE_BIAS) {
    if (g_fake_bias_mode == 1 || align_of(D_(desc)->bias) < 16) return CUBLAS_STATUS_SUCCESS;
    if (g_fake_bias_mode == 2) return CUBLAS_STATUS_NOT_SUPPORTED;
  } else if (D_(desc)->epi != CUBLASLT_EPILOGUE_DEFAULT) {
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  std::memset(&results[0], 0, sizeof(results[0]));
  for (int i = 0; i < 4; ++i) results[0].algo.data[i] = P_(pref)->al[i];
  results[0].algo.data[4] = 0xa11a;
  results[0].state = CUBLAS_STATUS_SUCCESS;
  *count = 1;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t desc, const void* alpha_p, const void* A,
                              cublasLtMatrixLayout_t al, const void* B, cublasLtMatrixLayout_t bl, const void* beta_p,
                              const void* C, cublasLtMatrixLayout_t cl, void* D, cublasLtMatrixLayout_t dl,
                              const cublasLtMatmulAlgo_t* algo, void* ws, size_t ws_size, cudaStream_t) {
  uint64_t m, n, k;
  const FakeDesc* d = D_(desc);
  if (!valid(d, L_(al), L_(bl), L_(cl), L_(dl), &m, &n, &k)) return CUBLAS_STATUS_INVALID_VALUE;
  if (!algo || algo->data[4] != 0xa11a || !ws || ws_size < 4 * 1024 * 1024) return CUBLAS_STATUS_INVALID_VALUE;
  const void* ptrs[4] = {A, B, C, D};
  for (int i = 0; i < 4; ++i)
    if (align_of(ptrs[i]) < algo->data[i]) return CUBLAS_STATUS_NOT_SUPPORTED;  // misaligned for the algorithm
  if (C != D) return CUBLAS_STATUS_NOT_SUPPORTED;  // aji always runs in place
  const float alpha = *static_cast<const float*>(alpha_p), beta = *static_cast<const float*>(beta_p);
  // element i of A or B as fp32 (a bf16 element widened: its 16 bits are fp32's high half)
  const bool bf16 = L_(al)->type == CUDA_R_16BF;
  auto elem = [bf16](const void* base, uint64_t i) -> float {
    if (!bf16) return static_cast<const float*>(base)[i];
    const uint32_t bits = static_cast<uint32_t>(static_cast<const uint16_t*>(base)[i]) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  };
  const float* cc = static_cast<const float*>(C);
  float* dd = static_cast<float*>(D);
  const int64_t lda = L_(al)->ld, ldb = L_(bl)->ld, ldc = L_(cl)->ld, ldd = L_(dl)->ld;
  const bool bias = d->epi == CUBLASLT_EPILOGUE_BIAS;
  const float* bv = static_cast<const float*>(d->bias);
  const bool tf32 = d->compute == CUBLAS_COMPUTE_32F_FAST_TF32;
  for (uint64_t j = 0; j < n; ++j)
    for (uint64_t i = 0; i < m; ++i) {
      float acc = 0.0f;
      for (uint64_t p = 0; p < k; ++p) {
        const float x = elem(A, d->ta == CUBLAS_OP_N ? i + p * lda : p + i * lda);
        const float y = elem(B, d->tb == CUBLAS_OP_N ? p + j * ldb : j + p * ldb);
        acc = tf32 ? std::fma(to_tf32(x), to_tf32(y), acc) : std::fma(x, y, acc);
      }
      float r = alpha * acc;
      if (beta != 0.0f) r += beta * cc[i + j * ldc];
      if (bias) r += bv[i];
      dd[i + j * ldd] = r;
    }
  return CUBLAS_STATUS_SUCCESS;
}
}

namespace {
struct EmuBiasMode {
  EmuBiasMode() {
    if (const char* m = std::getenv("AJI_CUDA_EMU_BIAS_MODE")) g_fake_bias_mode = std::atoi(m);
  }
} g_bias_mode;
}  // namespace
