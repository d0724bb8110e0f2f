// bf16 matrix products with fp32 accumulation, for mixed-precision training.
//
// The inputs of a product are rounded to bfloat16 (round to nearest even; 8 significant
// bits), multiplied with fp32 accumulation and written to an fp32 output. Every product
// goes through oneDNN's matmul primitive, which dispatches at run time to AVX512-BF16
// (`vdpbf16ps`, AMD Zen 4 / Intel Cooper Lake) or AMX (Sapphire Rapids and later); the
// binary itself needs only x86-64-v3. A CPU without either still computes the same
// numbers on oneDNN's slower paths (bf16_supported() is false there: the trainers then
// stay in fp32, see train/trainer_run.h's resolve_precision).
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

// Number of cached primitives (for tests).
size_t bf16_primitive_cache_size();

}  // namespace aji::kernels::cpu
