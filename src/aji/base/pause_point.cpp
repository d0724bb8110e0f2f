#include "aji/base/pause_point.h"

#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace aji {

namespace {

struct PauseSpec {
  std::string point;  // empty: no pause point set
  long n = 0;
  std::atomic<long> seen{0};

  PauseSpec() {
    const char* env = std::getenv("AJI_TEST_PAUSE_AT");
    if (!env) return;
    const char* colon = std::strrchr(env, ':');
    if (!colon || colon == env) return;
    char* end = nullptr;
    long k = std::strtol(colon + 1, &end, 10);
    if (*end != '\0' || k < 1) return;
    point.assign(env, static_cast<size_t>(colon - env));
    n = k;
  }
};

PauseSpec& spec() {
  static PauseSpec s;
  return s;
}

}  // namespace

void pause_point(const char* point) {
  PauseSpec& s = spec();
  if (s.point.empty() || s.point != point) return;
  if (s.seen.fetch_add(1) + 1 != s.n) return;
  std::fprintf(stderr, "aji: paused at %s:%ld (AJI_TEST_PAUSE_AT)\n", point, s.n);
  std::fflush(stderr);
  ::raise(SIGSTOP);
}

}  // namespace aji
