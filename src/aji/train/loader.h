// The pretraining data loader: serves (B,T) windows of inputs and next-token targets
// from a data directory's shards, deterministically from a seed, with a cursor that a
// checkpoint saves and restores.
//
// Order. Each epoch visits the split's shards in an order drawn from the loader's RNG
// (train) or in file order (val, shuffle=false), and walks each shard front to back.
//
// BOS alignment (the exact rule). A window is T+1 consecutive tokens of one shard
// (inputs = the first T, targets = the last T). After a window starting at `start` the
// cursor moves to start+T, so the next window's first input is the previous window's last
// target and no token of a long document is skipped. A new window starts at the first
// document start (BOS) at or after the cursor if one lies within T/4 tokens of it;
// otherwise (inside a document longer than that) it starts at the cursor itself. So
// short documents always begin a row with their BOS, and at most T/4 tokens of a
// document's tail are skipped. Windows never span two shards; a shard's last
// incomplete window is skipped. Row b of a batch is the b-th window drawn.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/base/rng.h"
#include "aji/train/shards.h"

namespace aji::train {

struct LoaderCursor {
  uint64_t epoch = 0;
  uint64_t shard_index = 0;  // index into this epoch's shard order
  uint64_t position = 0;     // token position inside that shard
  uint64_t rng_state[4] = {0, 0, 0, 0};  // RNG state before drawing this epoch's order
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
  // Back to the first window of epoch 0.
  void reset();

  LoaderCursor cursor() const;
  void set_cursor(const LoaderCursor& c);

  int batch() const { return B_; }
  int seq_len() const { return T_; }
  uint64_t total_tokens() const { return total_tokens_; }
  // Windows in one pass over the split (an upper bound; BOS alignment can skip a few).
  uint64_t windows_per_epoch() const { return total_tokens_ / static_cast<uint64_t>(T_); }
  const DataManifest& manifest() const { return manifest_; }
  uint64_t epoch() const { return epoch_; }

 private:
  void next_window(int32_t* in, int32_t* tgt);
  void new_epoch_order();

  DataManifest manifest_;
  std::vector<Shard> shards_;
  std::vector<std::vector<uint64_t>> bos_positions_;  // per shard, ascending
  int B_, T_;
  uint64_t seed_;
  bool shuffle_;
  uint64_t total_tokens_ = 0;
  std::vector<uint32_t> window_;  // T+1 scratch

  // cursor
  Rng rng_;
  uint64_t epoch_rng_state_[4];
  std::vector<uint32_t> order_;
  uint64_t epoch_ = 0, shard_index_ = 0, position_ = 0;
};

}  // namespace aji::train
