// Thread policy: one process-wide setting (from --threads, else AJI_THREADS, else all
// cores), applied to OpenMP. Code parallelises with OpenMP pragmas or parallel_for.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace aji {

int hardware_threads();
// The most threads aji runs: the machine's hardware threads. More only oversubscribe the
// cores, and OpenMP runtimes crash on absurd counts (e.g. 100000).
int max_threads();
// A thread count the user typed (`--threads`, AJI_THREADS): a whole number >= 0, 0 = all
// cores. Anything else (negative, not a number, trailing text) is an aji::Error naming
// `source` and the fix. The value is returned as given (set_num_threads caps it).
int parse_thread_count(const std::string& text, const std::string& source);
// n <= 0 means "all cores" (or AJI_THREADS; an invalid AJI_THREADS is an aji::Error).
// n > max_threads() is capped to it, with a note on stderr. Also sets OpenMP's thread
// count. Returns the count now in use.
int set_num_threads(int n);
int num_threads();

// Runs fn(i) for i in [0, n) over the configured threads with dynamic scheduling.
void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

}  // namespace aji
