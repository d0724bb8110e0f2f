// Error checks of the CUDA backend: every CUDA, cuBLASLt and launch result goes through one
// of these, so a failure is an aji::Error naming the call, the source file and line, and for
// an asynchronous fault the op that was running (kernels/cuda/launch.h ops_done).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <string>

#include "aji/base/error.h"

namespace aji::kernels::cuda {

[[noreturn]] inline void throw_cuda(cudaError_t e, const char* what, const char* file, int line) {
  throw Error(std::string("CUDA error ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ") in " + what +
              " at " + file + ":" + std::to_string(line))
      .fix("set AJI_CUDA_SYNC=1 to stop at the op that raised it; the last checkpoint on disk is intact");
}
[[noreturn]] inline void throw_cublas(cublasStatus_t s, const char* what, const char* file, int line) {
  throw Error(std::string("cuBLAS error ") + cublasLtGetStatusName(s) + " (" + cublasLtGetStatusString(s) + ") in " +
              what + " at " + file + ":" + std::to_string(line));
}

}  // namespace aji::kernels::cuda

#define AJI_CUDA_CHECK(expr)                                                          \
  do {                                                                                \
    cudaError_t aji_cuda_err_ = (expr);                                               \
    if (aji_cuda_err_ != cudaSuccess)                                                 \
      ::aji::kernels::cuda::throw_cuda(aji_cuda_err_, #expr, __FILE__, __LINE__);     \
  } while (0)

#define AJI_CUBLAS_CHECK(expr)                                                        \
  do {                                                                                \
    cublasStatus_t aji_cublas_st_ = (expr);                                           \
    if (aji_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                      \
      ::aji::kernels::cuda::throw_cublas(aji_cublas_st_, #expr, __FILE__, __LINE__);  \
  } while (0)
