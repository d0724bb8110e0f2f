// aji's byte-level BPE tokenizer (GPT-4 style): a split pattern, a table of token byte
// strings whose rank is their merge priority (tiktoken's model), and special tokens.
//
// Data layout (decode = memcpy): token i's bytes are token_bytes[offsets[i] .. offsets[i+1]).
// Ids of ordinary tokens are 0..n_ranks-1 and a lower id merges first; special tokens
// sit at ids of their own (they may leave gaps, as cl100k does).
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
  static Tokenizer from_ranks(std::vector<std::string> token_bytes, SplitPattern pattern,
                              std::vector<SpecialToken> specials,
                              std::vector<uint32_t> merge_priority = {});
  // Loads any supported file: aji's own (JSON, "format": "aji-tokenizer"), tiktoken rank
  // files (.tiktoken: "base64 rank" lines), Hugging Face tokenizer.json. Detects the kind
  // from the content and dispatches to tokenizer_files.h. Errors name the file and line.
  static Tokenizer load(const std::filesystem::path& path);

  // --- encoding -----------------------------------------------------------------
  std::vector<TokenId> encode(std::string_view text, SpecialPolicy policy = SpecialPolicy::kDisallow) const;
  // Encodes with only the listed specials allowed (others follow kDisallow).
  std::vector<TokenId> encode_allowing(std::string_view text, const std::unordered_set<std::string>& allowed) const;
  // Appends the ids of text that contains no specials (the hot path).
  void encode_ordinary(std::string_view text, std::vector<TokenId>& out) const;
  // Many texts in parallel over the configured threads (aji::num_threads()).
  std::vector<std::vector<TokenId>> encode_batch(const std::vector<std::string_view>& texts,
                                                 SpecialPolicy policy = SpecialPolicy::kDisallow) const;

  // --- decoding -----------------------------------------------------------------
  std::string decode(const TokenId* ids, size_t n) const;  // raw bytes (may be invalid UTF-8)
  std::string decode(const std::vector<TokenId>& ids) const { return decode(ids.data(), ids.size()); }
  std::string_view token_bytes(TokenId id) const;  // specials give their text

  // --- vocabulary ---------------------------------------------------------------
  size_t n_ranks() const { return offsets_.empty() ? 0 : offsets_.size() - 1; }
  size_t vocab_size() const;  // max id + 1, specials included
  SplitPattern pattern() const { return pattern_; }
  const std::vector<SpecialToken>& specials() const { return specials_; }
  std::optional<TokenId> special_id(std::string_view text) const;
  std::optional<TokenId> rank_of(std::string_view bytes) const;  // ordinary token by bytes
  // Merge priority of an ordinary token (== id unless the tokenizer has merge_priority).
  uint32_t merge_priority(TokenId id) const { return merge_priority_.empty() ? id : merge_priority_[id]; }
  const std::vector<uint32_t>& merge_priorities() const { return merge_priority_; }  // empty: == id
  // Adds (or re-ids) a special token; throws if the id clashes with an ordinary token.
  void add_special(std::string text, std::optional<TokenId> id = std::nullopt);

  // Metadata carried in aji's file (e.g. "name", "trained_on").
  std::unordered_map<std::string, std::string> metadata;

 private:
  SplitPattern pattern_ = SplitPattern::kCl100k;
  std::string bytes_;              // all ordinary token bytes, concatenated
  std::vector<uint32_t> offsets_;  // n_ranks + 1 offsets into bytes_
  std::vector<SpecialToken> specials_;
  std::vector<uint32_t> merge_priority_;  // empty: priority == id
  // The encoder's lookup structures are private to tokenizer-core's implementation
  // (built by finalize()); see tokenizer.cpp.
  struct Index;
  std::shared_ptr<const Index> index_;
  void finalize();
  friend class TokenizerFiles;
};

}  // namespace aji::tokenizer
