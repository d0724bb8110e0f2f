// Tokenizer encode/decode throughput.
//
// Two modes:
//  * Google Benchmark (default): pre-tokenizer, encode and decode on the shipped sample
//    text (tests/fixtures/tokenizer/parity/*.gz: English and Korean), cl100k and o200k.
//      build/bench/tokenizer_encode_bench
//  * Corpus mode, used by bench/tokenizer_encode_vs_tiktoken.py: chunks a corpus the way
//    ../shared/reference/tokenizer/bench/corpus_manifest.json says (from offset i, up to
//    the first "\n\n" at or after i+16384), encodes the chunks with encode_batch at the
//    given thread counts and prints one JSON line per run with MB/s and the SHA-256 of
//    all ids (uint32 little-endian, chunk after chunk) for an end-to-end parity check.
//      build/bench/tokenizer_encode_bench --corpus FILE [--encoding cl100k_base]
//          [--threads 1,2] [--mb N] [--repeat R]
#include <benchmark/benchmark.h>

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "aji/base/io.h"
#include "aji/base/threads.h"
#include "aji/tokenizer/pretokenizer.h"
#include "aji/tokenizer/sha256.h"
#include "aji/tokenizer/tokenizer.h"

namespace {

using aji::tokenizer::SpecialPolicy;
using aji::tokenizer::TokenId;
using aji::tokenizer::Tokenizer;

std::string repo(const std::string& rel) { return std::string(AJI_SOURCE_DIR) + "/" + rel; }

const Tokenizer& tokenizer_named(const std::string& name) {
  static const Tokenizer cl = Tokenizer::load(repo("data/tokenizer/cl100k_base.tiktoken"));
  static const Tokenizer o2 = Tokenizer::load(repo("data/tokenizer/o200k_base.tiktoken"));
  return name.rfind("o200k", 0) == 0 ? o2 : cl;
}

const std::string& sample(bool korean) {
  static const std::string en = aji::read_file(repo("tests/fixtures/tokenizer/parity/tinyshakespeare.txt.gz"));
  static const std::string ko = aji::read_file(repo("tests/fixtures/tokenizer/parity/korean_english_park_test_ko.txt.gz")) +
                                aji::read_file(repo("tests/fixtures/tokenizer/parity/korean_chatbot.csv.gz"));
  return korean ? ko : en;
}

void BM_Pretokenize(benchmark::State& state) {
  const std::string& text = sample(state.range(1));
  auto pattern = state.range(0) ? aji::tokenizer::SplitPattern::kO200k : aji::tokenizer::SplitPattern::kCl100k;
  for (auto _ : state) {
    size_t pieces = 0;
    aji::tokenizer::split(pattern, text, [&](std::string_view) { ++pieces; });
    benchmark::DoNotOptimize(pieces);
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
}
BENCHMARK(BM_Pretokenize)->ArgNames({"o200k", "ko"})->Args({0, 0})->Args({1, 0})->Args({0, 1})->Args({1, 1})
    ->Unit(benchmark::kMillisecond);

void BM_Encode(benchmark::State& state) {
  const Tokenizer& tok = tokenizer_named(state.range(0) ? "o200k" : "cl100k");
  const std::string& text = sample(state.range(1));
  std::vector<TokenId> ids;
  for (auto _ : state) {
    ids.clear();
    tok.encode_ordinary(text, ids);
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
  state.counters["bytes/token"] = double(text.size()) / double(ids.size());
}
BENCHMARK(BM_Encode)->ArgNames({"o200k", "ko"})->Args({0, 0})->Args({1, 0})->Args({0, 1})->Args({1, 1})
    ->Unit(benchmark::kMillisecond);

void BM_Decode(benchmark::State& state) {
  const Tokenizer& tok = tokenizer_named("cl100k");
  const std::string& text = sample(false);
  std::vector<TokenId> ids;
  tok.encode_ordinary(text, ids);
  for (auto _ : state) benchmark::DoNotOptimize(tok.decode(ids));
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
}
BENCHMARK(BM_Decode)->Unit(benchmark::kMillisecond);

void BM_LongPiece(benchmark::State& state) {  // one 100 KB piece: the heap merge path
  const Tokenizer& tok = tokenizer_named("cl100k");
  std::string text;
  uint64_t x = 1;
  for (int i = 0; i < 100000; ++i) text += char('a' + (x = x * 6364136223846793005ULL + 1) % 26);
  std::vector<TokenId> ids;
  for (auto _ : state) {
    ids.clear();
    tok.encode_ordinary(text, ids);
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
}
BENCHMARK(BM_LongPiece)->Unit(benchmark::kMillisecond);

void BM_Load(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(Tokenizer::load(repo("data/tokenizer/cl100k_base.tiktoken")));
}
BENCHMARK(BM_Load)->Unit(benchmark::kMillisecond);

// --- corpus mode ----------------------------------------------------------------------

double cpu_seconds() {  // user + system time of the whole process (all threads)
  rusage r;
  getrusage(RUSAGE_SELF, &r);
  return double(r.ru_utime.tv_sec + r.ru_stime.tv_sec) + 1e-6 * double(r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

std::vector<std::string_view> manifest_chunks(std::string_view data) {
  std::vector<std::string_view> chunks;
  size_t i = 0;
  while (i < data.size()) {
    size_t from = std::min(data.size(), i + 16384);
    size_t j = data.find("\n\n", from);
    size_t end = j == std::string_view::npos ? data.size() : j + 2;
    chunks.push_back(data.substr(i, end - i));
    i = end;
  }
  return chunks;
}

int corpus_mode(int argc, char** argv) {
  std::string corpus, encoding = "cl100k_base", threads_list = "1,2";
  double mb = 0;
  int repeat = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--corpus") corpus = v;
    else if (a == "--encoding") encoding = v;
    else if (a == "--threads") threads_list = v;
    else if (a == "--mb") mb = std::stod(v);
    else if (a == "--repeat") repeat = std::stoi(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  std::string data = aji::read_file(corpus);
  if (mb > 0 && data.size() > size_t(mb * 1e6)) {
    size_t cut = data.find("\n\n", size_t(mb * 1e6));
    data.resize(cut == std::string::npos ? data.size() : cut + 2);
  }
  auto t_load = std::chrono::steady_clock::now();
  const Tokenizer& tok = tokenizer_named(encoding);
  double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
  auto chunks = manifest_chunks(data);
  size_t pos = 0;
  while (pos <= threads_list.size()) {
    size_t comma = threads_list.find(',', pos);
    if (comma == std::string::npos) comma = threads_list.size();
    int threads = std::stoi(threads_list.substr(pos, comma - pos));
    pos = comma + 1;
    aji::set_num_threads(threads);
    double best = 1e300, best_cpu = 0;
    std::vector<std::vector<TokenId>> ids;
    for (int r = 0; r < repeat; ++r) {
      ids.clear();
      double c0 = cpu_seconds();
      auto t0 = std::chrono::steady_clock::now();
      ids = tok.encode_batch(chunks, SpecialPolicy::kAsText);
      double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (t < best) {
        best = t;
        best_cpu = cpu_seconds() - c0;
      }
    }
    std::string all;
    size_t n_tokens = 0;
    for (const auto& v : ids) {
      all.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(TokenId));  // x86: little-endian
      n_tokens += v.size();
    }
    std::printf(
        "{\"impl\": \"aji\", \"encoding\": \"%s\", \"threads\": %d, \"bytes\": %zu, \"chunks\": %zu, \"tokens\": %zu, "
        "\"seconds\": %.4f, \"cpu_seconds\": %.4f, \"mb_per_s\": %.3f, \"load_seconds\": %.3f, \"ids_sha256\": \"%s\"}\n",
        encoding.c_str(), threads, data.size(), chunks.size(), n_tokens, best, best_cpu, double(data.size()) / 1e6 / best, load_s,
        aji::tokenizer::sha256_hex(all).c_str());
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--corpus") == 0) return corpus_mode(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
