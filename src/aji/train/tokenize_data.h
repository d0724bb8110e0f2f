// `aji data tokenize`: text -> token shards + manifest (see shards.h for the format).
//
// Documents. JSONL inputs (--jsonl-field F): one document per line, the string field F.
// Plain text: a file that contains blank lines is split into documents at blank lines
// (paragraphs, speeches); a file without blank lines has one document per line (news
// lines, reviews, verses). Empty documents are skipped; documents that are not valid
// UTF-8 are counted and skipped.
//
// Every document is encoded with special-token text treated as plain text, and written
// as [BOS] + ids, BOS being the tokenizer's <|endoftext|>. Document i (in input order)
// goes to val when document_goes_to_val(i, seed, val_fraction). Encoding runs in
// parallel over blocks of documents; the output does not depend on the thread count.
// Shards are cut at document boundaries once they reach shard_tokens.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "aji/train/shards.h"

namespace aji::train {

struct TokenizeDataOptions {
  std::filesystem::path tokenizer;
  std::vector<std::string> inputs;  // files, directories, globs
  // The input files already expanded (e.g. by data::resolve_text_inputs, which reads an
  // `aji data run` output folder); when non-empty, `inputs` is not used.
  std::vector<std::filesystem::path> files;
  std::string jsonl_field;          // empty: plain text
  bool skip_bad_lines = false;      // JSONL: count malformed lines instead of failing
  std::filesystem::path out_dir;
  double val_fraction = 0.01;
  uint64_t shard_tokens = 100'000'000;
  uint64_t seed = 0;
  bool force = false;  // replace an existing data directory
  bool progress = true;
};

struct TokenizeDataResult {
  DataManifest manifest;
  uint64_t documents = 0;
  uint64_t skipped_empty = 0;
  uint64_t skipped_invalid_utf8 = 0;
  uint64_t skipped_bad_lines = 0;
  uint64_t bytes = 0;
  uint64_t tokens = 0;
  double seconds = 0;
};

TokenizeDataResult tokenize_data(const TokenizeDataOptions& options);

}  // namespace aji::train
