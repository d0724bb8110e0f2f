#include "aji/kernels/cpu/lowbit.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "aji/base/error.h"
#include "aji/base/half.h"
#include "aji/kernels/cpu/avx512.h"
#include "aji/kernels/cpu/parallel.h"
#include "aji/kernels/cpu/bf16_gemm.h"
#include "aji/kernels/cpu/vec_math.h"

namespace aji::kernels::cpu {

namespace {
PackedIsa g_isa = PackedIsa::kBest;  // tests: packed_force_isa

bool cpu_bf16() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                         __builtin_cpu_supports("avx512bf16");
  return ok && g_isa == PackedIsa::kBest;
}
bool cpu_vnni() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512dq") &&
                         __builtin_cpu_supports("avx512vl");
  return ok && g_isa == PackedIsa::kBest;
}
// AVX2 + FMA + F16C: the binary's baseline (x86-64-v3), so always, unless a test asks for
// the portable loops.
bool cpu_avx2() { return g_isa != PackedIsa::kPortable; }

inline float bf16_bits_to_f32(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// One Q8_0 block (ggml's quantize_row_q8_0_ref): d = max|x|/127 stored as fp16, q = roundf(x/d).
inline void quantize_block(const float* x, int8_t* q, uint16_t* dbits) {
  float amax = 0.0f;
  for (size_t j = 0; j < kQ8BlockSize; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  *dbits = f32_to_f16(d);
  for (size_t j = 0; j < kQ8BlockSize; ++j) q[j] = static_cast<int8_t>(std::round(x[j] * id));
}
}  // namespace

const char* weight_type_name(WeightType t) {
  switch (t) {
    case WeightType::kF32: return "fp32";
    case WeightType::kBF16: return "bf16";
    case WeightType::kQ8_0: return "q8_0";
  }
  return "?";
}

WeightType parse_weight_type(const std::string& text, const std::string& source) {
  if (text == "fp32" || text == "f32") return WeightType::kF32;
  if (text == "bf16") return WeightType::kBF16;
  if (text == "q8_0") return WeightType::kQ8_0;
  throw Error("unknown weight type \"" + text + "\" in " + source).fix("use fp32, bf16 or q8_0");
}

void quantize_q8_0(const float* x, size_t n, uint8_t* out) {
  AJI_CHECK(n % kQ8BlockSize == 0, "quantize_q8_0: n is not a multiple of 32");
  for (size_t b = 0; b < n / kQ8BlockSize; ++b) {
    uint8_t* ob = out + b * kQ8BlockBytes;
    uint16_t dh;
    int8_t q[kQ8BlockSize];
    quantize_block(x + b * kQ8BlockSize, q, &dh);
    std::memcpy(ob, &dh, 2);
    std::memcpy(ob + 2, q, kQ8BlockSize);
  }
}

namespace {
// The end of a block's quantization from the maximum |x| of 4 lanes: d = amax/127, stored
// fp16; returns 1/d (0 for an all-zero block), as quantize_block computes them.
inline float block_scale(__m128 m4, uint16_t* dbits) {
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  const float amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
  const float d = amax / 127.0f;
  *dbits = f32_to_f16(d);
  return d != 0.0f ? 1.0f / d : 0.0f;
}

// quantize_block on AVX-512, the same numbers: max|x| is exact in any order, d and 1/d are
// the same scalar operations, x * id the same product, and round-half-away-from-zero
// (roundf) is t + (|v| - t >= 0.5) with t = trunc(|v|), |v| - t exact, the sign put back.
__attribute__((target("avx512f,avx512bw,avx512dq"))) void quantize_blocks_avx512(const float* x, size_t nblocks, int8_t* q,
                                                                         uint16_t* dbits) {
  const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
  const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
  for (size_t b = 0; b < nblocks; ++b) {
    const float* xb = x + b * kQ8BlockSize;
    const __m512 x0 = _mm512_loadu_ps(xb), x1 = _mm512_loadu_ps(xb + 16);
    const __m512 a0 = _mm512_and_ps(x0, absmask), a1 = _mm512_and_ps(x1, absmask);
    const __m512 m16 = _mm512_maskz_max_ps(0xFFFF, a0, a1);
    const __m128 z = _mm_setzero_ps();
    const __m128 m4 = _mm_max_ps(_mm_max_ps(_mm512_mask_extractf32x4_ps(z, 0xF, m16, 0), _mm512_mask_extractf32x4_ps(z, 0xF, m16, 1)),
                                 _mm_max_ps(_mm512_mask_extractf32x4_ps(z, 0xF, m16, 2), _mm512_mask_extractf32x4_ps(z, 0xF, m16, 3)));
    const __m512 vid = _mm512_set1_ps(block_scale(m4, dbits + b));
    __m512i qi[2];
    for (int h = 0; h < 2; ++h) {
      const __m512 v = _mm512_mul_ps(h ? x1 : x0, vid);
      const __m512 av = _mm512_and_ps(v, absmask);
      const __m512 t = _mm512_maskz_roundscale_ps(0xFFFF, av, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
      const __mmask16 up = _mm512_cmp_ps_mask(_mm512_sub_ps(av, t), half, _CMP_GE_OQ);
      const __m512 r = _mm512_mask_add_ps(t, up, t, one);
      const __m512 signed_r = _mm512_or_ps(r, _mm512_andnot_ps(absmask, v));  // copysign(r, v)
      qi[h] = _mm512_maskz_cvttps_epi32(0xFFFF, signed_r);
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + b * kQ8BlockSize), _mm512_maskz_cvtepi32_epi8(0xFFFF, qi[0]));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + b * kQ8BlockSize + 16), _mm512_maskz_cvtepi32_epi8(0xFFFF, qi[1]));
  }
}
// The same on AVX2 (the binary's baseline), the same numbers by the same argument: 8 lanes
// at a time, the int32 results packed to int8 with saturation that never applies (|q| <= 127).
void quantize_blocks_avx2(const float* x, size_t nblocks, int8_t* q, uint16_t* dbits) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
  for (size_t b = 0; b < nblocks; ++b) {
    const float* xb = x + b * kQ8BlockSize;
    __m256 v[4], m = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
      v[i] = _mm256_loadu_ps(xb + 8 * i);
      m = _mm256_max_ps(m, _mm256_and_ps(v[i], absmask));
    }
    const __m256 vid = _mm256_set1_ps(block_scale(_mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1)), dbits + b));
    __m256i qi[4];
    for (int i = 0; i < 4; ++i) {
      const __m256 s = _mm256_mul_ps(v[i], vid);
      const __m256 av = _mm256_and_ps(s, absmask);
      const __m256 t = _mm256_round_ps(av, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
      const __m256 up = _mm256_cmp_ps(_mm256_sub_ps(av, t), half, _CMP_GE_OQ);
      const __m256 r = _mm256_add_ps(t, _mm256_and_ps(up, one));
      qi[i] = _mm256_cvttps_epi32(_mm256_or_ps(r, _mm256_andnot_ps(absmask, s)));  // copysign(r, s)
    }
    // packs work within 128-bit lanes: [0 lo, 1 lo, 0 hi, 1 hi] -> [0 lo, 1 lo, 2 lo, 3 lo, 0 hi, ...]
    const __m256i p16a = _mm256_packs_epi32(qi[0], qi[1]), p16b = _mm256_packs_epi32(qi[2], qi[3]);
    const __m256i p8 = _mm256_packs_epi16(p16a, p16b);
    const __m256i ordered = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * kQ8BlockSize), ordered);
  }
}
bool cpu_avx512bw() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512dq");
  return ok;
}
}  // namespace

