// Byte-level BPE training. See trainer.h for the data flow and docs/tokenizer.md
// ("Training") for the design choices.
#include "aji/tokenizer/trainer.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <unordered_map>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/pause_point.h"
#include "aji/base/progress.h"
#include "aji/base/threads.h"

namespace aji::tokenizer {

namespace fs = std::filesystem;

namespace {

// ---------------------------------------------------------------------------------
// Hashing and the per-thread piece counter (open addressing, keys in an arena).

inline uint64_t mix64(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

inline uint64_t hash_bytes(const char* p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0xbf58476d1ce4e5b9ULL);
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    h = (h ^ v) * 0x94d049bb133111ebULL;
    h ^= h >> 31;
    p += 8;
    n -= 8;
  }
  if (n > 0) {
    uint64_t v = 0;
    std::memcpy(&v, p, n);
    h = (h ^ v) * 0x94d049bb133111ebULL;
  }
  return mix64(h);
}

// piece bytes -> count. Pieces are copied into one arena; each slot holds the upper 32
// bits of the hash next to the entry index, so a probe rarely touches an entry that
// cannot match (the table is much bigger than the cache on real corpora).
class PieceCounter {
 public:
  PieceCounter() { rehash(1 << 12); }

  void add(std::string_view piece, int64_t n = 1) {
    const uint64_t h = hash_bytes(piece.data(), piece.size());
    const uint64_t tag = h & 0xFFFFFFFF00000000ULL;
    const size_t mask = slots_.size() - 1;
    size_t s = h & mask;
    while (true) {
      const uint64_t slot = slots_[s];
      if (slot == 0) break;
      if ((slot & 0xFFFFFFFF00000000ULL) == tag) {
        Entry& en = entries_[(slot & 0xFFFFFFFFu) - 1];
        if (en.len == piece.size() && std::memcmp(arena_.data() + en.off, piece.data(), piece.size()) == 0) {
          en.count += n;
          return;
        }
      }
      s = (s + 1) & mask;
    }
    entries_.push_back({h, arena_.size(), static_cast<uint32_t>(piece.size()), n});
    arena_.append(piece);
    slots_[s] = tag | entries_.size();
    if (entries_.size() * 2 > slots_.size()) rehash(slots_.size() * 2);
  }

  // Adds every entry of `other` (used to merge the per-thread counters).
  void merge_from(const PieceCounter& other) {
    for (const Entry& e : other.entries_) add(std::string_view(other.arena_).substr(e.off, e.len), e.count);
  }

  size_t size() const { return entries_.size(); }

  // Unique pieces sorted by bytes, into `out` (deterministic regardless of insertion order).
  void export_sorted(PieceCounts& out) const {
    // Sort on (first 8 bytes big-endian, then the rest): one integer compare decides most pairs.
    struct Key {
      uint64_t prefix;
      uint32_t index;
    };
    std::vector<Key> order(entries_.size());
    for (size_t i = 0; i < order.size(); ++i) {
      const Entry& e = entries_[i];
      uint64_t p = 0;
      for (uint32_t k = 0; k < 8; ++k) p = (p << 8) | (k < e.len ? uint8_t(arena_[e.off + k]) : 0);
      order[i] = {p, static_cast<uint32_t>(i)};
    }
    auto view = [&](uint32_t i) { return std::string_view(arena_).substr(entries_[i].off, entries_[i].len); };
    std::sort(order.begin(), order.end(), [&](const Key& a, const Key& b) {
      if (a.prefix != b.prefix) return a.prefix < b.prefix;
      return view(a.index) < view(b.index);
    });
    out.arena.clear();
    out.arena.reserve(arena_.size());
    out.offsets.assign(1, 0);
    out.offsets.reserve(order.size() + 1);
    out.counts.clear();
    out.counts.reserve(order.size());
    for (const Key& k : order) {
      out.arena.append(view(k.index));
      out.offsets.push_back(out.arena.size());
      out.counts.push_back(entries_[k.index].count);
    }
  }

