#include "aji/data/dedup.h"

#include <utf8proc.h>
#include <zstd.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <map>
#include <cstring>
#include <fstream>
#include <queue>
#include <unordered_map>

#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/progress.h"
#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "aji/data/text_stats.h"

namespace aji::data {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

namespace {

#include "aji/data/minhash_params_seed1.inc"

constexpr uint64_t kMersenne61 = (uint64_t(1) << 61) - 1;

// ---- text normalisation -------------------------------------------------------------

bool is_number_separator(char32_t c) {
  return c == '.' || c == ',' || c == 0x60C || c == 0x66B || c == 0x2396 || c == 0x2397 || c == 0x2398;
}
bool is_nd(char32_t c) {
  if (c < 128) return c >= '0' && c <= '9';
  return utf8proc_category(int32_t(c)) == UTF8PROC_CATEGORY_ND;
}
bool is_simplify_punct(char32_t c) { return is_simplify_punctuation(c); }
void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(char(c));
    return;
  }
  uint8_t buf[4];
  auto n = utf8proc_encode_char(int32_t(c), buf);
  out.append(reinterpret_cast<const char*>(buf), size_t(n));
}

// datatrove simplify_text; `numbers` = replace numbers by "0" (MinHash) or keep them
// (exact dedup: "page 1" and "page 2" are different texts).
std::string simplify(std::string_view text, bool numbers) {
  // 1. lowercase, 2. numbers → "0", 3. punctuation → " ".
  std::string lower = lower_python(text);
  std::string a;
  a.reserve(lower.size());
  size_t i = 0;
  while (i < lower.size()) {
    unsigned char c0 = static_cast<unsigned char>(lower[i]);
    if (c0 < 0x80 && !(c0 >= '0' && c0 <= '9')) {  // ASCII fast path
      a.push_back(is_simplify_punct(c0) ? ' ' : char(c0));
      ++i;
      continue;
    }
    size_t b = i;
    char32_t c = next_code_point(lower, i);
    if (numbers && is_nd(c)) {
      while (i < lower.size()) {
        size_t k = i;
        if (!is_nd(next_code_point(lower, k))) break;
        i = k;
      }
      // One optional "<separator><digits>" group.
      size_t k = i;
      if (k < lower.size() && is_number_separator(next_code_point(lower, k)) && k < lower.size()) {
        size_t k2 = k;
        if (is_nd(next_code_point(lower, k2))) {
          i = k2;
          while (i < lower.size()) {
            size_t k3 = i;
            if (!is_nd(next_code_point(lower, k3))) break;
            i = k3;
          }
        }
      }
      a.push_back('0');
      continue;
    }
    if (is_simplify_punct(c)) {
      a.push_back(' ');
      continue;
    }
    a.append(lower, b, i - b);
  }
  // 4. strip, then every whitespace run → one space.
  std::string_view s = strip_python(a);
  std::string w;
  w.reserve(s.size());
  i = 0;
  bool in_space = false;
  while (i < s.size()) {
    size_t b = i;
    char32_t c = next_code_point(s, i);
    if (is_python_space(c)) {
      if (!in_space) w.push_back(' ');
      in_space = true;
    } else {
      w.append(s, b, i - b);
      in_space = false;
    }
  }
  // 5. NFD, dropping combining marks (Mn). ASCII is its own NFD.
  std::string out;
  out.reserve(w.size());
  i = 0;
  while (i < w.size()) {
    unsigned char c0 = static_cast<unsigned char>(w[i]);
    if (c0 < 0x80) {
      out.push_back(char(c0));
      ++i;
      continue;
    }
    size_t b = i;
    char32_t c = next_code_point(w, i);
    utf8proc_int32_t buf[8];
    int options = UTF8PROC_DECOMPOSE;
    utf8proc_ssize_t n = utf8proc_decompose_char(int32_t(c), buf, 8, utf8proc_option_t(options), nullptr);
    if (n < 0 || n > 8) {
      out.append(w, b, i - b);
      continue;
    }
    for (utf8proc_ssize_t k = 0; k < n; ++k)
      if (utf8proc_category(buf[k]) != UTF8PROC_CATEGORY_MN) append_utf8(out, char32_t(buf[k]));
  }
  return std::string(strip_python(out));
}

// ---- hashing ------------------------------------------------------------------------

inline uint32_t rol32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

void sha1_block(uint32_t h[5], const uint8_t* p) {
  uint32_t w[80];
  for (int i = 0; i < 16; ++i)
    w[i] = uint32_t(p[4 * i]) << 24 | uint32_t(p[4 * i + 1]) << 16 | uint32_t(p[4 * i + 2]) << 8 | p[4 * i + 3];
  for (int i = 16; i < 80; ++i) w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
  for (int i = 0; i < 80; ++i) {
    uint32_t f, k;
    if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999; }
    else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1; }
    else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
    else { f = b ^ c ^ d; k = 0xCA62C1D6; }
    uint32_t t = rol32(a, 5) + f + e + k + w[i];
    e = d; d = c; c = rol32(b, 30); b = a; a = t;
  }
  h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
}

