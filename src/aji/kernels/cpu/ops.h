// The CPU op layer of the transformer engine: plain functions over float buffers.
// Each op has a shape comment; the model calls these and nothing else touches the
// numbers. A CUDA backend provides the same names in aji/kernels/cuda/.
//
// Conventions
//   N = number of token rows (B*T). Row-major everywhere.
//   Backward functions ACCUMULATE (+=) into parameter gradients. For input gradients
//   each function says whether it overwrites (=) or accumulates (+=): norms accumulate
//   into the residual-stream gradient, everything else overwrites.
//   Threads: OpenMP over rows / (batch, head) with the count set by aji::set_num_threads;
//   matrix products go through oneDNN's dnnl_sgemm.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "aji/kernels/op_types.h"

namespace aji::kernels::cpu {

// ---- matrix products ------------------------------------------------------------------
// WeightLayout (kernels/op_types.h): how a weight matrix is stored.
using kernels::WeightLayout;

// C (M,N) = alpha * op(A) op(B) + beta * C, row-major, op = transpose when 'T'.
void sgemm(char trans_a, char trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// Rows up to which matmul_forward streams each weight once (the small-row kernels of
// small_gemm.h: AVX-512F tiles, or AVX2 ones with the same bits); larger N go
// to the GEMM library. Kept at 4 although the kernels beat oneDNN's sgemm up to 64 rows
// (bench/engine_ops_bench BM_SmallRows, tiny's 384 -> 1152 product, 1 thread: 113-126
// GFLOP/s at 4-32 rows against 40-114): a training or reference forward of 5-32 rows would
// then get other bits than the same rows inside a larger batch (sgemm), and the trainers
// promise "alone = in the batch" (tests/align/dpo_test.cpp). The decode, serving and eval
// passes call matmul_forward_rows (the kernels at any N) themselves.
constexpr int kFewRows = 4;
// out (N,OC) = inp (N,IC) x W (+ bias (OC)); accumulate: out += instead of =.
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N, int IC, int OC,
                    WeightLayout layout, bool accumulate = false);
// matmul_forward with every row computed exactly as matmul_forward computes it alone (N = 1),
// whatever N is and whatever the other rows hold (batch-invariant decoding): the small-row
// kernels (small_gemm.h), AVX-512F where the CPU has it, else AVX2 (the same bits).
// matmul_forward itself does the same up to kFewRows rows and hands larger N to the GEMM
// library, whose blocking depends on N.
void matmul_forward_rows(float* out, const float* inp, const float* weight, const float* bias, int64_t N, int IC, int OC,
                         WeightLayout layout, bool accumulate = false);
// dinp (N,IC) = dout W^T (overwrite; skipped if null); dweight += ; dbias (OC) += (if not null).
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp, const float* weight,
                     int64_t N, int IC, int OC, WeightLayout layout);

// ---- embeddings ----------------------------------------------------------------------
// out (B*T,C) = wte[tokens] (+ wpe[pos] when wpe is not null), pos = positions[b,t] when
// positions (B,T) is given (packed rows restart at 0 per segment), else pos0 + t.
void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B, int T, int C,
                       int pos0 = 0, const int32_t* positions = nullptr);
// dwte[tokens] += dout; dwpe[pos] += dout (when dwpe is not null), pos as in forward. Scatter-add.
void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B, int T, int C,
                        const int32_t* positions = nullptr);

// ---- norms ---------------------------------------------------------------------------
// LayerNorm over the last dim: out (N,C); mean, rstd (N) saved for backward (may be null).
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                       int64_t N, int C, float eps);
// The forwards below with a uint16_t* out write bf16 bits: the fp32 result rounded to
// nearest even (round_to_bf16), for a bf16 product's input kept in bf16 (mixed precision).
void layernorm_forward(uint16_t* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int64_t N, int C, float eps);
// dinp (N,C) += ; dweight (C) += ; dbias (C) += .
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int64_t N, int C);
// RMSNorm (Llama): out = inp * rsqrt(mean(inp^2) + eps) * weight. rstd (N) may be null.
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t N, int C, float eps);
void rmsnorm_forward(uint16_t* out, float* rstd, const float* inp, const float* weight, int64_t N, int C, float eps);
// dinp (N,C) += ; dweight (C) += .
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                      const float* rstd, int64_t N, int C);
// QK-norm: RMSNorm of each head (hd) of the n_heads heads that start at column `col` of
// every row of x (N rows, row stride `stride`), in place, weight (hd) shared by heads.
void head_rmsnorm_forward(float* x, const float* weight, int64_t N, int64_t stride, int col, int n_heads, int hd,
                          float eps);
// Backward of head_rmsnorm_forward given its input x_in (same layout): d (in place) from
// d(out) to d(in); dweight (hd) += .
void head_rmsnorm_backward(float* d, float* dweight, const float* x_in, const float* weight, int64_t N, int64_t stride,
                           int col, int n_heads, int hd, float eps);

// ---- activations ---------------------------------------------------------------------
// GELU, tanh approximation (GPT-2's gelu_new): out (n) from inp (n).
void gelu_forward(float* out, const float* inp, int64_t n);
void gelu_forward(uint16_t* out, const float* inp, int64_t n);  // bf16 bits, as the norms' above
// dinp (n) = dout * gelu'(inp) (overwrite).
void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n);
// SwiGLU: gate_up (N, 2F) = [gate | up]; out (N,F) = silu(gate) * up.
void swiglu_forward(float* out, const float* gate_up, int64_t N, int F);
void swiglu_forward(uint16_t* out, const float* gate_up, int64_t N, int F);  // bf16 bits
// dgate_up (N,2F) from dout (N,F) (overwrite).
void swiglu_backward(float* dgate_up, const float* dout, const float* gate_up, int64_t N, int F);
// The same as bf16 bits (the gradient a bf16 product reads, rounded as it would round it).
void swiglu_backward(uint16_t* dgate_up, const float* dout, const float* gate_up, int64_t N, int F);

