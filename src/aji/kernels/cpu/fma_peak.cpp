#include "aji/kernels/cpu/fma_peak.h"

#include <omp.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/base/atomic_file.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define AJI_PROBE_X86 1
#endif

namespace aji::kernels::cpu {

namespace {

constexpr int kChains = 12;  // > FMA latency x FMA ports (4 x 2 on current cores)

// The multiplier is read through a volatile so that the compiler cannot fold a * 1 + 1
// into an add or the loop into a closed form.
volatile float g_one = 1.0f;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double thread_cpu_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// Twelve chains in named variables (an array is kept in memory, one chain at a time).
// Chain k starts at k: chains that started equal would be merged into one by the compiler
// (measured: a 12x overstated peak). Every lane of chain k must end at k + rounds.
#define AJI_FMA_PROBE_BODY(T, LANES, SET1, FMA, ISA)                                              \
  const T one = SET1(g_one);                                                                      \
  T a0 = SET1(0), a1 = SET1(1), a2 = SET1(2), a3 = SET1(3), a4 = SET1(4), a5 = SET1(5);           \
  T a6 = SET1(6), a7 = SET1(7), a8 = SET1(8), a9 = SET1(9), a10 = SET1(10), a11 = SET1(11);       \
  const auto t0 = std::chrono::steady_clock::now();                                               \
  const double c0 = thread_cpu_seconds();                                                         \
  for (int64_t r = 0; r < rounds; ++r) {                                                          \
    a0 = FMA(a0, one, one), a1 = FMA(a1, one, one), a2 = FMA(a2, one, one);                       \
    a3 = FMA(a3, one, one), a4 = FMA(a4, one, one), a5 = FMA(a5, one, one);                       \
    a6 = FMA(a6, one, one), a7 = FMA(a7, one, one), a8 = FMA(a8, one, one);                       \
    a9 = FMA(a9, one, one), a10 = FMA(a10, one, one), a11 = FMA(a11, one, one);                   \
  }                                                                                               \
  FmaProbe p;                                                                                     \
  p.seconds = seconds_since(t0);                                                                  \
  p.cpu_seconds = thread_cpu_seconds() - c0;                                                      \
  p.flops = 2.0 * LANES * kChains * (double)rounds;                                               \
  const T all[kChains] = {a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11};                      \
  float lanes[kChains * LANES];                                                                   \
  std::memcpy(lanes, all, sizeof(lanes));                                                         \
  float lowest = lanes[0];                                                                        \
  for (int i = 0; i < kChains * LANES; ++i) lowest = std::min(lowest, lanes[i] - (float)(i / LANES)); \
  p.check = lowest;                                                                               \
  p.isa = ISA;                                                                                    \
  return p

#if AJI_PROBE_X86
__attribute__((target("avx512f"))) FmaProbe probe_avx512(int64_t rounds) {
  AJI_FMA_PROBE_BODY(__m512, 16, _mm512_set1_ps, _mm512_fmadd_ps, "avx512");
}

// vdpbf16ps a, one, one with `one` the float 1.0 read as two bf16 values (0, 1): every lane
// gains 0*0 + 1*1 = 1 per instruction, so the FMA probe's check holds; each instruction is
// 16 lanes x 2 multiply-adds (the FLOP count is doubled below).
#define AJI_DPBF16(a, b, c) _mm512_dpbf16_ps(a, (__m512bh)(b), (__m512bh)(c))
__attribute__((target("avx512f,avx512bf16"))) FmaProbe probe_avx512_bf16(int64_t rounds) {
  AJI_FMA_PROBE_BODY(__m512, 16, _mm512_set1_ps, AJI_DPBF16, "avx512bf16");
}
#undef AJI_DPBF16

__attribute__((target("avx2,fma"))) FmaProbe probe_avx2(int64_t rounds) {
  AJI_FMA_PROBE_BODY(__m256, 8, _mm256_set1_ps, _mm256_fmadd_ps, "avx2");
}
#endif

// Other CPUs: 4-lane GCC vectors, which the compiler maps to NEON/SVE FMAs.
typedef float v4 __attribute__((vector_size(16)));
inline v4 fma4(v4 a, v4 b, v4 c) { return a * b + c; }  // contracted to an FMA (-ffp-contract=fast)
inline v4 set4(float x) { return v4{x, x, x, x}; }

FmaProbe probe_portable(int64_t rounds) {
  AJI_FMA_PROBE_BODY(v4, 4, set4, fma4, "portable");
}

#undef AJI_FMA_PROBE_BODY

}  // namespace

FmaProbe fma_probe(int64_t rounds) {
#if AJI_PROBE_X86
  if (__builtin_cpu_supports("avx512f")) return probe_avx512(rounds);
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return probe_avx2(rounds);
#endif
  return probe_portable(rounds);
}

FmaProbe bf16_probe(int64_t rounds) {
#if AJI_PROBE_X86
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16")) {
    FmaProbe p = probe_avx512_bf16(rounds);
    p.flops *= 2;  // two bf16 products per lane and instruction
    return p;
  }
#endif
  (void)rounds;
  FmaProbe none;
  none.isa = "none";
  return none;
}

