// Low-precision weights for generation: bf16 and Q8_0 copies of the weight matrices that
// decoding streams once per token, and the products over them.
//
// Formats (both stored (OC, IC), the input dimension contiguous, whatever the fp32 layout was):
//   kBF16  one bfloat16 per weight (round to nearest even, base/half.h).
//   kQ8_0  ggml's Q8_0: blocks of 32 weights along the input dimension, each block one fp16
//          scale d = max|w|/127 and 32 int8 round(w/d) (quantize_q8_0, llama.cpp's rounding).
//          Stored split: the int8 values plus 128 as uint8 (OC*IC bytes: the unsigned operand
//          of vpdpbusd) and the fp16 scales (OC*IC/32), the same 34 bytes per block as ggml's
//          block_q8_0 and the same numbers.
// Products, out (N,OC) = inp (N,IC) W^T (+ bias), as llama.cpp computes them:
//   kBF16  the activations rounded to bf16, vdpbf16ps products, fp32 accumulation.
//   kQ8_0  each activation row quantized per block of 32 like the weights (fp16 scale), the
//          integer block dot products with VNNI vpdpbusd (sum (w+128) x, started from
//          -128 sum x so it is exact), then sum_b d_w[b] d_x[b] isum[b] in fp32.
// N <= kPackedRows: register tiles of 4 rows x 4 weight rows (the weight read once for all
// rows; one row alone a single sequential stream), threads over blocks of weight rows. Each row's result is the same bits whatever N and the other rows are (batch
// invariance of Model::forward_decode). N > kPackedRows (prompt processing): on a CPU with
// native bf16 products (bf16_gemm.h), oneDNN's bf16 matmul with the activations rounded to
// bf16, against the bf16 weight itself or q8_0 panels dequantized and rounded to bf16 (a
// q8_0 weight d*q then carries bf16's 8 significant bits, as llama.cpp's q8_0 prompt path
// carries 8-bit activations); elsewhere the weight is dequantized to fp32 in panels of
// output rows and multiplied with dnnl_sgemm (fp32 activations). Both measured faster than
// the row kernel there.
// Runtime dispatch: AVX512-BF16 / AVX512-VNNI when the CPU has them, else AVX2 + FMA + F16C
// (the binary's x86-64-v3 baseline: bf16 widened to fp32 by shifts and FMAs; q8_0 with
// ggml's AVX2 vpmaddubsw block dot); portable loops only for tests. Each batch-invariant.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "aji/base/aligned.h"
#include "aji/kernels/cpu/ops.h"

namespace aji::kernels::cpu {

enum class WeightType { kF32, kBF16, kQ8_0 };
const char* weight_type_name(WeightType t);  // "fp32", "bf16", "q8_0"
// "fp32" | "bf16" | "q8_0" (also "f32"); anything else is an aji::Error naming `source` and the choices.
WeightType parse_weight_type(const std::string& text, const std::string& source);

// ggml's Q8_0 block: n (a multiple of 32) floats -> n/32 blocks of 34 bytes (fp16 scale d =
// max|x|/127, then 32 int8 round-half-away(x/d), quantize_row_q8_0_ref); and back.
constexpr size_t kQ8BlockSize = 32;
constexpr size_t kQ8BlockBytes = 34;
void quantize_q8_0(const float* x, size_t n, uint8_t* out);
void dequantize_q8_0(const uint8_t* in, size_t n, float* out);
// The same numbers split: q (n int8), d (n/32 fp16 bit patterns).
void quantize_q8_0_split(const float* x, size_t n, int8_t* q, uint16_t* d);

constexpr int kPackedRows = 16;  // rows the row kernel takes; more go to dequantize + sgemm

// A weight matrix in bf16 or Q8_0, stored (OC, IC).
class PackedWeight {
 public:
  PackedWeight() = default;
  // w is (OC,IC) for kOutIn, (IC,OC) for kInOut (GPT-2's Conv1D; transposed here).
  // kQ8_0 needs IC % 32 == 0 (else aji::Error; callers keep such a matrix fp32).
  // type kF32 gives an empty PackedWeight (empty() true).
  static PackedWeight pack(const float* w, int OC, int IC, WeightLayout layout, WeightType type);
  bool empty() const { return type_ == WeightType::kF32; }
  WeightType type() const { return type_; }
  int rows() const { return oc_; }
  int cols() const { return ic_; }
  size_t bytes() const { return bf16_.size() * 2 + qu_.size() + d_.size() * 2; }
  // Rows [o0, o0+n) as fp32 (n, IC): the exact values the products use.
  void dequantize_rows(int o0, int n, float* out) const;
  const uint16_t* bf16() const { return bf16_.data(); }
  const uint8_t* qu() const { return qu_.data(); }  // int8 value + 128
  const uint16_t* d() const { return d_.data(); }

 private:
  WeightType type_ = WeightType::kF32;
  int oc_ = 0, ic_ = 0;
  AlignedVector<uint16_t> bf16_;
  AlignedVector<uint8_t> qu_;
  AlignedVector<uint16_t> d_;
};

// out (N,OC) = inp (N,IC) x W^T (+ bias (OC) if not null); accumulate: out += instead of =.
void packed_matmul_forward(float* out, const float* inp, const PackedWeight& w, const float* bias, int64_t N,
                           bool accumulate = false);

// Which row kernel runs on this CPU: "avx512-bf16" / "avx512-vnni" where the CPU has them,
// else "avx2" (the binary's baseline), or "portable" when a test forces it.
const char* packed_kernel_isa(WeightType t);
// Tests: the CPU's best kernels (kBest), the AVX2 ones even on an AVX-512 CPU (kAvx2), or the
// portable loops (kPortable).
enum class PackedIsa { kBest, kAvx2, kPortable };
void packed_force_isa(PackedIsa isa);

}  // namespace aji::kernels::cpu
