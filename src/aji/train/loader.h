// The pretraining data loader: serves (B,T) windows of inputs and next-token targets
// from a data directory's shards, deterministically from a seed, with a cursor that a
// checkpoint saves and restores.
//
// Windows (the BOS rule, exact). A window is T+1 consecutive tokens of one shard
// (inputs = the first T, targets = the last T). A shard's windows are laid out once,
// front to back: after a window starting at `start` the layout cursor moves to start+T,
// so the next window's first input is the previous window's last target and no token of
// a long document is skipped. The next window starts at the first document start (BOS)
// at or after the cursor if one lies within T/4 tokens of it; otherwise (inside a
// document longer than that) at the cursor itself. So short documents always begin a row
// with their BOS, and at most T/4 tokens of a document's tail are skipped. Windows never
// span two shards; a shard's last incomplete window is dropped.
//
// Order. With shuffle (training), each epoch visits the shards in a random order and
// each shard's windows in a random order, both drawn from RNGs seeded by (seed, epoch,
// shard), so rows of a batch come from all over the shard (a shard usually holds several
// sources back to back). Without shuffle, file order and window order. Row b of a batch
// is the b-th window served.
//
// Data parallelism (set_shard). Rank r of N takes, of every N*B consecutive windows of that
// order, the B windows from r*B on: its a-th batch is global batch a*N + r of a single
// process with the same B, and the N ranks together read every window of an epoch once.
// Each rank passes over (without reading) the windows of the others, so the cursor is the
// same on every rank after every batch: a checkpoint written by N ranks resumes on any
// number of ranks (the cursor is global).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/train/shards.h"

namespace aji::train {

struct LoaderCursor {
  uint64_t epoch = 0;
  uint64_t shard_index = 0;  // index into this epoch's shard order
  uint64_t position = 0;     // index of the next window in that shard's window order
  uint64_t rng_state[4] = {0, 0, 0, 0};  // state of the RNG that drew that shard's window order
  nlohmann::json to_json() const;
  static LoaderCursor from_json(const nlohmann::json& j);
};

class DataLoader {
 public:
  // split is "train" or "val". Opens every shard of the split (validating headers).
  DataLoader(const std::filesystem::path& data_dir, const std::string& split, int batch, int seq_len, uint64_t seed,
             bool shuffle);

  // Fills inputs and targets, each (B,T) row-major.
  void next_batch(int32_t* inputs, int32_t* targets);
  // This loader serves rank `rank` of `ranks` (see above; 0 of 1: every window, the default).
  // An aji::Error when rank is not in [0, ranks).
  void set_shard(int rank, int ranks);
  int shard_rank() const { return rank_; }
  int shard_count() const { return ranks_; }
  // Back to the first window of epoch 0.
  void reset();

  LoaderCursor cursor() const;
  void set_cursor(const LoaderCursor& c);

  int batch() const { return B_; }
  int seq_len() const { return T_; }
  uint64_t total_tokens() const { return total_tokens_; }
  // Windows in one pass over the split.
  uint64_t windows_per_epoch() const { return total_windows_; }
  const DataManifest& manifest() const { return manifest_; }
  uint64_t epoch() const { return epoch_; }

 private:
  void next_window(int32_t* in, int32_t* tgt);
  // Moves the cursor to the next window and returns (shard, start) of the window it passed.
  std::pair<uint32_t, uint64_t> advance();
  void start_epoch();  // shard order of epoch_
  void start_shard();  // window order of the current shard
  uint64_t stream_seed(uint64_t a, uint64_t b) const;

  DataManifest manifest_;
  std::vector<Shard> shards_;
  std::vector<std::vector<uint64_t>> window_starts_;  // per shard, ascending (the BOS rule)
  int B_, T_;
  uint64_t seed_;
  bool shuffle_;
  uint64_t total_tokens_ = 0, total_windows_ = 0;
  int rank_ = 0, ranks_ = 1;
  std::vector<uint32_t> window_;  // T+1 scratch

  // cursor
  uint64_t epoch_ = 0, shard_index_ = 0, position_ = 0;
  std::vector<uint32_t> shard_order_;
  std::vector<uint32_t> window_order_;  // of the current shard
  uint64_t window_rng_state_[4] = {0, 0, 0, 0};
};

}  // namespace aji::train
