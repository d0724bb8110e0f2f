// aji's byte-level BPE tokenizer (GPT-4 style): a split pattern, a table of token byte
// strings whose rank is their merge priority (tiktoken's model), and special tokens.
//
// Data layout (decode = memcpy): token i's bytes are token_bytes[offsets[i] .. offsets[i+1]).
// Ids of ordinary tokens are 0..n_ranks-1 and a lower id merges first; special tokens
// sit at ids of their own (they may leave gaps, as cl100k does). Hugging Face files may
// put special tokens INSIDE the ordinary range (e.g. <|endoftext|> at id 0, as `tokenizers`'
// trainer does with special_tokens=[...]): then ordinary token i (0..n_ranks-1, in id
// order) has id ordinary_id(i), and every id the API takes or returns is that id.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "aji/tokenizer/pretokenizer.h"

namespace aji::tokenizer {

using TokenId = uint32_t;

struct SpecialToken {
  std::string text;
  TokenId id;
};

// How encode() treats special-token text found in the input (tiktoken's rules).
enum class SpecialPolicy {
  kDisallow,  // special text in the input is an error (tiktoken's default)
  kAllow,     // special text becomes its special id
  kAsText,    // special text is encoded as ordinary bytes
};

class Tokenizer {
 public:
  // --- construction -------------------------------------------------------------
  // From ordinary token byte strings indexed by id, plus specials. By default a token's
  // merge priority is its id (tiktoken's model: rank == id). Hugging Face files whose
  // merge order differs from id order pass merge_priority[id] (lower merges first);
  // then the "whole piece is one token" shortcut is off and every piece runs full BPE
  // (HF BPE without ignore_merges). All 256 single bytes must be tokens.
  // ordinary_ids (optional, strictly ascending, one per token): the id of each ordinary
  // token when they are not 0..n-1 (specials fill the holes); merge_priority is then indexed
  // like token_bytes.
  static Tokenizer from_ranks(std::vector<std::string> token_bytes, SplitPattern pattern,
                              std::vector<SpecialToken> specials,
                              std::vector<uint32_t> merge_priority = {},
                              std::vector<TokenId> ordinary_ids = {});
  // Loads any supported file: aji's own (JSON, "format": "aji-tokenizer"), tiktoken rank
  // files (.tiktoken: "base64 rank" lines), Hugging Face tokenizer.json. Detects the kind
  // from the content and dispatches to tokenizer_files.h. Errors name the file and line.
  static Tokenizer load(const std::filesystem::path& path);

  // --- encoding -----------------------------------------------------------------
  std::vector<TokenId> encode(std::string_view text, SpecialPolicy policy = SpecialPolicy::kDisallow) const;
  // Encodes with only the listed specials allowed (others follow kDisallow).
  std::vector<TokenId> encode_allowing(std::string_view text, const std::unordered_set<std::string>& allowed) const;
  // Appends the ids of text that contains no specials (the hot path).
  // Texts of 8 MB and more are cut at safe piece boundaries and encoded over the threads
  // (same ids as one pass), unless called from inside a parallel region.
  void encode_ordinary(std::string_view text, std::vector<TokenId>& out) const;
  // The chunked path itself: chunks of about chunk_bytes, cut only between "x\n" and "y"
  // with x, y ASCII non-space and y != '/' (no split pattern lets a piece cross there, or
  // behave differently at a chunk's end), encoded in parallel. Public so tests can use
  // tiny chunks.
  void encode_ordinary_chunked(std::string_view text, size_t chunk_bytes, std::vector<TokenId>& out) const;
  // Many texts in parallel over the configured threads (aji::num_threads()).
  std::vector<std::vector<TokenId>> encode_batch(const std::vector<std::string_view>& texts,
                                                 SpecialPolicy policy = SpecialPolicy::kDisallow) const;

  // --- decoding -----------------------------------------------------------------
  std::string decode(const TokenId* ids, size_t n) const;  // raw bytes (may be invalid UTF-8)
  std::string decode(const std::vector<TokenId>& ids) const { return decode(ids.data(), ids.size()); }
  std::string_view token_bytes(TokenId id) const;  // specials give their text

  // --- vocabulary ---------------------------------------------------------------
  size_t n_ranks() const { return offsets_.empty() ? 0 : offsets_.size() - 1; }  // ordinary tokens
  // Ordinary token by index 0..n_ranks-1 (in id order): its id, bytes, merge priority.
  TokenId ordinary_id(size_t index) const { return ordinary_ids_.empty() ? TokenId(index) : ordinary_ids_[index]; }
  std::string_view ordinary_bytes(size_t index) const {
    return std::string_view(bytes_).substr(offsets_[index], offsets_[index + 1] - offsets_[index]);
  }
  uint32_t ordinary_priority(size_t index) const {
    return merge_priority_.empty() ? uint32_t(index) : merge_priority_[index];
  }
  // Ids of the ordinary tokens when specials sit inside their range; empty: 0..n_ranks-1.
  const std::vector<TokenId>& ordinary_ids() const { return ordinary_ids_; }
  size_t vocab_size() const;  // max id + 1, specials included
  SplitPattern pattern() const { return pattern_; }
  const std::vector<SpecialToken>& specials() const { return specials_; }
  std::optional<TokenId> special_id(std::string_view text) const;
  std::optional<TokenId> rank_of(std::string_view bytes) const;  // ordinary token by bytes
  // Merge priority of an ordinary token by id (== id unless the tokenizer has
  // merge_priority or ordinary_ids); an id that is not an ordinary token is an aji::Error.
  uint32_t merge_priority(TokenId id) const;
  const std::vector<uint32_t>& merge_priorities() const { return merge_priority_; }  // by index; empty: == index
  // Adds (or re-ids) a special token; throws if the id clashes with an ordinary token.
  void add_special(std::string text, std::optional<TokenId> id = std::nullopt);

  // Metadata carried in aji's file (e.g. "name", "trained_on").
  std::unordered_map<std::string, std::string> metadata;

 private:
  SplitPattern pattern_ = SplitPattern::kCl100k;
  std::string bytes_;              // all ordinary token bytes, concatenated
  std::vector<uint32_t> offsets_;  // n_ranks + 1 offsets into bytes_
  std::vector<SpecialToken> specials_;
  std::vector<uint32_t> merge_priority_;  // by index; empty: priority == index
  std::vector<TokenId> ordinary_ids_;     // by index; empty: id == index
  // The encoder's lookup structures are private to tokenizer-core's implementation
  // (built by finalize()); see tokenizer.cpp.
  struct Index;
  std::shared_ptr<const Index> index_;
  void finalize();
  void encode_ordinary_serial(std::string_view text, std::vector<TokenId>& out) const;
  friend class TokenizerFiles;
};

}  // namespace aji::tokenizer
