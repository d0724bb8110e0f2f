#include "aji/tokenizer/pretokenizer.h"

#include "aji/tokenizer/pretokenizer_scan.h"

namespace aji::tokenizer {

namespace {
// The regex text of each pattern, as tiktoken / Hugging Face write it. cl100k is the
// original (non-possessive) form; both forms give identical ids for cl100k_base (see
// docs/tokenizer.md).
constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kCl100kRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kCl100kUpstreamRegex =
    R"('(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kO200kRegex =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
}  // namespace

std::optional<SplitPattern> parse_split_pattern(std::string_view name) {
  if (name == "gpt2" || name == "r50k_base" || name == "p50k_base") return SplitPattern::kGpt2;
  if (name == "cl100k" || name == "cl100k_base" || name == "llama3") return SplitPattern::kCl100k;
  if (name == "o200k" || name == "o200k_base") return SplitPattern::kO200k;
  if (name == "qwen2") return SplitPattern::kQwen2;
  return std::nullopt;
}

std::string_view split_pattern_name(SplitPattern p) {
  switch (p) {
    case SplitPattern::kGpt2: return "gpt2";
    case SplitPattern::kCl100k: return "cl100k";
    case SplitPattern::kO200k: return "o200k";
    case SplitPattern::kQwen2: return "qwen2";
  }
  return "cl100k";
}

std::string_view split_pattern_regex(SplitPattern p) {
  switch (p) {
    case SplitPattern::kGpt2: return kGpt2Regex;
    case SplitPattern::kCl100k: return kCl100kRegex;
    case SplitPattern::kO200k: return kO200kRegex;
    case SplitPattern::kQwen2: return kQwen2Regex;
  }
  return kCl100kRegex;
}

std::optional<SplitPattern> split_pattern_from_regex(std::string_view regex) {
  if (regex == kGpt2Regex) return SplitPattern::kGpt2;
  if (regex == kCl100kRegex || regex == kCl100kUpstreamRegex) return SplitPattern::kCl100k;
  if (regex == kO200kRegex) return SplitPattern::kO200k;
  if (regex == kQwen2Regex) return SplitPattern::kQwen2;
  return std::nullopt;
}

size_t next_piece_end(SplitPattern pattern, std::string_view text, size_t pos) {
  const auto* s = reinterpret_cast<const uint8_t*>(text.data());
  size_t n = text.size();
  switch (pattern) {
    case SplitPattern::kGpt2: return scan::next_end_gpt2(s, n, pos);
    case SplitPattern::kCl100k: return scan::next_end_cl100k(s, n, pos, 3);
    case SplitPattern::kO200k: return scan::next_end_o200k(s, n, pos);
    case SplitPattern::kQwen2: return scan::next_end_cl100k(s, n, pos, 1);
  }
  return n;
}

void split_into(SplitPattern pattern, std::string_view text, std::vector<std::string_view>& pieces) {
  split(pattern, text, [&](std::string_view piece) { pieces.push_back(piece); });
}

}  // namespace aji::tokenizer