inline uint64_t read64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline uint32_t read32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
constexpr uint64_t P1 = 11400714785074694791ULL, P2 = 14029467366897019727ULL, P3 = 1609587929392839161ULL,
                   P4 = 9650029242287828579ULL, P5 = 2870177450012600261ULL;
inline uint64_t xx_round(uint64_t acc, uint64_t in) { return rotl64(acc + in * P2, 31) * P1; }
inline uint64_t xx_merge(uint64_t acc, uint64_t v) { return (acc ^ xx_round(0, v)) * P1 + P4; }

}  // namespace

void sha1_digest(std::string_view data, uint8_t out[20]) {
  uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  size_t n = data.size(), full = n / 64 * 64;
  for (size_t i = 0; i < full; i += 64) sha1_block(h, p + i);
  uint8_t tail[128] = {};
  size_t rem = n - full;
  std::memcpy(tail, p + full, rem);
  tail[rem] = 0x80;
  size_t tail_len = rem + 1 + 8 <= 64 ? 64 : 128;
  uint64_t bits = uint64_t(n) * 8;
  for (int i = 0; i < 8; ++i) tail[tail_len - 1 - i] = uint8_t(bits >> (8 * i));
  sha1_block(h, tail);
  if (tail_len == 128) sha1_block(h, tail + 64);
  for (int i = 0; i < 5; ++i) {
    out[4 * i] = uint8_t(h[i] >> 24);
    out[4 * i + 1] = uint8_t(h[i] >> 16);
    out[4 * i + 2] = uint8_t(h[i] >> 8);
    out[4 * i + 3] = uint8_t(h[i]);
  }
}

uint64_t sha1_hash64(std::string_view data) {
  uint8_t d[20];
  sha1_digest(data, d);
  return read64(d);  // struct.unpack("<Q", digest[:8])
}

uint64_t xxh64(std::string_view data, uint64_t seed) {
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  const uint8_t* end = p + data.size();
  uint64_t h;
  if (data.size() >= 32) {
    uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
    const uint8_t* limit = end - 32;
    do {
      v1 = xx_round(v1, read64(p));
      v2 = xx_round(v2, read64(p + 8));
      v3 = xx_round(v3, read64(p + 16));
      v4 = xx_round(v4, read64(p + 24));
      p += 32;
    } while (p <= limit);
    h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
    h = xx_merge(h, v1);
    h = xx_merge(h, v2);
    h = xx_merge(h, v3);
    h = xx_merge(h, v4);
  } else {
    h = seed + P5;
  }
  h += uint64_t(data.size());
  while (p + 8 <= end) {
    h ^= xx_round(0, read64(p));
    h = rotl64(h, 27) * P1 + P4;
    p += 8;
  }
  if (p + 4 <= end) {
    h ^= uint64_t(read32(p)) * P1;
    h = rotl64(h, 23) * P2 + P3;
    p += 4;
  }
  while (p < end) {
    h ^= uint64_t(*p) * P5;
    h = rotl64(h, 11) * P1;
    ++p;
  }
  h ^= h >> 33;
  h *= P2;
  h ^= h >> 29;
  h *= P3;
  h ^= h >> 32;
  return h;
}

std::string simplify_text(std::string_view text) { return simplify(text, true); }

MinhashParams minhash_params(const MinhashConfig& c) {
  MinhashParams p;
  int n = c.num_hashes();
  if (n <= 0 || c.n_grams <= 0) throw Error("MinHash config needs num_buckets, hashes_per_bucket and n_grams > 0");
  p.a.resize(size_t(n));
  p.b.resize(size_t(n));
  if (c.seed == 1 && n <= 112) {
    // numpy draws a and b as two arrays of `size` values; for size 112 these are the
    // tables. Smaller configs would take a prefix of a different draw, so only 112 is exact.
    if (n == 112) {
      std::copy(kNumpySeed1A, kNumpySeed1A + 112, p.a.begin());
      std::copy(kNumpySeed1B, kNumpySeed1B + 112, p.b.begin());
      return p;
    }
  }
  Rng rng(c.seed);
  for (int i = 0; i < n; ++i) p.a[size_t(i)] = 1 + rng.below(kMersenne61 - 1);
  for (int i = 0; i < n; ++i) p.b[size_t(i)] = rng.below(kMersenne61);
  return p;
}

std::vector<uint64_t> shingle_hashes(std::string_view text, const MinhashConfig& c) {
  std::string simple = simplify(text, true);
  std::vector<std::string_view> words = split_words(simple, WordSplitter::kEnglish);
  std::vector<uint64_t> out;
  const size_t n = size_t(c.n_grams);
  if (words.size() < n) return out;
  out.reserve(words.size() - n + 1);
  std::string joined;
  for (size_t i = 0; i + n <= words.size(); ++i) {
    // Fast path: the n words sit in the text separated by single spaces.
    bool contiguous = true;
    for (size_t k = i; k + 1 < i + n && contiguous; ++k)
      contiguous = words[k].data() + words[k].size() + 1 == words[k + 1].data() &&
                   words[k].data()[words[k].size()] == ' ';
    std::string_view g;
    if (contiguous) {
      g = std::string_view(words[i].data(), size_t(words[i + n - 1].data() + words[i + n - 1].size() - words[i].data()));
    } else {
      joined.clear();
      for (size_t k = i; k < i + n; ++k) {
        if (k > i) joined.push_back(' ');
        joined.append(words[k]);
      }
      g = joined;
    }
    out.push_back(c.hash == ShingleHash::kSha1 ? sha1_hash64(g) : xxh64(g));
  }
  return out;
}