void quantize_q8_0_split(const float* x, size_t n, int8_t* q, uint16_t* d) {
  AJI_CHECK(n % kQ8BlockSize == 0, "quantize_q8_0_split: n is not a multiple of 32");
  if (cpu_avx512bw() && g_isa == PackedIsa::kBest) return quantize_blocks_avx512(x, n / kQ8BlockSize, q, d);
  if (cpu_avx2()) return quantize_blocks_avx2(x, n / kQ8BlockSize, q, d);
  for (size_t b = 0; b < n / kQ8BlockSize; ++b) quantize_block(x + b * kQ8BlockSize, q + b * kQ8BlockSize, d + b);
}

void dequantize_q8_0(const uint8_t* in, size_t n, float* out) {
  for (size_t b = 0; b < n / kQ8BlockSize; ++b) {
    const uint8_t* ib = in + b * kQ8BlockBytes;
    uint16_t dh;
    std::memcpy(&dh, ib, 2);
    const float d = f16_to_f32(dh);
    for (size_t j = 0; j < kQ8BlockSize; ++j) {
      int8_t q;
      std::memcpy(&q, ib + 2 + j, 1);
      out[b * kQ8BlockSize + j] = d * q;
    }
  }
}

// ---- packing -------------------------------------------------------------------------------

PackedWeight PackedWeight::pack(const float* w, int OC, int IC, WeightLayout layout, WeightType type) {
  PackedWeight p;
  if (type == WeightType::kF32) return p;
  if (OC <= 0 || IC <= 0) throw Error("PackedWeight::pack: empty matrix");
  if (type == WeightType::kQ8_0 && IC % static_cast<int>(kQ8BlockSize) != 0)
    throw Error("q8_0 needs an input width that is a multiple of 32, this matrix has " + std::to_string(IC))
        .fix("use --weights bf16 or fp32 for this model");
  p.type_ = type;
  p.oc_ = OC;
  p.ic_ = IC;
  const size_t n = static_cast<size_t>(OC) * IC;
  if (type == WeightType::kBF16)
    p.bf16_.resize(n);
  else {
    p.qu_.resize(n);
    p.d_.resize(n / kQ8BlockSize);
  }
#pragma omp parallel
  {
    std::vector<float> row(layout == WeightLayout::kInOut ? IC : 0);
    std::vector<int8_t> q(type == WeightType::kQ8_0 ? IC : 0);
#pragma omp for schedule(static)
    for (int o = 0; o < OC; ++o) {
      const float* src = w + static_cast<int64_t>(o) * IC;
      if (layout == WeightLayout::kInOut) {
        for (int k = 0; k < IC; ++k) row[k] = w[static_cast<int64_t>(k) * OC + o];
        src = row.data();
      }
      const size_t at = static_cast<size_t>(o) * IC;
      if (type == WeightType::kBF16)
        for (int k = 0; k < IC; ++k) p.bf16_[at + k] = f32_to_bf16(src[k]);
      else {
        quantize_q8_0_split(src, IC, q.data(), p.d_.data() + at / kQ8BlockSize);
        for (int k = 0; k < IC; ++k) p.qu_[at + k] = static_cast<uint8_t>(q[k] + 128);
      }
    }
  }
  return p;
}

void PackedWeight::dequantize_rows(int o0, int n, float* out) const {
  AJI_CHECK(!empty() && o0 >= 0 && o0 + n <= oc_, "dequantize_rows: rows out of range");
  const size_t at = static_cast<size_t>(o0) * ic_, cnt = static_cast<size_t>(n) * ic_;
  if (type_ == WeightType::kBF16) {
    for (size_t i = 0; i < cnt; ++i) out[i] = bf16_bits_to_f32(bf16_[at + i]);
  } else {
    for (size_t b = 0; b < cnt / kQ8BlockSize; ++b) {
      const float d = f16_to_f32(d_[at / kQ8BlockSize + b]);
      const uint8_t* q = qu_.data() + at + b * kQ8BlockSize;
      for (size_t j = 0; j < kQ8BlockSize; ++j) out[b * kQ8BlockSize + j] = d * static_cast<float>(q[j] - 128);
    }
  }
}

