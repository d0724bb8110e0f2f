#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "aji/align/packing.h"
#include "aji/base/error.h"
#include "aji/base/rng.h"

using namespace aji::align;

namespace {

// A sequence of n tokens with ids base, base+1, ... and the given loss mask.
RenderedSequence seq(uint32_t base, std::vector<uint8_t> mask) {
  RenderedSequence s;
  for (size_t i = 0; i < mask.size(); ++i) s.ids.push_back(base + static_cast<uint32_t>(i));
  s.loss_mask = std::move(mask);
  return s;
}

RenderedSequence random_seq(aji::Rng& rng, int n, int vocab) {
  RenderedSequence s;
  for (int i = 0; i < n; ++i) {
    s.ids.push_back(static_cast<uint32_t>(1 + rng.below(vocab - 1)));
    s.loss_mask.push_back(i > 0 && rng.uniform() < 0.6);
  }
  s.loss_mask[n - 1] = 1;
  return s;
}

// A one-layer, one-head causal attention "language model" with fixed random weights,
// written naively against the attention contract of packing.h (may_attend, position_ids).
// Returns the summed cross-entropy of every target != -1 and each position's logits.
struct TinyModel {
  int V = 16, C = 8, maxT = 64;
  std::vector<double> tok, pos, out;  // (V,C), (maxT,C), (C,V)
  explicit TinyModel(uint64_t seed) {
    aji::Rng rng(seed);
    auto fill = [&](std::vector<double>& w, size_t n) {
      w.resize(n);
      for (auto& x : w) x = rng.normal() * 0.5;
    };
    fill(tok, size_t(V) * C);
    fill(pos, size_t(maxT) * C);
    fill(out, size_t(C) * V);
  }
  double loss_sum(const TokenBatch& b, std::vector<std::vector<double>>* logits_out = nullptr) const {
    double total = 0;
    if (logits_out) logits_out->assign(size_t(b.B) * b.T, {});
    for (int r = 0; r < b.B; ++r) {
      std::vector<std::vector<double>> x(b.T, std::vector<double>(C));
      for (int t = 0; t < b.T; ++t)
        for (int c = 0; c < C; ++c)
          x[t][c] = tok[size_t(b.inputs[size_t(r) * b.T + t]) * C + c] + pos[size_t(b.position_ids[size_t(r) * b.T + t]) * C + c];
      for (int q = 0; q < b.T; ++q) {
        std::vector<double> w(b.T, -INFINITY);
        double mx = -INFINITY;
        for (int k = 0; k < b.T; ++k) {
          if (!may_attend(b, r, q, k)) continue;
          double s = 0;
          for (int c = 0; c < C; ++c) s += x[q][c] * x[k][c];
          w[k] = s / std::sqrt(double(C));
          mx = std::max(mx, w[k]);
        }
        std::vector<double> h(C, 0.0);
        double z = 0;
        for (int k = 0; k < b.T; ++k)
          if (w[k] != -INFINITY) z += std::exp(w[k] - mx);
        for (int k = 0; k < b.T; ++k)
          if (w[k] != -INFINITY)
            for (int c = 0; c < C; ++c) h[c] += std::exp(w[k] - mx) / z * x[k][c];
        std::vector<double> logits(V, 0.0);
        for (int v = 0; v < V; ++v)
          for (int c = 0; c < C; ++c) logits[v] += h[c] * out[size_t(c) * V + v];
        int target = b.targets[size_t(r) * b.T + q];
        if (target >= 0) {
          double m = *std::max_element(logits.begin(), logits.end()), se = 0;
          for (double l : logits) se += std::exp(l - m);
          total += (m + std::log(se)) - logits[target];
        }
        if (logits_out) (*logits_out)[size_t(r) * b.T + q] = logits;
      }
    }
    return total;
  }
};

}  // namespace

