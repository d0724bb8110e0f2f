// Ctrl-C for long training loops: while an InterruptGuard lives, the first SIGINT only
// sets a flag (the loop saves a checkpoint and stops cleanly); a second one ends the
// process at once.
#pragma once

#include <csignal>

namespace aji {

inline volatile std::sig_atomic_t g_interrupt_requested = 0;

inline void on_interrupt_signal(int) {
  g_interrupt_requested = 1;
  std::signal(SIGINT, SIG_DFL);
}

inline bool interrupt_requested() { return g_interrupt_requested != 0; }

struct InterruptGuard {
  void (*previous)(int);
  InterruptGuard() {
    g_interrupt_requested = 0;
    previous = std::signal(SIGINT, on_interrupt_signal);
  }
  ~InterruptGuard() { std::signal(SIGINT, previous); }
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;
};

}  // namespace aji
