// The CUDA backend's kernels, as host functions that queue work on the context's stream
// (llm.c's layout: one file per concern, each op a launcher over device pointers).
//   matmul.cu     cuBLASLt products (fp32, CUBLAS_COMPUTE_32F: the CPU's results to rounding;
//                 TF32 or bf16 operands when asked)
//   attention.cu  causal GQA attention in query tiles with the log-sum-exp, and its backward
//   norms.cu      LayerNorm, RMSNorm, per-head RMSNorm (QK-norm), forward and backward
//   pointwise.cu  embeddings, GELU, SwiGLU, RoPE, residual add, scale
//   loss.cu       fused softmax-cross-entropy, in place, never a probability tensor
//   optim.cu      AdamW over a range, sum of squares (the global gradient norm)
// Every launcher has the contract of its namesake in kernels/cpu/ops.h (or backend.h for the
// optimizer), with every pointer in device memory. Reductions are deterministic: partial
// sums per block in a fixed order, then one fixed-order pass; no floating-point atomics.
// After each launch, ctx.launched("op") checks the launch (and, with AJI_CUDA_SYNC=1, waits
// for the op so that an asynchronous fault is reported with its name).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "aji/kernels/backend.h"
#include "aji/kernels/op_types.h"

namespace aji::kernels::cuda {

struct Context {
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* lt_workspace = nullptr;  // cuBLASLt's workspace (32 MiB: Hopper wants it)
  size_t lt_workspace_bytes = 0;
  int sm_count = 0;
  bool sync_each_op = false;  // AJI_CUDA_SYNC=1
  bool tf32 = false;          // matmuls on TF32 tensor cores (Backend::set_matmul_tf32)

  // Device scratch of at least `bytes` (256-byte aligned), valid until the next call (one
  // buffer, grown on demand after waiting for the stream; never freed inside a step once large
  // enough). Launchers that need several scratch arrays take one and split it.
  void* workspace(size_t bytes);
  // Checks the last launch (cudaGetLastError) and, in sync mode, waits for it; an error names op.
  void launched(const char* op);

  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
};

// ---- matmul.cu ----------------------------------------------------------------------------
void matmul_forward(Context& ctx, float* out, const float* inp, const float* weight, const float* bias, int64_t N,
                    int IC, int OC, WeightLayout layout, bool accumulate);
void matmul_backward(Context& ctx, float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int64_t N, int IC, int OC, WeightLayout layout);
// bf16 products (backend.h's contracts): the weight's bf16 copy, inp/dout rounded to bf16 in
// the workspace, fp32 accumulation and results.
void round_to_bf16(Context& ctx, uint16_t* dst, const float* src, size_t n);
void matmul_forward_bf16(Context& ctx, float* out, const float* inp, const uint16_t* weight_bf16, const float* bias,
                         int64_t N, int IC, int OC, WeightLayout layout, bool accumulate);
void matmul_backward_bf16(Context& ctx, float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                          const uint16_t* weight_bf16, int64_t N, int IC, int OC, WeightLayout layout);

// ---- attention.cu -------------------------------------------------------------------------
void attention_forward(Context& ctx, float* out, float* lse, const float* q, const float* k, const float* v,
                       const AttnDims& d);
void attention_backward(Context& ctx, float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* out, const float* lse, const AttnDims& d);
// Over KV caches that live apart (backend.h CachedSeq, `seqs` in device memory): one launch each.
void kv_append(Context& ctx, const CachedSeq* seqs, int n, int64_t rows, int layer, const float* src, int64_t src_ts,
               int kvw);
void attention_cached(Context& ctx, float* out, const float* q, const CachedSeq* seqs, int n, int64_t rows, int layer,
                      const AttnDims& d);

// ---- norms.cu -----------------------------------------------------------------------------
void layernorm_forward(Context& ctx, float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int64_t N, int C, float eps);
void layernorm_backward(Context& ctx, float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int64_t N, int C);
void rmsnorm_forward(Context& ctx, float* out, float* rstd, const float* inp, const float* weight, int64_t N, int C,
                     float eps);
void rmsnorm_backward(Context& ctx, float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int64_t N, int C);
void head_rmsnorm_forward(Context& ctx, float* x, const float* weight, int64_t N, int64_t stride, int col, int n_heads,
                          int hd, float eps);
void head_rmsnorm_backward(Context& ctx, float* d, float* dweight, const float* x_in, const float* weight, int64_t N,
                           int64_t stride, int col, int n_heads, int hd, float eps);

// ---- pointwise.cu -------------------------------------------------------------------------
void embedding_forward(Context& ctx, float* out, const int32_t* tokens, const float* wte, const float* wpe, int B,
                       int T, int C, int pos0, const int32_t* positions);
void embedding_backward(Context& ctx, float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B,
                        int T, int C, const int32_t* positions);
void gelu_forward(Context& ctx, float* out, const float* inp, int64_t n);
void gelu_backward(Context& ctx, float* dinp, const float* inp, const float* dout, int64_t n);
void swiglu_forward(Context& ctx, float* out, const float* gate_up, int64_t N, int F);
void swiglu_backward(Context& ctx, float* dgate_up, const float* dout, const float* gate_up, int64_t N, int F);
void rope_apply(Context& ctx, float* x, const float* cos_t, const float* sin_t, int B, int T, int64_t stride, int col,
                int n_heads, int hd, int pos0, bool inverse, const int32_t* positions, const float* src);
void add_inplace(Context& ctx, float* a, const float* b, int64_t n);
void scale(Context& ctx, float* x, float a, size_t n);

// ---- loss.cu ------------------------------------------------------------------------------
// Queues the op and writes sum_i weight_i * loss_i (double, fixed order) to *total_dev.
void softmax_xent_backward_inplace(Context& ctx, double* total_dev, float* logits, float* losses,
                                   const int32_t* targets, const float* weights, float grad_scale, int64_t n, int V,
                                   float inv_temperature);

// ---- optim.cu -----------------------------------------------------------------------------
void adamw_update(Context& ctx, float* params, const float* grads, float* m, float* v, size_t n,
                  const AdamWScalars& s);
// Queues sum x^2 (double, fixed order) into *total_dev.
void sum_squares(Context& ctx, double* total_dev, const float* x, size_t n);
// Queues sum x (n doubles, fixed order: one block, strided partials, a fixed tree) into
// *total_dev: the last pass of every reduction that returns a number (loss.cu, sum_squares).
void sum_doubles(Context& ctx, double* total_dev, const double* x, int64_t n);

// ---- nccl.cpp ------------------------------------------------------------------------------
// The job's NCCL communicator (backend.h's collectives): NCCL opened at run time; a missing
// library is "" from nccl_unique_id with the reason, an error from nccl_join.
struct NcclComm;
std::string nccl_unique_id(std::string* why_not);
NcclComm* nccl_join(Context& ctx, const std::string& id, int rank, int size);
void nccl_allreduce_mean(Context& ctx, NcclComm* c, float* data, size_t n);
void nccl_leave(NcclComm* c) noexcept;

}  // namespace aji::kernels::cuda