namespace {

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  return "unknown cpu";
}

// $AJI_PEAK_CACHE (a file; "off" disables), else $XDG_CACHE_HOME/aji/fma_peak.json, else
// ~/.cache/aji/fma_peak.json.
std::filesystem::path peak_cache_path() {
  if (const char* p = std::getenv("AJI_PEAK_CACHE"); p && *p) return std::string(p) == "off" ? "" : p;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::filesystem::path(x) / "aji" / "fma_peak.json";
  if (const char* h = std::getenv("HOME"); h && *h) return std::filesystem::path(h) / ".cache" / "aji" / "fma_peak.json";
  return "";
}

// One try: every thread runs the probe at once; each thread's rate is its FLOPs per CPU
// second of its own (time the scheduler gave to other processes does not count), and the
// peak is their sum. With the whole machine to itself the CPU time equals the wall time.
double probe_once(int threads, FmaProbe (*probe)(int64_t)) {
  constexpr int64_t kRounds = 1 << 22;  // ~15 ms per try at 100 GFLOP/s; below 2^24 so `check` stays exact
  std::vector<FmaProbe> per(threads);
#pragma omp parallel num_threads(threads)
  per[omp_get_thread_num()] = probe(kRounds);
  double sum = 0;
  for (const auto& p : per) {
    const double t = p.cpu_seconds > 0 ? std::min(p.cpu_seconds, p.seconds) : p.seconds;
    if (t <= 0 || p.flops <= 0) return 0;
    sum += p.flops / t / 1e9;
  }
  return sum;
}

}  // namespace

namespace {
// The best of five tries and of the cache file under key `prefix` + threads.
double measured_peak(int threads, FmaProbe (*probe)(int64_t), const std::string& prefix) {
  static std::mutex mu;
  static std::map<std::string, double> cache;
  threads = std::max(1, threads);
  std::lock_guard<std::mutex> lock(mu);
  const std::string mem_key = prefix + std::to_string(threads);
  if (auto it = cache.find(mem_key); it != cache.end()) return it->second;
  double best = 0;
  for (int attempt = 0; attempt < 5; ++attempt) best = std::max(best, probe_once(threads, probe));
  if (best <= 0) return cache[mem_key] = 0;  // no such instructions here
  // The best figure ever measured on this CPU model (a load that slowed every try still
  // cannot lower it), kept in a small JSON file; a missing or damaged file is ignored.
  const std::filesystem::path path = peak_cache_path();
  if (!path.empty()) {
    const std::string cpu = cpu_model_name(), key = mem_key;
    nlohmann::json j = nlohmann::json::object();
    try {
      std::ifstream in(path);
      if (in) j = nlohmann::json::parse(in);
      if (!j.is_object()) j = nlohmann::json::object();
      if (j.contains(cpu) && j[cpu].is_object() && j[cpu].contains(key) && j[cpu][key].is_number())
        best = std::max(best, j[cpu][key].get<double>());
    } catch (const std::exception&) {
      j = nlohmann::json::object();
    }
    try {
      if (!j.contains(cpu) || !j[cpu].is_object() || !j[cpu].contains(key) || !j[cpu][key].is_number() ||
          j[cpu][key].get<double>() < best) {
        j[cpu][key] = best;
        std::filesystem::create_directories(path.parent_path());
        write_file_atomic(path, j.dump(1) + "\n");
      }
    } catch (const std::exception&) {
      // a cache we cannot write (read-only home) costs nothing but the next measurement
    }
  }
  cache[mem_key] = best;
  return best;
}
}  // namespace

double measured_peak_gflops(int threads) { return measured_peak(threads, fma_probe, ""); }
double measured_bf16_peak_gflops(int threads) { return measured_peak(threads, bf16_probe, "bf16:"); }

}  // namespace aji::kernels::cpu
