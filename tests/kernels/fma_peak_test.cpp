#include "aji/kernels/cpu/fma_peak.h"

#include <gtest/gtest.h>

#include <dnnl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <time.h>
#include <vector>
#include <fstream>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "aji/base/threads.h"

namespace ops = aji::kernels::cpu;

// The probe's figure is only as good as its loop: every chain must really run `rounds`
// FMAs (a = a * 1 + 1 ends at exactly `rounds`), and the FLOP count must follow the ISA's width.
TEST(FmaPeak, ProbeRunsEveryRoundAndCountsTwoFlopsPerLanePerFma) {
  for (int64_t rounds : {1, 7, 1000, 100003}) {
    const ops::FmaProbe p = ops::fma_probe(rounds);
    EXPECT_EQ(p.check, (float)rounds) << p.isa;  // exact: rounds + 11 < 2^24
    const std::string isa = p.isa;
    const int lanes = isa == "avx512" ? 16 : isa == "avx2" ? 8 : 4;
    EXPECT_EQ(p.flops, 2.0 * lanes * 12 * rounds) << isa;
    EXPECT_GE(p.seconds, 0.0);
  }
}

namespace {
// CPU seconds of the calling thread: unlike wall time, not stretched when other processes
// take the core (this test must hold on a busy machine).
double thread_cpu_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}
}  // namespace

// The probe's FLOPs per CPU-second must bound what a well-tuned GEMM does per CPU-second
// on the same core, and the GEMM must come near it (measured: sgemm at 0.90-0.95 of the
// probe). Before, only "> 0" was checked; a FLOP count off by 2x (an FMA counted as 1 or
// 4 FLOPs), a lane count wrong for the ISA, or a loop the compiler shortened (chains
// merged: the 12x overstated peak once seen) would pass that, not this. oneDNN's sgemm is
// the independent side: a library this repo did not write. Best of 16 interleaved runs.
TEST(FmaPeak, ProbeBoundsAnIndependentGemmAndThePeakIsCachedPerThreadCount) {
  setenv("AJI_PEAK_CACHE", "off", 1);  // this process's own measurement only (no figure of another build)
  aji::set_num_threads(1);
  const int n = 384;  // ~4 ms per product at 100 GFLOP/s
  std::vector<float> a(static_cast<size_t>(n) * n), b(a.size()), c(a.size());
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i % 7) * 0.25f, b[i] = static_cast<float>(i % 5) * 0.5f;
  double probe = 0, gemm = 0;
  for (int t = 0; t < 16; ++t) {
    const double t0 = thread_cpu_seconds();
    const ops::FmaProbe p = ops::fma_probe(1 << 20);
    const double t1 = thread_cpu_seconds();
    dnnl_sgemm('N', 'N', n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    const double t2 = thread_cpu_seconds();
    if (t1 > t0) probe = std::max(probe, p.flops / (t1 - t0) / 1e9);
    if (t2 > t1) gemm = std::max(gemm, 2.0 * n * n * n / (t2 - t1) / 1e9);
  }
#if defined(__SANITIZE_ADDRESS__)
  // The sanitizer build compiles the probe at -O1 with instrumentation while oneDNN stays
  // optimised, so the two rates are not comparable there (measured: probe 53, sgemm 104
  // GFLOP/s). The release build runs this comparison; here only the caching is checked.
  std::printf("[ note ] sanitizer build: probe %.1f vs sgemm %.1f GFLOP/s not compared\n", probe, gemm);
#else
  EXPECT_LE(gemm, 1.15 * probe) << "sgemm " << gemm << " GFLOP/s above the probe's peak " << probe;
  EXPECT_GE(gemm, 0.6 * probe) << "sgemm " << gemm << " GFLOP/s far below the probe's peak " << probe;
#endif
  // measured_peak_gflops times the same probe by CPU time (best of five, cached): about
  // the figure above, whether or not the machine was busy.
  const double one = ops::measured_peak_gflops(1);
  ASSERT_TRUE(std::isfinite(one));
  EXPECT_GT(one, 0.0);
  EXPECT_LE(one, 1.1 * probe);
  EXPECT_EQ(ops::measured_peak_gflops(1), one);  // cached: a second call costs nothing
  const double two = ops::measured_peak_gflops(2);  // two cores: at most twice one core
  EXPECT_GT(two, 0.0);
#if defined(__SANITIZE_ADDRESS__)
  // Not in the sanitizer build (as above): its instrumented -O1 probe loop measured 35.5 GFLOP/s
  // on one thread and 83 on two (2.34x) with another test process on the machine, an
  // optimised build's loop about 100 and 200.
  std::printf("[ note ] sanitizer build: two threads %.1f vs one %.1f GFLOP/s not compared\n", two, probe);
#else
  EXPECT_LE(two, 2.2 * probe);
#endif
}

// The best peak ever measured on this CPU model is kept in a file and wins over a lower
// measurement (a busy machine at start cannot make MFU exceed 100% later).
TEST(FmaPeak, BestMeasurementIsKeptPerCpuModelInTheCacheFile) {
  const std::string path = ::testing::TempDir() + "/aji_fma_peak_" + std::to_string(::getpid()) + ".json";
  std::remove(path.c_str());
  setenv("AJI_PEAK_CACHE", path.c_str(), 1);
  // Thread counts no other test of this binary asks for (each count is also cached in memory).
  const double three = ops::measured_peak_gflops(3);
  nlohmann::json j;
  {
    std::ifstream in(path);
    ASSERT_TRUE(in.good()) << "the first measurement writes " << path;
    j = nlohmann::json::parse(in);
  }
  ASSERT_EQ(j.size(), 1u);
  const std::string cpu = j.begin().key();
  EXPECT_DOUBLE_EQ(j[cpu]["3"].get<double>(), three);
  j[cpu]["4"] = 1e6;  // an earlier, better figure for four threads
  {
    std::ofstream out(path);
    out << j.dump();
  }
  EXPECT_EQ(ops::measured_peak_gflops(4), 1e6);
  std::remove(path.c_str());
}
