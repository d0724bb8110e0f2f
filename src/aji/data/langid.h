// Language identification with CLD2 (Compact Language Detector 2, Debian libcld2): a
// naive-Bayes detector over quadgrams (Latin/Cyrillic/...) and unigrams (CJK, Hangul),
// 80+ languages including Korean, microseconds per page.
//
// score in [0,1] is the fraction of the text's letters that CLD2 assigns to the top
// language (its percent3[0] / 100), halved when CLD2 says the call is not reliable
// (too little text or mixed languages). It is NOT fastText's probability: FineWeb's 0.65
// threshold keeps clean single-language pages but the meaning differs at the margin.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace aji::data {

struct LangIdResult {
  std::string language;  // ISO 639-1 where one exists ("en", "ko", "zh", "zh-Hant"), "un" if unknown
  float score = 0;       // in [0,1], see above
  bool reliable = false;
  std::string second;    // second language ("" if none)
  float second_score = 0;
};

// Detects the language of UTF-8 text (invalid bytes are tolerated: they are repaired on
// a copy). Only the first max_bytes bytes are looked at (CLD2 is linear in the input).
LangIdResult identify_language(std::string_view text, size_t max_bytes = 64 * 1024);

struct LangIdConfig {
  bool enabled = true;
  // Languages to keep, each with its minimum score. Everything else is dropped as
  // "language_not_kept" (or routed to DIR/other/<lang>/ with keep_other_languages).
  std::map<std::string, double> languages = {{"en", 0.65}, {"ko", 0.65}};
  bool keep_other_languages = false;
  size_t max_bytes = 64 * 1024;
};
void to_json(nlohmann::json& j, const LangIdConfig& c);
void from_json(const nlohmann::json& j, LangIdConfig& c);  // unknown keys throw aji::Error

}  // namespace aji::data
