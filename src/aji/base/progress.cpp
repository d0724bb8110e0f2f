#include "aji/base/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace aji {

using Clock = std::chrono::steady_clock;

Progress::Progress(std::string label, int64_t total, std::string unit, bool enabled)
    : label_(std::move(label)),
      total_(total),
      unit_(std::move(unit)),
      enabled_(enabled),
      tty_(stderr_is_tty()),
      start_(Clock::now()),
      last_print_(Clock::now()) {}

Progress::~Progress() {
  if (!finished_) finish();
}

bool Progress::stderr_is_tty() { return ::isatty(2) == 1; }

void Progress::add(int64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  done_ += n;
  maybe_print_locked(false);
}

void Progress::set(int64_t done) {
  std::lock_guard<std::mutex> lock(mu_);
  done_ = done;
  maybe_print_locked(false);
}

void Progress::set_note(std::string note) {
  std::lock_guard<std::mutex> lock(mu_);
  note_ = std::move(note);
}

void Progress::finish() {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  finished_ = true;
  if (!enabled_) return;
  maybe_print_locked(true);
  if (tty_) std::fputc('\n', stderr);
  std::fflush(stderr);
}

std::string Progress::format_count(double value, const std::string& unit) {
  const char* suffix[] = {"", "k", "M", "G", "T"};
  int i = 0;
  double v = value;
  while (std::fabs(v) >= 1000.0 && i < 4) {
    v /= 1000.0;
    ++i;
  }
  char buf[64];
  if (i == 0)
    std::snprintf(buf, sizeof buf, "%.0f", v);
  else
    std::snprintf(buf, sizeof buf, "%.*f%s", v < 10 ? 2 : (v < 100 ? 1 : 0), v, suffix[i]);
  std::string out = buf;
  if (!unit.empty()) out += (unit == "B" && i > 0) ? "B" : " " + unit;
  return out;
}

std::string Progress::format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  long s = std::lround(seconds);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s / 60) % 60);
  else if (s >= 60)
    std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%lds", s);
  return buf;
}

std::string Progress::render_line() const {
  double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
  double rate = elapsed > 0 ? done_ / elapsed : 0.0;
  std::string line = label_ + ": " + format_count(static_cast<double>(done_), unit_);
  if (total_ > 0) {
    char pct[32];
    std::snprintf(pct, sizeof pct, " / %s (%.1f%%)", format_count(static_cast<double>(total_), "").c_str(),
                  100.0 * static_cast<double>(done_) / static_cast<double>(total_));
    line += pct;
  }
  line += "  " + format_count(rate, unit_) + "/s";
  line += "  elapsed " + format_duration(elapsed);
  if (total_ > 0 && rate > 0 && done_ < total_) line += "  ETA " + format_duration((total_ - done_) / rate);
  if (!note_.empty()) line += "  " + note_;
  return line;
}

void Progress::maybe_print_locked(bool force) {
  if (!enabled_) return;
  auto now = Clock::now();
  double since = std::chrono::duration<double>(now - last_print_).count();
  double interval = tty_ ? 0.1 : plain_interval_s;
  if (!force && since < interval) return;
  last_print_ = now;
  std::string line = render_line();
  if (tty_)
    std::fprintf(stderr, "\r\033[K%s", line.c_str());
  else
    std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

}  // namespace aji
