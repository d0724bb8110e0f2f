#include "aji/train/shards.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "aji/base/json_number.h"
#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/rng.h"

namespace aji::train {

namespace fs = std::filesystem;

uint64_t shard_checksum(const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = 0x243F6A8885A308D3ULL ^ bytes;
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 0x9E3779B97F4A7C15ULL;
    h ^= h >> 29;
  }
  uint64_t tail = 0;
  if (i < bytes) std::memcpy(&tail, p + i, bytes - i);
  h = (h ^ tail) * 0x9E3779B97F4A7C15ULL;
  uint64_t s = h;
  return splitmix64(s);
}

uint32_t token_width_for_vocab(uint64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

namespace {
template <typename T>
void put(unsigned char* dst, T v) {
  std::memcpy(dst, &v, sizeof v);
}
template <typename T>
T get(const unsigned char* src) {
  T v;
  std::memcpy(&v, src, sizeof v);
  return v;
}
}  // namespace

void write_shard(const fs::path& path, const uint32_t* tokens, size_t count, uint32_t vocab_size, uint32_t bos_id) {
  ShardHeader h;
  h.token_width = token_width_for_vocab(vocab_size);
  h.count = count;
  h.vocab_size = vocab_size;
  h.bos_id = bos_id;
  std::vector<unsigned char> payload(count * h.token_width);
  for (size_t i = 0; i < count; ++i) {
    if (tokens[i] >= vocab_size)
      throw Error("token id " + std::to_string(tokens[i]) + " is outside the vocabulary of " +
                  std::to_string(vocab_size))
          .at(path.string())
          .fix("the tokenizer's vocab_size must cover every id it produces");
    if (h.token_width == 2)
      put<uint16_t>(payload.data() + 2 * i, static_cast<uint16_t>(tokens[i]));
    else
      put<uint32_t>(payload.data() + 4 * i, tokens[i]);
  }
  h.checksum = shard_checksum(payload.data(), payload.size());
  unsigned char head[kShardHeaderBytes] = {};
  std::memcpy(head, kShardMagic, 8);
  put<uint32_t>(head + 8, h.version);
  put<uint32_t>(head + 12, h.token_width);
  put<uint64_t>(head + 16, h.count);
  put<uint64_t>(head + 24, h.checksum);
  put<uint32_t>(head + 32, h.vocab_size);
  put<uint32_t>(head + 36, h.bos_id);
  AtomicFileWriter w(path);
  w.write(head, sizeof head);
  w.write(payload.data(), payload.size());
  w.commit();
}

Shard Shard::open(const fs::path& path, bool verify) {
  Shard s;
  s.path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0)
    throw Error(std::string("cannot open token shard: ") + std::strerror(errno))
        .at(path.string())
        .fix("run `aji data tokenize` to (re)create the data directory");
  struct stat st {};
  ::fstat(fd, &st);
  const size_t file_bytes = static_cast<size_t>(st.st_size);
  if (file_bytes < kShardHeaderBytes) {
    ::close(fd);
    throw Error("token shard is shorter than its 64-byte header (" + std::to_string(file_bytes) + " bytes)")
        .at(path.string())
        .fix("the file is truncated or not a shard; re-run `aji data tokenize`");
  }
  void* map = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) throw Error(std::string("cannot map token shard: ") + std::strerror(errno)).at(path.string());
  s.map_ = map;
  s.map_bytes_ = file_bytes;
  const auto* p = static_cast<const unsigned char*>(map);
  if (std::memcmp(p, kShardMagic, 8) != 0)
    throw Error("not an aji token shard (bad magic)")
        .at(path.string())
        .fix("shards are written by `aji data tokenize`; point --data at its output directory");
  ShardHeader& h = s.header_;
  h.version = get<uint32_t>(p + 8);
  h.token_width = get<uint32_t>(p + 12);
  h.count = get<uint64_t>(p + 16);
  h.checksum = get<uint64_t>(p + 24);
  h.vocab_size = get<uint32_t>(p + 32);
  h.bos_id = get<uint32_t>(p + 36);
  if (h.version != kShardVersion)
    throw Error("token shard version " + std::to_string(h.version) + " is not supported (this aji reads version " +
                std::to_string(kShardVersion) + ")")
        .at(path.string())
        .fix("re-run `aji data tokenize` with this version of aji");
  if (h.token_width != 2 && h.token_width != 4)
    throw Error("token shard has token width " + std::to_string(h.token_width) + " (must be 2 or 4)")
        .at(path.string())
        .fix("the file is corrupt; re-run `aji data tokenize`");
  const uint64_t want = kShardHeaderBytes + h.count * h.token_width;
  if (h.count > (uint64_t(1) << 40) || want != file_bytes)
    throw Error("token shard is " + std::to_string(file_bytes) + " bytes but its header promises " +
                std::to_string(h.count) + " tokens (" + std::to_string(want) + " bytes): truncated or corrupt")
        .at(path.string())
        .fix("re-run `aji data tokenize` (or copy the file again)");
  s.data_ = p + kShardHeaderBytes;
  if (verify && shard_checksum(s.data_, h.count * h.token_width) != h.checksum)
    throw Error("token shard checksum mismatch: the data is corrupt")
        .at(path.string())
        .fix("re-run `aji data tokenize`");
  return s;
}

