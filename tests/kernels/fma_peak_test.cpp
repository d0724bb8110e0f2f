#include "aji/kernels/cpu/fma_peak.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

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

TEST(FmaPeak, MeasuredPeakIsPositiveFiniteAndCachedPerThreadCount) {
  const double one = ops::measured_peak_gflops(1);
  EXPECT_GT(one, 0.0);
  EXPECT_TRUE(std::isfinite(one));
  EXPECT_EQ(ops::measured_peak_gflops(1), one);  // cached: a second call costs nothing
  EXPECT_GT(ops::measured_peak_gflops(2), 0.0);
}
