// The byte-level BPE encoder/decoder (tiktoken's model). Data flow of encode():
//   text -> [special-token scan] -> spans of ordinary text -> pre-tokenizer pieces
//        -> whole-piece vocabulary lookup (most English words end here)
//        -> else BPE on byte slices: flat-array linear scan (< kLargePiece bytes)
//           or a min-heap with lazy invalidation (O(n log n) for long pieces).
// The vocabulary lives in one flat byte buffer + offsets (decode = memcpy) and an
// open-addressing hash keyed on byte spans.
#include "aji/tokenizer/tokenizer.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <functional>

#include <omp.h>

#include "aji/base/error.h"
#include "aji/base/threads.h"
#include "aji/tokenizer/pretokenizer_scan.h"
#include "aji/tokenizer/tokenizer_files.h"

namespace aji::tokenizer {

namespace {
constexpr uint32_t kNoToken = 0xFFFFFFFFu;
constexpr uint32_t kMaxRank = 0xFFFFFFFFu;
// Pieces at least this long use the heap merge; shorter ones the cache-friendly scan.
constexpr size_t kLargePiece = 128;

inline uint64_t mix64(uint64_t h) {
  h ^= h >> 32;
  h *= 0xd6e8feb86659fd93ULL;
  h ^= h >> 32;
  return h;
}

// Hash of a byte span: 8 bytes at a time, the tail loaded without a memcpy call.
inline uint64_t hash_bytes(const uint8_t* p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ULL ^ (n * 0xff51afd7ed558ccdULL);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 29;
    p += 8;
    n -= 8;
  }
  if (n) {
    uint64_t w = 0;
    if (n >= 4) {
      uint32_t lo, hi;
      std::memcpy(&lo, p, 4);
      std::memcpy(&hi, p + n - 4, 4);
      w = uint64_t(lo) | (uint64_t(hi) << 32);
    } else {
      w = uint64_t(p[0]) | (uint64_t(p[n / 2]) << 8) | (uint64_t(p[n - 1]) << 16);
    }
    h = (h ^ w) * 0x94d049bb133111ebULL;
  }
  return mix64(h);
}
// The first min(n, 8) bytes of p as a zero-padded little-endian word.
inline uint64_t load_head(const uint8_t* p, size_t n) {
  uint64_t w = 0;
  if (n >= 8) {
    std::memcpy(&w, p, 8);
  } else if (n >= 4) {
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + n - 4, 4);
    w = uint64_t(lo) | (uint64_t(hi) << ((n - 4) * 8));
  } else {
    for (size_t i = 0; i < n; ++i) w |= uint64_t(p[i]) << (8 * i);
  }
  return w;
}

// A hash slot carries the token's first 8 bytes and length, so a lookup touches one
// cache line: tokens of up to 8 bytes (most of them) are verified inside the slot.
struct Slot {
  uint64_t head;
  uint32_t id;   // kNoToken: empty
  uint32_t len;
};

// a[0..n) == b[0..n) without a libc call for the short strings tokens are: overlapping
// loads, never reading outside either span.
inline bool bytes_equal(const uint8_t* a, const uint8_t* b, size_t n) {
  if (n >= 8) {
    if (n > 16) return std::memcmp(a, b, n) == 0;
    uint64_t a0, a1, b0, b1;
    std::memcpy(&a0, a, 8);
    std::memcpy(&b0, b, 8);
    std::memcpy(&a1, a + n - 8, 8);
    std::memcpy(&b1, b + n - 8, 8);
    return ((a0 ^ b0) | (a1 ^ b1)) == 0;
  }
  if (n >= 4) {
    uint32_t a0, a1, b0, b1;
    std::memcpy(&a0, a, 4);
    std::memcpy(&b0, b, 4);
    std::memcpy(&a1, a + n - 4, 4);
    std::memcpy(&b1, b + n - 4, 4);
    return ((a0 ^ b0) | (a1 ^ b1)) == 0;
  }
  for (size_t i = 0; i < n; ++i)
    if (a[i] != b[i]) return false;
  return true;
}
}  // namespace