 private:
  struct Entry {
    uint64_t hash;
    uint64_t off;
    uint32_t len;
    int64_t count;
  };
  void rehash(size_t n_slots) {
    slots_.assign(n_slots, 0);
    const size_t mask = n_slots - 1;
    for (size_t i = 0; i < entries_.size(); ++i) {
      size_t s = entries_[i].hash & mask;
      while (slots_[s] != 0) s = (s + 1) & mask;
      slots_[s] = (entries_[i].hash & 0xFFFFFFFF00000000ULL) | (i + 1);
    }
  }
  std::vector<uint64_t> slots_;  // 0 = empty, else hash tag (high 32 bits) | entry index + 1
  std::vector<Entry> entries_;
  std::string arena_;
};

// ---------------------------------------------------------------------------------
// Safe chunk cuts (see detail::last_safe_cut).

// Decodes the UTF-8 code point starting at text[i]; returns -1 for an invalid sequence.
int32_t decode_at(std::string_view t, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(t[k]); };
  const unsigned c = b(i);
  if (c < 0x80) return static_cast<int32_t>(c);
  const int n = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC2 ? 1 : -1;
  if (n < 0 || c > 0xF4 || i + static_cast<size_t>(n) >= t.size()) return -1;
  uint32_t cp = c & (0x3F >> n);
  for (int k = 1; k <= n; ++k) {
    const unsigned cc = b(i + k);
    if ((cc & 0xC0) != 0x80) return -1;
    cp = (cp << 6) | (cc & 0x3F);
  }
  return static_cast<int32_t>(cp);
}

// Decodes the code point that ends at text[end-1]; -1 if invalid.
int32_t decode_before(std::string_view t, size_t end) {
  size_t i = end - 1;
  int back = 0;
  while (back < 3 && i > 0 && (static_cast<unsigned char>(t[i]) & 0xC0) == 0x80) {
    --i;
    ++back;
  }
  const int32_t cp = decode_at(t, i);
  if (cp < 0) return -1;
  const int len = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
  return (i + len == end) ? cp : -1;
}

