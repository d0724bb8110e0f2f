// The CUDA emulator's runtime (README.md): thread blocks run one at a time on the host, every
// CUDA thread a fiber (ucontext) scheduled in a shuffled order; __syncthreads and warp shuffles
// are barriers between fibers; dynamic shared memory is poisoned and guarded; and the CUDA
// runtime calls aji's backend makes (cudaMalloc, cudaMemcpyAsync, ...) work on host memory,
// with guard bands that cudaFree checks. Needs CUDA headers for the types only: it links neither
// libcudart nor cuBLASLt. A test harness: passing under it is not a GPU verification.
#include <cuda_runtime.h>
#include <setjmp.h>
#include <ucontext.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <new>
#include <random>
#include <vector>

#include "prelude.h"

thread_local EmuIdx emu_thread_idx, emu_block_idx;
EmuIdx emu_block_dim, emu_grid_dim;

namespace {
enum class Wait { kNone, kBlock, kWarp, kDone };
struct Fiber {
  ucontext_t uc;
  jmp_buf jb;
  bool started = false;
  Wait wait = Wait::kNone;
  EmuIdx tid;
  char* stack = nullptr;
};
constexpr size_t kStack = 256 * 1024;
std::vector<Fiber> g_fibers;
std::vector<char*> g_stacks;
int g_cur = -1;
jmp_buf g_sched;
ucontext_t g_sched_uc;
const std::function<void()>* g_body = nullptr;
std::vector<float> g_smem;
size_t g_smem_floats = 0;
std::vector<double> g_warp_buf;
std::mt19937 g_order_rng(12345);
long long g_switches = 0;
constexpr size_t kGuard = 1024;
const uint32_t kSentinel = 0x7fc0dead;

void yield_to_sched() {
  ++g_switches;
  if (!_setjmp(g_fibers[g_cur].jb)) _longjmp(g_sched, 1);
}
void trampoline() {
  (*g_body)();
  g_fibers[g_cur].wait = Wait::kDone;
  _longjmp(g_sched, 1);
}
float sentinel() {
  float f;
  std::memcpy(&f, &kSentinel, 4);
  return f;
}
}  // namespace

void emu_syncthreads() {
  g_fibers[g_cur].wait = Wait::kBlock;
  yield_to_sched();
}
void emu_warp_sync() {
  g_fibers[g_cur].wait = Wait::kWarp;
  yield_to_sched();
}
float* emu_smem() { return g_smem.data() + kGuard; }
int emu_lane() { return g_cur % 32; }
double* emu_warp_buf() { return g_warp_buf.data() + (g_cur / 32) * 32; }
void emu_fail(const char* what) {
  std::fprintf(stderr, "cuda emulator: %s\n", what);
  std::abort();
}

namespace {
// Runs fiber t until it waits at a barrier or ends (kept out of emu_launch: no setjmp there).
__attribute__((noinline)) void run_fiber(int t) {
  Fiber& f = g_fibers[t];
  g_cur = t;
  emu_thread_idx = f.tid;
  if (!_setjmp(g_sched)) {
    if (!f.started) {
      f.started = true;
      getcontext(&f.uc);
      f.uc.uc_stack.ss_sp = f.stack;
      f.uc.uc_stack.ss_size = kStack;
      f.uc.uc_link = nullptr;
      makecontext(&f.uc, trampoline, 0);
      swapcontext(&g_sched_uc, &f.uc);
    } else {
      _longjmp(f.jb, 1);
    }
  }
  g_cur = -1;
}
}  // namespace