TEST(Packing, PadLayoutShiftsTargetsAndMasksPrompt) {
  // ids 10..15; supervised tokens are 13, 14, 15 (mask index 3..5).
  std::vector<RenderedSequence> seqs{seq(10, {0, 0, 0, 1, 1, 1})};
  PackReport rep;
  auto rows = plan_rows(seqs, {8, BatchLayout::kPad}, &rep);
  ASSERT_EQ(rows.size(), 1u);
  auto b = make_batch(seqs, rows, 0, 2, 8, /*pad_id=*/0);
  ASSERT_EQ(b.inputs.size(), 16u);
  EXPECT_EQ(std::vector<int32_t>(b.inputs.begin(), b.inputs.begin() + 8), (std::vector<int32_t>{10, 11, 12, 13, 14, 0, 0, 0}));
  // target[t] = ids[t+1] where mask[t+1] = 1: positions 2, 3, 4 predict 13, 14, 15.
  EXPECT_EQ(std::vector<int32_t>(b.targets.begin(), b.targets.begin() + 8), (std::vector<int32_t>{-1, -1, 13, 14, 15, -1, -1, -1}));
  EXPECT_EQ(std::vector<int32_t>(b.segment_ids.begin(), b.segment_ids.begin() + 8), (std::vector<int32_t>{1, 1, 1, 1, 1, 0, 0, 0}));
  EXPECT_EQ(std::vector<int32_t>(b.position_ids.begin(), b.position_ids.begin() + 8), (std::vector<int32_t>{0, 1, 2, 3, 4, 0, 0, 0}));
  EXPECT_EQ(std::vector<int32_t>(b.attn_start.begin(), b.attn_start.begin() + 8), (std::vector<int32_t>{0, 0, 0, 0, 0, 5, 6, 7}));
  EXPECT_EQ(b.n_targets, 3);
  // Row 1 does not exist: all padding, every position attends only itself.
  for (int t = 0; t < 8; ++t) {
    EXPECT_EQ(b.targets[8 + t], -1);
    EXPECT_EQ(b.segment_ids[8 + t], 0);
    EXPECT_TRUE(may_attend(b, 1, t, t));
    if (t > 0) {
      EXPECT_FALSE(may_attend(b, 1, t, t - 1));
    }
  }
  EXPECT_EQ(rep.supervised_targets, 3);
  EXPECT_EQ(rep.real_positions, 5);
}

TEST(Packing, BestFitDecreasingFillsRowsWithoutSplitting) {
  // Positions (= tokens - 1): 7, 5, 4, 3, 1 with T = 10. BFD: 7 → row0 (room 3), 5 → row1
  // (room 5), 4 → row1 (room 1), 3 → row0 (room 0), 1 → row1 (room 0).
  std::vector<RenderedSequence> seqs;
  for (int n : {8, 6, 5, 4, 2}) seqs.push_back(seq(100 * (seqs.size() + 1), std::vector<uint8_t>(n, 1)));
  PackReport rep;
  auto rows = plan_rows(seqs, {10, BatchLayout::kPack}, &rep);
  ASSERT_EQ(rows.size(), 2u);
  ASSERT_EQ(rows[0].segments.size(), 2u);
  EXPECT_EQ(rows[0].segments[0].seq, 0);
  EXPECT_EQ(rows[0].segments[1].seq, 3);
  EXPECT_EQ(rows[0].segments[1].offset, 7);
  ASSERT_EQ(rows[1].segments.size(), 3u);
  EXPECT_EQ(rows[1].segments[0].seq, 1);
  EXPECT_EQ(rows[1].segments[1].seq, 2);
  EXPECT_EQ(rows[1].segments[2].seq, 4);
  EXPECT_EQ(rows[0].used, 10);
  EXPECT_EQ(rows[1].used, 10);
  EXPECT_DOUBLE_EQ(rep.fill(), 1.0);

  auto b = make_batch(seqs, rows, 0, 2, 10, 0);
  // Row 0: seq 0 (ids 100..) in columns 0..6, seq 3 (ids 400..) in 7..9, positions restart.
  EXPECT_EQ(b.inputs[7], 400);
  EXPECT_EQ(b.position_ids[7], 0);
  EXPECT_EQ(b.segment_ids[6], 1);
  EXPECT_EQ(b.segment_ids[7], 2);
  // The last input of a segment predicts its own last token, never the next segment's first.
  EXPECT_EQ(b.targets[6], 107);
  EXPECT_EQ(b.targets[9], 403);
  EXPECT_TRUE(may_attend(b, 0, 9, 7));
  EXPECT_FALSE(may_attend(b, 0, 7, 6));  // across the boundary
  EXPECT_FALSE(may_attend(b, 0, 6, 7));  // the future
  EXPECT_EQ(b.n_targets, 20);
}