std::vector<uint64_t> minhash_signature(const std::vector<uint64_t>& shingles, const MinhashParams& p) {
  const size_t H = p.a.size();
  if (shingles.empty()) return {};
  std::vector<uint64_t> sig(H, ~uint64_t(0));
  for (uint64_t x : shingles) {
    for (size_t j = 0; j < H; ++j) {
      uint64_t t = x * p.a[j] + p.b[j];  // wraps mod 2^64, as numpy uint64
      // t mod (2^61 - 1) without a division.
      uint64_t r = (t & kMersenne61) + (t >> 61);
      if (r >= kMersenne61) r -= kMersenne61;
      sig[j] = r < sig[j] ? r : sig[j];
    }
  }
  return sig;
}

bool exact_text_hash(std::string_view text, ExactHash* out) {
  std::string s = simplify(text, false);
  if (s.empty()) return false;
  out->hi = xxh64(s, 0);
  out->lo = xxh64(s, 0x9E3779B97F4A7C15ULL);
  return true;
}

double lsh_candidate_probability(double s, int num_buckets, int hashes_per_bucket) {
  return 1.0 - std::pow(1.0 - std::pow(s, hashes_per_bucket), num_buckets);
}

// ---- config ---------------------------------------------------------------------------

void to_json(json& j, const MinhashConfig& c) {
  j = json{{"n_grams", c.n_grams},
           {"num_buckets", c.num_buckets},
           {"hashes_per_bucket", c.hashes_per_bucket},
           {"seed", c.seed},
           {"hash", c.hash == ShingleHash::kSha1 ? "sha1" : "xxhash"},
           {"exact_dedup", c.exact_dedup},
           {"sort_buffer_mb", c.sort_buffer_mb}};
}
void from_json(const json& j, MinhashConfig& c) {
  if (!j.is_object()) throw Error("MinHash config must be a JSON object");
  for (const auto& [k, v] : j.items()) {
    if (k != "n_grams" && k != "num_buckets" && k != "hashes_per_bucket" && k != "seed" && k != "hash" &&
        k != "exact_dedup" && k != "sort_buffer_mb")
      throw Error("unknown key '" + k + "' in MinHash config")
          .fix("known keys: n_grams, num_buckets, hashes_per_bucket, seed, hash, exact_dedup, sort_buffer_mb");
  }
  try {
    c.n_grams = j.value("n_grams", c.n_grams);
    c.num_buckets = j.value("num_buckets", c.num_buckets);
    c.hashes_per_bucket = j.value("hashes_per_bucket", c.hashes_per_bucket);
    c.seed = j.value("seed", c.seed);
    c.exact_dedup = j.value("exact_dedup", c.exact_dedup);
    c.sort_buffer_mb = j.value("sort_buffer_mb", c.sort_buffer_mb);
    std::string h = j.value("hash", std::string(c.hash == ShingleHash::kSha1 ? "sha1" : "xxhash"));
    if (h == "sha1") c.hash = ShingleHash::kSha1;
    else if (h == "xxhash" || h == "xxh64") c.hash = ShingleHash::kXxh64;
    else throw Error("unknown MinHash hash '" + h + "'").fix("use sha1 or xxhash");
  } catch (const json::exception& e) {
    throw Error(std::string("bad value in MinHash config: ") + e.what());
  }
  if (c.n_grams <= 0 || c.num_buckets <= 0 || c.hashes_per_bucket <= 0 || c.num_buckets > 999)
    throw Error("MinHash config: n_grams, num_buckets (≤ 999) and hashes_per_bucket must be positive");
}

json DedupStats::to_json() const {
  return json{{"documents", documents}, {"bad_lines", bad_lines},   {"no_signature", no_signature},
              {"duplicate_pairs", duplicate_pairs}, {"clusters", clusters}, {"removed", removed},
              {"kept", kept},           {"bytes_in", bytes_in},     {"bytes_out", bytes_out}};
}

ShardSpec parse_shard(std::string_view text) {
  ShardSpec s;
  size_t slash = text.find('/');
  auto bad = [&]() {
    return Error("bad shard '" + std::string(text) + "'")
        .fix("write --shard I/N with 0 <= I < N, e.g. --shard 3/16 (under Slurm: --shard $SLURM_ARRAY_TASK_ID/$N)");
  };
  if (slash == std::string_view::npos) throw bad();
  try {
    size_t u1 = 0, u2 = 0;
    std::string a(text.substr(0, slash)), b(text.substr(slash + 1));
    s.index = std::stoi(a, &u1);
    s.count = std::stoi(b, &u2);
    if (u1 != a.size() || u2 != b.size()) throw bad();
  } catch (const std::logic_error&) {
    throw bad();
  }
  if (s.count <= 0 || s.index < 0 || s.index >= s.count || s.count > 99999) throw bad();
  return s;
}

