// Progress reporting for long work: counts, rate, ETA. On a terminal it redraws one
// line (at most 10 times a second); when stderr is not a terminal (CI, logs) it prints
// a plain line every `plain_interval_s` seconds so logs stay readable.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace aji {

class Progress {
 public:
  // total <= 0 means unknown (no ETA, no percentage). unit is e.g. "B", "docs", "tok".
  Progress(std::string label, int64_t total, std::string unit, bool enabled = true);
  ~Progress();

  void add(int64_t n);        // thread-safe
  void set(int64_t done);     // thread-safe
  void set_note(std::string note);  // extra text after the numbers, e.g. "loss 3.21"
  void finish();              // prints the final line once

  // Formatting helpers, exposed for tests and for other reporters.
  static std::string format_count(double value, const std::string& unit);  // 1.2M tok, 3.4 MB
  static std::string format_duration(double seconds);                      // 1h02m, 3m05s, 12s
  std::string render_line() const;  // the current status line

  static bool stderr_is_tty();
  double plain_interval_s = 10.0;

 private:
  void maybe_print_locked(bool force);

  std::string label_;
  int64_t total_;
  std::string unit_;
  bool enabled_;
  bool tty_;
  bool finished_ = false;
  int64_t done_ = 0;
  std::string note_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_print_;
  mutable std::mutex mu_;
};

}  // namespace aji
