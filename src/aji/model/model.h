// Model: a decoder-only transformer (gpt2 or llama family, see config.h) with explicit
// forward and backward passes over the op layer in aji/kernels/cpu (llm.c style).
//
// Memory layout
//   params(): ONE contiguous float buffer holding every parameter; grads(): another of
//   the same size. tensors() describes it in the Hugging Face layout *exactly* (names,
//   shapes, row-major), so a checkpoint is the buffer sliced by the table:
//     gpt2:  transformer.wte.weight (V,C), transformer.wpe.weight (Tmax,C),
//            transformer.h.N.{ln_1,ln_2}.{weight,bias} (C),
//            transformer.h.N.attn.c_attn.weight (C,3C)   <- Conv1D: stored (in,out)
//            transformer.h.N.attn.c_attn.bias (3C), attn.c_proj.weight (C,C) + bias,
//            transformer.h.N.mlp.c_fc.weight (C,F) + bias (F), mlp.c_proj.weight (F,C) + bias,
//            transformer.ln_f.{weight,bias}; lm_head is tied (not in the table).
//     llama: model.embed_tokens.weight (V,C),
//            model.layers.N.input_layernorm.weight (C),
//            model.layers.N.self_attn.{q,k,v}_proj.weight (H*hd,C),(KV*hd,C),(KV*hd,C)
//              <- nn.Linear: stored (out,in); q,k,v adjacent so they form one (H+2KV)*hd x C matrix
//            [model.layers.N.self_attn.{q,k}_norm.weight (hd) when qk_norm]
//            model.layers.N.self_attn.o_proj.weight (C,H*hd),
//            model.layers.N.post_attention_layernorm.weight (C),
//            model.layers.N.mlp.{gate,up}_proj.weight (F,C) <- adjacent: one (2F,C) matrix,
//            model.layers.N.mlp.down_proj.weight (C,F), model.norm.weight (C),
//            lm_head.weight (V,C) unless tied.
//   Activations live in an arena sized from (B, T, config), grown on demand and reused.
//
// Heads and losses are separate from the trunk:
//   forward(tokens, B, T)         -> hidden() (B,T,C), the output of the final norm
//   any head: read hidden(), write d_hidden (B,T,C), accumulate its own parameter grads
//   backward(d_hidden)            -> accumulates into grads()
// The LM head is one such head: lm_head_loss() computes a fused, vocabulary-chunked
// softmax-cross-entropy (never a full (B,T,V) tensor) and fills d_hidden_buffer();
// lm_head_logprobs() / lm_head_logprob_backward() are the per-token log-probabilities and
// their signed-weight backward on the same chunked path (RL and preference losses).
// A scalar (reward/value, scalar_head.h) or class head plugs in the same way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "aji/base/aligned.h"
#include "aji/kernels/backend.h"
#include "aji/kernels/cpu/lowbit.h"
#include "aji/model/config.h"