namespace {

// ---- files ----------------------------------------------------------------------------

std::string shard_name(int shard) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%05d", shard);
  return buf;
}
std::string band_name(int band) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%03d", band);
  return buf;
}

std::vector<fs::path> shard_files(const std::vector<fs::path>& inputs, ShardSpec shard) {
  std::vector<fs::path> out;
  for (size_t k = 0; k < inputs.size(); ++k)
    if (int(k % size_t(shard.count)) == shard.index) out.push_back(inputs[k]);
  return out;
}

// Reads the documents of a shard's JSONL files in order. Lines that are not JSON objects
// with a string "text" are counted and skipped — the same way in every step, so document
// indices agree between `signatures` and `filter`.
struct DocReader {
  std::vector<fs::path> files;
  size_t file_i = 0;
  std::unique_ptr<LineReader> reader;
  DedupStats* stats;
  uint64_t warned = 0;

  DocReader(std::vector<fs::path> f, DedupStats* s) : files(std::move(f)), stats(s) {}

  // Returns false at the end. `line` stays valid until the next call.
  bool next(std::string_view& line, ordered_json& doc) {
    for (;;) {
      if (!reader) {
        if (file_i >= files.size()) return false;
        reader = std::make_unique<LineReader>(files[file_i++]);
      }
      if (!reader->next(line)) {
        reader.reset();
        continue;
      }
      if (strip_python(line).empty()) continue;
      doc = ordered_json::parse(line.begin(), line.end(), nullptr, false);
      if (doc.is_discarded() || !doc.is_object() || !doc.contains("text") || !doc["text"].is_string()) {
        stats->bad_lines++;
        if (warned++ < 5)
          std::fprintf(stderr, "warning: %s:%" PRId64 ": not a JSON object with a string \"text\"; skipped\n",
                       reader->path().c_str(), reader->line_number());
        continue;
      }
      stats->bytes_in += int64_t(line.size()) + 1;
      return true;
    }
  }
};

// External sort of fixed-size binary records: records are buffered, sorted (memcmp
// order) and spilled as runs; finish() merges the runs into the final file atomically.
class RecordSorter {
 public:
  RecordSorter(fs::path out, size_t record_size, size_t max_buffer_bytes)
      : out_(std::move(out)), rs_(record_size), max_records_(std::max<size_t>(16, max_buffer_bytes / record_size)) {}
  ~RecordSorter() {
    std::error_code ec;
    for (const fs::path& r : runs_) fs::remove(r, ec);
  }
  void add(const void* rec) {
    const auto* p = static_cast<const uint8_t*>(rec);
    buf_.insert(buf_.end(), p, p + rs_);
    if (buf_.size() / rs_ >= max_records_) spill();
  }
  void finish() {
    if (runs_.empty()) {
      AtomicFileWriter w(out_);
      write_sorted(w);
      w.commit();
      return;
    }
    spill();
    merge_runs();
  }

 private:
  std::vector<uint32_t> sorted_order() {
    size_t n = buf_.size() / rs_;
    std::vector<uint32_t> order(n);
    for (size_t i = 0; i < n; ++i) order[i] = uint32_t(i);
    const uint8_t* b = buf_.data();
    size_t rs = rs_;
    std::sort(order.begin(), order.end(),
              [b, rs](uint32_t x, uint32_t y) { return std::memcmp(b + size_t(x) * rs, b + size_t(y) * rs, rs) < 0; });
    return order;
  }
  template <typename W>
  void write_sorted(W& w) {
    std::vector<uint32_t> order = sorted_order();
    std::vector<uint8_t> chunk;
    chunk.reserve(std::min<size_t>(order.size(), 65536) * rs_);
    for (uint32_t i : order) {
      chunk.insert(chunk.end(), buf_.begin() + ptrdiff_t(size_t(i) * rs_), buf_.begin() + ptrdiff_t(size_t(i + 1) * rs_));
      if (chunk.size() >= (1u << 20)) {
        w.write(chunk.data(), chunk.size());
        chunk.clear();
      }
    }
    if (!chunk.empty()) w.write(chunk.data(), chunk.size());
    buf_.clear();
  }
  void spill() {
    if (buf_.empty()) return;
    // Runs are scratch files (removed after the merge): plain buffered writes, no fsync.
    fs::path run = out_;
    run += ".run" + std::to_string(runs_.size());
    struct PlainWriter {
      std::ofstream f;
      void write(const void* p, size_t n) { f.write(static_cast<const char*>(p), std::streamsize(n)); }
    } w{std::ofstream(run, std::ios::binary | std::ios::trunc)};
    if (!w.f) throw Error("cannot write " + run.string()).fix("check free disk space and permissions");
    runs_.push_back(run);
    write_sorted(w);
    w.f.close();
    if (!w.f) throw Error("write failed: " + run.string()).fix("check free disk space");
  }
  void merge_runs() {
    struct Src {
      std::ifstream in;
      std::vector<uint8_t> rec;
    };
    std::vector<Src> srcs(runs_.size());
    auto cmp = [&](size_t a, size_t b) { return std::memcmp(srcs[a].rec.data(), srcs[b].rec.data(), rs_) > 0; };
    std::priority_queue<size_t, std::vector<size_t>, decltype(cmp)> heap(cmp);
    for (size_t i = 0; i < runs_.size(); ++i) {
      srcs[i].in.open(runs_[i], std::ios::binary);
      srcs[i].rec.resize(rs_);
      if (srcs[i].in.read(reinterpret_cast<char*>(srcs[i].rec.data()), std::streamsize(rs_))) heap.push(i);
    }
    AtomicFileWriter w(out_);
    std::vector<uint8_t> chunk;
    while (!heap.empty()) {
      size_t i = heap.top();
      heap.pop();
      chunk.insert(chunk.end(), srcs[i].rec.begin(), srcs[i].rec.end());
      if (chunk.size() >= (1u << 20)) {
        w.write(chunk.data(), chunk.size());
        chunk.clear();
      }
      if (srcs[i].in.read(reinterpret_cast<char*>(srcs[i].rec.data()), std::streamsize(rs_))) heap.push(i);
    }
    if (!chunk.empty()) w.write(chunk.data(), chunk.size());
    w.commit();
    std::error_code ec;
    for (const fs::path& r : runs_) fs::remove(r, ec);
    runs_.clear();
  }