// Unicode White_Space (what the patterns' \s means).
bool is_white_space(int32_t cp) {
  if (cp < 0) return false;
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

inline bool is_ascii_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// Cuts a too-long run at a UTF-8 character boundary (never inside a character).
size_t forced_cut(std::string_view t, size_t want) {
  size_t p = want;
  for (int k = 0; k < 4 && p > 1 && (static_cast<unsigned char>(t[p]) & 0xC0) == 0x80; ++k) --p;
  return p;
}

// ---------------------------------------------------------------------------------
// Counting over chunks in parallel: one PieceCounter per thread.

struct ThreadCounters {
  std::vector<PieceCounter> maps;
  std::vector<int64_t> pieces;
  explicit ThreadCounters(int threads) : maps(threads), pieces(threads, 0) {}
};

void count_chunks_parallel(const std::vector<std::string>& chunks, SplitPattern pattern, ThreadCounters& tc) {
  const int threads = static_cast<int>(tc.maps.size());
  const int64_t n = static_cast<int64_t>(chunks.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t i = 0; i < n; ++i) {
    const int t = omp_get_thread_num();
    PieceCounter& map = tc.maps[t];
    std::vector<std::string_view> pieces;
    pieces.clear();  // (split_into may append)
    split_into(pattern, chunks[i], pieces);
    for (std::string_view piece : pieces) map.add(piece);
    tc.pieces[t] += static_cast<int64_t>(pieces.size());
  }
}

void finish_counts(ThreadCounters& tc, PieceCounts& out) {
  // Merge into the largest map (fewest re-insertions), then sort.
  size_t biggest = 0;
  for (size_t t = 1; t < tc.maps.size(); ++t)
    if (tc.maps[t].size() > tc.maps[biggest].size()) biggest = t;
  for (size_t t = 0; t < tc.maps.size(); ++t)
    if (t != biggest) {
      tc.maps[biggest].merge_from(tc.maps[t]);
      tc.maps[t] = PieceCounter();
    }
  tc.maps[biggest].export_sorted(out);
  for (int64_t p : tc.pieces) out.total_pieces += p;
}

constexpr size_t kChunkBytes = size_t(1) << 20;       // target chunk (one task)
constexpr size_t kBatchBytesPerThread = size_t(8) << 20;
constexpr size_t kMaxJsonlLineBytes = size_t(1) << 30;  // one JSON document per line, at most 1 GB

uint64_t file_size_or_zero(const fs::path& p) {
  std::error_code ec;
  const auto n = fs::file_size(p, ec);
  return ec ? 0 : n;
}

// Plain text: stream each file, cut at safe points into ~1 MB chunks, count in batches.
void count_plain(const std::vector<fs::path>& files, const TrainOptions& opt, PieceCounts& out, Progress& progress) {
  const int threads = std::max(1, num_threads());
  ThreadCounters tc(threads);
  std::vector<std::string> batch;
  size_t batch_bytes = 0;
  auto flush = [&] {
    if (batch.empty()) return;
    count_chunks_parallel(batch, opt.pattern, tc);
    batch.clear();
    batch_bytes = 0;
    pause_point("tokenizer_count");  // kill tests
  };
  std::string buf;
  std::vector<char> block(kChunkBytes);
  for (const fs::path& file : files) {
    InputStream in(file);
    buf.clear();
    uint64_t reported = 0;
    bool eof = false;
    while (!eof) {
      const size_t got = in.read(block.data(), block.size());
      if (got == 0) eof = true;
      buf.append(block.data(), got);
      out.input_bytes += static_cast<int64_t>(got);
      const uint64_t off = in.compressed_offset();
      progress.add(static_cast<int64_t>(off - reported));
      reported = off;
      size_t cut = 0;
      if (eof) {
        cut = buf.size();
      } else if (buf.size() >= std::min(kChunkBytes, opt.max_run_bytes)) {
        cut = detail::last_safe_cut(buf);
        if (cut == 0 && buf.size() >= std::max(opt.max_run_bytes, size_t(16))) {
          cut = forced_cut(buf, buf.size() - 1);
          ++out.forced_cuts;
        }
      }
      if (cut == 0) continue;
      batch.emplace_back(buf, 0, cut);
      batch_bytes += cut;
      buf.erase(0, cut);
      if (batch_bytes >= kBatchBytesPerThread * threads) flush();
    }
    ++out.documents;
  }
  flush();
  finish_counts(tc, out);
}

// JSONL: batches of lines; each worker parses its lines and splits the field's text.
struct LineBatch {
  std::string data;
  std::vector<uint64_t> offsets;  // n + 1
  std::vector<int64_t> line_numbers;
  std::vector<uint32_t> file_index;
  void clear() {
    data.clear();
    offsets.assign(1, 0);
    line_numbers.clear();
    file_index.clear();
  }
  size_t size() const { return line_numbers.size(); }
};

struct LineProblem {
  bool found = false;
  uint32_t file = 0;
  int64_t line = 0;
  std::string what;
};

// Extracts field `field` of one JSONL line, or says why it cannot.
bool jsonl_text(std::string_view line, const std::string& field, std::string& text, std::string& why) {
  nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    // Parse again for the reason (bad lines only): invalid UTF-8 is its own cause.
    try {
      const nlohmann::json again = nlohmann::json::parse(line);
      (void)again;
      why = "not valid JSON";
    } catch (const nlohmann::json::exception& e) {
      why = std::string(e.what()).find("UTF-8") != std::string::npos ? "not valid UTF-8 inside a JSON string"
                                                                      : std::string("not valid JSON (") + e.what() + ")";
    }
    return false;
  }
  if (!j.is_object()) {
    why = std::string("a JSON ") + j.type_name() + ", not an object";
    return false;
  }
  auto it = j.find(field);
  if (it == j.end()) {
    why = "the object has no field \"" + field + "\"";
    return false;
  }
  if (!it->is_string()) {
    why = "field \"" + field + "\" is a " + it->type_name() + ", not a string";
    return false;
  }
  text = it->get<std::string>();
  return true;
}