// The encoder's lookup structures (immutable once built, shared by copies).
struct Tokenizer::Index {
  std::vector<Slot> slots;  // open addressing, linear probing, load <= 0.5
  uint64_t mask = 0;
  uint32_t byte_id[256];
  std::vector<uint32_t> pair_id;  // 65536: id of the 2-byte token b0 b1 (kNoToken if none)
  bool whole_piece_shortcut = true;
  // Specials: id -> index into specials_ for decode; first-byte filter for the scan.
  std::vector<int32_t> special_at;  // indexed by id - special_base
  size_t special_base = 0;           // n_ranks, or 0 when ordinary_ids_ is set
  std::vector<int32_t> index_of;     // ordinary_ids_ set: id -> ordinary index (-1: none)
  bool special_first_byte[256] = {};
};

namespace {

// A read-only view over the tokenizer's arrays, used by the hot loops.
struct Vocab {
  const Slot* slots;
  uint64_t mask;
  const uint8_t* bytes;
  const uint32_t* offsets;
  const uint32_t* priority;  // null: priority == id
  const uint32_t* byte_id;
  const uint32_t* pair_id;

  uint32_t find(const uint8_t* p, size_t n) const {
    uint64_t h = hash_bytes(p, n);
    uint64_t head = load_head(p, n);
    for (uint64_t i = h & mask;; i = (i + 1) & mask) {
      const Slot& slot = slots[i];
      if (slot.id == kNoToken) return kNoToken;
      if (slot.head == head && slot.len == n &&
          (n <= 8 || bytes_equal(bytes + offsets[slot.id] + 8, p + 8, n - 8)))
        return slot.id;
    }
  }
  uint32_t priority_of(const uint8_t* p, size_t n) const {
    uint32_t id = n == 2 ? pair_id[p[0] << 8 | p[1]] : find(p, n);
    if (id == kNoToken) return kMaxRank;
    return priority ? priority[id] : id;
  }
};

// tiktoken's _byte_pair_merge: parts[k] = (start, priority of the pair starting here).
void merge_small(const Vocab& v, const uint8_t* p, size_t n, std::vector<TokenId>& out) {
  uint32_t start[kLargePiece + 1], rank[kLargePiece + 1];
  size_t m = n + 1;  // parts: starts 0..n
  for (size_t i = 0; i + 1 < n; ++i) {
    start[i] = uint32_t(i);
    rank[i] = v.priority_of(p + i, 2);  // the direct 2-byte table
  }
  start[n - 1] = uint32_t(n - 1);
  rank[n - 1] = kMaxRank;
  start[n] = uint32_t(n);
  rank[n] = kMaxRank;
  // Priority of the token that would merge parts i and i+1 (and i+2 after the removal).
  auto rank_after = [&](size_t i) -> uint32_t {
    if (i + 3 < m) return v.priority_of(p + start[i], start[i + 3] - start[i]);
    return kMaxRank;
  };
  while (true) {
    uint32_t best = kMaxRank;
    size_t bi = 0;
    for (size_t i = 0; i + 1 < m; ++i)
      if (rank[i] < best) {
        best = rank[i];
        bi = i;
      }
    if (best == kMaxRank) break;
    if (bi > 0) rank[bi - 1] = rank_after(bi - 1);
    rank[bi] = rank_after(bi);
    std::memmove(start + bi + 1, start + bi + 2, (m - bi - 2) * sizeof(uint32_t));
    std::memmove(rank + bi + 1, rank + bi + 2, (m - bi - 2) * sizeof(uint32_t));
    --m;
  }
  for (size_t i = 0; i + 1 < m; ++i) {
    size_t len = start[i + 1] - start[i];
    const uint8_t* q = p + start[i];
    out.push_back(len == 1 ? v.byte_id[q[0]] : len == 2 ? v.pair_id[q[0] << 8 | q[1]] : v.find(q, len));
  }
}

// tiktoken's _byte_pair_merge_large: a linked list of parts over byte positions, and a
// min-heap of (priority, start) candidates. Entries made stale by a neighbouring merge
// stay in the heap and are skipped when popped (their priority no longer matches).
struct MergeState {
  uint32_t prev, end, next_end, next_rank;
};

void merge_large(const Vocab& v, const uint8_t* p, size_t n, std::vector<TokenId>& out) {
  thread_local std::vector<MergeState> state;
  thread_local std::vector<uint64_t> heap;  // min-heap of (priority << 32 | start)
  state.resize(n);
  heap.clear();
  auto push = [&](uint32_t r, uint32_t start) {
    heap.push_back(uint64_t(r) << 32 | start);
    std::push_heap(heap.begin(), heap.end(), std::greater<uint64_t>());
  };
  for (size_t i = 0; i < n; ++i) {
    state[i] = {i == 0 ? kNoToken : uint32_t(i - 1), uint32_t(i + 1), uint32_t(i + 2), kMaxRank};
    if (i + 1 < n) {
      uint32_t r = v.priority_of(p + i, 2);
      if (r != kMaxRank) {
        state[i].next_rank = r;
        push(r, uint32_t(i));
      }
    }
  }
  auto potential_merge = [&](uint32_t start, uint32_t next_end) {
    state[start].next_end = next_end;
    state[start].next_rank = kMaxRank;
    if (next_end <= n) {
      uint32_t r = v.priority_of(p + start, next_end - start);
      if (r != kMaxRank) {
        state[start].next_rank = r;
        push(r, start);
      }
    }
  };
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<uint64_t>());
    uint64_t top = heap.back();
    heap.pop_back();
    uint32_t r = uint32_t(top >> 32), left = uint32_t(top);
    if (r != state[left].next_rank) continue;  // stale: a neighbour merged since
    uint32_t right = state[left].end;
    uint32_t right_end = state[left].next_end;
    uint32_t right_next_end = state[right].next_end;
    state[left].end = right_end;
    potential_merge(left, right_next_end);
    if (right_end < n) state[right_end].prev = left;
    if (left > 0) potential_merge(state[left].prev, right_end);
    state[right].next_rank = kMaxRank;
  }
  for (uint32_t i = 0; i < n; i = state[i].end) {
    size_t len = state[i].end - i;
    out.push_back(len == 1 ? v.byte_id[p[i]] : len == 2 ? v.pair_id[p[i] << 8 | p[i + 1]] : v.find(p + i, len));
  }
}

