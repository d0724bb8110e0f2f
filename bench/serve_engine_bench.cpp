// The serving engine (serve::Engine, continuous batching) on the `tiny` model
// (configs/tiny.json, random init): `clients` requests submitted at once, each a 32-token
// prompt and 64 new tokens, sampled at temperature 1 with its own seed. Counters:
//   tok/s    aggregate generated tokens per second (prefill included in the time)
//   tok/cpu_s the same per second of the process's CPU time (all threads)
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
#include <cmath>
#include <ctime>
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
  const std::clock_t cpu0 = std::clock();  // the process's CPU time: steadier than wall time on a shared machine
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
  const double cpu_s = (double)(std::clock() - cpu0) / CLOCKS_PER_SEC;
  const auto s = e.stats();
  st.counters["tok/cpu_s"] = cpu_s > 0 ? (double)tokens / cpu_s : 0.0;
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

// One decode step (Model::forward_decode) of `rows` sequences at 64 positions each:
// mode 0 = batch_invariant false (one GEMM over all rows above kFewRows rows), 1 = true
// (ops::matmul_forward_rows: the small-row kernels of kernels/cpu/small_gemm.h at any row
// count, each row computed as alone). Counter rows/s.
// (16 rows, 1 thread: 17-18 ms GEMM and 20-29 ms invariant with the earlier groups of 4
// through a one-row kernel; 11.6-14 ms with the small-row kernels, measured 2026-12-06 against
// the old binary in turn. One row: the same within noise.)
void BM_DecodeStep(benchmark::State& st) {
  const int rows = (int)st.range(0), mode = (int)st.range(1);
  aji::set_num_threads((int)st.range(2));
  auto& m = tiny_model();
  std::vector<aji::model::KVCache> caches;
  std::vector<aji::model::KVCache*> ptrs;
  for (int i = 0; i < rows; ++i) caches.push_back(m.make_cache(1));
  for (auto& c : caches) ptrs.push_back(&c);
  std::vector<int32_t> toks(rows, 7);
  std::vector<float> logits((size_t)rows * m.config().vocab_size);
  int64_t done = 0;
  for (auto _ : st) {
    for (auto& c : caches) c.length = 64;
    m.forward_decode(toks.data(), rows, ptrs.data(), logits.data(), mode == 1);
    done += rows;
  }
  st.counters["rows/s"] = benchmark::Counter((double)done, benchmark::Counter::kIsRate);
}

// How far the GEMM path (batch_invariant = 0) moves a row: `rows` sequences of different
// lengths decode one step together and each again alone; counters: rows_differ (rows not
// bit-identical to alone), max_abs_diff (largest logit difference), argmax_differ.
void BM_GemmRowDiff(benchmark::State& st) {
  aji::set_num_threads(1);
  auto& m = tiny_model();
  const int n = (int)st.range(0), V = m.config().vocab_size;
  int rows_differ = 0, argmax_differ = 0;
  double max_diff = 0;
  for (auto _ : st) {
    std::vector<aji::model::KVCache> a, b;
    std::vector<aji::model::KVCache*> pa;
    std::vector<float> lg((size_t)n * V), one((size_t)V);
    std::vector<int32_t> toks((size_t)n);
    for (int i = 0; i < n; ++i) {
      std::vector<int32_t> p;
      for (int j = 0; j < 5 + 3 * i; ++j) p.push_back((j * 97 + i * 31) % V);
      a.push_back(m.make_cache(1, 128));
      m.forward_infer(p.data(), 1, (int)p.size(), a.back(), one.data());
      b.push_back(a.back());
      toks[(size_t)i] = (i * 13 + 5) % V;
    }
    for (auto& c : a) pa.push_back(&c);
    m.forward_decode(toks.data(), n, pa.data(), lg.data(), false);
    for (int i = 0; i < n; ++i) {
      aji::model::KVCache* pb[1] = {&b[(size_t)i]};
      m.forward_decode(&toks[(size_t)i], 1, pb, one.data(), false);
      const float* row = lg.data() + (size_t)i * V;
      int am1 = 0, am2 = 0;
      bool same = true;
      for (int v = 0; v < V; ++v) {
        same = same && row[v] == one[(size_t)v];
        max_diff = std::max(max_diff, (double)std::fabs(row[v] - one[(size_t)v]));
        if (one[(size_t)v] > one[(size_t)am1]) am1 = v;
        if (row[v] > row[am2]) am2 = v;
      }
      rows_differ += !same;
      argmax_differ += am1 != am2;
    }
  }
  st.counters["rows_differ"] = rows_differ;
  st.counters["max_abs_diff"] = max_diff;
  st.counters["argmax_differ"] = argmax_differ;
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
BENCHMARK(BM_DecodeStep)
    ->ArgNames({"rows", "mode", "threads"})
    ->ArgsProduct({{1, 4, 16, 32}, {0, 1}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(0.2);
BENCHMARK(BM_GemmRowDiff)->ArgName("rows")->Arg(5)->Arg(16)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Divergence)
    ->ArgNames({"sampled", "invariant"})
    ->Args({0, 0})
    ->Args({1, 0})
    ->Args({1, 1})
    ->Iterations(4)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

BENCHMARK_MAIN();
