// Thread policy: one process-wide setting (from --threads, else AJI_THREADS, else all
// cores), applied to OpenMP. Code parallelises with OpenMP pragmas or parallel_for.
#pragma once

#include <cstdint>
#include <functional>

namespace aji {

int hardware_threads();
// n <= 0 means "all cores". Also sets OpenMP's thread count.
void set_num_threads(int n);
int num_threads();

// Runs fn(i) for i in [0, n) over the configured threads with dynamic scheduling.
void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

}  // namespace aji
