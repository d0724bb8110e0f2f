#include "aji/train/loader.h"

#include <algorithm>

#include "aji/base/json_number.h"
#include "aji/base/error.h"
#include "aji/base/rng.h"

namespace aji::train {

namespace fs = std::filesystem;

nlohmann::json LoaderCursor::to_json() const {
  return {{"epoch", epoch},
          {"shard_index", shard_index},
          {"position", position},
          {"rng_state", {hex64(rng_state[0]), hex64(rng_state[1]), hex64(rng_state[2]), hex64(rng_state[3])}}};
}

// A count in the cursor: a JSON integer >= 0. get<uint64_t>() alone would cast a float
// (8.9e39: undefined behaviour) or wrap a negative number (found by fuzz_checkpoint_state).
static uint64_t cursor_count(const nlohmann::json& j, const char* key) {
  return json_int<uint64_t>(j.at(key), std::string("loader ") + key);
}

LoaderCursor LoaderCursor::from_json(const nlohmann::json& j) {
  LoaderCursor c;
  c.epoch = cursor_count(j, "epoch");
  c.shard_index = cursor_count(j, "shard_index");
  c.position = cursor_count(j, "position");
  const auto& r = j.at("rng_state");
  for (int i = 0; i < 4; ++i) {
    const std::string h = r.at(i).get<std::string>();
    if (h.empty() || h.size() > 16 || h.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
      throw Error("loader rng_state[" + std::to_string(i) + "] is not a 64-bit hex number: \"" + h.substr(0, 40) + "\"");
    c.rng_state[i] = std::stoull(h, nullptr, 16);
  }
  return c;
}

DataLoader::DataLoader(const fs::path& data_dir, const std::string& split, int batch, int seq_len, uint64_t seed,
                       bool shuffle)
    : B_(batch), T_(seq_len), seed_(seed), shuffle_(shuffle) {
  if (batch <= 0 || seq_len <= 0)
    throw Error("batch size and sequence length must be positive").fix("pass --batch-size and --seq-len >= 1");
  manifest_ = DataManifest::load(data_dir);
  const auto& infos = split == "val" ? manifest_.val : manifest_.train;
  if (infos.empty())
    throw Error("data directory has no " + split + " shards")
        .at(data_dir.string())
        .fix(split == "val" ? "re-run `aji data tokenize` with --val-fraction > 0 (e.g. 0.05)"
                            : "re-run `aji data tokenize` with more input");
  uint64_t longest = 0;
  const uint64_t T = static_cast<uint64_t>(T_);
  for (const auto& info : infos) {
    Shard s = Shard::open(data_dir / info.file);
    if (s.header().vocab_size != manifest_.vocab_size)
      throw Error("shard vocab size " + std::to_string(s.header().vocab_size) + " differs from the manifest's " +
                  std::to_string(manifest_.vocab_size))
          .at(s.path().string())
          .fix("the data directory mixes outputs of different tokenizers; re-run `aji data tokenize`");
    std::vector<uint64_t> bos;
    const uint32_t bos_id = manifest_.bos_id;
    for (uint64_t i = 0; i < s.size(); ++i)
      if (s[i] == bos_id) bos.push_back(i);
    // Lay out the windows (the BOS rule in loader.h).
    std::vector<uint64_t> starts;
    uint64_t pos = 0;
    for (;;) {
      uint64_t start = pos;
      auto it = std::lower_bound(bos.begin(), bos.end(), pos);
      if (it != bos.end() && *it - pos <= T / 4) start = *it;
      if (start + T + 1 > s.size()) break;
      starts.push_back(start);
      pos = start + T;
    }
    total_tokens_ += s.size();
    total_windows_ += starts.size();
    longest = std::max<uint64_t>(longest, s.size());
    shards_.push_back(std::move(s));
    window_starts_.push_back(std::move(starts));
  }
  if (total_windows_ == 0)
    throw Error("the " + split + " split has no shard with seq_len+1 = " + std::to_string(T_ + 1) +
                " tokens (largest: " + std::to_string(longest) + ")")
        .at(data_dir.string())
        .fix("use a smaller --seq-len, more data, or a larger --shard-tokens / --val-fraction");
  window_.resize(static_cast<size_t>(T_) + 1);
  reset();
}

uint64_t DataLoader::stream_seed(uint64_t a, uint64_t b) const {
  uint64_t s = seed_ ^ (a * 0x9E3779B97F4A7C15ULL);
  uint64_t h = splitmix64(s);
  s = h ^ (b * 0xC2B2AE3D27D4EB4FULL + 0x165667B19E3779F9ULL);
  return splitmix64(s);
}

void DataLoader::start_epoch() {
  shard_order_.resize(shards_.size());
  for (size_t i = 0; i < shard_order_.size(); ++i) shard_order_[i] = static_cast<uint32_t>(i);
  if (shuffle_) {
    Rng rng(stream_seed(epoch_, ~uint64_t(0)));
    for (size_t i = shard_order_.size(); i > 1; --i) std::swap(shard_order_[i - 1], shard_order_[rng.below(i)]);
  }
}

void DataLoader::start_shard() {
  const uint32_t si = shard_order_[shard_index_];
  const size_t n = window_starts_[si].size();
  window_order_.resize(n);
  for (size_t i = 0; i < n; ++i) window_order_[i] = static_cast<uint32_t>(i);
  Rng rng(stream_seed(epoch_, si));
  std::copy(rng.state(), rng.state() + 4, window_rng_state_);
  if (shuffle_)
    for (size_t i = n; i > 1; --i) std::swap(window_order_[i - 1], window_order_[rng.below(i)]);
}

void DataLoader::reset() {
  epoch_ = 0;
  shard_index_ = 0;
  position_ = 0;
  start_epoch();
  start_shard();
}

LoaderCursor DataLoader::cursor() const {
  LoaderCursor c;
  c.epoch = epoch_;
  c.shard_index = shard_index_;
  c.position = position_;
  std::copy(window_rng_state_, window_rng_state_ + 4, c.rng_state);
  return c;
}

void DataLoader::set_cursor(const LoaderCursor& c) {
  if (c.shard_index >= shards_.size())
    throw Error("loader cursor points at shard " + std::to_string(c.shard_index) + " but the data has only " +
                std::to_string(shards_.size()))
        .fix("resume with the same --data directory the run was started with");
  epoch_ = c.epoch;
  shard_index_ = c.shard_index;
  start_epoch();
  start_shard();
  position_ = c.position;
  if (position_ > window_order_.size() || !std::equal(c.rng_state, c.rng_state + 4, window_rng_state_))
    throw Error("the loader cursor does not fit this data directory (another seed or other shards?)")
        .fix("resume with the same --data directory and --seed the run was started with");
}

std::pair<uint32_t, uint64_t> DataLoader::advance() {
  while (position_ >= window_order_.size()) {  // this shard is used up: the next one, or a new epoch
    position_ = 0;
    if (++shard_index_ >= shards_.size()) {
      shard_index_ = 0;
      ++epoch_;
      start_epoch();
    }
    start_shard();
  }
  const uint32_t si = shard_order_[shard_index_];
  return {si, window_starts_[si][window_order_[position_++]]};
}

void DataLoader::next_window(int32_t* in, int32_t* tgt) {
  const auto [si, start] = advance();
  shards_[si].read(start, window_.size(), window_.data());
  for (int t = 0; t < T_; ++t) {
    in[t] = static_cast<int32_t>(window_[t]);
    tgt[t] = static_cast<int32_t>(window_[t + 1]);
  }
}

void DataLoader::next_batch(int32_t* inputs, int32_t* targets) {
  for (int64_t i = 0; i < static_cast<int64_t>(rank_) * B_; ++i) advance();  // the ranks before this one
  for (int b = 0; b < B_; ++b) next_window(inputs + static_cast<size_t>(b) * T_, targets + static_cast<size_t>(b) * T_);
  for (int64_t i = 0; i < static_cast<int64_t>(ranks_ - 1 - rank_) * B_; ++i) advance();  // the ranks after it
}

void DataLoader::set_shard(int rank, int ranks) {
  if (ranks < 1 || rank < 0 || rank >= ranks)
    throw Error("loader shard " + std::to_string(rank) + " of " + std::to_string(ranks) + " does not exist")
        .fix("a rank is in [0, ranks)");
  rank_ = rank;
  ranks_ = ranks;
}

}  // namespace aji::train
