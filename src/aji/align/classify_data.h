// Labeled text for classification fine-tuning: reading JSONL / CSV / TSV, the label set
// (built from the training data, saved beside the model, checked at predict time), and a
// stratified deterministic train/val/test split.
//
// Input shapes:
//   JSONL  {"text": "...", "label": "spam"} per line (keys configurable; a numeric or
//          boolean label is taken as its JSON text: 1 → "1").
//   CSV    RFC 4180 (delimited.h); TSV: tab-separated, no quoting.
//          With a header row, columns are chosen by name; without one, by 0-based index.
// Labels are trimmed of surrounding whitespace. An optional label map renames raw labels
// (NSMC ratings "1".."4" → "negative"); with skip_unmapped, labels outside the map are
// counted skips (NSMC drops ratings 5–8), otherwise errors. Missing text or label →
// aji::Error naming file:line, or a counted skip under OnInvalid::kSkip.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "aji/align/input_report.h"

namespace aji::align {

struct LabeledExample {
  std::string text;
  std::string label;  // empty when the file has no labels (predict input)
  int64_t line = 0;
};

enum class LabeledFormat { kAuto, kJsonl, kCsv, kTsv };

struct LabeledDataOptions {
  LabeledFormat format = LabeledFormat::kAuto;  // kAuto: from the extension (.jsonl/.json, .csv, .tsv/.tab)
  bool header = true;                           // CSV/TSV: the first row names the columns
  std::string text_column = "text";             // a header name, or a 0-based index ("1")
  std::string label_column = "label";
  bool require_label = true;                    // false: predict input, the label column may be absent
  std::map<std::string, std::string> label_map; // raw label → class name (empty: identity)
  bool skip_unmapped = false;                   // labels outside label_map are counted skips
  OnInvalid on_invalid = OnInvalid::kError;
};

LabeledFormat detect_labeled_format(const std::filesystem::path& path);
// Parses "1=negative,2=negative,9=positive" into a label map (CLI flag syntax).
std::map<std::string, std::string> parse_label_map(const std::string& spec);

std::vector<LabeledExample> read_labeled(const std::filesystem::path& path, const LabeledDataOptions& options,
                                         InputReport* report);

// The classes a model knows, in a fixed order (sorted; the class id is the index).
struct LabelSet {
  std::vector<std::string> names;

  static LabelSet from_examples(const std::vector<LabeledExample>& examples);
  int index_of(const std::string& label) const;  // -1 when unknown
  size_t size() const { return names.size(); }
  std::string joined() const;  // "ham, spam"

  // {"format": "aji-labels", "version": 1, "labels": [...]}, written atomically.
  void save(const std::filesystem::path& path) const;
  static LabelSet load(const std::filesystem::path& path);
};

// Class ids of the examples. A label the set does not know → aji::Error at file:line
// naming the known labels (or a counted skip; the skipped example gets id -1).
std::vector<int> encode_labels(const std::vector<LabeledExample>& examples, const LabelSet& labels,
                               const std::string& file, OnInvalid policy, InputReport* report);

// Predict/eval-time check that a labeled file fits the model: throws when the data has
// labels the model lacks; when allow_subset is false, also when the model has labels the
// data lacks (a different label set).
void check_label_sets(const LabelSet& model, const LabelSet& data, const std::string& file, bool allow_subset);

// Stratified split: within every class, a seeded shuffle, then round(n·test) examples to
// test, round(n·val) to val, the rest to train. Index lists are ascending. Classes with at
// least 3 examples get at least one example in each split whose fraction is > 0.
struct DataSplit {
  std::vector<int64_t> train, val, test;
};
DataSplit stratified_split(const std::vector<int>& label_ids, int n_classes, double val_fraction,
                           double test_fraction, uint64_t seed);

// Undersamples every class to the size of the smallest (LLMs-from-scratch ch06 balances
// SMS spam this way); returns ascending indices. Deterministic for a seed.
std::vector<int64_t> balance_classes(const std::vector<int>& label_ids, int n_classes, uint64_t seed);

// Writes {"text","label"} JSONL for the given examples (atomically).
void write_labeled_jsonl(const std::filesystem::path& path, const std::vector<LabeledExample>& examples,
                         const std::vector<int64_t>& indices);

}  // namespace aji::align
