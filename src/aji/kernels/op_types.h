// Types shared by every backend's op layer (kernels/cpu/ops.h, the Backend interface in
// kernels/backend.h and the CUDA backend in kernels/cuda/): how a weight matrix is stored and
// the shapes of an attention call. Plain structs; pointers in them are the backend's memory.
#pragma once

#include <cstdint>

namespace aji::kernels {

// How a weight matrix is stored. kOutIn is torch.nn.Linear (OC,IC): y = x W^T.
// kInOut is GPT-2's Conv1D (IC,OC): y = x W. Both are Hugging Face layouts as-is.
enum class WeightLayout { kOutIn, kInOut };

// Causal attention with grouped-query heads.
// Strides are in floats. Head h of a token row starts at h*hd. q head h reads kv head
// h / (H/KV). Query i sits at absolute position q_pos0 + i and sees keys 0..q_pos0+i.
// With key_start (B,Tq) given, query i sees only keys key_start[b,i] .. q_pos0+i: packed
// rows, where each segment (conversation) attends within itself (block-diagonal causal).
struct AttnDims {
  int B = 0, Tq = 0, Tk = 0, H = 0, KV = 0, hd = 0;
  int q_pos0 = 0;
  const int32_t* key_start = nullptr;
  int64_t q_bs = 0, q_ts = 0;  // q: batch stride, token stride
  int64_t k_bs = 0, k_ts = 0;
  int64_t v_bs = 0, v_ts = 0;
  int64_t o_bs = 0, o_ts = 0;
  // Mixed precision (training in bf16): the tiles' products take q, k, v, the probabilities
  // and their gradients rounded to bf16, with fp32 accumulation (pair_product_bf16); the
  // softmax, its log-sum-exp and the dO . O sums stay fp32. Query tiles of kFewQueries rows
  // or fewer (decoding) and an odd hd keep fp32 products.
  bool bf16_products = false;
};

}  // namespace aji::kernels