  fs::path out_;
  size_t rs_;
  size_t max_records_;
  std::vector<uint8_t> buf_;
  std::vector<fs::path> runs_;
};

// Sequential reader of a file of fixed-size records.
class RecordReader {
 public:
  RecordReader(const fs::path& path, size_t rs) : path_(path), rs_(rs), in_(path, std::ios::binary) {
    if (!in_) throw Error("cannot open " + path.string()).fix("run the previous dedup step first");
    std::error_code ec;
    uint64_t size = fs::file_size(path, ec);
    if (!ec && size % rs != 0)
      throw Error("truncated or corrupt record file (size " + std::to_string(size) + " is not a multiple of " +
                  std::to_string(rs) + ")")
          .at(path.string())
          .fix("delete it and rerun the step that wrote it");
    rec_.resize(rs);
  }
  bool next() { return bool(in_.read(reinterpret_cast<char*>(rec_.data()), std::streamsize(rs_))); }
  const uint8_t* rec() const { return rec_.data(); }

 private:
  fs::path path_;
  size_t rs_;
  std::ifstream in_;
  std::vector<uint8_t> rec_;
};

int parse_shard_from_filename(const fs::path& p) {
  std::string stem = p.filename().string();
  size_t dot = stem.find('.');
  std::string num = stem.substr(0, dot);
  if (num.empty() || num.find_first_not_of("0123456789") != std::string::npos)
    throw Error("unexpected file in dedup folder: " + p.string()).fix("remove files that aji did not write");
  return std::stoi(num);
}

std::vector<fs::path> list_files(const fs::path& dir, const std::string& suffix) {
  std::vector<fs::path> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::string name = e.path().filename().string();
    if (e.is_regular_file() && name.size() > suffix.size() && name.substr(name.size() - suffix.size()) == suffix &&
        name.find(".tmp.") == std::string::npos && name.find(".run") == std::string::npos)
      out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

json read_json_file(const fs::path& p) {
  std::string s = read_file(p);
  json j = json::parse(s, nullptr, false);
  if (j.is_discarded()) throw Error("corrupt JSON file").at(p.string()).fix("delete it and rerun the step");
  return j;
}

// zstd-compressed output written through an AtomicFileWriter.
class ZstdFileWriter {
 public:
  explicit ZstdFileWriter(const fs::path& path, int level = 3) : w_(path), cctx_(ZSTD_createCCtx()) {
    if (!cctx_) throw Error("out of memory creating a zstd context");
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_compressionLevel, level);
    out_.resize(ZSTD_CStreamOutSize());
  }
  ~ZstdFileWriter() { ZSTD_freeCCtx(cctx_); }
  void write(std::string_view s) {
    in_.append(s);
    if (in_.size() >= (1u << 20)) flush(ZSTD_e_continue);
  }
  void commit() {
    flush(ZSTD_e_end);
    w_.commit();
  }

 private:
  void flush(ZSTD_EndDirective mode) {
    ZSTD_inBuffer in{in_.data(), in_.size(), 0};
    for (;;) {
      ZSTD_outBuffer out{out_.data(), out_.size(), 0};
      size_t rem = ZSTD_compressStream2(cctx_, &out, &in, mode);
      if (ZSTD_isError(rem)) throw Error(std::string("zstd compression failed: ") + ZSTD_getErrorName(rem));
      w_.write(out_.data(), out.pos);
      if (mode == ZSTD_e_end ? rem == 0 : in.pos == in.size) break;
    }
    in_.clear();
  }
  AtomicFileWriter w_;
  ZSTD_CCtx* cctx_;
  std::string in_;
  std::vector<char> out_;
};

constexpr size_t kExactRecord = 8 + 8 + 4;
constexpr size_t kPairRecord = 16;

}  // namespace

// ---- step 1: signatures ---------------------------------------------------------------