// ---- row kernels ----------------------------------------------------------------------------
// Activations prepared once per call:
//   bf16: xb (N, ICp) bf16 bits, ICp = IC rounded up to 32, zero padded.
//   q8_0: xq (N, IC) int8 (the signed operand of vpdpbusd), dx (N, nb) the block scales as
//         float (fp16 values), dxe (N, npair*16): dx of the block pair's blocks, each repeated
//         8 times (the lanes vpdpbusd sums a block into), and cx (N, npair*16): -128 times the
//         sum of the 4 activations each lane takes (vpdpbusd's start: the weights come + 128);
//         both 0 past nb.
namespace {

struct Prepared {
  std::vector<uint16_t> xb;
  std::vector<float> xf;   // AVX2 bf16: (N, IC16) fp32, each chunk of 16 even then odd
  std::vector<int32_t> cx;
  std::vector<int8_t> xq;
  std::vector<uint8_t> xa;  // AVX2 q8_0: |xq|
  std::vector<uint16_t> dxh;
  std::vector<float> dx, dxe;
};

// The intrinsics below are the masked forms with an explicit source: GCC 12's plain forms
// start from _mm512_undefined_*, which -Wmaybe-uninitialized reports.
void finish(float* out, int64_t OC, int64_t r, int o, float v, const float* bias, bool accumulate) {
  v += bias ? bias[o] : 0.0f;
  float& y = out[r * OC + o];
  y = accumulate ? y + v : v;
}

// A tile's sums, out (r0+r, o0+o) = hsum512(acc[r][o]) + bias, + out when accumulating;
// four outputs of a row reduced together (hsum512x4, the same bits as one at a time).
template <int R, int O>
__attribute__((target("avx512f"))) [[gnu::always_inline]] inline void tile_epilogue(float* out, int64_t OC, int64_t r0,
                                                                                   int o0, const __m512 (&acc)[R][O],
                                                                                   const float* bias, bool accumulate) {
  for (int r = 0; r < R; ++r) {
    if constexpr (O == 4) {
      store4(out + (r0 + r) * OC + o0, hsum512x4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]), bias ? bias + o0 : nullptr,
             accumulate);
    } else {
      for (int o = 0; o < O; ++o) finish(out, OC, r0 + r, o0 + o, hsum512(acc[r][o]), bias, accumulate);
    }
  }
}

// Tiles of R activation rows x O weight rows (output columns), R and O template arguments
// so the accumulators stay in registers. Output (r, o) is one chain, acc = vdpbf16ps(acc,
// x[r, k:k+32], w[o, k:k+32]) over the 32-element chunks of k in order (the last one with
// the weight masked, the activations being zero padded), then hsum512, + bias, + out when
// accumulating: the same operations whatever R and O are, so a row alone gets the bits it
// gets in any tile (batch invariance). `next`, when set: the block of O weight rows two
// blocks ahead, one cache line per row per chunk, prefetched into L2 while this block is read
// (O short interleaved streams defeat the hardware prefetcher; into L1 (T0) and one block
// ahead, the bf16 LM head at 4 rows took 2.5x as long, at 16 rows 1.6x).
#define AJI_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
template <int R, int O>
AJI_BF16_TARGET [[gnu::always_inline]] inline void bf16_tile(float* out, const uint16_t* xb, int ICp,
                                                             const uint16_t* w, int IC, int OC, int64_t r0, int o0,
                                                             int nfull, __mmask32 tail, const float* bias,
                                                             bool accumulate) {
  __m512 acc[R][O];
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < O; ++o) acc[r][o] = _mm512_setzero_ps();
  const uint16_t* wo = w + static_cast<int64_t>(o0) * IC;
  const uint16_t* xr = xb + r0 * ICp;
  const uint16_t* next = O > 1 && r0 == 0 && o0 + 3 * O <= OC ? wo + 2 * O * IC : nullptr;
  for (int k = 0; k < nfull; ++k) {
    __m512i wv[O];
    if (next)
      for (int o = 0; o < O; ++o) _mm_prefetch(reinterpret_cast<const char*>(next + o * IC + k * 32), _MM_HINT_T2);
    for (int o = 0; o < O; ++o) wv[o] = _mm512_loadu_si512(wo + o * IC + k * 32);
    for (int r = 0; r < R; ++r) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(xr + r * ICp + k * 32);
      for (int o = 0; o < O; ++o) acc[r][o] = _mm512_dpbf16_ps(acc[r][o], xv, (__m512bh)wv[o]);
    }
  }
  if (tail) {
    __m512i wv[O];
    for (int o = 0; o < O; ++o) wv[o] = _mm512_maskz_loadu_epi16(tail, wo + o * IC + nfull * 32);
    for (int r = 0; r < R; ++r) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(xr + r * ICp + nfull * 32);
      for (int o = 0; o < O; ++o) acc[r][o] = _mm512_dpbf16_ps(acc[r][o], xv, (__m512bh)wv[o]);
    }
  }
  tile_epilogue<R, O>(out, OC, r0, o0, acc, bias, accumulate);
}

// bf16 and q8_0: 16 accumulators + 4 weight vectors + the row's operands
constexpr int kTileRows = 4, kTileOuts = 4;

using Bf16TileFn = void (*)(float*, const uint16_t*, int, const uint16_t*, int, int, int64_t, int, int, __mmask32,
                            const float*, bool);
template <int R>
constexpr Bf16TileFn bf16_tile_for(int o) {
  return o == 1 ? bf16_tile<R, 1> : o == 2 ? bf16_tile<R, 2> : o == 3 ? bf16_tile<R, 3> : bf16_tile<R, 4>;
}

AJI_BF16_TARGET void bf16_rows_avx512(float* out, const Prepared& P, const PackedWeight& w, const float* bias,
                                      int64_t N, bool accumulate) {
  static const Bf16TileFn table[kTileRows][kTileOuts] = {
      {bf16_tile_for<1>(1), bf16_tile_for<1>(2), bf16_tile_for<1>(3), bf16_tile_for<1>(4)},
      {bf16_tile_for<2>(1), bf16_tile_for<2>(2), bf16_tile_for<2>(3), bf16_tile_for<2>(4)},
      {bf16_tile_for<3>(1), bf16_tile_for<3>(2), bf16_tile_for<3>(3), bf16_tile_for<3>(4)},
      {bf16_tile_for<4>(1), bf16_tile_for<4>(2), bf16_tile_for<4>(3), bf16_tile_for<4>(4)},
  };
  const int OC = w.rows(), IC = w.cols();
  const int ICp = (IC + 31) / 32 * 32;
  const int nfull = IC / 32;
  const __mmask32 tail = IC % 32 ? static_cast<__mmask32>((1u << (IC % 32)) - 1) : 0;
  if (N == 1) {
    // One row: weight rows one after another, inlined (a call per row through the table
    // and dynamic scheduling cost 1.7x on an in-cache weight), a single stream through
    // memory (tiles of 2 or 4 weight rows streamed a weight from DRAM 2x slower, prefetch or
    // not), left to the hardware prefetcher (software prefetch 1-4 rows ahead: 5-15% slower).
#pragma omp parallel for if (parallel_worth((int64_t)OC * IC)) schedule(static)
    for (int o = 0; o < OC; ++o)
      bf16_tile<1, 1>(out, P.xb.data(), ICp, w.bf16(), IC, OC, 0, o, nfull, tail, bias, accumulate);
    return;
  }
  for_tiles<kTileRows, kTileOuts>(N, OC, (int64_t)OC * IC, [&](int nr, int no, int64_t r0, int64_t o0) {
    table[nr - 1][no - 1](out, P.xb.data(), ICp, w.bf16(), IC, OC, r0, static_cast<int>(o0), nfull, tail, bias,
                          accumulate);
  });
}
// 16 stored q8_0 values (int8 + 128) -> 16 fp32 of the int8 values.
AJI_BF16_TARGET inline __m512 q8_widen(const uint8_t* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m512i u = _mm512_mask_cvtepu8_epi32(_mm512_setzero_si512(), 0xFFFF, v);
  return _mm512_mask_cvtepi32_ps(_mm512_setzero_ps(), 0xFFFF, _mm512_sub_epi32(u, _mm512_set1_epi32(128)));
}

