// The serving engine (serve::Engine, continuous batching) on the `tiny` model
// (configs/tiny.json, random init): `clients` requests submitted at once, each a 32-token
// prompt and 64 new tokens, sampled at temperature 1 with its own seed. Counters:
//   tok/s    aggregate generated tokens per second (prefill included in the time)
//   ttft_ms  mean time from submit to the first token
//   occupancy decode rows per step / max_batch
//   build/bench/serve_engine_bench [--benchmark_filter=clients:16]
// Arguments: clients (= max_batch), threads, batch_invariant (1: each decode row computed as
// it would be alone, products in groups of <= 4 rows; 0: one GEMM over the whole batch).
//
// BM_Divergence measures what batch_invariant = 0 costs in determinism: 16 seeded requests
// run alone, then all together; counter `diverged` = requests whose tokens differ,
// `tokens_differ` = generated positions that differ (after the first divergence the rest
// of a request differs as a matter of course). With batch_invariant = 1 both are 0 by
// construction (tests/serve/engine_test.cpp checks it).
#include <benchmark/benchmark.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <vector>

#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "aji/model/config.h"
#include "aji/model/model.h"
#include "aji/serve/engine.h"

namespace {

constexpr int kPromptLen = 32, kNew = 64;

aji::model::Model& tiny_model() {
  static aji::model::Model m = [] {
    aji::model::Model mm(aji::model::ModelConfig::load(std::string(AJI_SOURCE_DIR) + "/configs/tiny.json"));
    mm.init_weights(1);
    return mm;
  }();
  return m;
}

aji::serve::GenerationRequest request(int V, uint64_t seed, float temperature) {
  aji::Rng rng(seed * 31 + 7);
  aji::serve::GenerationRequest r;
  for (int i = 0; i < kPromptLen; ++i) r.prompt.push_back((int32_t)rng.below((uint64_t)V));
  r.max_tokens = kNew;
  r.sampling.temperature = temperature;
  r.seed = seed;
  return r;
}

// Submits all requests at once and waits for every one; returns their tokens.
struct Batch {
  std::mutex mu;
  std::condition_variable cv;
  int left = 0;
  std::vector<std::vector<int32_t>> tokens;
  std::vector<double> ttft_s;

  void run(aji::serve::Engine& e, const std::vector<aji::serve::GenerationRequest>& reqs) {
    const auto t0 = std::chrono::steady_clock::now();
    left = (int)reqs.size();
    tokens.assign(reqs.size(), {});
    ttft_s.assign(reqs.size(), 0.0);
    for (size_t i = 0; i < reqs.size(); ++i) {
      aji::serve::Callbacks cb;
      cb.on_token = [this, i, t0](const aji::serve::TokenEvent& ev) {
        if (tokens[i].empty())
          ttft_s[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        tokens[i].push_back(ev.token);
        return true;
      };
      cb.on_done = [this](aji::serve::Finish, const std::string&) {
        std::lock_guard<std::mutex> lk(mu);
        if (--left == 0) cv.notify_all();
      };
      if (e.submit(reqs[i], std::move(cb)) < 0) throw std::runtime_error("queue full");
    }
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return left == 0; });
  }
};

void BM_Engine(benchmark::State& st) {
  const int clients = (int)st.range(0);
  aji::set_num_threads((int)st.range(1));
  auto& m = tiny_model();
  aji::serve::EngineOptions o;
  o.max_batch = clients;
  o.max_queue = clients;
  o.batch_invariant = st.range(2) != 0;
  aji::serve::Engine e(m, o);
  int64_t tokens = 0;
  double ttft = 0;
  int64_t n_req = 0;
  uint64_t seed = 0;
  for (auto _ : st) {
    std::vector<aji::serve::GenerationRequest> reqs;
    for (int i = 0; i < clients; ++i) reqs.push_back(request(m.config().vocab_size, seed++, 1.0f));
    Batch b;
    b.run(e, reqs);
    for (size_t i = 0; i < reqs.size(); ++i) {
      tokens += (int64_t)b.tokens[i].size();
      ttft += b.ttft_s[i];
      ++n_req;
    }
  }
  const auto s = e.stats();
  st.counters["tok/s"] = benchmark::Counter((double)tokens, benchmark::Counter::kIsRate);
  st.counters["ttft_ms"] = 1e3 * ttft / (double)std::max<int64_t>(1, n_req);
  st.counters["occupancy"] = s.decode_steps ? (double)s.decode_rows / (double)s.decode_steps / clients : 0.0;
}

void BM_Divergence(benchmark::State& st) {
  aji::set_num_threads(1);
  auto& m = tiny_model();
  const float temperature = st.range(0) == 0 ? 0.0f : 1.0f;
  aji::serve::EngineOptions o;
  o.max_batch = 16;
  o.max_queue = 16;
  o.batch_invariant = st.range(1) != 0;
  aji::serve::Engine e(m, o);
  int64_t diverged = 0, differ = 0, total = 0;
  uint64_t seed = 100;
  for (auto _ : st) {
    std::vector<aji::serve::GenerationRequest> reqs;
    for (int i = 0; i < 16; ++i) reqs.push_back(request(m.config().vocab_size, seed++, temperature));
    std::vector<std::vector<int32_t>> alone;
    for (const auto& r : reqs) {
      Batch b;
      b.run(e, {r});
      alone.push_back(b.tokens[0]);
    }
    Batch all;
    all.run(e, reqs);
    for (size_t i = 0; i < reqs.size(); ++i) {
      diverged += all.tokens[i] != alone[i];
      for (size_t j = 0; j < alone[i].size(); ++j) differ += j >= all.tokens[i].size() || all.tokens[i][j] != alone[i][j];
      total += (int64_t)alone[i].size();
    }
  }
  st.counters["requests"] = (double)(16 * st.iterations());
  st.counters["diverged"] = (double)diverged;
  st.counters["tokens_differ"] = (double)differ;
  st.counters["tokens"] = (double)total;
}

void args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"clients", "threads", "invariant"});
  for (int t : {1, 2})
    for (int inv : {1, 0})
      for (int c : {1, 4, 16}) b->Args({c, t, inv});
  b->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.1);
}

}  // namespace

BENCHMARK(BM_Engine)->Apply(args);
BENCHMARK(BM_Divergence)
    ->ArgNames({"sampled", "invariant"})
    ->Args({0, 0})
    ->Args({1, 0})
    ->Args({1, 1})
    ->Iterations(4)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

BENCHMARK_MAIN();