void emu_launch(dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& body) {
  const int nt = block.x * block.y * block.z;
  if (nt % 32 != 0 || nt > 1024) {
    std::fprintf(stderr, "emu: bad block size %d\n", nt);
    std::abort();
  }
  if (grid.y > 65535 || grid.z > 65535) {
    std::fprintf(stderr, "emu: grid y/z too large\n");
    std::abort();
  }
  if (smem_bytes > 227 * 1024) {
    std::fprintf(stderr, "emu: %zu bytes of dynamic shared memory\n", smem_bytes);
    std::abort();
  }
  while ((int)g_stacks.size() < nt) g_stacks.push_back(static_cast<char*>(std::malloc(kStack)));
  g_body = &body;
  emu_grid_dim = {grid.x, grid.y, grid.z};
  emu_block_dim = {block.x, block.y, block.z};
  g_smem_floats = smem_bytes / 4;
  g_warp_buf.assign(nt, 0.0);
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        emu_block_idx = {bx, by, bz};
        g_smem.assign(g_smem_floats + 2 * kGuard, sentinel());  // poisoned: a read before a write shows
        g_fibers.assign(nt, Fiber());
        for (int t = 0; t < nt; ++t) {
          Fiber& f = g_fibers[t];
          f.tid = {(unsigned)(t % block.x), (unsigned)((t / block.x) % block.y), (unsigned)(t / (block.x * block.y))};
          f.stack = g_stacks[t];
        }
        std::vector<int> order(nt);
        for (int t = 0; t < nt; ++t) order[t] = t;
        for (;;) {
          // run every runnable fiber (in a shuffled order) until it waits or ends
          std::shuffle(order.begin(), order.end(), g_order_rng);
          bool ran = false;
          for (int t : order) {
            Fiber& f = g_fibers[t];
            if (f.wait != Wait::kNone) continue;
            ran = true;
            run_fiber(t);
          }
          if (ran) continue;
          // everyone waits or is done: release complete warps, else the block barrier
          bool released = false;
          for (int w = 0; w < nt / 32; ++w) {
            int waiting = 0;
            for (int l = 0; l < 32; ++l) waiting += g_fibers[w * 32 + l].wait == Wait::kWarp;
            if (waiting == 32) {
              for (int l = 0; l < 32; ++l) g_fibers[w * 32 + l].wait = Wait::kNone;
              released = true;
            } else if (waiting > 0) {
              // partial warp: fine only if the others still have to arrive (they are all waiting
              // somewhere else: a deadlock)
            }
          }
          if (released) continue;
          int at_block = 0, done = 0;
          for (auto& f : g_fibers) at_block += f.wait == Wait::kBlock, done += f.wait == Wait::kDone;
          if (done == nt) break;
          if (at_block + done == nt && done == 0) {
            for (auto& f : g_fibers) f.wait = Wait::kNone;
            continue;
          }
          std::fprintf(stderr, "emu: deadlock or divergent barrier in block (%u,%u,%u): %d at block barrier, %d done\n",
                       bx, by, bz, at_block, done);
          for (int t = 0; t < nt; ++t)
            if (g_fibers[t].wait == Wait::kWarp) std::fprintf(stderr, "  thread %d waits at a warp sync\n", t);
          std::abort();
        }
        for (size_t i = 0; i < kGuard; ++i) {
          uint32_t a, b;
          std::memcpy(&a, &g_smem[i], 4);
          std::memcpy(&b, &g_smem[kGuard + g_smem_floats + i], 4);
          if (a != kSentinel || b != kSentinel) {
            std::fprintf(stderr, "emu: shared memory written out of bounds\n");
            std::abort();
          }
        }
      }
}


// ---- the CUDA runtime calls of backend_cuda.cpp and the launchers, on host memory -------------
namespace {
constexpr size_t kHeader = 256, kPad = 4096;
void check_guards(const char* base, size_t bytes) {
  const char* user = base + kHeader + kPad;
  for (size_t i = 0; i < kPad; i += 4) {
    uint32_t a, b;
    std::memcpy(&a, base + kHeader + i, 4);
    std::memcpy(&b, user + bytes + i, 4);
    if (a != kSentinel || b != kSentinel) {
      std::fprintf(stderr, "cuda emulator: a device buffer of %zu bytes was written out of bounds\n", bytes);
      std::abort();
    }
  }
}
}  // namespace

extern "C" {
const char* cudaGetErrorName(cudaError_t e) { return e == cudaSuccess ? "cudaSuccess" : "cudaErrorEmulated"; }
const char* cudaGetErrorString(cudaError_t) { return "an error of the CUDA emulator"; }
cudaError_t cudaGetLastError(void) { return cudaSuccess; }  // a bad launch aborts in emu_launch
cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::memset(p, 0, sizeof(*p));
  std::snprintf(p->name, sizeof(p->name), "CUDA EMULATOR (host, not a GPU)");
  p->totalGlobalMem = size_t(80) << 30;
  p->multiProcessorCount = 132;
  p->major = 9;
  p->minor = 0;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  *v = 0;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 0;
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int) {
  static int stream_token;
  *s = reinterpret_cast<cudaStream_t>(&stream_token);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }  // every op ran when queued
cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b) {
  *free_b = *total_b = size_t(80) << 30;
  return cudaSuccess;
}
// [header: size][guard kPad][bytes, NaN: never written memory shows][guard kPad], 256-aligned
cudaError_t cudaMalloc(void** p, size_t bytes) {
  char* base = static_cast<char*>(::operator new(kHeader + 2 * kPad + bytes, std::align_val_t(256)));
  std::memcpy(base, &bytes, sizeof(bytes));
  char* user = base + kHeader + kPad;
  for (size_t i = 0; i < kPad; i += 4) {
    std::memcpy(base + kHeader + i, &kSentinel, 4);
    std::memcpy(user + bytes + i, &kSentinel, 4);
  }
  const float qn = std::numeric_limits<float>::quiet_NaN();
  for (size_t i = 0; i + 4 <= bytes; i += 4) std::memcpy(user + i, &qn, 4);
  *p = user;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  char* base = static_cast<char*>(p) - kPad - kHeader;
  size_t bytes;
  std::memcpy(&bytes, base, sizeof(bytes));
  check_guards(base, bytes);
  ::operator delete(base, std::align_val_t(256));
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind, cudaStream_t) {
  if (n) std::memmove(dst, src, n);
  return cudaSuccess;
}
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind, cudaStream_t) {
  for (size_t r = 0; r < height; ++r)
    std::memmove(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch, width);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) {
  if (n) std::memset(p, v, n);
  return cudaSuccess;
}
}  // extern "C"

long long emu_fiber_switches() { return g_switches; }

namespace {
struct EmuSeed {
  EmuSeed() {
    if (const char* s = std::getenv("AJI_CUDA_EMU_SEED")) g_order_rng.seed(std::atoi(s));  // another thread order
  }
} g_seed;
}  // namespace
