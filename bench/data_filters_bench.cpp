// Per-filter throughput of the data-filter stage on the real 313-document sample
// (tests/fixtures/data_filters/docs.jsonl, 0.9 MB: English web/docs/books/chat + Korean).
// One thread; bytes/s counts the UTF-8 text bytes given to the filter.
//   build/bench/data_filters_bench [--benchmark_filter=Gopher]
// bench/data_filters_vs_datatrove.py runs this and datatrove on the same docs.
#include <benchmark/benchmark.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "aji/base/io.h"
#include "aji/data/dedup.h"
#include "aji/data/pii.h"
#include "aji/data/quality_filters.h"

using namespace aji::data;

namespace {

struct Sample {
  std::vector<std::string> texts;
  int64_t bytes = 0;
};

const Sample& sample() {
  static Sample s = [] {
    Sample s;
    aji::LineReader r(std::string(AJI_SOURCE_DIR) + "/tests/fixtures/data_filters/docs.jsonl");
    std::string_view line;
    while (r.next(line)) {
      auto j = nlohmann::json::parse(line);
      s.texts.push_back(j["text"].get<std::string>());
      s.bytes += int64_t(s.texts.back().size());
    }
    return s;
  }();
  return s;
}

template <typename Fn>
void run_over_docs(benchmark::State& state, Fn&& fn) {
  const Sample& s = sample();
  int64_t kept = 0;
  for (auto _ : state) {
    for (const std::string& t : s.texts) {
      Document d;
      d.text = t;
      kept += fn(d);
    }
  }
  benchmark::DoNotOptimize(kept);
  state.SetBytesProcessed(state.iterations() * s.bytes);
  state.counters["docs/s"] = benchmark::Counter(double(state.iterations() * int64_t(s.texts.size())),
                                                benchmark::Counter::kIsRate);
}

const QualityFilterConfig kEn = QualityFilterConfig::english();

void BM_GopherRepetition(benchmark::State& st) {
  run_over_docs(st, [](Document& d) { return gopher_repetition_filter(d, kEn.gopher_repetition, kEn.word_splitter).keep; });
}
void BM_GopherQuality(benchmark::State& st) {
  run_over_docs(st, [](Document& d) { return gopher_quality_filter(d, kEn.gopher_quality, kEn.word_splitter).keep; });
}
void BM_C4Quality(benchmark::State& st) {
  run_over_docs(st, [](Document& d) { return c4_quality_filter(d, kEn.c4).keep; });
}
void BM_FineWebQuality(benchmark::State& st) {
  run_over_docs(st, [](Document& d) { return fineweb_quality_filter(d, kEn.fineweb, kEn.word_splitter).keep; });
}
void BM_AllQualityFilters(benchmark::State& st) {
  run_over_docs(st, [](Document& d) { return apply_quality_filters(d, kEn).keep; });
}
void BM_Pii(benchmark::State& st) {
  PiiScrubber scrubber;
  run_over_docs(st, [&](Document& d) { return scrubber.scrub(d).total() > 0; });
}
void BM_MinhashSignatureSha1(benchmark::State& st) {
  MinhashConfig c;
  MinhashParams p = minhash_params(c);
  run_over_docs(st, [&](Document& d) { return !minhash_signature(shingle_hashes(d.text, c), p).empty(); });
}
void BM_MinhashSignatureXxh64(benchmark::State& st) {
  MinhashConfig c;
  c.hash = ShingleHash::kXxh64;
  MinhashParams p = minhash_params(c);
  run_over_docs(st, [&](Document& d) { return !minhash_signature(shingle_hashes(d.text, c), p).empty(); });
}
void BM_ExactHash(benchmark::State& st) {
  run_over_docs(st, [](Document& d) {
    ExactHash h;
    return exact_text_hash(d.text, &h);
  });
}

}  // namespace

BENCHMARK(BM_GopherRepetition)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_GopherQuality)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_C4Quality)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FineWebQuality)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_AllQualityFilters)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Pii)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MinhashSignatureSha1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MinhashSignatureXxh64)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ExactHash)->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
