// When a kernel's loop is worth an OpenMP team: below this many elements of work a team
// costs more than it saves (a wake-up of the other threads is microseconds; on a busy
// machine much more). One threshold for every kernel in this folder.
#pragma once

#include <algorithm>
#include <cstdint>

namespace aji::kernels::cpu {

inline bool parallel_worth(int64_t work) { return work >= 32768; }

// The register-tiled decode products' loop (small_gemm.cpp, lowbit.cpp): run(nr, no, r0, o0)
// for every tile of kR rows x kO outputs covering N rows x OC outputs (nr, no: the tile's
// size, smaller at the edges), the threads over blocks of kO outputs when `work` is worth a
// team. Static: each thread one contiguous run of blocks, a stream of its own through the
// weight (dynamic chunks of 8 blocks interleaved the threads' streams: fp32 batch-16 decode
// 9 % slower).
template <int kR, int kO, class Run>
void for_tiles(int64_t N, int64_t OC, int64_t work, Run&& run) {
  const int64_t blocks = (OC + kO - 1) / kO;
#pragma omp parallel for if (parallel_worth(work)) schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t o0 = b * kO;
    const int no = static_cast<int>(std::min<int64_t>(kO, OC - o0));
    for (int64_t r0 = 0; r0 < N; r0 += kR) run(static_cast<int>(std::min<int64_t>(kR, N - r0)), no, r0, o0);
  }
}

}  // namespace aji::kernels::cpu
