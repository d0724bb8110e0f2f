#include "aji/data/langid.h"

#include <cld2/internal/lang_script.h>
#include <cld2/public/compact_lang_det.h>
#include <cld2/public/encodings.h>

#include "aji/base/error.h"
#include "aji/data/readers.h"

namespace aji::data {

namespace {
// Cuts s to at most n bytes without splitting a UTF-8 sequence.
std::string_view utf8_prefix(std::string_view s, size_t n) {
  if (s.size() <= n) return s;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}
}  // namespace

LangIdResult identify_language(std::string_view text, size_t max_bytes) {
  LangIdResult r;
  std::string_view view = utf8_prefix(text, max_bytes);
  std::string repaired;
  if (!is_valid_utf8(view)) {
    repair_utf8(view, repaired);
    view = repaired;
  }
  CLD2::Language language3[3] = {CLD2::UNKNOWN_LANGUAGE, CLD2::UNKNOWN_LANGUAGE, CLD2::UNKNOWN_LANGUAGE};
  int percent3[3] = {0, 0, 0};
  double normalized_score3[3] = {0, 0, 0};
  int text_bytes = 0;
  bool reliable = false;
  int valid_prefix = 0;
  CLD2::CLDHints hints = {nullptr, nullptr, CLD2::UNKNOWN_ENCODING, CLD2::UNKNOWN_LANGUAGE};
  CLD2::ExtDetectLanguageSummaryCheckUTF8(view.data(), static_cast<int>(view.size()), true, &hints, 0, language3,
                                          percent3, normalized_score3, nullptr, &text_bytes, &reliable,
                                          &valid_prefix);
  r.language = CLD2::LanguageCode(language3[0]);
  r.reliable = reliable;
  r.score = static_cast<float>(percent3[0]) / 100.0f * (reliable ? 1.0f : 0.5f);
  if (language3[0] == CLD2::UNKNOWN_LANGUAGE) {
    r.language = "un";
    r.score = 0;
  }
  if (language3[1] != CLD2::UNKNOWN_LANGUAGE && percent3[1] > 0) {
    r.second = CLD2::LanguageCode(language3[1]);
    r.second_score = static_cast<float>(percent3[1]) / 100.0f;
  }
  return r;
}

void to_json(nlohmann::json& j, const LangIdConfig& c) {
  j = nlohmann::json{{"enabled", c.enabled},
                     {"languages", c.languages},
                     {"keep_other_languages", c.keep_other_languages},
                     {"max_bytes", c.max_bytes}};
}

void from_json(const nlohmann::json& j, LangIdConfig& c) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    if (k != "enabled" && k != "languages" && k != "keep_other_languages" && k != "max_bytes")
      throw Error("unknown key '" + k + "' in language_id").fix("see `aji data config` for the valid keys");
  }
  c.enabled = j.value("enabled", c.enabled);
  if (j.contains("languages")) {
    const auto& l = j["languages"];
    c.languages.clear();
    if (l.is_array()) {  // ["en", "ko"]: default threshold
      for (const auto& x : l) c.languages[x.get<std::string>()] = 0.65;
    } else if (l.is_object()) {
      for (auto it = l.begin(); it != l.end(); ++it) c.languages[it.key()] = it.value().get<double>();
    } else {
      throw Error("language_id.languages must be an object {\"en\": 0.65} or a list [\"en\"]");
    }
  }
  c.keep_other_languages = j.value("keep_other_languages", c.keep_other_languages);
  c.max_bytes = j.value("max_bytes", c.max_bytes);
}

}  // namespace aji::data
