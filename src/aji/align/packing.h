// Batching rendered conversations into (B,T) training rows, two ways:
//
//   kPad   one conversation per row, right-padded (TRL's default; exact, wastes slots)
//   kPack  several conversations per row, best-fit decreasing (TRL "bfd"): a row holds
//          whole conversations only, never a piece of one crossing into the next row
//
// A conversation of n tokens gives n-1 training positions: inputs ids[0..n-2], targets
// ids[1..n-1]; a target counts only where loss_mask of that target token is 1 (§1.2 of
// the post-training spec). Conversations with more than T positions are truncated to
// their first T (counted); a conversation left with no supervised target is dropped
// (counted) — never a row that trains on nothing.
//
// What the model must support for packed rows (engine contract):
//   * position_ids restart at 0 at every conversation (learned/rotary positions use them
//     instead of the column index);
//   * attention is block-diagonal causal by segment: query (b,t) may attend key (b,s) iff
//     attn_start[b,t] <= s <= t. Segments are contiguous, so this one integer per query
//     is the whole mask (equivalently: s <= t and segment_ids[b,s] == segment_ids[b,t]).
//     Padding positions have segment 0 and attend only themselves (no all-masked softmax
//     row, no NaN); their targets are -1 so they never reach the loss.
// With both, a packed row gives exactly the losses and gradients of the same conversations
// in separate padded rows (unit check 6 of §8.3). A padded batch (kPad) needs neither:
// attn_start is 0 for real tokens and pads come after them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace aji::align {

// A conversation after rendering with the chat template.
struct RenderedSequence {
  std::vector<uint32_t> ids;
  std::vector<uint8_t> loss_mask;  // same length as ids; 1 = the model must learn to produce this token
};

enum class BatchLayout { kPad, kPack };

struct PackOptions {
  int T = 0;  // input positions per row (the context length)
  BatchLayout layout = BatchLayout::kPack;
};

// Where one conversation sits in a row.
struct PackedSegment {
  int32_t seq = 0;     // index into the sequences passed to plan_rows
  int32_t offset = 0;  // first column in the row
  int32_t length = 0;  // training positions (after truncation)
};

struct PackedRow {
  std::vector<PackedSegment> segments;
  int32_t used = 0;  // columns filled
};

struct PackReport {
  int64_t sequences_in = 0;
  int64_t sequences_used = 0;
  int64_t truncated = 0;          // longer than T positions, cut to T
  int64_t dropped_too_short = 0;  // fewer than 2 tokens: no (input, target) pair
  int64_t dropped_no_target = 0;  // no supervised target (left) — after truncation included
  int64_t rows = 0;
  int64_t real_positions = 0;     // filled columns over all rows
  int64_t supervised_targets = 0; // targets that count in the loss
  int T = 0;
  double fill() const { return rows ? double(real_positions) / (double(rows) * T) : 0.0; }
  std::string describe() const;
};

// Assigns sequences to rows. kPad: one per row in input order. kPack: best-fit decreasing
// (longest first, each into the fullest row that still has room), deterministic; shuffle
// the rows for training with shuffle_rows.
std::vector<PackedRow> plan_rows(const std::vector<RenderedSequence>& seqs, const PackOptions& options,
                                 PackReport* report);

// Deterministic Fisher-Yates shuffle of whole rows (epoch order).
void shuffle_rows(std::vector<PackedRow>& rows, uint64_t seed);

// One (B,T) batch, row-major (index b*T + t).
struct TokenBatch {
  int B = 0, T = 0;
  std::vector<int32_t> inputs;        // (B,T) input ids; pad_id at padding
  std::vector<int32_t> targets;       // (B,T) next-token ids; -1 = ignored (not supervised, padding)
  std::vector<int32_t> segment_ids;   // (B,T) 1, 2, ... per conversation in the row; 0 = padding
  std::vector<int32_t> position_ids;  // (B,T) 0, 1, ... restarting at each conversation; 0 at padding
  std::vector<int32_t> attn_start;    // (B,T) first key column query t may attend; t itself at padding
  int64_t n_targets = 0;              // targets != -1: the loss is their sum / n_targets
};

// Builds the batch from rows[first_row, first_row + B); rows past the end become all
// padding. shrink_to_longest trims T to the longest row of this batch (per-batch padding).
TokenBatch make_batch(const std::vector<RenderedSequence>& seqs, const std::vector<PackedRow>& rows,
                      size_t first_row, int B, int T, uint32_t pad_id, bool shrink_to_longest = false);

// The attention rule of the contract above, spelled out (for tests and naive kernels).
inline bool may_attend(const TokenBatch& batch, int b, int query, int key) {
  return key <= query && key >= batch.attn_start[size_t(b) * batch.T + query];
}

}  // namespace aji::align