inline void encode_piece(const Vocab& v, bool shortcut, const uint8_t* p, size_t n, std::vector<TokenId>& out) {
  if (n == 1) {
    out.push_back(v.byte_id[p[0]]);
    return;
  }
  if (shortcut) {
    uint32_t id = v.find(p, n);
    if (id != kNoToken) {
      out.push_back(id);
      return;
    }
  }
  if (n < kLargePiece) {
    merge_small(v, p, n, out);
  } else {
    if (n > 0x7FFFFFFFu)  // positions are 32-bit; ~48 bytes of scratch per input byte
      throw Error("one pre-tokenizer piece is " + std::to_string(n) + " bytes (a single 2 GB+ word)")
          .fix("split the input into smaller documents");
    merge_large(v, p, n, out);
  }
}

template <SplitPattern kPattern>
void encode_pieces(const Vocab& v, bool shortcut, const uint8_t* s, size_t n, std::vector<TokenId>& out) {
  size_t i = 0;
  while (i < n) {
    size_t e;
    if constexpr (kPattern == SplitPattern::kCl100k) e = scan::next_end_cl100k(s, n, i, 3);
    else if constexpr (kPattern == SplitPattern::kO200k) e = scan::next_end_o200k(s, n, i);
    else if constexpr (kPattern == SplitPattern::kQwen2) e = scan::next_end_cl100k(s, n, i, 1);
    else e = scan::next_end_gpt2(s, n, i);
    encode_piece(v, shortcut, s + i, e - i, out);
    i = e;
  }
}