namespace aji::model {

// Arithmetic of the training-path matrix products (forward, backward, the LM-head loss):
// kFp32 everything in fp32; kBf16 products with bf16 inputs and fp32 accumulation
// (kernels/cpu/bf16_gemm.h) from a bf16 copy of the weights, with fp32 master weights,
// gradients, norms, softmax, attention and losses (docs/bf16.md). Decoding
// (forward_infer, forward_decode, lm_logits) is not affected.
enum class Precision { kFp32, kBf16 };
const char* precision_name(Precision p);  // "fp32", "bf16"

struct ParamTensor {
  std::string name;            // Hugging Face name
  std::vector<int64_t> shape;  // Hugging Face shape (row-major)
  size_t offset = 0;           // into params() / grads(), in floats
  size_t numel = 0;
  bool decay = false;          // AdamW weight decay applies (matrices only; not norms, biases, embeddings)
};

// Per-layer keys and values of past positions for incremental decoding.
// Layout per layer: k, v each (batch, max_len, KV*hd); `length` positions are filled
// (all sequences in a batch advance together). Elements fp32 (k, v) or, for a bf16 cache
// (Model::set_kv_cache), bf16 bits rounded to nearest even (kh, vh; half the bytes that every
// decode step reads: at batch 16 the cache is as many bytes per step as the weights).
enum class KVCacheType { kF32, kBF16 };
const char* kv_cache_type_name(KVCacheType t);  // "fp32", "bf16"
// "fp32" | "bf16" (also "f32"); anything else is an aji::Error naming `source` and the choices.
KVCacheType parse_kv_cache_type(const std::string& text, const std::string& source);

struct KVCache {
  int batch = 0;
  int max_len = 0;
  int n_layer = 0;
  int kv_width = 0;
  int length = 0;  // positions already stored
  KVCacheType type = KVCacheType::kF32;
  AlignedFloats k, v;              // (n_layer, batch, max_len, kv_width), kF32
  AlignedVector<uint16_t> kh, vh;  // the same, kBF16
  // On a device (Model::make_device_cache): k of every layer then v of every layer, fp32, in
  // one buffer of the device's memory (the same layout; k, v, kh, vh stay empty). Copies of
  // this struct share it; only forward_infer takes such a cache.
  std::shared_ptr<kernels::DeviceMem> dev;
  bool on_device() const { return dev != nullptr; }

  bool bf16() const { return type == KVCacheType::kBF16; }
  size_t elem_bytes() const { return bf16() ? 2 : 4; }
  size_t at(int layer, int b) const { return ((size_t)layer * batch + b) * max_len * kv_width; }
  // Either type, as bytes: the block of (layer, b) starts here, positions elem_bytes() *
  // kv_width apart.
  char* k_bytes(int layer, int b) {
    return bf16() ? reinterpret_cast<char*>(kh.data() + at(layer, b)) : reinterpret_cast<char*>(k.data() + at(layer, b));
  }
  char* v_bytes(int layer, int b) {
    return bf16() ? reinterpret_cast<char*>(vh.data() + at(layer, b)) : reinterpret_cast<char*>(v.data() + at(layer, b));
  }
  const char* k_bytes(int layer, int b) const { return const_cast<KVCache*>(this)->k_bytes(layer, b); }
  const char* v_bytes(int layer, int b) const { return const_cast<KVCache*>(this)->v_bytes(layer, b); }
  void reset() { length = 0; }
};

class Model {
 public:
  explicit Model(const ModelConfig& config);  // validates; parameters zero until init_weights/load
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;

  const ModelConfig& config() const { return config_; }

  // --- parameters ------------------------------------------------------------------
  size_t num_params() const { return params_.size(); }
  // Non-const access counts as a change of the weights (the bf16 copy is refreshed).
  float* params() {
    if (host_params_stale_) sync_host_params();
    params_changed_ = true;
    device_params_stale_ = true;
    return params_.data();
  }
  const float* params() const {
    if (host_params_stale_) sync_host_params();
    return params_.data();
  }
  // Gradients are allocated (zeroed) on first use, so inference never pays for them.
  // On a device (set_device) these are the host copies, brought up to date on each call.
  float* grads();
  const float* grads() const;
  // False until something asks for grads() (training, backward, lm_head_loss, ...): a frozen
  // reference model used only through forward + lm_head_logprobs keeps it false.
  bool has_grads() const { return !grads_.empty(); }
  const std::vector<ParamTensor>& tensors() const { return tensors_; }
  const ParamTensor* find_tensor(const std::string& name) const;  // nullptr if absent
  float* param(const std::string& name);  // throws if absent

  // GPT-2 / nanochat style: N(0, init_std) for matrices and embeddings, residual output
  // projections scaled by 1/sqrt(2*n_layer), biases 0, norm gains 1. Deterministic.
  void init_weights(uint64_t seed);
  void zero_grads();

