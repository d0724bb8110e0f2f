#include "aji/base/threads.h"

#include <omp.h>

#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>

namespace aji {

namespace {
int g_threads = 0;  // 0 = not yet decided
int initial_threads() {
  if (const char* env = std::getenv("AJI_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  return hardware_threads();
}
}  // namespace

int hardware_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

void set_num_threads(int n) {
  g_threads = n > 0 ? n : initial_threads();
  omp_set_num_threads(g_threads);
}

int num_threads() {
  if (g_threads == 0) set_num_threads(0);
  return g_threads;
}

void parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
  const int threads = num_threads();
  if (threads <= 1 || n <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  // An exception must not escape an OpenMP region (that aborts): keep the first one
  // and rethrow it on the calling thread.
  std::exception_ptr first_error;
  std::mutex mu;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t i = 0; i < n; ++i) {
    try {
      fn(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (!first_error) first_error = std::current_exception();
    }
  }
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace aji
