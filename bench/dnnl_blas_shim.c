/* A BLAS sgemm_ that forwards to oneDNN's dnnl_sgemm, for LD_PRELOAD into Debian's
 * python3-torch, which links the reference (netlib) BLAS on this machine. With it the
 * PyTorch peer of bench/train_step_vs_torch.py multiplies matrices exactly as fast as aji
 * does, so the comparison measures everything except the GEMM library.
 * Build: cc -O2 -shared -fPIC bench/dnnl_blas_shim.c -ldnnl -o libdnnlblas.so */
#include <oneapi/dnnl/dnnl.h>

static char up(char t) {
  if (t == 'n' || t == 'N') return 'N';
  return 'T'; /* 't', 'T', 'c', 'C': real matrices, conjugate = transpose */
}

/* Fortran column-major C(m,n) = alpha op(A) op(B) + beta C is, read row-major,
 * C^T(n,m) = alpha op(B)^T op(A)^T + beta C^T. */
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc) {
  dnnl_sgemm(up(*transb), up(*transa), *n, *m, *k, *alpha, b, *ldb, a, *lda, *beta, c, *ldc);
}