// q8_0 rows [o0, o0+n) as bf16 bits (n, IC): d * (q - 128) in fp32 (the dequantize_rows
// values), rounded to nearest even by vcvtne2ps2bf16, one 32-weight block per iteration.
AJI_BF16_TARGET void q8_rows_to_bf16_avx512(const PackedWeight& w, int o0, int n, uint16_t* out) {
  const size_t at = static_cast<size_t>(o0) * w.cols(), blocks = static_cast<size_t>(n) * w.cols() / kQ8BlockSize;
  const uint8_t* q = w.qu() + at;
  const uint16_t* d = w.d() + at / kQ8BlockSize;
  for (size_t b = 0; b < blocks; ++b) {
    const __m512 scale = _mm512_set1_ps(f16_to_f32(d[b]));
    const __m512 flo = _mm512_mul_ps(scale, q8_widen(q + b * 32));
    const __m512 fhi = _mm512_mul_ps(scale, q8_widen(q + b * 32 + 16));
    _mm512_storeu_si512(out + b * 32, (__m512i)_mm512_cvtne2ps_pbh(fhi, flo));
  }
}
#undef AJI_BF16_TARGET

#define AJI_VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))
// Tiles of R activation rows x O weight rows, as bf16_tile. Output (r, o) is one chain over
// the block pairs p in order: is = vpdpbusd(cx[r, p], w[o, p], x[r, p]) (-128 sum(x) +
// sum (w + 128) x = sum w x, per lane), acc = fma(float(is), dwe[o, p] * dxe[r, p], acc),
// then hsum512, + bias, + out when accumulating: the same operations whatever R and O are.
// dwe[o, p]: lanes 0-7 the weight row's scale of block 2p, lanes 8-15 of block 2p+1 (0
// past nb), permuted out of 16 scales converted at a time. The last pair may hold one
// block (its upper half masked to zero).
template <int R, int O>
AJI_VNNI_TARGET [[gnu::always_inline]] inline void q8_tile(float* out, const Prepared& P, const PackedWeight& w, int64_t r0, int o0,
                                    const __m512i* idx, const float* bias, bool accumulate) {
  const int OC = w.rows(), IC = w.cols(), nb = IC / 32, npair = (nb + 1) / 2, nfullp = nb / 2;
  __m512 acc[R][O], dw16[O];
  for (int o = 0; o < O; ++o) {
    dw16[o] = _mm512_setzero_ps();
    for (int r = 0; r < R; ++r) acc[r][o] = _mm512_setzero_ps();
  }
  const uint8_t* wo = w.qu() + static_cast<int64_t>(o0) * IC;
  const uint16_t* dr = w.d() + static_cast<int64_t>(o0) * nb;
  const int8_t* xq = P.xq.data() + r0 * IC;
  const int32_t* cx = P.cx.data() + r0 * npair * 16;
  const float* dxe = P.dxe.data() + r0 * npair * 16;
  const uint8_t* next = O > 1 && r0 == 0 && o0 + 3 * O <= OC ? wo + 2 * O * IC : nullptr;
  for (int g = 0; g < npair; g += 8) {  // 16 scales of each weight row converted at a time
    const int nleft = std::min(16, nb - 2 * g);
    for (int o = 0; o < O; ++o) {
      const __m256i h = _mm256_maskz_loadu_epi16(static_cast<__mmask16>((1u << nleft) - 1), dr + o * nb + 2 * g);
      dw16[o] = _mm512_mask_cvtph_ps(_mm512_setzero_ps(), 0xFFFF, h);
    }
    const int pend = std::min(npair, g + 8);
    for (int p = g; p < pend; ++p) {
      const __mmask64 m = p < nfullp ? ~0ull : 0xFFFFFFFFull;
      __m512i wv[O];
      __m512 dwe[O];
      if (next)
        for (int o = 0; o < O; ++o) _mm_prefetch(reinterpret_cast<const char*>(next + o * IC + p * 64), _MM_HINT_T2);
      for (int o = 0; o < O; ++o) {
        wv[o] = _mm512_maskz_loadu_epi8(m, wo + o * IC + p * 64);
        dwe[o] = _mm512_mask_permutexvar_ps(_mm512_setzero_ps(), 0xFFFF, idx[p - g], dw16[o]);
      }
      for (int r = 0; r < R; ++r) {
        const __m512i xv = _mm512_maskz_loadu_epi8(m, xq + r * IC + p * 64);
        const __m512 dx = _mm512_loadu_ps(dxe + (r * npair + p) * 16);
        for (int o = 0; o < O; ++o) {
          const __m512i is = _mm512_dpbusd_epi32(_mm512_loadu_si512(cx + (r * npair + p) * 16), wv[o], xv);
          const __m512 sc = _mm512_mul_ps(dwe[o], dx);
          acc[r][o] = _mm512_fmadd_ps(_mm512_mask_cvtepi32_ps(_mm512_setzero_ps(), 0xFFFF, is), sc, acc[r][o]);
        }
      }
    }
  }
  tile_epilogue<R, O>(out, OC, r0, o0, acc, bias, accumulate);
}


using Q8TileFn = void (*)(float*, const Prepared&, const PackedWeight&, int64_t, int, const __m512i*, const float*,
                          bool);
