#include "aji/align/packing.h"

#include <algorithm>
#include <cstdio>
#include <set>
#include <utility>

#include "aji/base/error.h"
#include "aji/base/rng.h"

namespace aji::align {

std::string PackReport::describe() const {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "%lld conversations → %lld rows of T=%d (fill %.1f%%); %lld truncated to T, %lld dropped with no "
                "supervised token, %lld dropped as shorter than 2 tokens; %lld supervised targets",
                (long long)sequences_in, (long long)rows, T, 100.0 * fill(), (long long)truncated,
                (long long)dropped_no_target, (long long)dropped_too_short, (long long)supervised_targets);
  return buf;
}

std::vector<PackedRow> plan_rows(const std::vector<RenderedSequence>& seqs, const PackOptions& options,
                                 PackReport* report) {
  if (options.T <= 0) throw Error("context length T must be positive, got " + std::to_string(options.T));
  PackReport local;
  PackReport& rep = report ? *report : local;
  rep = PackReport{};
  rep.T = options.T;
  rep.sequences_in = static_cast<int64_t>(seqs.size());

  // Training positions per usable sequence, after truncation.
  std::vector<std::pair<int32_t, int32_t>> usable;  // (length, seq index)
  for (size_t i = 0; i < seqs.size(); ++i) {
    const auto& s = seqs[i];
    AJI_CHECK(s.ids.size() == s.loss_mask.size(), "rendered ids and loss mask differ in length");
    if (s.ids.size() < 2) {
      ++rep.dropped_too_short;
      continue;
    }
    int64_t positions = static_cast<int64_t>(s.ids.size()) - 1;
    bool truncated = positions > options.T;
    int32_t len = static_cast<int32_t>(std::min<int64_t>(positions, options.T));
    int64_t targets = 0;
    for (int32_t t = 1; t <= len; ++t) targets += s.loss_mask[t] != 0;
    if (targets == 0) {
      ++rep.dropped_no_target;
      continue;
    }
    rep.truncated += truncated;
    rep.supervised_targets += targets;
    rep.real_positions += len;
    usable.push_back({len, static_cast<int32_t>(i)});
  }
  rep.sequences_used = static_cast<int64_t>(usable.size());

  std::vector<PackedRow> rows;
  if (options.layout == BatchLayout::kPad) {
    rows.reserve(usable.size());
    for (auto [len, idx] : usable) rows.push_back({{{idx, 0, len}}, len});
  } else {
    // Best-fit decreasing: longest first (ties by input order), into the row with the
    // least room that still fits; open a new row when none does.
    std::stable_sort(usable.begin(), usable.end(), [](auto& a, auto& b) { return a.first > b.first; });
    std::set<std::pair<int32_t, int32_t>> room;  // (free columns, row index)
    for (auto [len, idx] : usable) {
      auto it = room.lower_bound({len, -1});
      int32_t r;
      if (it == room.end()) {
        r = static_cast<int32_t>(rows.size());
        rows.push_back({});
      } else {
        r = it->second;
        room.erase(it);
      }
      PackedRow& row = rows[r];
      row.segments.push_back({idx, row.used, len});
      row.used += len;
      if (row.used < options.T) room.insert({options.T - row.used, r});
    }
  }
  rep.rows = static_cast<int64_t>(rows.size());
  return rows;
}

void shuffle_rows(std::vector<PackedRow>& rows, uint64_t seed) {
  Rng rng(seed);
  for (size_t i = rows.size(); i > 1; --i) std::swap(rows[i - 1], rows[rng.below(i)]);
}

TokenBatch make_batch(const std::vector<RenderedSequence>& seqs, const std::vector<PackedRow>& rows,
                      size_t first_row, int B, int T, uint32_t pad_id, bool shrink_to_longest) {
  if (B <= 0 || T <= 0) throw Error("batch shape must be positive, got B=" + std::to_string(B) + " T=" + std::to_string(T));
  if (shrink_to_longest) {
    int longest = 1;
    for (int b = 0; b < B && first_row + b < rows.size(); ++b) longest = std::max(longest, int(rows[first_row + b].used));
    T = std::min(T, longest);
  }
  TokenBatch batch;
  batch.B = B;
  batch.T = T;
  const size_t n = size_t(B) * T;
  batch.inputs.assign(n, static_cast<int32_t>(pad_id));
  batch.targets.assign(n, -1);
  batch.segment_ids.assign(n, 0);
  batch.position_ids.assign(n, 0);
  batch.attn_start.resize(n);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) batch.attn_start[size_t(b) * T + t] = t;  // padding: itself only

  for (int b = 0; b < B; ++b) {
    if (first_row + b >= rows.size()) break;
    const PackedRow& row = rows[first_row + b];
    AJI_CHECK(row.used <= T, "row longer than the batch's T");
    int32_t segment = 0;
    for (const PackedSegment& seg : row.segments) {
      ++segment;
      const RenderedSequence& s = seqs.at(seg.seq);
      AJI_CHECK(static_cast<size_t>(seg.length) + 1 <= s.ids.size(), "segment longer than its sequence");
      for (int32_t k = 0; k < seg.length; ++k) {
        size_t at = size_t(b) * T + seg.offset + k;
        batch.inputs[at] = static_cast<int32_t>(s.ids[k]);
        if (s.loss_mask[k + 1]) {
          batch.targets[at] = static_cast<int32_t>(s.ids[k + 1]);
          ++batch.n_targets;
        }
        batch.segment_ids[at] = segment;
        batch.position_ids[at] = k;
        batch.attn_start[at] = seg.offset;
      }
    }
  }
  return batch;
}

}  // namespace aji::align