TEST(Packing, TruncationAndDropsAreCounted) {
  std::vector<RenderedSequence> seqs{
      seq(1, {0, 0, 1, 1, 1, 1, 1, 1, 1, 1}),  // 9 positions > T=6: truncated, keeps supervised tokens
      seq(1, {0, 0, 0, 0, 0, 0, 0, 0, 1, 1}),  // supervised tokens only past T: dropped (check 8)
      seq(1, {0, 0, 0}),                       // nothing supervised: dropped
      seq(1, {1}),                             // one token: no (input, target) pair
      seq(1, {0, 1}),
  };
  PackReport rep;
  auto rows = plan_rows(seqs, {6, BatchLayout::kPad}, &rep);
  EXPECT_EQ(rep.sequences_in, 5);
  EXPECT_EQ(rep.sequences_used, 2);
  EXPECT_EQ(rep.truncated, 1);
  EXPECT_EQ(rep.dropped_no_target, 2);
  EXPECT_EQ(rep.dropped_too_short, 1);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].used, 6);
  auto b = make_batch(seqs, rows, 0, 2, 6, 0);
  EXPECT_EQ(b.n_targets, 5 + 1);  // targets at mask[2..6] of the truncated one, plus one
  EXPECT_EQ(rep.supervised_targets, b.n_targets);
  EXPECT_NE(rep.describe().find("1 truncated"), std::string::npos) << rep.describe();
  EXPECT_THROW(plan_rows(seqs, {0, BatchLayout::kPad}, nullptr), aji::Error);
  std::vector<RenderedSequence> mismatched{seq(1, {0, 1})};
  mismatched[0].loss_mask.pop_back();
  EXPECT_THROW(plan_rows(mismatched, {6, BatchLayout::kPad}, nullptr), aji::Error);
}

TEST(Packing, EveryTargetIsTheNextTokenWhereSupervised) {
  aji::Rng rng(5);
  std::vector<RenderedSequence> seqs;
  for (int i = 0; i < 40; ++i) seqs.push_back(random_seq(rng, 2 + static_cast<int>(rng.below(30)), 50));
  for (BatchLayout layout : {BatchLayout::kPad, BatchLayout::kPack}) {
    PackReport rep;
    auto rows = plan_rows(seqs, {24, layout}, &rep);
    auto b = make_batch(seqs, rows, 0, static_cast<int>(rows.size()), 24, 0);
    std::map<int, int> targets_of_seq;
    for (size_t r = 0; r < rows.size(); ++r) {
      for (const auto& seg : rows[r].segments) {
        const auto& s = seqs[seg.seq];
        for (int k = 0; k < seg.length; ++k) {
          size_t at = r * 24 + seg.offset + k;
          ASSERT_EQ(b.inputs[at], static_cast<int32_t>(s.ids[k]));
          ASSERT_EQ(b.targets[at], s.loss_mask[k + 1] ? static_cast<int32_t>(s.ids[k + 1]) : -1);
          ASSERT_EQ(b.position_ids[at], k);
          ASSERT_EQ(b.attn_start[at], seg.offset);
        }
        ++targets_of_seq[seg.seq];
      }
    }
    for (auto& [s, n] : targets_of_seq) EXPECT_EQ(n, 1) << "sequence " << s << " placed more than once";
    EXPECT_EQ(static_cast<int64_t>(targets_of_seq.size()), rep.sequences_used);
    EXPECT_EQ(b.n_targets, rep.supervised_targets);
    if (layout == BatchLayout::kPack) {
      EXPECT_LT(rep.rows, 40);
      EXPECT_GT(rep.fill(), 0.8);
    }
  }
}