DedupStats dedup_signatures(const std::vector<fs::path>& inputs, ShardSpec shard, const fs::path& sigs_dir,
                            const MinhashConfig& config) {
  DedupStats st;
  const fs::path done = sigs_dir / (shard_name(shard.index) + ".done");
  if (fs::exists(done)) {
    json j = read_json_file(done);
    std::fprintf(stderr, "signatures: shard %d already done (%s), skipping\n", shard.index, done.c_str());
    st.documents = j.value("documents", int64_t(0));
    return st;
  }
  const MinhashParams params = minhash_params(config);
  const int B = config.num_buckets, R = config.hashes_per_bucket;
  const size_t sig_record = size_t(R) * 8 + 4;
  for (int b = 0; b < B; ++b) fs::create_directories(sigs_dir / ("bucket_" + band_name(b)));
  fs::create_directories(sigs_dir / "exact");
  // Memory bound: sort_buffer_mb of buffered records per shard, split over the bands.
  // (0 = spill every 16 records: exercises the external merge in tests.)
  const size_t budget = size_t(std::max<int64_t>(0, config.sort_buffer_mb)) << 20;
  std::vector<std::unique_ptr<RecordSorter>> sorters;
  for (int b = 0; b < B; ++b)
    sorters.push_back(std::make_unique<RecordSorter>(
        sigs_dir / ("bucket_" + band_name(b)) / (shard_name(shard.index) + ".minhash.sig"), sig_record,
        budget / size_t(B + 1)));
  RecordSorter exact_sorter(sigs_dir / "exact" / (shard_name(shard.index) + ".exact"), kExactRecord,
                            budget / size_t(B + 1));

  std::vector<fs::path> files = shard_files(inputs, shard);
  // Progress counts decompressed JSONL bytes; the total is known only for plain files.
  int64_t total_bytes = 0;
  for (const fs::path& f : files) {
    std::error_code ec;
    std::string ext = f.extension().string();
    if (ext == ".gz" || ext == ".zst") {
      total_bytes = -1;
      break;
    }
    total_bytes += int64_t(fs::file_size(f, ec));
  }
  Progress progress("dedup signatures " + std::to_string(shard.index) + "/" + std::to_string(shard.count),
                    total_bytes, "B", true);
  DocReader reader(files, &st);
  // Batches: read serially, hash in parallel, append in order.
  constexpr size_t kBatch = 2048;
  std::vector<std::string> texts;
  std::vector<std::vector<uint64_t>> sigs(kBatch);
  std::vector<ExactHash> exact(kBatch);
  std::vector<char> has_exact(kBatch);
  uint32_t doc_index = 0;
  std::string_view line;
  ordered_json doc;  // keeps the input's key order in the output
  bool more = true;
  std::vector<uint8_t> rec(sig_record);
  while (more) {
    texts.clear();
    while (texts.size() < kBatch) {
      if (!reader.next(line, doc)) {
        more = false;
        break;
      }
      texts.push_back(doc["text"].get<std::string>());
    }
    parallel_for(int64_t(texts.size()), [&](int64_t i) {
      sigs[size_t(i)] = minhash_signature(shingle_hashes(texts[size_t(i)], config), params);
      has_exact[size_t(i)] = config.exact_dedup && exact_text_hash(texts[size_t(i)], &exact[size_t(i)]);
    });
    for (size_t i = 0; i < texts.size(); ++i, ++doc_index) {
      if (doc_index == UINT32_MAX) throw Error("more than 4 billion documents in one shard").fix("use more shards");
      st.documents++;
      if (sigs[i].empty()) {
        st.no_signature++;
      } else {
        for (int b = 0; b < B; ++b) {
          std::memcpy(rec.data(), sigs[i].data() + size_t(b) * size_t(R), size_t(R) * 8);
          std::memcpy(rec.data() + size_t(R) * 8, &doc_index, 4);
          sorters[size_t(b)]->add(rec.data());
        }
      }
      if (has_exact[i]) {
        uint8_t er[kExactRecord];
        std::memcpy(er, &exact[i].hi, 8);
        std::memcpy(er + 8, &exact[i].lo, 8);
        std::memcpy(er + 16, &doc_index, 4);
        exact_sorter.add(er);
      }
    }
    progress.set(st.bytes_in);
  }
  for (auto& s : sorters) s->finish();
  exact_sorter.finish();
  progress.finish();
  json marker = {{"shard", shard.index}, {"shards", shard.count}, {"config", config}, {"stats", st.to_json()},
                 {"documents", st.documents}};
  write_file_atomic(done, marker.dump(2) + "\n");
  return st;
}

// ---- step 2: buckets ------------------------------------------------------------------

