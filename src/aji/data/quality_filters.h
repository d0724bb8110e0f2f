// Quality filters of FineWeb (spec §4.5–4.8), as datatrove 0.10 implements them:
// GopherRepetitionFilter, GopherQualityFilter, C4QualityFilter and FineWebQualityFilter.
// Defaults are FineWeb's English settings; QualityFilterConfig::korean() is FineWeb-2's
// kor_Hang.yml (data/filters/fineweb2_kor_Hang.yml).
//
// Each filter returns a Verdict whose reason is datatrove's own string ("dup_line_frac",
// "gopher_short_doc", "curly_bracket", "line_punct_ratio", ...), and writes the scores it
// computed into doc.metadata["quality"] so a user can see how close a document was.
// C4 also rewrites doc.text (kept lines joined by "\n") when the document is kept.
//
// A threshold of 0 disables its rule (as datatrove's `if self.x and ...`).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/data/document.h"
#include "aji/data/text_stats.h"

namespace aji::data {

struct GopherRepetitionConfig {
  bool enabled = true;
  double dup_line_frac = 0.30;
  double dup_para_frac = 0.30;
  double dup_line_char_frac = 0.20;
  double dup_para_char_frac = 0.20;
  std::vector<std::pair<int, double>> top_n_grams = {{2, 0.20}, {3, 0.18}, {4, 0.16}};
  std::vector<std::pair<int, double>> dup_n_grams = {{5, 0.15}, {6, 0.14}, {7, 0.13},
                                                     {8, 0.12}, {9, 0.11}, {10, 0.10}};
};

struct GopherQualityConfig {
  bool enabled = true;
  int min_doc_words = 50;
  int max_doc_words = 100000;
  double min_avg_word_length = 3;
  double max_avg_word_length = 10;
  double max_symbol_word_ratio = 0.1;
  double max_bullet_lines_ratio = 0.9;
  double max_ellipsis_lines_ratio = 0.3;
  double max_non_alpha_words_ratio = 0.8;  // really a minimum fraction of alphabetic words
  int min_stop_words = 2;
  std::vector<std::string> stop_words = {"the", "be", "to", "of", "and", "that", "have", "with"};
  // datatrove ≥ f9bbe09 (2025) counts distinct stop words; FineWeb's release counted tokens.
  bool count_distinct_stop_words = true;
};

struct C4QualityConfig {
  bool enabled = true;
  bool remove_citations = true;
  bool filter_no_terminal_punct = false;  // FineWeb turned the terminal-punctuation rule off
  int min_num_sentences = 5;              // -1 disables
  int min_words_per_line = 3;             // -1 disables
  int max_word_length = 1000;             // -1 disables
  bool filter_lorem_ipsum = true;
  bool filter_javascript = true;
  bool filter_curly_bracket = true;
  bool filter_policy = true;
};

struct FineWebQualityConfig {
  bool enabled = true;
  double line_punct_thr = 0.12;
  bool line_punct_exclude_zero = false;
  // Line endings that count as terminal punctuation. Empty = datatrove's 159-symbol
  // TERMINAL_PUNCTUATION set.
  std::vector<std::string> stop_chars;
  double short_line_thr = 0.67;
  int short_line_length = 30;  // code points
  double char_duplicates_ratio = 0.01;
  double new_line_ratio = 0.3;
};

struct QualityFilterConfig {
  std::string language = "en";
  WordSplitter word_splitter = WordSplitter::kEnglish;
  GopherRepetitionConfig gopher_repetition;
  GopherQualityConfig gopher_quality;
  C4QualityConfig c4;
  FineWebQualityConfig fineweb;

  static QualityFilterConfig english();  // FineWeb (datatrove examples/fineweb.py)
  static QualityFilterConfig korean();   // FineWeb-2 kor_Hang: no C4, Korean thresholds
  // Preset by language code: "ko" → korean(), everything else → english().
  static QualityFilterConfig for_language(std::string_view language);
};

// FineWeb-2 reads its per-language thresholds from a YAML file like kor_Hang.yml; this
// applies one (the flat subset those files use) on top of a config. Throws aji::Error
// naming the file and line on a key it does not know or a bad value.
void apply_fineweb2_yaml(QualityFilterConfig& config, const std::string& yaml_text,
                         const std::string& source_name);

void to_json(nlohmann::json& j, const GopherRepetitionConfig& c);
void from_json(const nlohmann::json& j, GopherRepetitionConfig& c);
void to_json(nlohmann::json& j, const GopherQualityConfig& c);
void from_json(const nlohmann::json& j, GopherQualityConfig& c);
void to_json(nlohmann::json& j, const C4QualityConfig& c);
void from_json(const nlohmann::json& j, C4QualityConfig& c);
void to_json(nlohmann::json& j, const FineWebQualityConfig& c);
void from_json(const nlohmann::json& j, FineWebQualityConfig& c);
// from_json starts from the preset of j["language"] (if given) and overrides the keys
// present, so a config file only lists what it changes. Unknown keys throw aji::Error.
void to_json(nlohmann::json& j, const QualityFilterConfig& c);
void from_json(const nlohmann::json& j, QualityFilterConfig& c);

// The filters. `splitter` decides what a word is. Scores go to doc.metadata["quality"].
Verdict gopher_repetition_filter(Document& doc, const GopherRepetitionConfig& config,
                                 WordSplitter splitter);
Verdict gopher_quality_filter(Document& doc, const GopherQualityConfig& config, WordSplitter splitter);
Verdict c4_quality_filter(Document& doc, const C4QualityConfig& config);  // may rewrite doc.text
Verdict fineweb_quality_filter(Document& doc, const FineWebQualityConfig& config, WordSplitter splitter);

// All enabled filters in FineWeb's order (repetition → quality → C4 → FineWeb), stopping
// at the first drop. `failed_filter` (if given) receives the stage name
// ("gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality") of a drop.
Verdict apply_quality_filters(Document& doc, const QualityFilterConfig& config,
                              std::string* failed_filter = nullptr);

// Number of sentences in a line as the C4 filter counts them (an approximation of the
// punkt / spaCy sentencizer splitters: a sentence ends at . ! ? and their full-width
// forms followed by whitespace, unless the token before is a known abbreviation).
int count_sentences(std::string_view line);

}  // namespace aji::data
