// fp32 products of a few activation rows with a weight matrix (token-by-token decoding,
// a decode batch of a few dozen rows): the weight is streamed once for all rows, and every
// row's result is the same bits whatever N is and whatever the other rows hold (the batch
// invariance of Model::forward_decode and of a seeded request in `aji serve`).
//
// Each output element is one fused multiply-add chain over k in a fixed order (16 lanes,
// then a fixed reduction tree), computed in register tiles of up to 4 rows x 4 outputs
// (OutIn) or 8 rows x 32 outputs (InOut); the tile shape changes which elements are
// computed together, never how one is computed.
#pragma once

#include <cstdint>

namespace aji::kernels::cpu {

// AVX-512F tiles where the CPU has it, else AVX2 ones with the same bits (each 16-lane chain
// as two 256-bit halves).
//
// out (N,OC) (+)= inp (N,IC) W^T (+ bias), W stored (OC,IC); any N (rows in blocks of 64, the
// weight streamed once per block).
void small_rows_outin(float* out, const float* inp, const float* w, const float* bias, int64_t N, int IC, int OC,
                      bool accumulate);
// out (N,OC) (+)= inp (N,IC) W (+ bias), W stored (IC,OC) (GPT-2's Conv1D). As above.
void small_rows_inout(float* out, const float* inp, const float* w, const float* bias, int64_t N, int IC, int OC,
                      bool accumulate);
// "avx512f" or "avx2": the kernels that run. Tests: the AVX2 ones even on an AVX-512 CPU.
const char* small_rows_isa();
void small_rows_force_avx2(bool on);

}  // namespace aji::kernels::cpu