  // Training-path precision (default kFp32). With kBf16, forward() refreshes the bf16 copy
  // of the weights (one buffer, 2 bytes per parameter) when they changed since the last
  // refresh: through params()/param()/init_weights, or as declared by params_updated().
  void set_precision(Precision p);
  Precision precision() const { return precision_; }
  // The weights were written through a pointer obtained earlier (an optimizer step).
  // copy_kept: the writer also rounded every weight it wrote into bf16_copy_in_step().
  // On a device, after a step there wrote the weights, the host copy is stale until params()
  // brings it back: declaring host writes then is an internal error (aji::Error), not an
  // upload of stale weights over the trained ones.
  void params_updated(bool copy_kept = false);
  // The bf16 copy of the weights while it equals them rounded (bf16 precision, a forward()
  // since the last change), for an optimizer that rounds each weight it writes into it as it
  // goes and then calls params_updated(true); null otherwise (the next forward() refreshes).
  uint16_t* bf16_copy_in_step();

  // --- device (kernels/backend.h) ---------------------------------------------------
  // The backend the model runs on: the CPU (the default, over the host buffers) or a device
  // with memory of its own (CUDA, cpu:separate), where the model keeps a device copy of the
  // weights (uploaded by the next pass after any change through params()/param()/init_weights/
  // params_updated; written there by an optimizer step on the device, device_params_for_step,
  // and downloaded again when the host next reads them), of the gradients (downloaded when
  // grads() is called, uploaded again before the next backward if the host may have changed
  // them) and the activations. The training path (forward, the LM-head passes, backward) and,
  // over caches from make_cache, inference (forward_infer, decode, extend) run there;
  // checkpoints read the host copies. hidden() and d_hidden_buffer() are host copies on a
  // device. bf16 precision on a device: its own bf16 copy of the weights (Backend::round_to_bf16
  // after every change) and bf16 products (Backend::matmul_forward_bf16), the activations fp32.
  // Not yet on a device: per-layer gradient hooks (on_layer_backward, data parallelism): aji::Error.
  void set_device(std::shared_ptr<kernels::Backend> backend);
  kernels::Backend& device() const;
  bool on_device() const;  // a device with memory of its own
  const std::shared_ptr<kernels::Backend>& device_handle() const;  // null on the CPU
  // For an optimizer step that runs on the device (train/trainer_run.h train_step): the
  // device's gradients as the last backward left them (the host's uploaded first if newer),
  // and its weights, which the step then writes: the host copy is downloaded again when next
  // read (params(), param(), checkpoints, inference). On the CPU: the host buffers.
  float* device_grads_for_step();
  float* device_params_for_step();
  // Whether `host_params` is this model's own host weight buffer (what params() returns).
  bool is_params_buffer(const float* host_params) const { return host_params == params_.data(); }

  // --- training --------------------------------------------------------------------
  // tokens (B,T), every id in [0, vocab); T <= max_seq_len (else aji::Error).
  // Packed rows (several sequences back to back in one row) pass position_ids (B,T), each
  // sequence's positions from 0, and key_start (B,T): the first key column query t may
  // attend (its sequence's first token), so sequences never see each other. Both null:
  // positions 0..T-1 and plain causal attention. backward() uses the same ones.
  void forward(const int32_t* tokens, int B, int T, const int32_t* position_ids = nullptr,
               const int32_t* key_start = nullptr);
  const float* hidden() const;  // (B,T,C) after the final norm, valid after forward()
  int batch() const { return B_; }
  int seq_len() const { return T_; }