std::string printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c != 0x7F) {
      out += char(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

}  // namespace

// --- construction -------------------------------------------------------------------

Tokenizer Tokenizer::from_ranks(std::vector<std::string> token_bytes, SplitPattern pattern,
                                std::vector<SpecialToken> specials, std::vector<uint32_t> merge_priority,
                                std::vector<TokenId> ordinary_ids) {
  if (token_bytes.size() >= size_t(kNoToken / 2))
    throw Error("too many tokens: " + std::to_string(token_bytes.size())).fix("aji supports up to 2^31 tokens");
  if (!merge_priority.empty() && merge_priority.size() != token_bytes.size())
    throw Error("merge_priority has " + std::to_string(merge_priority.size()) + " entries for " +
                std::to_string(token_bytes.size()) + " tokens")
        .fix("give one priority per ordinary token, or none");
  if (!ordinary_ids.empty()) {
    if (ordinary_ids.size() != token_bytes.size())
      throw Error("ordinary_ids has " + std::to_string(ordinary_ids.size()) + " entries for " +
                  std::to_string(token_bytes.size()) + " tokens")
          .fix("give one id per ordinary token, or none");
    for (size_t i = 1; i < ordinary_ids.size(); ++i)
      if (ordinary_ids[i] <= ordinary_ids[i - 1])
        throw Error("ordinary token ids are not strictly ascending (" + std::to_string(ordinary_ids[i - 1]) +
                    " then " + std::to_string(ordinary_ids[i]) + ")")
            .fix("list the ordinary tokens in id order, each id once");
    if (ordinary_ids.back() >= kNoToken / 2) throw Error("an ordinary token id is too large");
    bool identity = true;
    for (size_t i = 0; i < ordinary_ids.size() && identity; ++i) identity = ordinary_ids[i] == i;
    if (identity) ordinary_ids.clear();
  }
  Tokenizer t;
  t.pattern_ = pattern;
  size_t total = 0;
  for (auto& b : token_bytes) total += b.size();
  if (total >= kNoToken) throw Error("the token byte strings exceed 4 GB in total");
  t.bytes_.reserve(total);
  t.offsets_.reserve(token_bytes.size() + 1);
  t.offsets_.push_back(0);
  for (auto& b : token_bytes) {
    t.bytes_ += b;
    t.offsets_.push_back(uint32_t(t.bytes_.size()));
  }
  t.specials_ = std::move(specials);
  t.merge_priority_ = std::move(merge_priority);
  t.ordinary_ids_ = std::move(ordinary_ids);
  t.finalize();
  return t;
}

void Tokenizer::finalize() {
  auto index = std::make_shared<Index>();
  const size_t n = n_ranks();
  size_t cap = 16;
  while (cap < n * 2) cap <<= 1;
  index->slots.assign(cap, Slot{0, kNoToken, 0});
  index->mask = cap - 1;
  std::fill(std::begin(index->byte_id), std::end(index->byte_id), kNoToken);
  index->pair_id.assign(65536, kNoToken);
  const auto* bytes = reinterpret_cast<const uint8_t*>(bytes_.data());
  for (uint32_t id = 0; id < n; ++id) {
    const uint8_t* p = bytes + offsets_[id];
    size_t len = offsets_[id + 1] - offsets_[id];
    if (len == 0) throw Error("token " + std::to_string(id) + " is empty").fix("every ordinary token needs at least one byte");
    if (len == 1) index->byte_id[p[0]] = id;
    if (len == 2) index->pair_id[p[0] << 8 | p[1]] = id;
    uint64_t h = hash_bytes(p, len);
    uint64_t head = load_head(p, len);
    for (uint64_t i = h & index->mask;; i = (i + 1) & index->mask) {
      Slot& slot = index->slots[i];
      if (slot.id == kNoToken) {
        slot = Slot{head, id, uint32_t(len)};
        break;
      }
      uint32_t other = slot.id;
      if (slot.head == head && slot.len == len && std::memcmp(bytes + offsets_[other], p, len) == 0)
        throw Error("tokens " + std::to_string(other) + " and " + std::to_string(id) + " have the same bytes \"" +
                    printable(std::string_view(reinterpret_cast<const char*>(p), len)) + "\"")
            .fix("each ordinary token must be a distinct byte string");
    }
  }
  for (int b = 0; b < 256; ++b)
    if (n > 0 && index->byte_id[b] == kNoToken) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "0x%02X", b);
      throw Error(std::string("the vocabulary has no token for the single byte ") + buf)
          .fix("byte-level BPE needs all 256 single-byte tokens so that any text can be encoded");
    }
  index->whole_piece_shortcut = merge_priority_.empty();

  // Ordinary ids with holes (specials inside the range): the id -> index map.
  size_t max_id = n;
  if (!ordinary_ids_.empty()) {
    max_id = size_t(ordinary_ids_.back()) + 1;
    index->index_of.assign(max_id, -1);
    for (size_t i = 0; i < n; ++i) index->index_of[ordinary_ids_[i]] = int32_t(i);
  }
  index->special_base = ordinary_ids_.empty() ? n : 0;
  // Specials: validate, then the id -> special map and the first-byte filter.
  for (size_t k = 0; k < specials_.size(); ++k) {
    const auto& sp = specials_[k];
    if (sp.text.empty()) throw Error("a special token has empty text").fix("give every special token some text");
    const bool clash = ordinary_ids_.empty() ? sp.id < n : sp.id < index->index_of.size() && index->index_of[sp.id] >= 0;
    if (clash)
      throw Error("special token \"" + sp.text + "\" has id " + std::to_string(sp.id) + ", which is an ordinary token's id" +
                  (ordinary_ids_.empty() ? " (ordinary ids are 0.." + std::to_string(n - 1) + ")" : std::string()))
          .fix("give the special token an id no ordinary token has, e.g. " + std::to_string(max_id));
    if (sp.id >= kNoToken / 2) throw Error("special token \"" + sp.text + "\" has a too large id");
    for (size_t j = 0; j < k; ++j) {
      if (specials_[j].text == sp.text)
        throw Error("special token \"" + sp.text + "\" is defined twice").fix("define each special token once");
      if (specials_[j].id == sp.id)
        throw Error("special tokens \"" + specials_[j].text + "\" and \"" + sp.text + "\" share the id " +
                    std::to_string(sp.id))
            .fix("give each special token its own id");
    }
    max_id = std::max<size_t>(max_id, size_t(sp.id) + 1);
  }
  index->special_at.assign(max_id - index->special_base, -1);
  for (size_t k = 0; k < specials_.size(); ++k) {
    index->special_at[specials_[k].id - index->special_base] = int32_t(k);
    index->special_first_byte[uint8_t(specials_[k].text[0])] = true;
  }
  index_ = std::move(index);
}