Shard::~Shard() {
  if (map_) ::munmap(map_, map_bytes_);
}

Shard::Shard(Shard&& o) noexcept { *this = std::move(o); }

Shard& Shard::operator=(Shard&& o) noexcept {
  if (this != &o) {
    if (map_) ::munmap(map_, map_bytes_);
    path_ = std::move(o.path_);
    header_ = o.header_;
    map_ = o.map_;
    map_bytes_ = o.map_bytes_;
    data_ = o.data_;
    o.map_ = nullptr;
    o.map_bytes_ = 0;
    o.data_ = nullptr;
  }
  return *this;
}

void Shard::read(uint64_t begin, size_t n, uint32_t* out) const {
  AJI_CHECK(begin + n <= header_.count, "shard read past the end");
  if (n == 0) return;  // out (and data_ of an empty shard) may be null: memcpy must not see them
  if (header_.token_width == 4) {
    std::memcpy(out, static_cast<const uint32_t*>(data_) + begin, n * 4);
  } else {
    const uint16_t* src = static_cast<const uint16_t*>(data_) + begin;
    for (size_t i = 0; i < n; ++i) out[i] = src[i];
  }
}

bool document_goes_to_val(uint64_t index, uint64_t seed, double val_fraction) {
  if (val_fraction <= 0) return false;
  uint64_t s = index * 0xD1B54A32D192ED03ULL ^ (seed + 0x8CB92BA72F3D8DD7ULL);
  const double u = static_cast<double>(splitmix64(s) >> 11) * 0x1.0p-53;
  return u < val_fraction;
}

nlohmann::json DataManifest::to_json() const {
  auto shards = [](const std::vector<ShardInfo>& v) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& s : v)
      a.push_back({{"file", s.file}, {"tokens", s.tokens}, {"documents", s.documents}, {"bytes", s.bytes}});
    return a;
  };
  return {{"format", "aji-token-shards"},
          {"version", 1},
          {"vocab_size", vocab_size},
          {"bos_id", bos_id},
          {"tokenizer_file", tokenizer_file},
          {"tokenizer_hash", tokenizer_hash},
          {"val_fraction", val_fraction},
          {"seed", seed},
          {"skipped_documents", skipped_documents},
          {"train", shards(train)},
          {"val", shards(val)}};
}

DataManifest DataManifest::from_json(const nlohmann::json& j, const std::string& where) {
  DataManifest m;
  try {
    if (j.value("format", "") != "aji-token-shards")
      throw Error("not an aji token-shard manifest (format is not \"aji-token-shards\")").at(where);
    m.vocab_size = json_int<uint32_t>(j.at("vocab_size"), "\"vocab_size\"", where);
    m.bos_id = json_int<uint32_t>(j.at("bos_id"), "\"bos_id\"", where);
    m.tokenizer_file = j.value("tokenizer_file", "aji_tokenizer.json");
    m.tokenizer_hash = j.value("tokenizer_hash", "");
    m.val_fraction = j.value("val_fraction", 0.0);
    m.seed = json_int_or<uint64_t>(j, "seed", 0, "\"seed\"", where);
    m.skipped_documents = json_int_or<uint64_t>(j, "skipped_documents", 0, "\"skipped_documents\"", where);
    auto shards = [&where](const nlohmann::json& a, std::vector<ShardInfo>& out) {
      for (const auto& s : a)
        out.push_back({s.at("file").get<std::string>(), json_int<uint64_t>(s.at("tokens"), "a shard's \"tokens\"", where),
                       json_int_or<uint64_t>(s, "documents", 0, "a shard's \"documents\"", where),
                       json_int_or<uint64_t>(s, "bytes", 0, "a shard's \"bytes\"", where)});
    };
    shards(j.at("train"), m.train);
    if (j.contains("val")) shards(j.at("val"), m.val);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("malformed data manifest: ") + e.what())
        .at(where)
        .fix("re-run `aji data tokenize` to rewrite the data directory");
  }
  return m;
}

DataManifest DataManifest::load(const fs::path& dir) {
  if (!fs::is_directory(dir))
    throw Error("data directory does not exist")
        .at(dir.string())
        .fix("create it with `aji data tokenize --tokenizer FILE --input TEXT... --out " + dir.string() + "`");
  const fs::path mpath = dir / "manifest.json";
  if (!fs::exists(mpath)) {
    bool has_shards = false;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".ajitok") has_shards = true;
    throw Error(has_shards ? "data directory has shards but no manifest.json"
                           : "data directory holds no token shards (no manifest.json, no *.ajitok)")
        .at(dir.string())
        .fix("point --data at the output of `aji data tokenize --tokenizer FILE --input TEXT... --out DIR`");
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(mpath));
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("data manifest is not valid JSON: ") + e.what())
        .at(mpath.string())
        .fix("re-run `aji data tokenize`");
  }
  DataManifest m = from_json(j, mpath.string());
  if (m.train.empty())
    throw Error("data directory has no training shards")
        .at(mpath.string())
        .fix("give `aji data tokenize` more input text (or a smaller --val-fraction)");
  return m;
}

void DataManifest::save(const fs::path& dir) const { write_file_atomic(dir / "manifest.json", to_json().dump(2) + "\n"); }

}  // namespace aji::train
