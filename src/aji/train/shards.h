// Token shards: the pretraining data on disk.
//
// A shard is one file holding a flat stream of token ids, documents back to back, each
// document preceded by the tokenizer's end-of-text id (used as BOS, nanochat-style):
//
//   offset  size  field
//   0       8     magic "AJITOK\0\0"
//   8       4     version (uint32, = 1)
//   12      4     token width in bytes (uint32: 2 when vocab <= 65536, else 4)
//   16      8     token count (uint64)
//   24      8     checksum of the token bytes (uint64, see shard_checksum)
//   32      4     vocab size (uint32)
//   36      4     BOS id (uint32)
//   40      24    reserved (zero)
//   64      ...   count * width bytes of little-endian token ids
//
// The file length must be exactly 64 + count * width: a truncated copy is caught on open
// (the checksum catches corruption when verify=true).
//
// A data directory (written by `aji data tokenize`) holds train-NNNNN.ajitok and
// val-NNNNN.ajitok shards, manifest.json (counts, tokenizer hash, split) and
// aji_tokenizer.json (the aji tokenizer file the ids came from).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace aji::train {

constexpr char kShardMagic[8] = {'A', 'J', 'I', 'T', 'O', 'K', 0, 0};
constexpr uint32_t kShardVersion = 1;
constexpr size_t kShardHeaderBytes = 64;

struct ShardHeader {
  uint32_t version = kShardVersion;
  uint32_t token_width = 2;  // bytes per token id
  uint64_t count = 0;
  uint64_t checksum = 0;
  uint32_t vocab_size = 0;
  uint32_t bos_id = 0;
};

// 64-bit checksum of the raw token bytes (a word-wise multiply-xor hash; fast, not
// cryptographic). Same bytes, same value, on every machine.
uint64_t shard_checksum(const void* data, size_t bytes);

// 2 when every id fits in uint16 (vocab <= 65536), else 4.
uint32_t token_width_for_vocab(uint64_t vocab_size);

// Writes a shard atomically. Throws if an id does not fit the width for vocab_size.
void write_shard(const std::filesystem::path& path, const uint32_t* tokens, size_t count, uint32_t vocab_size,
                 uint32_t bos_id);

// A shard opened read-only (memory-mapped). Movable, not copyable.
class Shard {
 public:
  Shard() = default;
  // Validates magic, version, width and the exact file length; verify=true also checks
  // the checksum (one pass over the data). Errors name the file and say what to do.
  static Shard open(const std::filesystem::path& path, bool verify = false);
  ~Shard();
  Shard(Shard&& other) noexcept;
  Shard& operator=(Shard&& other) noexcept;
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  const ShardHeader& header() const { return header_; }
  uint64_t size() const { return header_.count; }
  uint32_t operator[](uint64_t i) const {
    return header_.token_width == 2 ? static_cast<const uint16_t*>(data_)[i] : static_cast<const uint32_t*>(data_)[i];
  }
  // Copies tokens [begin, begin+n) into out as uint32 (n must fit).
  void read(uint64_t begin, size_t n, uint32_t* out) const;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  ShardHeader header_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const void* data_ = nullptr;
};

// The data directory's manifest.
struct ShardInfo {
  std::string file;  // relative to the data dir
  uint64_t tokens = 0;
  uint64_t documents = 0;
  uint64_t bytes = 0;  // UTF-8 bytes of the documents' text
};

struct DataManifest {
  uint32_t vocab_size = 0;
  uint32_t bos_id = 0;
  std::string tokenizer_file = "aji_tokenizer.json";
  std::string tokenizer_hash;  // hex checksum of the tokenizer file's bytes
  double val_fraction = 0.0;
  uint64_t seed = 0;
  std::vector<ShardInfo> train;
  std::vector<ShardInfo> val;
  uint64_t skipped_documents = 0;

  nlohmann::json to_json() const;
  static DataManifest from_json(const nlohmann::json& j, const std::string& where);
  // Reads DIR/manifest.json; a directory without it or without shards is a clear error.
  static DataManifest load(const std::filesystem::path& dir);
  void save(const std::filesystem::path& dir) const;
};

// Deterministic val split: document `index` goes to val when a hash of (index, seed)
// falls below val_fraction.
bool document_goes_to_val(uint64_t index, uint64_t seed, double val_fraction);

std::string hex64(uint64_t v);

}  // namespace aji::train