Tokenizer Tokenizer::load(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error("cannot open tokenizer file").at(path.string()).fix("check the path given to --tokenizer");
  char head[4096];
  in.read(head, sizeof head);
  std::string_view h(head, size_t(in.gcount()));
  size_t first = h.find_first_not_of(" \t\r\n");
  if (h.empty() || first == std::string_view::npos)
    throw Error("the tokenizer file is empty").at(path.string()).fix("point --tokenizer at a .tiktoken, aji or tokenizer.json file");
  if (h[first] == '{') {
    if (h.find("\"aji-tokenizer\"") != std::string_view::npos) return load_aji_tokenizer_file(path);
    return load_hf_tokenizer_json(path);
  }
  return load_tiktoken_file(path);
}

// --- vocabulary ---------------------------------------------------------------------

size_t Tokenizer::vocab_size() const {
  return index_ ? index_->special_base + index_->special_at.size() : n_ranks();
}

uint32_t Tokenizer::merge_priority(TokenId id) const {
  size_t index = id;
  if (!ordinary_ids_.empty()) {
    if (!index_ || id >= index_->index_of.size() || index_->index_of[id] < 0)
      throw Error("token id " + std::to_string(id) + " is not an ordinary token").fix("ask for an ordinary token's id");
    index = size_t(index_->index_of[id]);
  } else if (id >= n_ranks()) {
    throw Error("token id " + std::to_string(id) + " is not an ordinary token").fix("ask for an ordinary token's id");
  }
  return ordinary_priority(index);
}

std::optional<TokenId> Tokenizer::special_id(std::string_view text) const {
  for (const auto& sp : specials_)
    if (sp.text == text) return sp.id;
  return std::nullopt;
}