template <int R>
constexpr Q8TileFn q8_tile_for(int o) {
  return o == 1 ? q8_tile<R, 1> : o == 2 ? q8_tile<R, 2> : o == 3 ? q8_tile<R, 3> : q8_tile<R, 4>;
}

AJI_VNNI_TARGET void q8_rows_avx512(float* out, const Prepared& P, const PackedWeight& w, const float* bias, int64_t N,
                                    bool accumulate) {
  static const Q8TileFn table[kTileRows][kTileOuts] = {
      {q8_tile_for<1>(1), q8_tile_for<1>(2), q8_tile_for<1>(3), q8_tile_for<1>(4)},
      {q8_tile_for<2>(1), q8_tile_for<2>(2), q8_tile_for<2>(3), q8_tile_for<2>(4)},
      {q8_tile_for<3>(1), q8_tile_for<3>(2), q8_tile_for<3>(3), q8_tile_for<3>(4)},
      {q8_tile_for<4>(1), q8_tile_for<4>(2), q8_tile_for<4>(3), q8_tile_for<4>(4)},
  };
  const int OC = w.rows(), IC = w.cols();
  __m512i idx[8];  // idx[p]: lanes 0-7 take scale 2p, lanes 8-15 scale 2p+1 (of a group of 16)
  for (int p = 0; p < 8; ++p)
    idx[p] = _mm512_mask_blend_epi32(0xFF00, _mm512_set1_epi32(2 * p), _mm512_set1_epi32(2 * p + 1));
  if (N == 1) {
    // One row: tiles of 4 weight rows, inlined. Unlike bf16's one-row path (one weight row at
    // a time is fastest there), a q8_0 block dot is bound by its loads (the activation's
    // bytes, its block scales and its -128 sums, besides the weight), and a tile of 4 shares
    // them: 1.55-1.6x faster on in-cache weights (1152x384, 384x1024), and faster on
    // llama-small's, which stream from DRAM. The same bits per output (each its own chain;
    // hsum512x4 is hsum512's order).
    const int full = OC / 4;
#pragma omp parallel for if (parallel_worth((int64_t)OC * IC)) schedule(static)
    for (int t = 0; t < full; ++t) q8_tile<1, 4>(out, P, w, 0, 4 * t, idx, bias, accumulate);
    for (int o = 4 * full; o < OC; ++o) q8_tile<1, 1>(out, P, w, 0, o, idx, bias, accumulate);
    return;
  }
  for_tiles<kTileRows, kTileOuts>(N, OC, (int64_t)OC * IC, [&](int nr, int no, int64_t r0, int64_t o0) {
    table[nr - 1][no - 1](out, P, w, r0, static_cast<int>(o0), idx, bias, accumulate);
  });
}
#undef AJI_VNNI_TARGET

// ---- AVX2 + FMA + F16C: every CPU the binary runs on (x86-64-v3) ---------------------------
// bf16: the activations prepared as fp32 (their bf16-rounded values, xf (N, IC16), IC16 = IC
// rounded up to 16, zero padded), each 16-element chunk stored even elements then odd. A
// weight chunk of 16 bf16 loaded as 8 32-bit lanes holds w[2i] in lane i's low half and
// w[2i+1] in its high half, so lane << 16 is w[2i] as fp32 and lane & 0xFFFF0000 is w[2i+1]:
// no conversion instructions. Output (r, o) is two chains over the chunks in order,
// e = fma(x_even, w_even, e) and d = fma(x_odd, w_odd, d) (a last partial chunk of the
// weight read through a zero-padded copy), then hsum_halves(e, d) + bias (+ out): the same
// operations whatever R and O are (batch invariance). A tile runs the even chains over all
// chunks, then the odd ones (independent chains: the same bits as side by side), leaving
// registers for 2 rows x 4 outputs: half the re-reads of the activations (from L2 at batch
// 16) of 3 x 2 tiles with both chains side by side, 1.11x (1 thread) and 1.39x (2 threads)
// faster at batch 16 on llama-small, AMD Zen 3 (4 x 3 tiles: 0.90-0.96x, registers spilled).
constexpr int kAvx2Bf16Rows = 2, kAvx2Bf16Outs = 4;  // 8 accumulators + 4 weight vectors + 1 input

// One pass (H = 0: even elements, w << 16; H = 1: odd ones, w & 0xFFFF0000) over chunk k's
// 16 weights of each of the O rows at wp[o].
template <int H, int R, int O>
[[gnu::always_inline]] inline void bf16_chunk_avx2(__m256 (&acc)[R][O], const uint16_t* const (&wp)[O], const float* xr,
                                                   int64_t xstride) {
  __m256 wv[O];
  for (int o = 0; o < O; ++o) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp[o]));
    wv[o] = _mm256_castsi256_ps(H == 0 ? _mm256_slli_epi32(v, 16)
                                       : _mm256_and_si256(v, _mm256_set1_epi32(static_cast<int>(0xFFFF0000u))));
  }
  for (int r = 0; r < R; ++r) {
    const __m256 xv = _mm256_loadu_ps(xr + r * xstride + 8 * H);
    for (int o = 0; o < O; ++o) acc[r][o] = _mm256_fmadd_ps(xv, wv[o], acc[r][o]);
  }
}

template <int H, int R, int O>
[[gnu::always_inline]] inline void bf16_pass_avx2(__m256 (&acc)[R][O], const float* xr, int IC16, const uint16_t* wo,
                                                  int IC) {
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < O; ++o) acc[r][o] = _mm256_setzero_ps();
  const int nfull = IC / 16, rem = IC % 16;
  for (int k = 0; k < nfull; ++k) {
    const uint16_t* wp[O];
    for (int o = 0; o < O; ++o) wp[o] = wo + static_cast<int64_t>(o) * IC + k * 16;
    bf16_chunk_avx2<H, R, O>(acc, wp, xr + k * 16, IC16);
  }
  if (rem) {
    alignas(32) uint16_t tail[O][16] = {};
    const uint16_t* wp[O];
    for (int o = 0; o < O; ++o) {
      std::memcpy(tail[o], wo + static_cast<int64_t>(o) * IC + nfull * 16, sizeof(uint16_t) * rem);
      wp[o] = tail[o];
    }
    bf16_chunk_avx2<H, R, O>(acc, wp, xr + nfull * 16, IC16);
  }
}