// Unit check 6 of the post-training spec, forward half: with position reset and the
// block-diagonal causal mask, a packed row computes exactly what separate padded rows do.
TEST(Packing, PackedRowsEqualPaddedRowsUnderTheAttentionContract) {
  aji::Rng rng(11);
  TinyModel model(3);
  std::vector<RenderedSequence> seqs;
  for (int i = 0; i < 9; ++i) seqs.push_back(random_seq(rng, 2 + static_cast<int>(rng.below(14)), model.V));
  const int T = 20;
  PackReport pad_rep, pack_rep;
  auto pad_rows = plan_rows(seqs, {T, BatchLayout::kPad}, &pad_rep);
  auto pack_rows = plan_rows(seqs, {T, BatchLayout::kPack}, &pack_rep);
  ASSERT_LT(pack_rows.size(), pad_rows.size());
  auto padded = make_batch(seqs, pad_rows, 0, static_cast<int>(pad_rows.size()), T, 0);
  auto packed = make_batch(seqs, pack_rows, 0, static_cast<int>(pack_rows.size()), T, 0);
  EXPECT_EQ(padded.n_targets, packed.n_targets);
  std::vector<std::vector<double>> pad_logits, pack_logits;
  double pad_loss = model.loss_sum(padded, &pad_logits) / padded.n_targets;
  double pack_loss = model.loss_sum(packed, &pack_logits) / packed.n_targets;
  EXPECT_NEAR(pad_loss, pack_loss, 1e-9);
  // Per position: conversation s at column offset+k of its packed row == column k of its padded row.
  std::map<int, std::pair<size_t, int>> where_padded;
  for (size_t r = 0; r < pad_rows.size(); ++r) where_padded[pad_rows[r].segments[0].seq] = {r, 0};
  for (size_t r = 0; r < pack_rows.size(); ++r)
    for (const auto& seg : pack_rows[r].segments)
      for (int k = 0; k < seg.length; ++k) {
        const auto& a = pack_logits[r * T + seg.offset + k];
        const auto& b = pad_logits[where_padded[seg.seq].first * T + k];
        for (int v = 0; v < model.V; ++v) ASSERT_NEAR(a[v], b[v], 1e-12);
      }
  // A model that ignored the mask (plain causal attention) would not match: proves the test can see it.
  TokenBatch leaky = packed;
  for (size_t i = 0; i < leaky.attn_start.size(); ++i) leaky.attn_start[i] = 0;
  EXPECT_GT(std::abs(model.loss_sum(leaky) / leaky.n_targets - pad_loss), 1e-6);
}

// Unit check 5: padding does not change the loss (shrinking T to the longest row either).
TEST(Packing, PaddingInvariance) {
  aji::Rng rng(2);
  TinyModel model(9);
  std::vector<RenderedSequence> seqs;
  for (int i = 0; i < 4; ++i) seqs.push_back(random_seq(rng, 3 + i * 2, model.V));
  auto rows = plan_rows(seqs, {40, BatchLayout::kPad}, nullptr);
  auto wide = make_batch(seqs, rows, 0, 4, 40, 0);
  auto tight = make_batch(seqs, rows, 0, 4, 40, 0, /*shrink_to_longest=*/true);
  EXPECT_EQ(tight.T, rows[3].used);
  EXPECT_NEAR(model.loss_sum(wide), model.loss_sum(tight), 1e-9);
  auto wider = make_batch(seqs, rows, 0, 6, 40, 0);  // two all-padding rows
  EXPECT_NEAR(model.loss_sum(wide), model.loss_sum(wider), 1e-12);
}

TEST(Packing, ShuffleRowsIsDeterministic) {
  std::vector<PackedRow> a(20), b;
  for (int i = 0; i < 20; ++i) a[i].used = i;
  b = a;
  auto c = a;
  shuffle_rows(a, 4);
  shuffle_rows(b, 4);
  shuffle_rows(c, 5);
  bool same = true, differ = false;
  for (int i = 0; i < 20; ++i) {
    same &= a[i].used == b[i].used;
    differ |= a[i].used != c[i].used;
  }
  EXPECT_TRUE(same);
  EXPECT_TRUE(differ);
}
