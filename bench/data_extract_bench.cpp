// Micro-benchmarks of the data pipeline's own stages on the committed real fixtures:
// WARC reading (gzip members + HTTP + charset), HTML extraction (gumbo), language ID (CLD2),
// URL filter. Run: build/bench/data_extract_bench  (bytes/s are of the stage's input).
#include <benchmark/benchmark.h>

#include "aji/base/io.h"
#include "aji/data/extract.h"
#include "aji/data/langid.h"
#include "aji/data/readers.h"
#include "aji/data/url_filter.h"

namespace {

namespace data = aji::data;
const std::string kWarc = std::string(AJI_SOURCE_DIR) + "/tests/fixtures/data/warc/dolma-sample-0000.warc.gz";

std::vector<data::Document> warc_docs() {
  data::DocumentReader r(kWarc, {});
  std::vector<data::Document> docs;
  data::Document d;
  while (r.next(d)) docs.push_back(d);
  return docs;
}

void BM_ReadWarc(benchmark::State& state) {
  int64_t bytes = 0;
  for (auto _ : state) {
    data::DocumentReader r(kWarc, {});
    data::Document d;
    while (r.next(d)) benchmark::DoNotOptimize(d.text.data());
    bytes += static_cast<int64_t>(r.bytes_consumed());
  }
  state.SetBytesProcessed(bytes);
}
BENCHMARK(BM_ReadWarc)->Unit(benchmark::kMillisecond);

void BM_ExtractHtml(benchmark::State& state) {
  auto docs = warc_docs();
  int64_t bytes = 0;
  for (auto _ : state)
    for (const auto& d : docs) {
      benchmark::DoNotOptimize(data::extract_main_text(d.text).text.size());
      bytes += static_cast<int64_t>(d.text.size());
    }
  state.SetBytesProcessed(bytes);
}
BENCHMARK(BM_ExtractHtml)->Unit(benchmark::kMillisecond);

void BM_LanguageId(benchmark::State& state) {
  std::vector<std::string> texts;
  for (const auto& d : warc_docs()) texts.push_back(data::extract_main_text(d.text).text);
  int64_t bytes = 0;
  for (auto _ : state)
    for (const auto& t : texts) {
      benchmark::DoNotOptimize(data::identify_language(t).score);
      bytes += static_cast<int64_t>(std::min<size_t>(t.size(), 64 * 1024));
    }
  state.SetBytesProcessed(bytes);
}
BENCHMARK(BM_LanguageId)->Unit(benchmark::kMillisecond);

void BM_UrlFilter(benchmark::State& state) {
  data::UrlFilter f(data::UrlFilterConfig{});
  std::vector<std::string> urls;
  for (const auto& d : warc_docs()) urls.push_back(d.url);
  int64_t n = 0;
  for (auto _ : state)
    for (const auto& u : urls) {
      benchmark::DoNotOptimize(f.check(u).keep);
      ++n;
    }
  state.SetItemsProcessed(n);
}
BENCHMARK(BM_UrlFilter);

}  // namespace

BENCHMARK_MAIN();