template <int R, int O>
void bf16_tile_avx2(float* out, const float* xf, int IC16, const uint16_t* w, int IC, int OC, int64_t r0, int o0,
                    const float* bias, bool accumulate) {
  const uint16_t* wo = w + static_cast<int64_t>(o0) * IC;
  const float* xr = xf + r0 * IC16;
  __m256 e[R][O], d[R][O];
  bf16_pass_avx2<0, R, O>(e, xr, IC16, wo, IC);
  bf16_pass_avx2<1, R, O>(d, xr, IC16, wo, IC);
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < O; ++o) finish(out, OC, r0 + r, o0 + o, hsum_halves(e[r][o], d[r][o]), bias, accumulate);
}

// One chunk of both chains: v the 16 weights as 8 32-bit lanes, x the chunk's prepared
// activations (even elements, then odd).
[[gnu::always_inline]] inline void bf16_both_avx2(__m256& e, __m256& d, __m256i v, const float* x) {
  e = _mm256_fmadd_ps(_mm256_loadu_ps(x), _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)), e);
  d = _mm256_fmadd_ps(_mm256_loadu_ps(x + 8),
                      _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(static_cast<int>(0xFFFF0000u)))), d);
}

// One row against weight row o with both chains side by side (four loads in flight on one
// stream): the same chains, so the same bits as any tile; for one row, the two-pass tile
// read memory 1.25x slower (llama-17m and llama-small, 1 thread, AMD Zen 3).
void bf16_row_avx2(float* out, const float* xf, const uint16_t* w, int IC, int o, const float* bias, bool accumulate) {
  __m256 e = _mm256_setzero_ps(), d = _mm256_setzero_ps();
  const uint16_t* wo = w + static_cast<int64_t>(o) * IC;
  const int nfull = IC / 16, rem = IC % 16;
  for (int k = 0; k < nfull; ++k)
    bf16_both_avx2(e, d, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wo + k * 16)), xf + k * 16);
  if (rem) {
    alignas(32) uint16_t tail[16] = {};
    std::memcpy(tail, wo + nfull * 16, sizeof(uint16_t) * rem);
    bf16_both_avx2(e, d, _mm256_load_si256(reinterpret_cast<const __m256i*>(tail)), xf + nfull * 16);
  }
  finish(out, 0, 0, o, hsum_halves(e, d), bias, accumulate);
}

using Bf16Avx2Fn = void (*)(float*, const float*, int, const uint16_t*, int, int, int64_t, int, const float*, bool);
template <int R>
constexpr Bf16Avx2Fn bf16_avx2_for(int o) {
  return o == 1 ? bf16_tile_avx2<R, 1> : o == 2 ? bf16_tile_avx2<R, 2> : o == 3 ? bf16_tile_avx2<R, 3> : bf16_tile_avx2<R, 4>;
}

void bf16_rows_avx2(float* out, const Prepared& P, const PackedWeight& w, const float* bias, int64_t N,
                    bool accumulate) {
  static const Bf16Avx2Fn table[kAvx2Bf16Rows][kAvx2Bf16Outs] = {
      {bf16_avx2_for<1>(1), bf16_avx2_for<1>(2), bf16_avx2_for<1>(3), bf16_avx2_for<1>(4)},
      {bf16_avx2_for<2>(1), bf16_avx2_for<2>(2), bf16_avx2_for<2>(3), bf16_avx2_for<2>(4)},
  };
  const int OC = w.rows(), IC = w.cols(), IC16 = (IC + 15) / 16 * 16;
  const float* xf = P.xf.data();
  if (N == 1) {  // one row: one weight row after another, a single stream (as bf16_rows_avx512)
#pragma omp parallel for if (parallel_worth((int64_t)OC * IC)) schedule(static)
    for (int o = 0; o < OC; ++o) bf16_row_avx2(out, xf, w.bf16(), IC, o, bias, accumulate);
    return;
  }
  for_tiles<kAvx2Bf16Rows, kAvx2Bf16Outs>(N, OC, (int64_t)OC * IC, [&](int nr, int no, int64_t r0, int64_t o0) {
    table[nr - 1][no - 1](out, xf, IC16, w.bf16(), IC, OC, r0, static_cast<int>(o0), bias, accumulate);
  });
}

// q8_0: ggml's AVX2 block dot. The weight's stored bytes (int8 + 128) xor 0x80 are the int8
// values; vpmaddubsw takes the activation's magnitudes |x| (prepared, unsigned) and the
// weight with the activation's sign (vpsignb), so each product is x w exactly and a pair's
// sum is at most 2 * 127 * 127 (no int16 saturation: both sides are within +-127); vpmaddwd
// by ones gives 8 int32 lanes of 4 products each, exact in fp32. Output (r, o) is one chain
// over the blocks in order, acc = fma(float(isum), d_w[b] * d_x[b], acc), then hsum8 + bias
// (+ out): the same operations whatever R and O are.
constexpr int kAvx2Q8Rows = 4, kAvx2Q8Outs = 2;  // 8 accumulators + 2 weight vectors + the row's

template <int R, int O>
void q8_tile_avx2(float* out, const Prepared& P, const PackedWeight& w, int64_t r0, int o0, const float* bias,
                  bool accumulate) {
  const int OC = w.rows(), IC = w.cols(), nb = IC / 32;
  __m256 acc[R][O];
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < O; ++o) acc[r][o] = _mm256_setzero_ps();
  const uint8_t* wo = w.qu() + static_cast<int64_t>(o0) * IC;
  const uint16_t* dr = w.d() + static_cast<int64_t>(o0) * nb;
  const int8_t* xq = P.xq.data() + r0 * IC;
  const uint8_t* xa = P.xa.data() + r0 * IC;
  const float* dx = P.dx.data() + r0 * nb;
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80)), ones = _mm256_set1_epi16(1);
  for (int b = 0; b < nb; ++b) {
    __m256i wv[O];
    float dw[O];
    for (int o = 0; o < O; ++o) {
      wv[o] = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wo + o * IC + b * 32)), flip);
      dw[o] = _cvtsh_ss(dr[o * nb + b]);
    }
    for (int r = 0; r < R; ++r) {
      const __m256i xs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + r * IC + b * 32));
      const __m256i xm = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xa + r * IC + b * 32));
      const float dxr = dx[r * nb + b];
      for (int o = 0; o < O; ++o) {
        const __m256i is = _mm256_madd_epi16(_mm256_maddubs_epi16(xm, _mm256_sign_epi8(wv[o], xs)), ones);
        acc[r][o] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_set1_ps(dw[o] * dxr), acc[r][o]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int o = 0; o < O; ++o) finish(out, OC, r0 + r, o0 + o, vm::hsum8(acc[r][o]), bias, accumulate);
}