  // LM head + fused softmax-cross-entropy. targets (B,T): next-token ids, or < 0 to
  // ignore a position. loss_weights (B,T) or nullptr (= 1). Returns
  //   loss = sum_i w_i * CE_i / sum_i w_i   (0 if no weight)
  // writes d(loss * grad_scale)/d(hidden) into d_hidden_buffer() and accumulates the
  // LM-head (= tied embedding) gradient. Call backward(d_hidden_buffer()) next.
  // per_token_loss (B,T) if not null receives CE_i (0 where ignored).
  float lm_head_loss(const int32_t* targets, const float* loss_weights = nullptr, float grad_scale = 1.0f,
                     float* per_token_loss = nullptr);
  // backward(d_hidden_buffer()) when nothing is added to the head's gradient: on a device the
  // gradient an LM-head pass left there stays there (no copy to the host and back per step).
  void backward_from_head(int first_layer = 0);
  // Per-token log-probabilities of given targets for the batch of the last forward(), on
  // the same vocabulary-chunked path as lm_head_loss (never a (B,T,V) tensor):
  //   logprobs_out[i] = log softmax(logits_i / temperature)[targets[i]]   (B,T)
  //   entropy_out[i]  = entropy of softmax(logits_i / temperature), nats  (B,T), if not null
  // both 0 where targets[i] < 0. Touches no gradient (grads() is never allocated), so a
  // frozen reference model costs no gradient memory. temperature > 0 (else aji::Error).
  void lm_head_logprobs(const int32_t* targets, float* logprobs_out, float temperature = 1.0f,
                        float* entropy_out = nullptr);
  // Backward of L = sum_i d_logprobs[i] * logprob_i (logprob_i as lm_head_logprobs at this
  // temperature) with signed, unnormalised per-token coefficients (GRPO advantages, DPO
  // coefficients): 0 or targets[i] < 0 means no contribution. Writes dL/d(hidden) into
  // d_hidden_buffer() (overwriting) and accumulates the LM-head (tied embedding or lm_head)
  // gradient into grads(); call backward(d_hidden_buffer()) next. Per token,
  //   dL/dz = d_i * (onehot(target_i) - softmax(z / T)) / T.
  // A non-finite d_logprobs at a used position is an aji::Error.
  void lm_head_logprob_backward(const int32_t* targets, const float* d_logprobs, float temperature = 1.0f);
  // Scratch (B,T,C) for heads to write d(hidden) into; sized by forward().
  float* d_hidden_buffer();
  // Backpropagates d_hidden (B,T,C) through the trunk; accumulates into grads().
  // first_layer > 0 stops below that block (fine-tuning with frozen lower blocks): the
  // grads of layers < first_layer and of the embeddings are left untouched, and their
  // backward work is skipped. first_layer == n_layer backpropagates only the final norm.
  void backward(const float* d_hidden, int first_layer = 0);
  // When set, backward() calls it with l as soon as block l's gradients are complete for this
  // call (l = n_layer-1 down to first_layer): data parallelism (train/trainer_run.h) starts
  // reducing them while the blocks below are computed. Transient: not moved with the model.
  std::function<void(int layer)> on_layer_backward;

  // LM-head logits of n rows of hidden states (n,C) -> (n,V). For heads and tests.
  void lm_logits(const float* hidden_rows, int n, float* logits_out) const;