std::optional<TokenId> Tokenizer::rank_of(std::string_view bytes) const {
  if (!index_ || bytes.empty()) return std::nullopt;
  Vocab v{index_->slots.data(), index_->mask, reinterpret_cast<const uint8_t*>(bytes_.data()),
          offsets_.data(), nullptr, index_->byte_id, index_->pair_id.data()};
  uint32_t id = v.find(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  if (id == kNoToken) return std::nullopt;
  return ordinary_id(id);
}

void Tokenizer::add_special(std::string text, std::optional<TokenId> id) {
  TokenId new_id = id ? *id : TokenId(vocab_size());
  auto old = specials_;
  bool replaced = false;
  for (auto& sp : specials_)
    if (sp.text == text) {
      sp.id = new_id;
      replaced = true;
    }
  if (!replaced) specials_.push_back({std::move(text), new_id});
  try {
    finalize();
  } catch (...) {
    specials_ = std::move(old);
    finalize();
    throw;
  }
}

std::string_view Tokenizer::token_bytes(TokenId id) const {
  if (!ordinary_ids_.empty()) {
    if (index_ && id < index_->index_of.size() && index_->index_of[id] >= 0)
      return ordinary_bytes(size_t(index_->index_of[id]));
  } else if (id < n_ranks()) {
    return std::string_view(bytes_).substr(offsets_[id], offsets_[id + 1] - offsets_[id]);
  }
  if (index_ && id >= index_->special_base && id - index_->special_base < index_->special_at.size()) {
    int32_t k = index_->special_at[id - index_->special_base];
    if (k >= 0) return specials_[size_t(k)].text;
  }
  throw Error("token id " + std::to_string(id) + " is not in this tokenizer (vocabulary size " +
              std::to_string(vocab_size()) + ")")
      .fix("decode ids produced by the same tokenizer");
}

// --- encoding -----------------------------------------------------------------------

void Tokenizer::encode_ordinary(std::string_view text, std::vector<TokenId>& out) const {
  constexpr size_t kParallelMin = size_t(8) << 20;
  if (text.size() >= kParallelMin && num_threads() > 1 && !omp_in_parallel())
    encode_ordinary_chunked(text, std::max<size_t>(size_t(1) << 20, text.size() / size_t(8 * num_threads())), out);
  else
    encode_ordinary_serial(text, out);
}

void Tokenizer::encode_ordinary_chunked(std::string_view text, size_t chunk_bytes, std::vector<TokenId>& out) const {
  // A position k where text[k-2], text[k-1], text[k] are (ASCII non-space, '\n',
  // ASCII non-space other than '/') always starts a piece, and the piece before it ends
  // the same way whether or not text[k..] follows: the lone "\n" is a piece by itself
  // (\s*[\r\n]+, or \s+ since a one-unit run cannot give up a unit for (?!\S)) or the
  // tail of ` ?[^\s\p{L}\p{N}]+[\r\n]*` ([\r\n/]* in o200k, hence no '/'); letter and
  // digit runs stop at '\n'; and no pattern looks behind. So the chunks encode
  // independently to the same ids.
  auto safe_cut = [&](size_t k) {
    auto ascii_non_space = [&](size_t i) {
      uint8_t c = uint8_t(text[i]);
      return c < 0x80 && !(unicode::kAsciiClass[c] & unicode::kWS);
    };
    return k >= 2 && text[k - 1] == '\n' && ascii_non_space(k - 2) && ascii_non_space(k) && text[k] != '/';
  };
  std::vector<std::string_view> chunks;
  size_t start = 0;
  while (start < text.size()) {
    size_t k = std::min(text.size(), start + std::max<size_t>(chunk_bytes, 1));
    while (k < text.size() && !safe_cut(k)) ++k;
    chunks.push_back(text.substr(start, k - start));
    start = k;
  }
  std::vector<std::vector<TokenId>> parts(chunks.size());
  parallel_for(int64_t(chunks.size()), [&](int64_t i) { encode_ordinary_serial(chunks[size_t(i)], parts[size_t(i)]); });
  size_t total = out.size();
  for (const auto& p : parts) total += p.size();
  out.reserve(total);
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
}

void Tokenizer::encode_ordinary_serial(std::string_view text, std::vector<TokenId>& out) const {
  if (text.empty()) return;
  if (!index_ || n_ranks() == 0) throw Error("the tokenizer has no vocabulary").fix("load or train a tokenizer first");
  Vocab v{index_->slots.data(), index_->mask, reinterpret_cast<const uint8_t*>(bytes_.data()), offsets_.data(),
          merge_priority_.empty() ? nullptr : merge_priority_.data(), index_->byte_id, index_->pair_id.data()};
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  bool shortcut = index_->whole_piece_shortcut;
  const size_t first = out.size();
  switch (pattern_) {
    case SplitPattern::kCl100k: encode_pieces<SplitPattern::kCl100k>(v, shortcut, s, text.size(), out); break;
    case SplitPattern::kO200k: encode_pieces<SplitPattern::kO200k>(v, shortcut, s, text.size(), out); break;
    case SplitPattern::kGpt2: encode_pieces<SplitPattern::kGpt2>(v, shortcut, s, text.size(), out); break;
    case SplitPattern::kQwen2: encode_pieces<SplitPattern::kQwen2>(v, shortcut, s, text.size(), out); break;
  }
  if (!ordinary_ids_.empty())  // the encoder works on indices; give the file's ids
    for (size_t i = first; i < out.size(); ++i) out[i] = ordinary_ids_[out[i]];
}

namespace {
struct SpecialMatch {
  size_t pos = std::string_view::npos;
  size_t k = 0;  // index into specials
};

// Leftmost occurrence at or after `from` of a special with allowed[k] (longest wins at
// the same position). Candidates are found through the first-byte filter.
SpecialMatch find_special(std::string_view text, size_t from, const std::vector<SpecialToken>& specials,
                          const bool* first_byte, const std::vector<char>& allowed) {
  SpecialMatch m;
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  for (size_t i = from; i < text.size(); ++i) {
    if (!first_byte[s[i]]) continue;
    size_t best_len = 0;
    for (size_t k = 0; k < specials.size(); ++k) {
      const std::string& sp = specials[k].text;
      if (!allowed[k] || sp.size() <= best_len || text.size() - i < sp.size()) continue;
      if (std::memcmp(s + i, sp.data(), sp.size()) == 0) {
        best_len = sp.size();
        m.pos = i;
        m.k = k;
      }
    }
    if (best_len) return m;
  }
  return m;
}
}  // namespace

std::vector<TokenId> Tokenizer::encode(std::string_view text, SpecialPolicy policy) const {
  if (specials_.empty() || policy == SpecialPolicy::kAsText) {
    std::vector<TokenId> out;
    out.reserve(text.size() / 3 + 4);
    encode_ordinary(text, out);
    return out;
  }
  std::unordered_set<std::string> allowed;
  if (policy == SpecialPolicy::kAllow)
    for (auto& sp : specials_) allowed.insert(sp.text);
  return encode_allowing(text, allowed);
}

std::vector<TokenId> Tokenizer::encode_allowing(std::string_view text,
                                                const std::unordered_set<std::string>& allowed_set) const {
  std::vector<TokenId> out;
  out.reserve(text.size() / 3 + 4);
  if (specials_.empty()) {
    encode_ordinary(text, out);
    return out;
  }
  std::vector<char> allowed(specials_.size()), disallowed(specials_.size());
  bool any_disallowed = false;
  for (size_t k = 0; k < specials_.size(); ++k) {
    allowed[k] = allowed_set.count(specials_[k].text) ? 1 : 0;
    disallowed[k] = !allowed[k];
    any_disallowed |= !allowed[k];
  }
  if (any_disallowed) {
    SpecialMatch bad = find_special(text, 0, specials_, index_->special_first_byte, disallowed);
    if (bad.pos != std::string_view::npos) {
      const auto& sp = specials_[bad.k];
      throw Error("the text contains the special token " + sp.text + " (at byte " + std::to_string(bad.pos) +
                  "), which is not allowed here")
          .fix("to encode it as its special id " + std::to_string(sp.id) +
               ", allow it (CLI: --allow-special; C++: SpecialPolicy::kAllow); to encode it as plain text, use "
               "SpecialPolicy::kAsText; or remove it from the text");
    }
  }
  size_t start = 0;
  while (start <= text.size()) {
    SpecialMatch m = find_special(text, start, specials_, index_->special_first_byte, allowed);
    size_t end = m.pos == std::string_view::npos ? text.size() : m.pos;
    encode_ordinary(text.substr(start, end - start), out);
    if (m.pos == std::string_view::npos) break;
    out.push_back(specials_[m.k].id);
    start = m.pos + specials_[m.k].text.size();
  }
  return out;
}

std::vector<std::vector<TokenId>> Tokenizer::encode_batch(const std::vector<std::string_view>& texts,
                                                          SpecialPolicy policy) const {
  std::vector<std::vector<TokenId>> out(texts.size());
  parallel_for(int64_t(texts.size()), [&](int64_t i) { out[size_t(i)] = encode(texts[size_t(i)], policy); });
  return out;
}

// --- decoding -----------------------------------------------------------------------

std::string Tokenizer::decode(const TokenId* ids, size_t n) const {
  if (!ordinary_ids_.empty()) {  // specials inside the ordinary range: look every id up
    std::string out;
    for (size_t i = 0; i < n; ++i) out += token_bytes(ids[i]);
    return out;
  }
  const size_t nr = n_ranks();
  size_t total = 0;
  for (size_t i = 0; i < n; ++i)
    total += ids[i] < nr ? offsets_[ids[i] + 1] - offsets_[ids[i]] : token_bytes(ids[i]).size();
  std::string out(total, '\0');
  char* w = out.data();
  for (size_t i = 0; i < n; ++i) {
    TokenId id = ids[i];
    if (id < nr) {
      uint32_t len = offsets_[id + 1] - offsets_[id];
      std::memcpy(w, bytes_.data() + offsets_[id], len);
      w += len;
    } else {
      std::string_view t = token_bytes(id);
      std::memcpy(w, t.data(), t.size());
      w += t.size();
    }
  }
  return out;
}

}  // namespace aji::tokenizer