using Q8Avx2Fn = void (*)(float*, const Prepared&, const PackedWeight&, int64_t, int, const float*, bool);
template <int R>
constexpr Q8Avx2Fn q8_avx2_for(int o) {
  return o == 1 ? q8_tile_avx2<R, 1> : q8_tile_avx2<R, 2>;
}

void q8_rows_avx2(float* out, const Prepared& P, const PackedWeight& w, const float* bias, int64_t N, bool accumulate) {
  static const Q8Avx2Fn table[kAvx2Q8Rows][kAvx2Q8Outs] = {
      {q8_avx2_for<1>(1), q8_avx2_for<1>(2)},
      {q8_avx2_for<2>(1), q8_avx2_for<2>(2)},
      {q8_avx2_for<3>(1), q8_avx2_for<3>(2)},
      {q8_avx2_for<4>(1), q8_avx2_for<4>(2)},
  };
  const int OC = w.rows(), IC = w.cols();
  if (N == 1) {
    // One row: one weight row after another, a single stream. Unlike q8_rows_avx512 (tiles of
    // 4 weight rows there), tiles of 4 measured 1.26x (llama-17m) and 1.55x (llama-small)
    // slower on AMD Zen 3: four interleaved streams through memory.
#pragma omp parallel for if (parallel_worth((int64_t)OC * IC)) schedule(static)
    for (int o = 0; o < OC; ++o) q8_tile_avx2<1, 1>(out, P, w, 0, o, bias, accumulate);
    return;
  }
  for_tiles<kAvx2Q8Rows, kAvx2Q8Outs>(N, OC, (int64_t)OC * IC, [&](int nr, int no, int64_t r0, int64_t o0) {
    table[nr - 1][no - 1](out, P, w, r0, static_cast<int>(o0), bias, accumulate);
  });
}

// Portable: the same formats in plain loops (each row on its own: batch-invariant).
void bf16_rows_portable(float* out, const Prepared& P, const PackedWeight& w, const float* bias, int64_t N,
                        bool accumulate) {
  const int OC = w.rows(), IC = w.cols(), ICp = (IC + 31) / 32 * 32;
#pragma omp parallel for if (parallel_worth((int64_t)OC * IC)) schedule(static)
  for (int o = 0; o < OC; ++o) {
    const uint16_t* wr = w.bf16() + static_cast<int64_t>(o) * IC;
    for (int64_t r = 0; r < N; ++r) {
      const uint16_t* xr = P.xb.data() + r * ICp;
      float s[8] = {};
      int k = 0;
      for (; k + 8 <= IC; k += 8)
        for (int j = 0; j < 8; ++j) s[j] += bf16_bits_to_f32(xr[k + j]) * bf16_bits_to_f32(wr[k + j]);
      for (; k < IC; ++k) s[0] += bf16_bits_to_f32(xr[k]) * bf16_bits_to_f32(wr[k]);
      finish(out, OC, r, o, ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])), bias, accumulate);
    }
  }
}

void q8_rows_portable(float* out, const Prepared& P, const PackedWeight& w, const float* bias, int64_t N,
                      bool accumulate) {
  const int OC = w.rows(), IC = w.cols(), nb = IC / 32;
#pragma omp parallel for if (parallel_worth((int64_t)OC * IC)) schedule(static)
  for (int o = 0; o < OC; ++o) {
    const uint8_t* wr = w.qu() + static_cast<int64_t>(o) * IC;
    const uint16_t* dr = w.d() + static_cast<int64_t>(o) * nb;
    for (int64_t r = 0; r < N; ++r) {
      const int8_t* xr = P.xq.data() + r * IC;
      float s = 0.0f;
      for (int b = 0; b < nb; ++b) {
        int32_t is = 0;
        for (int j = 0; j < 32; ++j) is += static_cast<int32_t>(xr[b * 32 + j]) * (wr[b * 32 + j] - 128);
        s += f16_to_f32(dr[b]) * P.dx[r * nb + b] * static_cast<float>(is);
      }
      finish(out, OC, r, o, s, bias, accumulate);
    }
  }
}

enum class RowIsa { kAvx512, kAvx2, kPortable };

void prepare(Prepared& P, const float* inp, int64_t N, int IC, WeightType t, RowIsa isa) {
  if (t == WeightType::kBF16 && isa == RowIsa::kAvx2) {
    const int IC16 = (IC + 15) / 16 * 16;
    P.xf.assign(static_cast<size_t>(N) * IC16, 0.0f);
    for (int64_t r = 0; r < N; ++r)
      for (int k = 0; k < IC; ++k) {
        const int j = k % 16;
        P.xf[r * IC16 + (k - j) + (j % 2) * 8 + j / 2] = bf16_bits_to_f32(f32_to_bf16(inp[r * IC + k]));
      }
    return;
  }
  if (t == WeightType::kBF16) {
    const int ICp = (IC + 31) / 32 * 32;
    P.xb.resize(static_cast<size_t>(N) * ICp);
    for (int64_t r = 0; r < N; ++r) {  // row by row: the same rounding whatever N is
      round_to_bf16(P.xb.data() + r * ICp, inp + r * IC, IC);
      std::fill(P.xb.data() + r * ICp + IC, P.xb.data() + (r + 1) * ICp, uint16_t{0});
    }
    return;
  }
  const int nb = IC / 32, npair = (nb + 1) / 2;
  P.xq.resize(static_cast<size_t>(N) * IC);
  P.dxh.resize(static_cast<size_t>(N) * nb);
  P.dx.resize(static_cast<size_t>(N) * nb);
  for (int64_t r = 0; r < N; ++r) quantize_q8_0_split(inp + r * IC, IC, P.xq.data() + r * IC, P.dxh.data() + r * nb);
  for (size_t i = 0; i < P.dx.size(); ++i) P.dx[i] = f16_to_f32(P.dxh[i]);
  if (isa == RowIsa::kAvx2) {
    P.xa.resize(P.xq.size());
    for (size_t i = 0; i < P.xq.size(); ++i) P.xa[i] = static_cast<uint8_t>(std::abs(static_cast<int>(P.xq[i])));
  }
  if (isa != RowIsa::kAvx512) return;
  P.dxe.assign(static_cast<size_t>(N) * npair * 16, 0.0f);
  P.cx.assign(static_cast<size_t>(N) * npair * 16, 0);
  for (int64_t r = 0; r < N; ++r)
    for (int b = 0; b < nb; ++b) {
      const size_t at = static_cast<size_t>(r * npair + b / 2) * 16 + (b & 1) * 8;
      std::fill_n(P.dxe.data() + at, 8, P.dx[r * nb + b]);
      for (int l = 0; l < 8; ++l) {
        const int8_t* x4 = P.xq.data() + r * IC + b * 32 + l * 4;
        P.cx[at + l] = -128 * (x4[0] + x4[1] + x4[2] + x4[3]);
      }
    }
}