  // --- inference -------------------------------------------------------------------
  // max_len 0 = max_seq_len; of kv_cache()'s type. On a device (set_device): make_device_cache.
  KVCache make_cache(int batch, int max_len = 0) const;
  // A cache in the memory of the model's device, fp32: forward_infer, forward_decode,
  // forward_extend and repeat_cache with such caches run every op there and bring back only
  // the logits (or the scored log-probs). Refused (aji::Error) on the CPU, for a bf16 cache
  // type, and when the device's free memory cannot hold it (the size and the free memory
  // named, before allocating). On a device batch_invariant is not kept: the device's GEMM
  // takes all rows of a pass at once.
  KVCache make_device_cache(int batch, int max_len = 0) const;
  // The element type of the caches make_cache makes from now on (fp32 by default: every
  // cached result then equals the full forward's to float rounding; bf16 rounds each key and
  // value once as it is stored).
  void set_kv_cache(KVCacheType t) { kv_cache_ = t; }
  KVCacheType kv_cache() const { return kv_cache_; }
  // Appends n_new tokens per sequence (tokens (batch, n_new)) at cache.length, advances
  // it, and writes the logits of each sequence's last new position: (batch, V). With a
  // device cache (make_device_cache) every op runs on the device (fp32 weights only).
  void forward_infer(const int32_t* tokens, int batch, int n_new, KVCache& cache, float* logits_out);
  // One decode step over n sequences that each have their own cache (batch 1, any
  // length): token i is appended to *caches[i] at its own position caches[i]->length (RoPE
  // or wpe at that position), each cache advances by one, and logits_out (n,V) gets every
  // row's next-token logits. The n rows are stacked for every matrix product (QKV, output
  // projection, MLP, LM head); attention runs per row against its own cache. This is the
  // step of continuous batching: sequences of different lengths decode together.
  // batch_invariant = true computes each row exactly as forward_infer(token, 1, 1) on that
  // row alone would (the products go through ops::matmul_forward_rows, or a converted
  // matrix's row kernel in groups of kPackedRows), so a row's logits never depend on which
  // other rows share the step; false lets the GEMM library take all n rows at once (its
  // blocking can change a row's last bits with the batch shape).
  void forward_decode(const int32_t* tokens, int n, KVCache* const* caches, float* logits_out,
                      bool batch_invariant = true);
  // forward_decode with counts[i] >= 1 new tokens for sequence i (tokens: sequence 0's
  // counts[0] tokens, then sequence 1's, ...): a prompt's next chunk and other sequences'
  // next tokens in one pass, every matrix streamed once for all of them (a serving step).
  // Attention runs per sequence (causal within its chunk); logits_out (n,V) gets the logits
  // after each sequence's last new token. batch_invariant = true: every sequence's results
  // (logits and cache) are the bits it gets in a pass of its own with the same counts[i],
  // whatever the other sequences are. counts = nullptr: one token each (forward_decode).
  void forward_extend(const int32_t* tokens, const int* counts, int n, KVCache* const* caches, float* logits_out,
                      bool batch_invariant = true);
  // log p(tokens[i] | tokens[<i]) for i = 1..T-1 (T-1 values), chunked over the vocab
  // (no (T,V) buffer). T <= max_seq_len.
  std::vector<float> token_logprobs(const int32_t* tokens, int T);
  // The logits behind token_logprobs, for callers that need more than the picked value
  // (top-k alternatives, serving's echo + logprobs): one forward over tokens (T <=
  // max_seq_len, T >= 2), then fn(first, rows, logits) for consecutive chunks of positions,
  // logits (rows, V) being the prediction of tokens[first + 1 ..]. The chunks and the
  // products are those of token_logprobs, so a log-softmax of these rows (ops::
  // log_softmax_pick) equals its values bit for bit. Never a (T,V) buffer.
  void token_logits(const int32_t* tokens, int T, const std::function<void(int, int, const float*)>& fn);

  // --- extending a cache, every new position scored (eval's shared-prefix scoring) ---
  // A cache of `batch` rows, each a copy of the first prefix.length positions of the
  // batch-1 cache `prefix`, room for max_len positions (0 = max_seq_len).
  KVCache repeat_cache(const KVCache& prefix, int batch, int max_len = 0) const;
  // forward_extend (sequence i: counts[i] >= 1 new tokens into *caches[i], a batch-1 cache;
  // tokens concatenated), but scoring EVERY new position: logprobs_out (sum of counts) gets
  // log softmax(logits)[targets[j]] (0 where targets[j] < 0), and argmax_out (if not null)
  // 1 where targets[j] is the argmax of its row's logits. Only positions with a target go
  // through the final norm and the LM head (chunks of rows, never a (rows,V) buffer).
  // batch_invariant false (the default here): the layers' products take the GEMM library.
  void forward_extend(const int32_t* tokens, const int* counts, int n, KVCache* const* caches, const int32_t* targets,
                      float* logprobs_out, uint8_t* argmax_out = nullptr, bool batch_invariant = false);