void count_jsonl(const std::vector<fs::path>& files, const TrainOptions& opt, PieceCounts& out, Progress& progress) {
  const int threads = std::max(1, num_threads());
  ThreadCounters tc(threads);
  LineBatch batch;
  batch.clear();
  std::vector<int64_t> docs(threads), skipped(threads), bytes(threads);
  auto flush = [&] {
    const int64_t n = static_cast<int64_t>(batch.size());
    if (n == 0) return;
    // Contiguous ranges so the first problem of the lowest range is the first in the file.
    const int64_t n_ranges = std::min<int64_t>(n, int64_t(threads) * 8);
    std::vector<LineProblem> problems(n_ranges), skips(n_ranges);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t r = 0; r < n_ranges; ++r) {
      const int t = omp_get_thread_num();
      const int64_t lo = n * r / n_ranges, hi = n * (r + 1) / n_ranges;
      std::string text, why;
      std::vector<std::string_view> pieces;
      for (int64_t i = lo; i < hi; ++i) {
        std::string_view line(batch.data.data() + batch.offsets[i], batch.offsets[i + 1] - batch.offsets[i]);
        if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;  // blank line
        if (!jsonl_text(line, opt.jsonl_field, text, why)) {
          if (opt.skip_bad_lines) {
            ++skipped[t];
            if (!skips[r].found) skips[r] = {true, batch.file_index[i], batch.line_numbers[i], why};
            continue;
          }
          problems[r] = {true, batch.file_index[i], batch.line_numbers[i], why};
          break;
        }
        ++docs[t];
        bytes[t] += static_cast<int64_t>(text.size());
        pieces.clear();  // (split_into may append)
        split_into(opt.pattern, text, pieces);
        for (std::string_view piece : pieces) tc.maps[t].add(piece);
        tc.pieces[t] += static_cast<int64_t>(pieces.size());
      }
    }
    for (const LineProblem& p : skips)
      if (p.found && out.first_skipped_file.empty()) {
        out.first_skipped_file = files[p.file].string();
        out.first_skipped_line = p.line;
        out.first_skipped_why = p.what;
      }
    for (const LineProblem& p : problems)
      if (p.found) {
        throw Error("malformed JSONL line: " + p.what)
            .at(files[p.file].string(), p.line)
            .fix("each line must be a JSON object with a string field \"" + opt.jsonl_field +
                 "\"; fix the line, pick the right field with --jsonl-field, or pass --skip-bad-lines to count "
                 "and skip such lines");
      }
    batch.clear();
    pause_point("tokenizer_count");  // kill tests
  };
  const size_t batch_limit = kBatchBytesPerThread * threads;
  for (size_t fi = 0; fi < files.size(); ++fi) {
    LineReader reader(files[fi], kMaxJsonlLineBytes);
    std::string_view line;
    uint64_t reported = 0;
    while (reader.next(line)) {
      batch.data.append(line);
      batch.offsets.push_back(batch.data.size());
      batch.line_numbers.push_back(reader.line_number());
      batch.file_index.push_back(static_cast<uint32_t>(fi));
      if (batch.data.size() >= batch_limit) flush();
      // Progress counts on-disk bytes (the total is the files' sizes, compressed or not).
      progress.add(static_cast<int64_t>(reader.compressed_offset() - reported));
      reported = reader.compressed_offset();
    }
  }
  flush();
  for (int t = 0; t < threads; ++t) {
    out.documents += docs[t];
    out.skipped_lines += skipped[t];
    out.input_bytes += bytes[t];
  }
  finish_counts(tc, out);
}

// ---------------------------------------------------------------------------------
// The merge loop's tables.

inline uint64_t pair_key(uint32_t left, uint32_t right) { return (uint64_t(left) << 32) | right; }

// (left,right) -> pair index, open addressing on the 64-bit key.
class PairIndex {
 public:
  PairIndex() { rehash(1 << 16); }
  // Returns the index of the pair, creating it (as next_index) if absent.
  uint32_t find_or_insert(uint64_t key, uint32_t next_index, bool& inserted) {
    size_t s = mix64(key) & mask_;
    while (true) {
      const Slot& sl = slots_[s];
      if (sl.index == kEmpty) break;
      if (sl.key == key) {
        inserted = false;
        return sl.index;
      }
      s = (s + 1) & mask_;
    }
    slots_[s] = {key, next_index};
    inserted = true;
    if (++size_ * 2 > slots_.size()) rehash(slots_.size() * 2);
    return next_index;
  }

