// Prometheus text metrics for `aji serve` (GET /metrics): requests by route and status,
// tokens in and out, queue length and batch occupancy (from the engine's stats), and
// histograms of time to first token and per-token latency. Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "aji/serve/engine.h"

namespace aji::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double v);
  // Appends `name_bucket{le=...}`, `name_sum`, `name_count` lines (cumulative buckets).
  void render(const std::string& name, std::string& out) const;
  uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative); last = +Inf
  double sum_ = 0.0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();
  void request_done(const std::string& route, int status);
  void tokens(uint64_t prompt, uint64_t completion);
  void time_to_first_token(double seconds);
  void inter_token_latency(double seconds);
  // A request the server cancelled before it finished: "client_disconnected" (the client
  // closed its connection), "timeout" (--timeout).
  void cancelled(const std::string& reason);
  uint64_t cancelled_count(const std::string& reason) const;
  // The whole exposition (text/plain; version=0.0.4), with the engine's gauges.
  std::string render(const EngineStats& engine) const;
  uint64_t requests(const std::string& route, int status) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  std::map<std::string, uint64_t> cancelled_;
  uint64_t prompt_tokens_ = 0;
  uint64_t completion_tokens_ = 0;
  Histogram ttft_;
  Histogram itl_;
};

}  // namespace aji::serve
