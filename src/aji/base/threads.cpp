#include "aji/base/threads.h"

#include <omp.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>

#include "aji/base/error.h"

namespace aji {

namespace {
int g_threads = 0;  // 0 = not yet decided
int initial_threads() {
  if (const char* env = std::getenv("AJI_THREADS")) {
    if (*env != '\0') {
      const int n = parse_thread_count(env, "AJI_THREADS");
      if (n > 0) return n;
    }
  }
  return hardware_threads();
}
}  // namespace

int hardware_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

int max_threads() { return hardware_threads(); }

int parse_thread_count(const std::string& text, const std::string& source) {
  const char* s = text.c_str();
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s, &end, 10);
  const bool digits = !text.empty() && end != s && *end == '\0';
  if (!digits || errno == ERANGE || v < 0 || v > 1000000000LL)
    throw Error(source + " must be a whole number of threads >= 0 (0 = all " + std::to_string(hardware_threads()) +
                " cores), not \"" + text + "\"")
        .fix(source == "AJI_THREADS" ? "unset AJI_THREADS or set it to e.g. " + std::to_string(hardware_threads())
                                     : "pass e.g. " + source + " " + std::to_string(hardware_threads()));
  return static_cast<int>(v);
}

int set_num_threads(int n) {
  int want = n > 0 ? n : initial_threads();
  if (want > max_threads()) {
    std::fprintf(stderr, "note: %d threads asked, this machine has %d: using %d\n", want, max_threads(),
                 max_threads());
    want = max_threads();
  }
  g_threads = want;
  omp_set_num_threads(g_threads);
  return g_threads;
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
