// Batched rollouts (infer::rollout) against infer::generate one row at a time, on the
// `tiny` model (configs/tiny.json, random init): 2 prompts of 32 tokens, G samples each,
// 32 new tokens per row, pure sampling at temperature 1. Counter "tok/s" = generated
// tokens per second (prefill included in the time).
//   build/bench/rollout_bench [--benchmark_filter=G:16]
// Arguments: G, threads. The ragged cases add stop tokens (5% of the vocabulary, so rows
// end at different lengths: a finished row leaves the batch and the next row takes its
// place); the mixed cases give the prompts different lengths (32 and 20 tokens), which share
// the decode batch (each row has its own cache).
#include <benchmark/benchmark.h>

#include <vector>

#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "aji/infer/generate.h"
#include "aji/infer/rollout.h"
#include "aji/model/config.h"
#include "aji/model/model.h"

namespace {

constexpr int kPrompts = 2, kPromptLen = 32, kNew = 32;

aji::model::Model& tiny_model() {
  static aji::model::Model m = [] {
    aji::model::Model mm(aji::model::ModelConfig::load(std::string(AJI_SOURCE_DIR) + "/configs/tiny.json"));
    mm.init_weights(1);
    return mm;
  }();
  return m;
}

std::vector<std::vector<int32_t>> prompts(int V, bool mixed = false) {
  aji::Rng rng(5);
  std::vector<std::vector<int32_t>> ps(kPrompts);
  for (size_t k = 0; k < ps.size(); ++k)
    for (int i = 0; i < (mixed && k % 2 ? kPromptLen - 12 : kPromptLen); ++i) ps[k].push_back((int32_t)rng.below((uint64_t)V));
  return ps;
}

std::vector<int32_t> ragged_stops(int V) {
  std::vector<int32_t> s;
  for (int i = 0; i < V / 20; ++i) s.push_back(i);
  return s;
}

void BM_Rollout(benchmark::State& st, bool ragged, bool mixed) {
  aji::set_num_threads((int)st.range(1));
  auto& m = tiny_model();
  auto ps = prompts(m.config().vocab_size, mixed);
  aji::infer::RolloutOptions o;
  o.group_size = (int)st.range(0);
  o.max_new_tokens = kNew;
  if (ragged) o.stop_tokens = ragged_stops(m.config().vocab_size);
  int64_t tokens = 0;
  uint64_t seed = 0;
  for (auto _ : st) {
    o.seed = seed++;
    for (const auto& r : aji::infer::rollout(m, ps, o)) tokens += (int64_t)r.tokens.size();
  }
  st.counters["tok/s"] = benchmark::Counter((double)tokens, benchmark::Counter::kIsRate);
}

// The same rows (every prompt G times), each through infer::generate on its own.
void BM_GenerateOneRowAtATime(benchmark::State& st, bool ragged) {
  aji::set_num_threads((int)st.range(1));
  auto& m = tiny_model();
  auto ps = prompts(m.config().vocab_size);
  aji::infer::GenerateOptions g;
  g.max_tokens = kNew;
  g.sampling.temperature = 1.0f;
  if (ragged) g.stop_tokens = ragged_stops(m.config().vocab_size);
  const int G = (int)st.range(0);
  int64_t tokens = 0;
  uint64_t seed = 0;
  for (auto _ : st) {
    for (const auto& p : ps)
      for (int s = 0; s < G; ++s) {
        g.seed = seed++;
        tokens += (int64_t)aji::infer::generate(m, p, g).size();
      }
  }
  st.counters["tok/s"] = benchmark::Counter((double)tokens, benchmark::Counter::kIsRate);
}

void args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"G", "threads"});
  for (int t : {1, 2})
    for (int G : {1, 8, 16}) b->Args({G, t});
  b->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.1);
}
void ragged_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"G", "threads"});
  for (int t : {1, 2}) b->Args({16, t});
  b->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(0.1);
}

}  // namespace

BENCHMARK_CAPTURE(BM_GenerateOneRowAtATime, full, false)->Apply(args);
BENCHMARK_CAPTURE(BM_Rollout, full, false, false)->Apply(args);
BENCHMARK_CAPTURE(BM_Rollout, mixed_lengths, false, true)->Apply(args);
BENCHMARK_CAPTURE(BM_GenerateOneRowAtATime, ragged, true)->Apply(ragged_args);
BENCHMARK_CAPTURE(BM_Rollout, ragged, true, false)->Apply(ragged_args);

BENCHMARK_MAIN();