// Many rows: dequantize panels of output rows to fp32 and let dnnl_sgemm multiply.
void dequant_sgemm(float* out, const float* inp, const PackedWeight& w, const float* bias, int64_t N,
                   bool accumulate) {
  const int OC = w.rows(), IC = w.cols();
  constexpr int kPanel = 256;
  static thread_local std::vector<float> panel_buf;  // this (the calling) thread's
  panel_buf.resize(static_cast<size_t>(kPanel) * IC);
  float* const panel = panel_buf.data();  // the OpenMP workers write through this pointer
  for (int o0 = 0; o0 < OC; o0 += kPanel) {
    const int n = std::min(kPanel, OC - o0);
#pragma omp parallel for if (parallel_worth((int64_t)n * IC)) schedule(static)
    for (int i = 0; i < n; ++i) w.dequantize_rows(o0 + i, 1, panel + static_cast<size_t>(i) * IC);
    sgemm('N', 'T', N, n, IC, 1.0f, inp, IC, panel, IC, accumulate ? 1.0f : 0.0f, out + o0, OC);
  }
  if (bias) {
#pragma omp parallel for if (parallel_worth(N * OC)) schedule(static)
    for (int64_t r = 0; r < N; ++r)
      for (int j = 0; j < OC; ++j) out[r * OC + j] += bias[j];
  }
}
// Many rows on a CPU with native bf16 products (AVX512-BF16, AMX): oneDNN's bf16 matmul with
// the activations rounded to bf16 (as the row kernel rounds them), against the packed bf16
// weight itself, or against panels of q8_0 rows dequantized and rounded to bf16. Twice the
// multiply rate of dnnl_sgemm over fp32 panels, and half the panel bytes.
void bf16_gemm_rows(float* out, const float* inp, const PackedWeight& w, const float* bias, int64_t N,
                    bool accumulate) {
  const int OC = w.rows(), IC = w.cols();
  static thread_local std::vector<uint16_t> inp_buf;
  inp_buf.resize(static_cast<size_t>(N) * IC);
  round_to_bf16(inp_buf.data(), inp, N * IC);
  if (w.type() == WeightType::kBF16) {
    gemm_bf16('N', 'T', N, OC, IC, inp_buf.data(), IC, w.bf16(), IC, accumulate, out, OC, bias);
    return;
  }
  constexpr int kPanel = 256;
  static thread_local std::vector<uint16_t> panel_bf16;
  panel_bf16.resize(static_cast<size_t>(kPanel) * IC);
  uint16_t* const pb = panel_bf16.data();  // the OpenMP workers write through this pointer
  for (int o0 = 0; o0 < OC; o0 += kPanel) {
    const int n = std::min(kPanel, OC - o0);
#pragma omp parallel for if (parallel_worth((int64_t)n * IC)) schedule(static)
    for (int i = 0; i < n; ++i) q8_rows_to_bf16_avx512(w, o0 + i, 1, pb + static_cast<size_t>(i) * IC);
    gemm_bf16('N', 'T', N, n, IC, inp_buf.data(), IC, pb, IC, accumulate, out + o0, OC, bias ? bias + o0 : nullptr);
  }
}
}  // namespace

void packed_matmul_forward(float* out, const float* inp, const PackedWeight& w, const float* bias, int64_t N,
                           bool accumulate) {
  AJI_CHECK(!w.empty(), "packed_matmul_forward: an empty PackedWeight (fp32 weights go through matmul_forward)");
  if (N <= 0) return;
  if (N > kPackedRows) {
    if (cpu_bf16() && bf16_supported())  // cpu_bf16: false when forced portable
      bf16_gemm_rows(out, inp, w, bias, N, accumulate);
    else
      dequant_sgemm(out, inp, w, bias, N, accumulate);
    return;
  }
  static thread_local Prepared P;
  const bool bf16 = w.type() == WeightType::kBF16;
  const RowIsa isa = (bf16 ? cpu_bf16() : cpu_vnni()) ? RowIsa::kAvx512 : cpu_avx2() ? RowIsa::kAvx2 : RowIsa::kPortable;
  prepare(P, inp, N, w.cols(), w.type(), isa);
  switch (isa) {
    case RowIsa::kAvx512:
      return bf16 ? bf16_rows_avx512(out, P, w, bias, N, accumulate) : q8_rows_avx512(out, P, w, bias, N, accumulate);
    case RowIsa::kAvx2:
      return bf16 ? bf16_rows_avx2(out, P, w, bias, N, accumulate) : q8_rows_avx2(out, P, w, bias, N, accumulate);
    case RowIsa::kPortable:
      return bf16 ? bf16_rows_portable(out, P, w, bias, N, accumulate) : q8_rows_portable(out, P, w, bias, N, accumulate);
  }
}

const char* packed_kernel_isa(WeightType t) {
  if (t == WeightType::kBF16) return cpu_bf16() ? "avx512-bf16" : cpu_avx2() ? "avx2" : "portable";
  if (t == WeightType::kQ8_0) return cpu_vnni() ? "avx512-vnni" : cpu_avx2() ? "avx2" : "portable";
  return "fp32";
}

void packed_force_isa(PackedIsa isa) { g_isa = isa; }

}  // namespace aji::kernels::cpu
