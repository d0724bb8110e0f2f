#include "aji/align/sft_loss.h"

#include <algorithm>
#include <cmath>

#include "aji/base/error.h"

namespace aji::align {

namespace {

// A batch's layout for the model: padded rows need nothing (positions 0..T-1, causal);
// packed rows pass their per-conversation positions and attention starts.
void forward_batch(model::Model& model, const TokenBatch& batch) {
  bool packed = false;
  for (int32_t seg : batch.segment_ids) packed = packed || seg > 1;
  if (packed)
    model.forward(batch.inputs.data(), batch.B, batch.T, batch.position_ids.data(), batch.attn_start.data());
  else
    model.forward(batch.inputs.data(), batch.B, batch.T);
}

}  // namespace

float sft_forward_backward(model::Model& model, const TokenBatch& batch, float grad_scale) {
  forward_batch(model, batch);
  float loss = model.lm_head_loss(batch.targets.data(), nullptr, grad_scale);
  model.backward_from_head();
  return loss;
}

float sft_forward_backward(model::Model& model, const std::vector<int32_t>& inputs,
                           const std::vector<int32_t>& next_ids, const std::vector<uint8_t>& loss_mask, int B, int T,
                           float grad_scale) {
  const size_t n = size_t(B) * T;
  if (inputs.size() != n || next_ids.size() != n || loss_mask.size() != n)
    throw Error("SFT batch arrays must all be (B,T) = " + std::to_string(n) + " long");
  std::vector<int32_t> targets(n);
  for (size_t i = 0; i < n; ++i) targets[i] = loss_mask[i] ? next_ids[i] : -1;
  model.forward(inputs.data(), B, T);
  float loss = model.lm_head_loss(targets.data(), nullptr, grad_scale);
  model.backward_from_head();
  return loss;
}

LossSum sft_eval_loss(model::Model& model, const TokenBatch& batch) {
  forward_batch(model, batch);
  const int C = model.config().d_model, V = model.config().vocab_size;
  const float* hidden = model.hidden();
  // Gather the supervised rows, then score them in chunks (never a (B,T,V) tensor).
  std::vector<int64_t> rows;
  for (size_t i = 0; i < batch.targets.size(); ++i)
    if (batch.targets[i] >= 0) rows.push_back(static_cast<int64_t>(i));
  constexpr int kChunk = 64;
  std::vector<float> h(size_t(kChunk) * C), logits(size_t(kChunk) * V);
  LossSum out;
  for (size_t r0 = 0; r0 < rows.size(); r0 += kChunk) {
    int R = static_cast<int>(std::min<size_t>(kChunk, rows.size() - r0));
    for (int r = 0; r < R; ++r) std::copy_n(hidden + rows[r0 + r] * C, C, h.data() + size_t(r) * C);
    model.lm_logits(h.data(), R, logits.data());
    for (int r = 0; r < R; ++r) {
      const float* z = logits.data() + size_t(r) * V;
      int32_t target = batch.targets[rows[r0 + r]];
      if (target >= V)
        throw Error("target id " + std::to_string(target) + " is outside the model's vocabulary of " + std::to_string(V));
      double mx = *std::max_element(z, z + V), se = 0;
      for (int v = 0; v < V; ++v) se += std::exp(double(z[v]) - mx);
      out.sum += mx + std::log(se) - double(z[target]);
    }
  }
  out.count = static_cast<int64_t>(rows.size());
  return out;
}

}  // namespace aji::align
