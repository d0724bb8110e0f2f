// Token F1 of an extraction against a reference text, as tests/reference/extract_vs_trafilatura.py
// computes it: lower-cased runs of Unicode letters, numbers and '_' (Python's \w), multiset overlap.
#pragma once

#include <utf8proc.h>

#include <algorithm>
#include <map>
#include <string>

namespace aji::test {

inline std::map<std::string, int> word_counts(const std::string& text) {
  std::map<std::string, int> counts;
  std::string cur;
  const auto* s = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  utf8proc_ssize_t i = 0, n = static_cast<utf8proc_ssize_t>(text.size());
  while (i < n) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t len = utf8proc_iterate(s + i, n - i, &cp);
    if (len <= 0) {
      len = 1;
      cp = -1;
    }
    i += len;
    utf8proc_category_t cat = cp >= 0 ? utf8proc_category(cp) : UTF8PROC_CATEGORY_CN;
    bool word = cp == '_' || (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
                (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
    if (word) {
      utf8proc_uint8_t buf[4];
      utf8proc_ssize_t m = utf8proc_encode_char(utf8proc_tolower(cp), buf);
      cur.append(reinterpret_cast<char*>(buf), static_cast<size_t>(m));
    } else if (!cur.empty()) {
      ++counts[cur];
      cur.clear();
    }
  }
  if (!cur.empty()) ++counts[cur];
  return counts;
}

struct TokenScore {
  double precision, recall, f1;
};

// Precision and recall of pred's words against ref's (multisets), and their F1.
inline TokenScore token_score(const std::string& pred, const std::string& ref) {
  auto p = word_counts(pred), r = word_counts(ref);
  long overlap = 0, np = 0, nr = 0;
  for (auto& [w, c] : p) {
    np += c;
    auto it = r.find(w);
    if (it != r.end()) overlap += std::min(c, it->second);
  }
  for (auto& [w, c] : r) nr += c;
  if (np == 0 || nr == 0) {
    double same = np == nr ? 1.0 : 0.0;
    return {same, same, same};
  }
  double prec = double(overlap) / np, rec = double(overlap) / nr;
  return {prec, rec, prec + rec > 0 ? 2 * prec * rec / (prec + rec) : 0.0};
}

inline double token_f1(const std::string& pred, const std::string& ref) { return token_score(pred, ref).f1; }

}  // namespace aji::test
