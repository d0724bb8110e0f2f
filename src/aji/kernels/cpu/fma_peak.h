// The fp32 peak of this machine, measured: independent vector FMA chains from registers
// only, the best a matrix product can do. MFU figures divide by this rather than by a
// nominal number from a spec sheet: on this project's 2-core VM (AMD Zen 4, whose 512-bit
// FMAs are split over two 256-bit halves) the nominal 147 GFLOP/s per core overstated the
// ~108 that the core runs, and so understated every MFU.
#pragma once

#include <cstdint>

namespace aji::kernels::cpu {

struct FmaProbe {
  double flops = 0;        // floating-point operations done (an FMA counts 2)
  double seconds = 0;      // wall time of the loop
  double cpu_seconds = 0;  // CPU time of the calling thread during the loop (<= seconds when others ran)
  float check = 0;         // lowest (end - start) over all lanes: `rounds` if every FMA ran
  const char* isa = "";    // "avx512", "avx2" or "portable"
};

// `rounds` rounds of 12 independent FMA chains a = a * 1 + 1 on the calling thread, with the
// widest vector ISA this CPU runs (runtime dispatch; the binary itself needs only x86-64-v3).
FmaProbe fma_probe(int64_t rounds);

// Peak GFLOP/s of `threads` cores running the probe at the same time (so that shared
// clocks and power limits count): each thread's FLOPs per CPU second of its own (robust to
// other processes taking the cores), summed; the best of five ~20 ms tries and of every
// earlier measurement on this CPU model and thread count (kept in $AJI_PEAK_CACHE, else
// $XDG_CACHE_HOME/aji/fma_peak.json or ~/.cache/aji/fma_peak.json; AJI_PEAK_CACHE=off
// disables the file). Cached in memory per thread count.
double measured_peak_gflops(int threads);

// The bf16 peak, measured the same way: 12 independent `vdpbf16ps` chains (AVX512-BF16: 16
// lanes, each adding a dot product of two bf16 pairs = 4 FLOPs per lane per instruction) a =
// a + dot((0,1),(0,1)). isa "avx512bf16", or "none" (flops 0) on a CPU without it.
FmaProbe bf16_probe(int64_t rounds);
// GFLOP/s of `threads` cores running bf16_probe at once, as measured_peak_gflops (best of
// five tries and of the cache file, key "bf16:<threads>"); 0 on a CPU without AVX512-BF16.
// The ceiling of a bf16 matrix product, for MFU in bf16 training.
double measured_bf16_peak_gflops(int threads);

}  // namespace aji::kernels::cpu
