// The SFT loss on the engine's LM head (post-training spec §1.2): masked mean
// cross-entropy over the supervised targets of a batch,
//   loss = Σ_{i: target_i ≥ 0} −log p(target_i | inputs_<=i) / #{i: target_i ≥ 0}.
// Targets come from packing.h's TokenBatch (-1 = not supervised: prompt, user turns,
// padding). With gradient accumulation the recommended normalisation is the token mean
// over the whole optimizer step (TRL's num_items_in_batch): call sft_forward_backward on
// every micro-batch with grad_scale = batch.n_targets / (targets of the whole step), and
// the accumulated gradient equals that of one big batch.
//
// Padded batches (BatchLayout::kPad, one conversation per row) and packed ones (kPack:
// several per row) give the same loss and gradients: packed rows hand the model their
// per-conversation position ids and attention starts, so conversations never see each other.
#pragma once

#include <cstdint>
#include <vector>

#include "aji/align/packing.h"
#include "aji/model/model.h"

namespace aji::align {

// Forward, LM-head loss and backward for one batch; gradients are *accumulated* into
// model.grads() scaled by grad_scale. Returns the mean CE over this batch's targets
// (0 when it has none).
float sft_forward_backward(model::Model& model, const TokenBatch& batch, float grad_scale = 1.0f);

// The same loss from a full next-token array and a 0/1 mask, (B,T) each: a target
// counts only where loss_mask is 1 (what the chat template's assistant mask says).
float sft_forward_backward(model::Model& model, const std::vector<int32_t>& inputs,
                           const std::vector<int32_t>& next_ids, const std::vector<uint8_t>& loss_mask, int B, int T,
                           float grad_scale = 1.0f);

// Validation loss: forward only, computed from the LM-head logits of the supervised
// positions; model.grads() is not touched. Returns {sum of CE, number of targets} so
// callers can average over many batches exactly.
struct LossSum {
  double sum = 0;
  int64_t count = 0;
  double mean() const { return count ? sum / double(count) : 0.0; }
};
LossSum sft_eval_loss(model::Model& model, const TokenBatch& batch);

}  // namespace aji::align
