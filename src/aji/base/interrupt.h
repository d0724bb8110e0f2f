// Ctrl-C and SIGTERM for long training loops: while an InterruptGuard lives, the first
// SIGINT or SIGTERM (what `timeout`, `kill` and Slurm preemption send) only sets a flag
// (the loop saves a checkpoint and stops cleanly); a second one ends the process at once.
#pragma once

#include <csignal>

namespace aji {

inline volatile std::sig_atomic_t g_interrupt_requested = 0;

inline void on_interrupt_signal(int sig) {
  g_interrupt_requested = sig;
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
}

inline bool interrupt_requested() { return g_interrupt_requested != 0; }
// The signal that asked to stop (SIGINT or SIGTERM), 0 if none.
inline int interrupt_signal() { return static_cast<int>(g_interrupt_requested); }

struct InterruptGuard {
  void (*previous_int)(int);
  void (*previous_term)(int);
  InterruptGuard() {
    g_interrupt_requested = 0;
    previous_int = std::signal(SIGINT, on_interrupt_signal);
    previous_term = std::signal(SIGTERM, on_interrupt_signal);
  }
  ~InterruptGuard() {
    std::signal(SIGINT, previous_int);
    std::signal(SIGTERM, previous_term);
  }
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;
};

}  // namespace aji