// ---- rotary position embedding (Hugging Face Llama: rotate_half) ------------------------
// Table of cos/sin (max_pos, hd/2) computed as transformers does (fp32 inv_freq, fp32 angle).
void rope_table(float* cos_out, float* sin_out, int max_pos, int hd, float theta);
// Rotates, in place, the n_heads heads at column `col` of x (B*T rows, row stride `stride`);
// token t of each sequence sits at position positions[b,t] when positions (B,T) is given,
// else pos0 + t. inverse = true applies the transposed rotation (the backward pass of RoPE).
// With src given (same layout and stride as x), the rotation of src's heads is written to x's
// (out of place: x's other columns are left as they are).
void rope_apply(float* x, const float* cos_t, const float* sin_t, int B, int T, int64_t stride, int col, int n_heads,
                int hd, int pos0, bool inverse, const int32_t* positions = nullptr, const float* src = nullptr);

// ---- causal attention with grouped-query heads ------------------------------------------
// AttnDims (kernels/op_types.h): the shapes, strides and masking of one attention call.
using kernels::AttnDims;
// out (same layout as q, H heads) = softmax(q k^T / sqrt(hd)) v; lse (B,H,Tq) gets the
// log-sum-exp of each score row (for backward; may be null). Computed in query tiles:
// nothing larger than (tile, Tk) per thread is ever held.
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, const AttnDims& d);
// The same with k and v as bf16 bits (a bf16 KV cache), widened to fp32 as they are read.
void attention_forward(float* out, float* lse, const float* q, const uint16_t* k, const uint16_t* v,
                       const AttnDims& d);
// dq, dk, dv (overwrite; same layouts as q, k, v) from dout (layout of out), recomputing
// the probabilities tile by tile from q, k and lse.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, const AttnDims& d);

// ---- residual ------------------------------------------------------------------------
void add_inplace(float* a, const float* b, int64_t n);  // a += b

// ---- losses --------------------------------------------------------------------------
// Fused softmax + cross-entropy over n rows of V logits at temperature 1/inv_temperature, in
// place: logits (n,V) become d(loss_i)/d(logits_i) * weight * grad_scale, where
//   loss_i = -log softmax(inv_temperature * logits_i)[target_i]
// (so the gradient carries the factor inv_temperature). target < 0 or weight 0 → ignored row
// (gradient 0, loss 0). weights may be null (= 1) and may be negative (signed per-token
// coefficients). losses (n) receives loss_i (unweighted). Returns sum_i weight_i * loss_i (double).
// inv_temperature = 1 gives exactly the plain softmax cross-entropy.
double softmax_xent_backward_inplace(float* logits, float* losses, const int32_t* targets, const float* weights,
                                     float grad_scale, int64_t n, int V, float inv_temperature = 1.0f);
// The same, with the gradient rounded to bf16 (nearest even) for a bf16 product, written over
// the logits' own memory: row r's V values at ((uint16_t*)logits) + r * 2V, the first half of
// its fp32 row (so the bf16 rows have leading dimension 2V). The losses and the returned total
// are the fp32 ones, bit for bit.
double softmax_xent_backward_inplace_bf16(float* logits, float* losses, const int32_t* targets, const float* weights,
                                          float grad_scale, int64_t n, int V, float inv_temperature = 1.0f);
// One row of the log-softmax at temperature 1/a: scratch (V) = exp(a * row - m) with m = a * max(row),
// returns their sum Z; then log softmax(a * row)[t] = a * row[t] - m - log(Z). The pass
// behind log_softmax_pick, and behind sampling (infer/sampler.h), so a rollout's recorded
// log-probs are computed as the training forward's are.
float exp_logits_row(float* scratch, const float* row, int V, float a, float* m_out);
// out (n) = log softmax(inv_temperature * logits_i)[target_i] (no gradient; logits untouched);
// entropy (n) if not null = the entropy of softmax(inv_temperature * logits_i) in nats.
// target < 0 → out 0 and entropy 0.
void log_softmax_pick(float* out, const float* logits, const int32_t* targets, int64_t n, int V,
                      float inv_temperature = 1.0f, float* entropy = nullptr);

// ---- profiling -----------------------------------------------------------------------
// Per-op-kind wall time of top-level op calls (not those nested in another op or in a
// parallel region), for the time breakdown of `aji bench train-step`. Off by default;
// the cost when off is one branch per op call.
enum class OpKind { kGemm, kAttentionFwd, kAttentionBwd, kNorm, kActivation, kRope, kEmbedding, kLoss, kOther, kCount };
const char* op_kind_name(OpKind k);
struct OpStats {
  double seconds[(int)OpKind::kCount] = {};      // wall time
  double cpu_seconds[(int)OpKind::kCount] = {};  // CPU time of the calling thread
  int64_t calls[(int)OpKind::kCount] = {};
};
void profile_enable(bool on);
void profile_reset();
OpStats profile_stats();
// Records the shape and wall time of every top-level sgemm into *sink (nullptr stops):
// the GEMM floor of a training step is these shapes replayed alone.
struct GemmShape {
  char trans_a, trans_b;
  int64_t M, N, K;
  float beta;
  double seconds = 0;  // wall time of the recorded call
};
void record_gemm_shapes(std::vector<GemmShape>* sink);

}  // namespace aji::kernels::cpu
