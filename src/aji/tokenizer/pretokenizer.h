// Pre-tokenization: splitting text into the pieces that BPE then encodes one by one,
// with exactly the split patterns of GPT-2, cl100k_base and o200k_base (see
// docs/tokenizer.md and ../shared/specs/tokenizer-notes.md for the patterns and traps).
// Owned by the tokenizer-core work; the trainer and encoder both call split().
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aji::tokenizer {

enum class SplitPattern { kGpt2, kCl100k, kO200k };

// "gpt2" | "cl100k" | "o200k" (also the tiktoken names "cl100k_base", "o200k_base").
std::optional<SplitPattern> parse_split_pattern(std::string_view name);
std::string_view split_pattern_name(SplitPattern p);       // "cl100k", ...
std::string_view split_pattern_regex(SplitPattern p);      // the regex text (for tokenizer.json)
std::optional<SplitPattern> split_pattern_from_regex(std::string_view regex);  // recognises the known forms

// Calls on_piece(piece) for each piece of `text`, in order; the pieces concatenate to
// `text` exactly. Invalid UTF-8 bytes are treated as single non-letter, non-number,
// non-space code points (so every byte string splits, and round-trips).
template <typename F>
void split(SplitPattern pattern, std::string_view text, F&& on_piece);

// Non-template entry point (the template above forwards to this).
void split_into(SplitPattern pattern, std::string_view text, std::vector<std::string_view>& pieces);

}  // namespace aji::tokenizer