 private:
  static constexpr uint32_t kEmpty = 0xFFFFFFFFu;
  struct Slot {
    uint64_t key;
    uint32_t index;
  };
  void rehash(size_t n) {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(n, Slot{0, kEmpty});
    mask_ = n - 1;
    for (const Slot& sl : old) {
      if (sl.index == kEmpty) continue;
      size_t s = mix64(sl.key) & mask_;
      while (slots_[s].index != kEmpty) s = (s + 1) & mask_;
      slots_[s] = sl;
    }
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

struct HeapEntry {
  int64_t count;
  uint64_t key;
  uint32_t index;
};
// std::priority_queue keeps the "largest" on top: highest count, then smallest pair.
struct HeapLess {
  bool operator()(const HeapEntry& a, const HeapEntry& b) const {
    if (a.count != b.count) return a.count < b.count;
    return a.key > b.key;
  }
};

struct PairTable {
  PairIndex index;
  std::vector<uint64_t> key;
  std::vector<int64_t> count;
  std::vector<std::vector<uint32_t>> words;  // words that (may) contain the pair; deduped lazily
  std::vector<uint32_t> last_word;           // word index + 1 last appended to `words`
  std::vector<uint32_t> touched_at;          // merge number that last raised the count

  uint32_t get(uint64_t k) {
    bool inserted;
    const uint32_t i = index.find_or_insert(k, static_cast<uint32_t>(key.size()), inserted);
    if (inserted) {
      key.push_back(k);
      count.push_back(0);
      words.emplace_back();
      last_word.push_back(0);
      touched_at.push_back(0);
    }
    return i;
  }
  void note_word(uint32_t i, uint32_t w) {
    if (last_word[i] != w + 1) {
      words[i].push_back(w);
      last_word[i] = w + 1;
    }
  }
};

}  // namespace

// ---------------------------------------------------------------------------------

namespace detail {

size_t last_safe_cut(std::string_view t) {
  const size_t n = t.size();
  if (n < 3) return 0;
  for (size_t p = n - 2; p >= 2; --p) {
    const char c = t[p];
    if (t[p - 1] == '\n') {
      // "X\nY": X and Y not white space, Y not '/' (o200k glues "[\r\n/]*" after punctuation).
      if (c == '/' || c == '\n') continue;
      const int32_t next = decode_at(t, p);
      if (is_white_space(next)) continue;
      const int32_t prev = decode_before(t, p - 1);
      if (is_white_space(prev)) continue;
      return p;
    }
    if (c == ' ' && is_ascii_letter(t[p - 1]) && is_ascii_letter(t[p + 1])) return p;  // "a| b"
  }
  return 0;
}

}  // namespace detail

void validate_train_options(const TrainOptions& opt) {
  const size_t n_special = opt.specials.size();
  if (opt.vocab_size < kMinVocabSize + n_special) {
    throw Error("vocabulary size " + std::to_string(opt.vocab_size) + " is too small: it must hold the 256 byte tokens" +
                (n_special ? " and the " + std::to_string(n_special) + " special tokens" : std::string()))
        .fix("use --vocab-size " + std::to_string(kMinVocabSize + n_special) +
             " or more (typical: 8192 to 65536)");
  }
  if (opt.vocab_size > kMaxVocabSize) {
    throw Error("vocabulary size " + std::to_string(opt.vocab_size) + " is above the limit of " +
                std::to_string(kMaxVocabSize))
        .fix("use a vocabulary of at most 1,000,000 tokens (GPT-4o uses about 200,000)");
  }
  for (size_t i = 0; i < n_special; ++i) {
    if (opt.specials[i].empty())
      throw Error("empty special token").fix("give each --special a non-empty text such as <|endoftext|>");
    for (size_t j = 0; j < i; ++j)
      if (opt.specials[i] == opt.specials[j])
        throw Error("special token \"" + opt.specials[i] + "\" is given twice").fix("list each --special once");
  }
}

PieceCounts count_pieces(const std::vector<fs::path>& files, const TrainOptions& opt) {
  PieceCounts out;
  uint64_t total = 0;
  for (const fs::path& f : files) total += file_size_or_zero(f);
  Progress progress("count pieces", static_cast<int64_t>(total), "B", opt.progress);
  if (opt.jsonl_field.empty())
    count_plain(files, opt, out, progress);
  else
    count_jsonl(files, opt, out, progress);
  progress.finish();
  return out;
}

PieceCounts count_pieces_in_texts(const std::vector<std::string_view>& texts, SplitPattern pattern) {
  PieceCounts out;
  PieceCounter map;
  std::vector<std::string_view> pieces;
  for (std::string_view t : texts) {
    out.input_bytes += static_cast<int64_t>(t.size());
    ++out.documents;
    pieces.clear();  // (split_into may append)
    split_into(pattern, t, pieces);
    for (std::string_view piece : pieces) map.add(piece);
    out.total_pieces += static_cast<int64_t>(pieces.size());
  }
  map.export_sorted(out);
  return out;
}

TrainResult train_bpe(const PieceCounts& pc, size_t n_tokens, bool show_progress) {
  TrainResult r;
  r.token_bytes.reserve(std::max<size_t>(n_tokens, 256));
  for (int b = 0; b < 256; ++b) r.token_bytes.emplace_back(1, static_cast<char>(b));
  if (n_tokens <= 256) return r;

  // Words (pieces of 2+ bytes) as symbol arrays in one buffer; merges rewrite them in place.
  std::vector<uint64_t> start;
  std::vector<uint32_t> len;
  std::vector<int64_t> wcount;
  std::vector<uint32_t> sym;
  for (size_t i = 0; i < pc.size(); ++i) {
    const std::string_view p = pc.piece(i);
    if (p.size() < 2) continue;
    start.push_back(sym.size());
    len.push_back(static_cast<uint32_t>(p.size()));
    wcount.push_back(pc.counts[i]);
    for (char c : p) sym.push_back(static_cast<unsigned char>(c));
  }
  const size_t n_words = len.size();
  AJI_CHECK(n_words < 0xFFFFFFFFull, "too many unique pieces");

  // Initial pair counts and positions.
  PairTable pairs;
  for (size_t w = 0; w < n_words; ++w) {
    const uint32_t* s = sym.data() + start[w];
    for (uint32_t i = 0; i + 1 < len[w]; ++i) {
      const uint32_t pi = pairs.get(pair_key(s[i], s[i + 1]));
      pairs.count[pi] += wcount[w];
      pairs.note_word(pi, static_cast<uint32_t>(w));
    }
  }
  std::priority_queue<HeapEntry, std::vector<HeapEntry>, HeapLess> heap;
  for (size_t i = 0; i < pairs.key.size(); ++i)
    if (pairs.count[i] > 0) heap.push({pairs.count[i], pairs.key[i], static_cast<uint32_t>(i)});

  std::unordered_map<std::string, uint32_t> id_of_bytes;  // multi-byte tokens only
  id_of_bytes.reserve(n_tokens * 2);
  std::vector<uint32_t> word_seen(n_words, 0);  // merge number that last visited the word
  std::vector<uint32_t> raised;                 // pairs whose count went up in this merge
  Progress progress("merges", static_cast<int64_t>(n_tokens - 256), "merges", show_progress);
  uint32_t merge_no = 0;

  while (r.token_bytes.size() < n_tokens) {
    if (heap.empty()) {
      r.stopped_early = true;
      break;
    }
    const HeapEntry top = heap.top();
    heap.pop();
    const int64_t live = pairs.count[top.index];
    if (live <= 0) continue;
    if (top.count != live) {
      // Stale: re-queue with the live count. (A lower stored count means a fresher entry
      // with the live count is already queued.)
      if (top.count > live) heap.push({live, top.key, top.index});
      continue;
    }

    // Merge (a, b) -> c.
    const uint32_t a = static_cast<uint32_t>(top.key >> 32), b = static_cast<uint32_t>(top.key);
    std::string merged = r.token_bytes[a] + r.token_bytes[b];
    uint32_t c;
    auto found = id_of_bytes.find(merged);
    if (found != id_of_bytes.end()) {
      c = found->second;  // same bytes from another pair: reuse the id, add no token
    } else {
      c = static_cast<uint32_t>(r.token_bytes.size());
      id_of_bytes.emplace(merged, c);
      r.token_bytes.push_back(std::move(merged));
      progress.add(1);
    }
    r.merges.push_back({a, b, c, live});
    ++merge_no;
    pause_point("tokenizer_merge");  // kill tests

    const uint64_t merged_key = top.key;
    std::vector<uint32_t> where = std::move(pairs.words[top.index]);
    pairs.words[top.index] = {};
    raised.clear();
    auto change = [&](uint32_t left, uint32_t right, int64_t delta, uint32_t w) {
      const uint64_t k = pair_key(left, right);
      if (k == merged_key) return;  // zeroed below
      const uint32_t pi = pairs.get(k);
      pairs.count[pi] += delta;
      if (delta > 0) {
        pairs.note_word(pi, w);
        if (pairs.touched_at[pi] != merge_no) {
          pairs.touched_at[pi] = merge_no;
          raised.push_back(pi);
        }
      }
    };
    for (uint32_t w : where) {
      if (word_seen[w] == merge_no) continue;
      word_seen[w] = merge_no;
      uint32_t* s = sym.data() + start[w];
      const uint32_t L = len[w];
      const int64_t cnt = wcount[w];
      uint32_t i = 0, o = 0;
      while (i < L) {
        if (i + 1 < L && s[i] == a && s[i + 1] == b) {
          if (o > 0) {  // left neighbour (already rewritten): (x,a) -> (x,c)
            change(s[o - 1], a, -cnt, w);
            change(s[o - 1], c, cnt, w);
          }
          if (i + 2 < L) {  // right neighbour (not yet rewritten): (b,y) -> (c,y)
            change(b, s[i + 2], -cnt, w);
            change(c, s[i + 2], cnt, w);
          }
          s[o++] = c;
          i += 2;
        } else {
          s[o++] = s[i++];
        }
      }
      len[w] = o;
    }
    pairs.count[top.index] = 0;
    for (uint32_t pi : raised)
      if (pairs.count[pi] > 0) heap.push({pairs.count[pi], pairs.key[pi], pi});
  }
  progress.finish();
  return r;
}

Tokenizer tokenizer_from_training(const TrainResult& result, SplitPattern pattern,
                                  const std::vector<std::string>& specials) {
  std::vector<SpecialToken> sp;
  const TokenId first = static_cast<TokenId>(result.token_bytes.size());
  for (size_t i = 0; i < specials.size(); ++i) sp.push_back({specials[i], first + static_cast<TokenId>(i)});
  return Tokenizer::from_ranks(result.token_bytes, pattern, std::move(sp));
}

Tokenizer train_tokenizer(const std::vector<fs::path>& files, const TrainOptions& opt, TrainStats* stats_out,
                          TrainResult* result_out) {
  validate_train_options(opt);
  if (files.empty()) throw Error("no input files").fix("pass --input FILE (files, directories or globs)");
  PieceCounts pieces = count_pieces(files, opt);
  if (pieces.input_bytes == 0 && pieces.skipped_lines > 0 && pieces.documents == 0) {
    throw Error("the input holds no text to train on: all " + std::to_string(pieces.skipped_lines) +
                " non-blank lines were skipped as malformed; the first: " + pieces.first_skipped_why)
        .at(pieces.first_skipped_file, pieces.first_skipped_line)
        .fix(pieces.first_skipped_why.find("UTF-8") != std::string::npos
                 ? "JSON text must be UTF-8: convert the input first (e.g. `iconv -f cp949 -t utf-8`)"
                 : "check that the lines are JSON objects with a string field \"" + opt.jsonl_field +
                       "\" (--jsonl-field)");
  }
  if (pieces.input_bytes == 0) {
    throw Error("the input holds no text to train on (" + std::to_string(files.size()) + " file(s), 0 bytes" +
                (pieces.skipped_lines ? ", " + std::to_string(pieces.skipped_lines) + " malformed lines skipped"
                                      : std::string()) +
                ")")
        .at(files.front().string())
        .fix(opt.jsonl_field.empty() ? "check that the input files are not empty"
                                     : "check that the lines are JSON objects with a string field \"" +
                                           opt.jsonl_field + "\" (--jsonl-field)");
  }
  const size_t n_ordinary = opt.vocab_size - opt.specials.size();
  TrainResult result = train_bpe(pieces, n_ordinary, opt.progress);
  Tokenizer tok = tokenizer_from_training(result, opt.pattern, opt.specials);
  tok.metadata["trained_bytes"] = std::to_string(pieces.input_bytes);
  tok.metadata["trained_unique_pieces"] = std::to_string(pieces.size());
  if (result.stopped_early) tok.metadata["stopped_early"] = "true";
  if (stats_out) {
    *stats_out = {pieces.input_bytes, pieces.total_pieces, static_cast<int64_t>(pieces.size()),
                  pieces.documents,   pieces.skipped_lines, pieces.forced_cuts,
                  static_cast<int64_t>(result.merges.size()), result.stopped_early};
  }
  if (result_out) *result_out = std::move(result);
  return tok;
}

}  // namespace aji::tokenizer
