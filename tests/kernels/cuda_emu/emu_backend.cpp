// The emulated CUDA backend of aji_cuda_emu_tests: the REAL CudaBackend of
// src/aji/kernels/cuda/backend_cuda.cpp (compiled into this binary), whose CUDA runtime and
// cuBLASLt calls land in emu_runtime.cpp and cublaslt_emu.cpp, and whose kernels are the real
// .cu files rewritten by gen.py. tests/kernels/backend_parity.h's cuda_backend() returns it when
// AJI_CUDA_EMU is defined, so AJI_CUDA_OR_SKIP gets this backend instead of the plugin.
#include <cstdio>
#include <memory>
#include <string>

#include "aji/kernels/backend.h"

extern "C" aji::kernels::Backend* aji_cuda_backend_create(int device, char* error, size_t error_size);

namespace aji::test {

std::shared_ptr<kernels::Backend> cuda_emu_backend(std::string* reason) {
  std::fprintf(stderr,
               "aji_cuda_emu_tests: the CUDA kernels run on a HOST EMULATOR of the CUDA execution model "
               "(tests/kernels/cuda_emu/README.md), not on a GPU\n");
  char err[512] = {0};
  kernels::Backend* b = aji_cuda_backend_create(0, err, sizeof err);
  if (!b && reason) *reason = std::string("the emulated CUDA backend did not start: ") + err;
  return std::shared_ptr<kernels::Backend>(b);
}

}  // namespace aji::test