namespace {

// Merges one band's sorted shard files and writes the pairs of documents whose records
// (minus the trailing u32 doc index) are identical.
int64_t merge_band(const std::vector<fs::path>& files, size_t rs, const fs::path& out_path) {
  struct Src {
    std::unique_ptr<RecordReader> reader;
    uint32_t shard;
  };
  std::vector<Src> srcs;
  for (const fs::path& f : files) srcs.push_back({std::make_unique<RecordReader>(f, rs), uint32_t(parse_shard_from_filename(f))});
  const size_t key = rs - 4;
  auto cmp = [&](size_t a, size_t b) {
    int c = std::memcmp(srcs[a].reader->rec(), srcs[b].reader->rec(), rs);
    return c > 0 || (c == 0 && srcs[a].shard > srcs[b].shard);
  };
  std::priority_queue<size_t, std::vector<size_t>, decltype(cmp)> heap(cmp);
  for (size_t i = 0; i < srcs.size(); ++i)
    if (srcs[i].reader->next()) heap.push(i);
  AtomicFileWriter w(out_path);
  std::vector<uint8_t> group_key(key);
  bool have_group = false;
  uint32_t first_shard = 0, first_doc = 0;
  int64_t pairs = 0;
  std::vector<uint32_t> chunk;
  while (!heap.empty()) {
    size_t i = heap.top();
    heap.pop();
    const uint8_t* r = srcs[i].reader->rec();
    uint32_t doc;
    std::memcpy(&doc, r + key, 4);
    if (have_group && std::memcmp(group_key.data(), r, key) == 0) {
      // Star pairs: every member links to the group's first document.
      chunk.insert(chunk.end(), {first_shard, first_doc, srcs[i].shard, doc});
      ++pairs;
      if (chunk.size() >= (1u << 18)) {
        w.write(chunk.data(), chunk.size() * 4);
        chunk.clear();
      }
    } else {
      std::memcpy(group_key.data(), r, key);
      have_group = true;
      first_shard = srcs[i].shard;
      first_doc = doc;
    }
    if (srcs[i].reader->next()) heap.push(i);
  }
  if (!chunk.empty()) w.write(chunk.data(), chunk.size() * 4);
  w.commit();
  return pairs;
}

}  // namespace

DedupStats dedup_buckets(const fs::path& sigs_dir, const fs::path& buckets_dir, const MinhashConfig& config,
                         int band) {
  DedupStats st;
  if (!fs::is_directory(sigs_dir))
    throw Error("no signatures folder " + sigs_dir.string()).fix("run `aji data dedup signatures` first");
  fs::create_directories(buckets_dir);
  std::vector<int> bands;
  if (band == -2) {
    for (int b = 0; b < config.num_buckets; ++b) bands.push_back(b);
    if (config.exact_dedup) bands.push_back(-1);
  } else {
    if (band < -1 || band >= config.num_buckets)
      throw Error("band " + std::to_string(band) + " out of range").fix("use 0.." + std::to_string(config.num_buckets - 1) + " or 'exact'");
    bands.push_back(band);
  }
  const size_t sig_record = size_t(config.hashes_per_bucket) * 8 + 4;
  Progress progress("dedup buckets", int64_t(bands.size()), "bands", true);
  parallel_for(int64_t(bands.size()), [&](int64_t bi) {
    int b = bands[size_t(bi)];
    fs::path out = buckets_dir / (b < 0 ? std::string("exact.dups") : band_name(b) + ".dups");
    if (fs::exists(out)) {  // resume
      progress.add(1);
      return;
    }
    std::vector<fs::path> files = b < 0 ? list_files(sigs_dir / "exact", ".exact")
                                        : list_files(sigs_dir / ("bucket_" + band_name(b)), ".minhash.sig");
    int64_t pairs = merge_band(files, b < 0 ? kExactRecord : sig_record, out);
#pragma omp atomic
    st.duplicate_pairs += pairs;
    progress.add(1);
  });
  progress.finish();
  return st;
}

// ---- step 3: clusters -----------------------------------------------------------------

DedupStats dedup_clusters(const fs::path& buckets_dir, const fs::path& clusters_dir) {
  DedupStats st;
  const fs::path done = clusters_dir / "clusters.done";
  if (fs::exists(done)) {
    std::fprintf(stderr, "clusters: already done (%s), skipping\n", done.c_str());
    json j = read_json_file(done);
    st.removed = j.value("removed", int64_t(0));
    st.clusters = j.value("clusters", int64_t(0));
    return st;
  }
  std::vector<fs::path> files = list_files(buckets_dir, ".dups");
  if (files.empty() && !fs::is_directory(buckets_dir))
    throw Error("no buckets folder " + buckets_dir.string()).fix("run `aji data dedup buckets` first");
  // Union-find over the documents that appear in any pair: (shard << 32 | doc) → node.
  std::unordered_map<uint64_t, uint32_t> node_of;
  std::vector<uint64_t> key_of;
  std::vector<uint32_t> parent, size;
  auto node = [&](uint64_t k) {
    auto [it, inserted] = node_of.try_emplace(k, uint32_t(key_of.size()));
    if (inserted) {
      key_of.push_back(k);
      parent.push_back(it->second);
      size.push_back(1);
    }
    return it->second;
  };
  auto find = [&](uint32_t x) {
    uint32_t r = x;
    while (parent[r] != r) r = parent[r];
    while (parent[x] != r) {  // path compression
      uint32_t next = parent[x];
      parent[x] = r;
      x = next;
    }
    return r;
  };
  for (const fs::path& f : files) {
    RecordReader r(f, kPairRecord);
    while (r.next()) {
      uint32_t v[4];
      std::memcpy(v, r.rec(), 16);
      uint32_t a = find(node(uint64_t(v[0]) << 32 | v[1])), b = find(node(uint64_t(v[2]) << 32 | v[3]));
      st.duplicate_pairs++;
      if (a == b) continue;
      if (size[a] < size[b]) std::swap(a, b);  // union by size
      parent[b] = a;
      size[a] += size[b];
    }
  }
  // Keep the first document (lowest shard, then index) of each cluster.
  std::vector<uint64_t> keeper(key_of.size(), ~uint64_t(0));
  for (uint32_t i = 0; i < key_of.size(); ++i) {
    uint32_t r = find(i);
    keeper[r] = std::min(keeper[r], key_of[i]);
  }
  std::map<uint32_t, std::vector<uint32_t>> removes;
  std::map<uint32_t, std::vector<std::pair<uint32_t, uint32_t>>> sizes;
  for (uint32_t i = 0; i < key_of.size(); ++i) {
    uint32_t r = find(i);
    uint32_t shard = uint32_t(key_of[i] >> 32), doc = uint32_t(key_of[i]);
    if (key_of[i] == keeper[r]) {
      sizes[shard].push_back({doc, size[r]});
      st.clusters++;
    } else {
      removes[shard].push_back(doc);
      st.removed++;
    }
  }
  fs::create_directories(clusters_dir);
  for (auto& [shard, docs] : removes) {
    std::sort(docs.begin(), docs.end());
    AtomicFileWriter w(clusters_dir / (shard_name(int(shard)) + ".remove"));
    w.write(docs.data(), docs.size() * 4);
    w.commit();
  }
  for (auto& [shard, v] : sizes) {
    std::sort(v.begin(), v.end());
    AtomicFileWriter w(clusters_dir / (shard_name(int(shard)) + ".sizes"));
    for (auto [doc, sz] : v) {
      uint32_t rec[2] = {doc, sz};
      w.write(rec, 8);
    }
    w.commit();
  }
  write_file_atomic(done, json{{"clusters", st.clusters}, {"removed", st.removed}, {"pairs", st.duplicate_pairs}}.dump(2) + "\n");
  return st;
}

