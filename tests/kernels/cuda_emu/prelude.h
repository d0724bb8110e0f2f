// Included first by every kernel source that gen.py rewrites for the CUDA emulator (README.md):
// the real CUDA headers for the types (dim3, cudaStream_t, ...), the device qualifiers made
// plain C++, and threadIdx/blockIdx/__syncthreads/warp shuffles/intrinsics on the emulator's
// fibers (emu_runtime.cpp). Host emulation, not CUDA: a test harness only.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>

#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __host__
#define __host__
#undef __forceinline__
#define __forceinline__ inline
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __shared__
#define __shared__ static  // one block runs at a time: a static is the block's shared array

using std::max;
using std::min;

struct EmuIdx {
  unsigned x = 0, y = 0, z = 0;
};
extern thread_local EmuIdx emu_thread_idx, emu_block_idx;
extern EmuIdx emu_block_dim, emu_grid_dim;
#define threadIdx emu_thread_idx
#define blockIdx emu_block_idx
#define blockDim emu_block_dim
#define gridDim emu_grid_dim

void emu_syncthreads();
void emu_warp_sync();
float* emu_smem();
double* emu_warp_buf();  // this warp's 32 exchange slots
int emu_lane();
[[noreturn]] void emu_fail(const char* what);

inline void __syncthreads() { emu_syncthreads(); }

// A shuffle is a warp-wide exchange: every lane writes, the warp meets, every lane reads, the warp
// meets again. A lane that does not arrive (divergence) is a deadlock the emulator reports.
template <class T>
inline T emu_shuffle(unsigned mask, T v, int src_lane) {
  if (mask != 0xffffffffu) emu_fail("a warp shuffle with a partial mask");
  double* b = emu_warp_buf();
  b[emu_lane()] = static_cast<double>(v);  // exact for float, double and int32
  emu_warp_sync();
  const T r = static_cast<T>(b[src_lane & 31]);
  emu_warp_sync();
  return r;
}
template <class T>
inline T __shfl_sync(unsigned mask, T v, int src_lane) {
  return emu_shuffle(mask, v, src_lane);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
  return emu_shuffle(mask, v, emu_lane() ^ lane_mask);
}

// Round-to-nearest intrinsics: what IEEE single precision does on the host (with
// -ffp-contract=off, so that a * b + c stays two roundings where the kernel wrote two).
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }

// Bit casts (reinterpretation, no conversion), as the CUDA intrinsics.
inline unsigned int __float_as_uint(float f) {
  unsigned int u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(unsigned int u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

void emu_launch(dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& body);
