// bf16 matrix products with fp32 accumulation, for mixed-precision training.
//
// The inputs of a product are rounded to bfloat16 (round to nearest even; 8 significant
// bits), multiplied with fp32 accumulation and written to an fp32 output. Every product
// goes through oneDNN's matmul primitive, which dispatches at run time to AVX512-BF16
// (`vdpbf16ps`, AMD Zen 4 / Intel Cooper Lake) or AMX (Sapphire Rapids and later); the
// binary itself needs only x86-64-v3. A CPU without either still computes the same
// products: on oneDNN's slower bf16 paths (AVX-512 without BF16), or, where oneDNN has no
// bf16 matmul (AVX2 only, e.g. AMD Zen 3), as fp32 sgemm on the operands widened to fp32.
// bf16_supported() is false there: the trainers then stay in fp32, see
// train/trainer_run.h's resolve_precision.
//
// Primitives are created once per (shape, strides, bias, accumulate, threads) and cached:
// creating one costs far more than running a small product.
//
// The fp32 entry points (matmul_forward / matmul_backward in ops.h) stay as they are; the
// functions here mirror their contracts with the weight given as a bf16 copy.
#pragma once

#include <cstddef>
#include <cstdint>

#include "aji/kernels/cpu/ops.h"

namespace aji::kernels::cpu {

// True when oneDNN runs bf16 dot products natively on this CPU (its effective ISA is
// avx512_core_bf16 or avx512_core_amx; DNNL_MAX_CPU_ISA can lower it).
bool bf16_supported();
// "avx512_core_amx", "avx512_core_bf16" or the ISA oneDNN uses instead (for messages).
const char* bf16_isa_name();

// dst[i] = bf16(src[i]), round to nearest even (NaN stays NaN), n values; AVX512-BF16
// `vcvtne2ps2bf16` where the CPU has it, else the scalar base/half.h conversion.
void round_to_bf16(uint16_t* dst, const float* src, int64_t n);
// The same on the calling thread only (a row inside a kernel's own parallel loop).
void round_to_bf16_row(uint16_t* dst, const float* src, int64_t n);

// C (M,N) = op(A) op(B) (+ bias (N) broadcast over rows) (+ C if accumulate), row-major,
// A and B in bf16 with leading dimensions lda / ldb, op = transpose when 'T', C fp32.
void gemm_bf16(char trans_a, char trans_b, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, bool accumulate, float* C, int64_t ldc, const float* bias = nullptr);

// matmul_forward with bf16 products: out (N,OC) = bf16(inp) (N,IC) x weight (+ bias);
// accumulate: out += . weight_bf16 is the bf16 copy of the weight, in `layout`.
void matmul_forward_bf16(float* out, const float* inp, const uint16_t* weight_bf16, const float* bias, int64_t N,
                         int IC, int OC, WeightLayout layout, bool accumulate = false);
// matmul_backward with bf16 products: dinp (N,IC) = bf16(dout) W^T (overwrite; skipped if
// null); dweight (fp32) += bf16(dout)^T bf16(inp) (or its transpose for kInOut); dbias
// (OC) += column sums of dout in fp32 (if not null).
void matmul_backward_bf16(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                          const uint16_t* weight_bf16, int64_t N, int IC, int OC, WeightLayout layout);
// The same two with the input already in bf16 (an activation the model keeps in bf16, e.g.
// written by rmsnorm_forward's bf16 overload): the same bits as rounding the fp32 input here.
void matmul_forward_bf16(float* out, const uint16_t* inp_bf16, const uint16_t* weight_bf16, const float* bias,
                         int64_t N, int IC, int OC, WeightLayout layout, bool accumulate = false);
void matmul_backward_bf16(float* dinp, float* dweight, float* dbias, const float* dout, const uint16_t* inp_bf16,
                          const uint16_t* weight_bf16, int64_t N, int IC, int OC, WeightLayout layout);
// And with the output gradient too already in bf16 (no bias: its gradient sums fp32 dout),
// its rows ld_dout apart (0: OC); the input either bf16 or fp32 (rounded here).
void matmul_backward_bf16(float* dinp, float* dweight, const uint16_t* dout_bf16, const uint16_t* inp_bf16,
                          const uint16_t* weight_bf16, int64_t N, int IC, int OC, WeightLayout layout,
                          int64_t ld_dout = 0);
void matmul_backward_bf16(float* dinp, float* dweight, const uint16_t* dout_bf16, const float* inp,
                          const uint16_t* weight_bf16, int64_t N, int IC, int OC, WeightLayout layout,
                          int64_t ld_dout = 0);

// A small product on pair-packed bf16 operands, computed on the calling thread (attention's
// tiles, inside its own parallel loop; a library call per tile costs more than the tile):
//   C (M,N) = (C +) sum over p < pairs of  A(i,p) . B(p,j)
// where every operand element is a 32-bit word holding two bf16 values (the low half the
// even k, the high half the odd k: k = 2p, 2p+1) and "." is their two-term dot product,
// accumulated in fp32 (AVX512-BF16 `vdpbf16ps`; a scalar loop computes the same sums on a
// CPU without it). A(i,p) is at A[i * a_rs + p * a_ps] (row-major pairs: a_rs = row words,
// a_ps = 1; pairs packed down the columns: a_rs = 1, a_ps = words per pair row); B(p,j) at
// B[p * ldb + j]. An odd K is padded with a zero in the last pair of both operands.
void pair_product_bf16(int M, int N, int pairs, const uint32_t* A, int64_t a_rs, int64_t a_ps, const uint32_t* B,
                       int64_t ldb, float* C, int64_t ldc, bool accumulate);

// Packing fp32 rows (n rows of w values, ts apart) into pair_product_bf16's operands, rounded
// to nearest even. Pair rows: word (p, e) = (x[2p][e], x[2p+1][e]) at out[p * ld + e] for
// p < (n+1)/2 (an odd n pairs its last row with zeros). Pairs transposed (w even): word
// (p, j) = (x[j][2p], x[j][2p+1]) at out[p * ld + j] for p < w/2.
void pack_bf16_pair_rows(uint32_t* out, int64_t ld, const float* x, int64_t ts, int n, int w);
void pack_bf16_pairs_transposed(uint32_t* out, int64_t ld, const float* x, int64_t ts, int n, int w);

// Number of cached primitives (for tests).
size_t bf16_primitive_cache_size();

}  // namespace aji::kernels::cpu
