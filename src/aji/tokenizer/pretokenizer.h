// Pre-tokenization: splitting text into the pieces that BPE then encodes one by one,
// with exactly the split patterns of GPT-2, cl100k_base and o200k_base (see
// docs/tokenizer.md and ../shared/specs/tokenizer-notes.md for the patterns and traps).
// Owned by the tokenizer-core work; the trainer and encoder both call split().
//
// The splitter is a hand-written scanner per pattern (pretokenizer_scan.h) over a
// Unicode 15 class table, not a regex engine; tests cross-check it against PCRE2.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aji::tokenizer {

// kQwen2 is cl100k's pattern with single digits (\p{N} instead of \p{N}{1,3}), as in
// Qwen2's tokenizer.json.
enum class SplitPattern { kGpt2, kCl100k, kO200k, kQwen2 };

// "gpt2" | "cl100k" | "o200k" | "qwen2" (also the tiktoken names "cl100k_base", "o200k_base").
std::optional<SplitPattern> parse_split_pattern(std::string_view name);
std::string_view split_pattern_name(SplitPattern p);       // "cl100k", ...
std::string_view split_pattern_regex(SplitPattern p);      // the regex text (for tokenizer.json)
std::optional<SplitPattern> split_pattern_from_regex(std::string_view regex);  // recognises the known forms

// Where the piece that starts at byte `pos` (< text.size()) ends.
size_t next_piece_end(SplitPattern pattern, std::string_view text, size_t pos);

// Calls on_piece(piece) for each piece of `text`, in order; the pieces concatenate to
// `text` exactly. Invalid UTF-8 bytes are treated as single non-letter, non-number,
// non-space code points (so every byte string splits, and round-trips).
template <typename F>
void split(SplitPattern pattern, std::string_view text, F&& on_piece) {
  size_t i = 0;
  while (i < text.size()) {
    size_t e = next_piece_end(pattern, text, i);
    on_piece(text.substr(i, e - i));
    i = e;
  }
}

// Non-template entry point: appends the pieces to `pieces` (does not clear it).
void split_into(SplitPattern pattern, std::string_view text, std::vector<std::string_view>& pieces);

}  // namespace aji::tokenizer
