#include "aji/train/loader.h"

#include <algorithm>

#include "aji/base/error.h"

namespace aji::train {

namespace fs = std::filesystem;

nlohmann::json LoaderCursor::to_json() const {
  return {{"epoch", epoch},
          {"shard_index", shard_index},
          {"position", position},
          {"rng_state", {hex64(rng_state[0]), hex64(rng_state[1]), hex64(rng_state[2]), hex64(rng_state[3])}}};
}

LoaderCursor LoaderCursor::from_json(const nlohmann::json& j) {
  LoaderCursor c;
  c.epoch = j.at("epoch").get<uint64_t>();
  c.shard_index = j.at("shard_index").get<uint64_t>();
  c.position = j.at("position").get<uint64_t>();
  const auto& r = j.at("rng_state");
  for (int i = 0; i < 4; ++i) c.rng_state[i] = std::stoull(r.at(i).get<std::string>(), nullptr, 16);
  return c;
}

DataLoader::DataLoader(const fs::path& data_dir, const std::string& split, int batch, int seq_len, uint64_t seed,
                       bool shuffle)
    : B_(batch), T_(seq_len), seed_(seed), shuffle_(shuffle), rng_(seed) {
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
    total_tokens_ += s.size();
    longest = std::max<uint64_t>(longest, s.size());
    shards_.push_back(std::move(s));
    bos_positions_.push_back(std::move(bos));
  }
  if (longest < static_cast<uint64_t>(T_) + 1)
    throw Error("the " + split + " split has no shard with seq_len+1 = " + std::to_string(T_ + 1) +
                " tokens (largest: " + std::to_string(longest) + ")")
        .at(data_dir.string())
        .fix("use a smaller --seq-len, more data, or a larger --shard-tokens / --val-fraction");
  window_.resize(static_cast<size_t>(T_) + 1);
  reset();
}

void DataLoader::new_epoch_order() {
  std::copy(rng_.state(), rng_.state() + 4, epoch_rng_state_);
  order_.resize(shards_.size());
  for (size_t i = 0; i < order_.size(); ++i) order_[i] = static_cast<uint32_t>(i);
  if (shuffle_)
    for (size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[rng_.below(i)]);
}

void DataLoader::reset() {
  rng_.reseed(seed_);
  epoch_ = 0;
  shard_index_ = 0;
  position_ = 0;
  new_epoch_order();
}

LoaderCursor DataLoader::cursor() const {
  LoaderCursor c;
  c.epoch = epoch_;
  c.shard_index = shard_index_;
  c.position = position_;
  std::copy(epoch_rng_state_, epoch_rng_state_ + 4, c.rng_state);
  return c;
}

void DataLoader::set_cursor(const LoaderCursor& c) {
  if (c.shard_index >= shards_.size())
    throw Error("loader cursor points at shard " + std::to_string(c.shard_index) + " but the data has only " +
                std::to_string(shards_.size()))
        .fix("resume with the same --data directory the run was started with");
  rng_.set_state(c.rng_state);
  new_epoch_order();  // regenerates the same order and leaves the RNG where it was
  epoch_ = c.epoch;
  shard_index_ = c.shard_index;
  position_ = c.position;
  if (position_ > shards_[order_[shard_index_]].size())
    throw Error("loader cursor lies beyond the end of its shard")
        .fix("resume with the same --data directory the run was started with");
}

void DataLoader::next_window(int32_t* in, int32_t* tgt) {
  const uint64_t T = static_cast<uint64_t>(T_);
  for (;;) {
    const uint32_t si = order_[shard_index_];
    const Shard& shard = shards_[si];
    const auto& bos = bos_positions_[si];
    uint64_t start = position_;
    auto it = std::lower_bound(bos.begin(), bos.end(), position_);
    if (it != bos.end() && *it - position_ <= T / 4) start = *it;
    if (start + T + 1 <= shard.size()) {
      shard.read(start, window_.size(), window_.data());
      for (uint64_t t = 0; t < T; ++t) {
        in[t] = static_cast<int32_t>(window_[t]);
        tgt[t] = static_cast<int32_t>(window_[t + 1]);
      }
      position_ = start + T;
      return;
    }
    // This shard is used up: the next one, or a new epoch.
    position_ = 0;
    if (++shard_index_ >= shards_.size()) {
      shard_index_ = 0;
      ++epoch_;
      new_epoch_order();
    }
  }
}

void DataLoader::next_batch(int32_t* inputs, int32_t* targets) {
  for (int b = 0; b < B_; ++b) next_window(inputs + static_cast<size_t>(b) * T_, targets + static_cast<size_t>(b) * T_);
}

}  // namespace aji::train