// ---- step 4: filter -------------------------------------------------------------------

DedupStats dedup_filter(const std::vector<fs::path>& inputs, ShardSpec shard, const fs::path& clusters_dir,
                        const fs::path& out_dir) {
  DedupStats st;
  if (!fs::exists(clusters_dir / "clusters.done"))
    throw Error("clusters are not computed in " + clusters_dir.string()).fix("run `aji data dedup clusters` first");
  const fs::path out_path = out_dir / (shard_name(shard.index) + ".jsonl.zst");
  if (fs::exists(out_path)) {
    std::fprintf(stderr, "filter: %s exists, skipping shard %d\n", out_path.c_str(), shard.index);
    return st;
  }
  std::vector<uint32_t> remove;
  std::unordered_map<uint32_t, uint32_t> cluster_size;
  {
    fs::path rp = clusters_dir / (shard_name(shard.index) + ".remove");
    if (fs::exists(rp)) {
      RecordReader r(rp, 4);
      while (r.next()) remove.push_back(read32(r.rec()));
    }
    fs::path sp = clusters_dir / (shard_name(shard.index) + ".sizes");
    if (fs::exists(sp)) {
      RecordReader r(sp, 8);
      while (r.next()) cluster_size[read32(r.rec())] = read32(r.rec() + 4);
    }
  }
  fs::create_directories(out_dir);
  ZstdFileWriter out(out_path);
  std::vector<fs::path> files = shard_files(inputs, shard);
  DocReader reader(files, &st);
  Progress progress("dedup filter " + std::to_string(shard.index) + "/" + std::to_string(shard.count), -1, "B", true);
  std::string_view line;
  ordered_json doc;  // keeps the input's key order in the output
  uint32_t doc_index = 0;
  size_t ri = 0;
  std::string buf;
  for (; reader.next(line, doc); ++doc_index) {
    st.documents++;
    while (ri < remove.size() && remove[ri] < doc_index) ++ri;
    if (ri < remove.size() && remove[ri] == doc_index) {
      st.removed++;
      continue;
    }
    auto it = cluster_size.find(doc_index);
    ordered_json& meta = doc["metadata"];
    if (!meta.is_object()) meta = ordered_json::object();
    meta["minhash_cluster_size"] = it == cluster_size.end() ? 1u : it->second;
    buf = doc.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
    buf.push_back('\n');
    out.write(buf);
    st.kept++;
    st.bytes_out += int64_t(buf.size());
    if ((doc_index & 1023) == 0) progress.set(st.bytes_in);
  }
  out.commit();
  progress.set(st.bytes_in);
  progress.finish();
  return st;
}

DedupStats dedup_run(const std::vector<fs::path>& inputs, const fs::path& work_dir, const MinhashConfig& config) {
  const ShardSpec all{0, 1};
  DedupStats sig = dedup_signatures(inputs, all, work_dir / "sigs", config);
  DedupStats bk = dedup_buckets(work_dir / "sigs", work_dir / "buckets", config, -2);
  DedupStats cl = dedup_clusters(work_dir / "buckets", work_dir / "clusters");
  DedupStats out = dedup_filter(inputs, all, work_dir / "clusters", work_dir / "out");
  out.no_signature = sig.no_signature;
  out.duplicate_pairs = cl.duplicate_pairs;
  out.clusters = cl.clusters;
  (void)bk;
  return out;
}

}  // namespace aji::data