  // --- low-precision weights for generation (kernels/cpu/lowbit.h) ---------------------
  // Converts the matrices decoding streams (QKV, output projection, MLP, LM head / tied
  // embedding) to bf16 or q8_0 once; forward_infer and forward_decode then use them (and
  // lm_logits once the fp32 copies are dropped; until then it stays fp32 like forward(), so
  // token_logprobs / token_logits stay exact). Norms, biases and the embedding lookup stay
  // fp32. q8_0 keeps a matrix whose input
  // width is not a multiple of 32 in fp32 (listed in kept_fp32). drop_fp32 (only when no
  // gradients exist) frees the fp32 copies of the converted matrices (a tied embedding is
  // kept for the lookup); after that forward() and everything built on it (training,
  // token_logprobs, token_logits) is an aji::Error. fp32 undoes a conversion that kept them.
  struct WeightsReport {
    kernels::cpu::WeightType type = kernels::cpu::WeightType::kF32;
    int packed = 0;                      // matrices converted
    std::vector<std::string> kept_fp32;  // left in fp32 (q8_0 with an input width not a multiple of 32)
    size_t packed_bytes = 0;             // bytes of the converted copies
    size_t fp32_bytes_freed = 0;         // 0 unless drop_fp32
  };
  WeightsReport use_weights(kernels::cpu::WeightType type, bool drop_fp32);
  kernels::cpu::WeightType weights() const;

  // Bytes held by the activation arena now (for memory reports).
  size_t activation_bytes() const;

  struct Impl;  // layer offsets and the activation arena (model.cpp)

 private:
  // The one vocabulary-chunked LM-head pass behind lm_head_loss, lm_head_logprobs and
  // lm_head_logprob_backward: logits of I.logits_rows rows at a time, at temperature
  // 1/inv_temp. With grad: every row's logits become weights[i] * grad_scale * dCE_i/dlogits,
  // back through the head into d_hidden (overwrite) and the head's grads (+=); returns
  // sum_i weights[i] * CE_i, ce_out (if not null) gets CE_i. Without grad: logprob_out and
  // entropy_out (either may be null) as lm_head_logprobs; returns 0.
  double lm_head_pass(const int32_t* targets, const float* weights, float grad_scale, float inv_temp, bool with_grad,
                      float* ce_out, float* logprob_out, float* entropy_out);
  void check_targets(const int32_t* targets, const char* caller) const;
  // forward_infer's pass on the device, over a device cache.
  void forward_infer_device(const int32_t* tokens, int batch, int n_new, KVCache& cache, float* logits_out);
  // The layers on the device over device caches, for forward_infer and forward_extend:
  // sequence i is row rows[i] of *caches[i] (a batch cache's row, or a batch-1 cache's), its
  // new tokens rows r0[i] .. r0[i+1]-1 of the pass at positions pos. Returns the rows'
  // residual (r0[n], C) in device memory; the callers advance the caches' lengths.
  const float* extend_layers_device(const int32_t* tokens, int n, KVCache* const* caches, const int* rows,
                                    const std::vector<int64_t>& r0, const std::vector<int32_t>& pos);
  // On the device: rows rows[0..m) of x (device, (N,C)) through the final norm and the LM head,
  // the logits (m,V) brought to the host.
  void device_head_rows(const float* x, const int64_t* rows, int64_t m, float* logits_out);
  // forward_extend's layers: the new rows' last residual (sum of counts, C) in the inference
  // buffer, the caches advanced; r0[i] = sequence i's first row (r0[n] = the row count).
  const float* extend_layers(const int32_t* tokens, const int* counts, int n, KVCache* const* caches,
                             bool batch_invariant, std::vector<int64_t>& r0);
  ModelConfig config_;
  AlignedFloats params_;  // 64-byte aligned: the decode kernels stream it
  AlignedFloats grads_;
  std::vector<ParamTensor> tensors_;
  Impl* impl_ = nullptr;
  int B_ = 0, T_ = 0;
  Precision precision_ = Precision::kFp32;
  KVCacheType kv_cache_ = KVCacheType::kF32;
  bool params_changed_ = true;  // the bf16 copy (if any) is stale
  bool device_params_stale_ = true;  // on a device: its copy of the weights is stale
  mutable bool host_params_stale_ = false;  // on a device: a step there wrote its weights
  void sync_host_params() const;  // downloads the device's weights when they are newer
  // The device's view of the weights and gradients (the host buffers on the CPU), synced.
  const float* device_params();
  float* device_grads();
};

}  // namespace aji::model
