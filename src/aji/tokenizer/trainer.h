// Byte-level BPE training (the rustbpe / Hugging Face design, see docs/tokenizer.md
// "Training"): split the corpus with the chosen pattern, count UNIQUE pieces, then learn
// merges on the (piece, count) list with pair counts, pair -> word positions and a max-heap
// with lazy refresh. The raw corpus is streamed once and never held in memory.
//
// Data flow:  inputs --(stream, cut at safe points)--> chunks --(split, per-thread maps)-->
//             PieceCounts (unique pieces, sorted) --(train_bpe)--> TrainResult (token bytes
//             in rank order + merge list) --> Tokenizer (ranks + specials).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "aji/tokenizer/pretokenizer.h"
#include "aji/tokenizer/tokenizer.h"

namespace aji::tokenizer {

// Vocabulary sizes the trainer accepts (ordinary tokens + specials).
inline constexpr size_t kMinVocabSize = 256;
inline constexpr size_t kMaxVocabSize = 1'000'000;

struct TrainOptions {
  SplitPattern pattern = SplitPattern::kCl100k;
  // Total vocabulary: 256 byte tokens + learned merges + specials (as HF and nanochat count it).
  size_t vocab_size = 32768;
  std::vector<std::string> specials = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  // Non-empty: inputs are JSONL and this string field of each object is one document.
  std::string jsonl_field;
  // JSONL: skip (and count) malformed lines instead of stopping at the first one.
  bool skip_bad_lines = false;
  bool progress = true;
  // Plain text is cut into chunks at safe points; a run longer than this without one (a
  // 1 GB line of one "word") is cut anyway at a UTF-8 boundary (counted as forced_cuts).
  size_t max_run_bytes = size_t(64) << 20;
};

// The unique pieces of a corpus with their counts, sorted by bytes (deterministic).
// piece i = arena[offsets[i] .. offsets[i+1]).
struct PieceCounts {
  std::string arena;
  std::vector<uint64_t> offsets;  // n_pieces + 1
  std::vector<int64_t> counts;    // n_pieces
  // Statistics of the pass that produced them.
  int64_t input_bytes = 0;    // text bytes split (after decompression)
  int64_t total_pieces = 0;   // pieces before deduplication
  int64_t documents = 0;      // JSONL records (plain text: files)
  int64_t skipped_lines = 0;  // malformed JSONL lines skipped (skip_bad_lines)
  std::string first_skipped_file;  // where the first skipped line was, and why
  int64_t first_skipped_line = 0;
  std::string first_skipped_why;
  int64_t forced_cuts = 0;    // chunk cuts made inside a piece (only on >64 MB lines without a safe point)

  size_t size() const { return counts.size(); }
  std::string_view piece(size_t i) const {
    return std::string_view(arena).substr(offsets[i], offsets[i + 1] - offsets[i]);
  }
};

// Streams the files (plain text, or JSONL with options.jsonl_field; .gz/.zst transparently),
// splits them with options.pattern and counts unique pieces over aji::num_threads().
// Malformed JSONL throws aji::Error at file:line unless options.skip_bad_lines.
PieceCounts count_pieces(const std::vector<std::filesystem::path>& files, const TrainOptions& options);
// The same for in-memory documents (each text split on its own).
PieceCounts count_pieces_in_texts(const std::vector<std::string_view>& texts, SplitPattern pattern);

struct BpeMerge {
  uint32_t left, right;  // token ids merged
  uint32_t result;       // the token they form (an existing id if those bytes already existed)
  int64_t count;         // how often the pair occurred when it was merged
};

struct TrainResult {
  // Ordinary tokens in rank order: ids 0..255 are the single bytes 0x00..0xff, then one
  // token per new byte string in the order it was learned. All byte strings are unique.
  std::vector<std::string> token_bytes;
  // Every merge applied, in order. A merge whose bytes already existed (two pairs such as
  // (a,bc) and (ab,c) give "abc") reuses that id — as HF does — and adds no token, so
  // merges.size() >= token_bytes.size() - 256.
  std::vector<BpeMerge> merges;
  bool stopped_early = false;  // ran out of pairs before reaching the vocabulary size
};

// Learns merges until the vocabulary holds n_ordinary_tokens distinct byte strings (or no
// pair is left). Ties go to the highest count, then the smallest (left, right) id pair.
TrainResult train_bpe(const PieceCounts& pieces, size_t n_ordinary_tokens, bool progress = false);

// What a training run did (for the CLI's summary and the benchmark).
struct TrainStats {
  int64_t input_bytes = 0;
  int64_t total_pieces = 0;
  int64_t unique_pieces = 0;
  int64_t documents = 0;
  int64_t skipped_lines = 0;
  int64_t forced_cuts = 0;
  int64_t merges = 0;
  bool stopped_early = false;
};

// The whole pipeline: count, train, build the Tokenizer (specials get the ids after the
// ordinary tokens, in the given order). Validates the options (vocab size range, specials).
Tokenizer train_tokenizer(const std::vector<std::filesystem::path>& files, const TrainOptions& options,
                          TrainStats* stats_out = nullptr, TrainResult* result_out = nullptr);
// Builds a Tokenizer from training output.
Tokenizer tokenizer_from_training(const TrainResult& result, SplitPattern pattern,
                                  const std::vector<std::string>& specials);
// Throws aji::Error with a fix if the options cannot work (e.g. vocab < 256 + specials).
void validate_train_options(const TrainOptions& options);

namespace detail {
// Largest p in (0, text.size()) such that splitting text[0,p) and text[p,..) separately
// gives the same pieces as splitting text whole, for every supported pattern; 0 if none.
// (After "\n" between two non-space characters, or before " " between two ASCII letters.)
size_t last_safe_cut(std::string_view text);
}  // namespace detail

}  // namespace aji::tokenizer
