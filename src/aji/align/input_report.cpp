#include "aji/align/input_report.h"

#include "aji/base/error.h"

namespace aji::align {

// Where the first invalid UTF-8 byte is, or npos. Rejects overlongs, surrogates, > U+10FFFF.
size_t find_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) { ++i; continue; }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    else return i;
    if (i + len > n) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return i;
    i += len;
  }
  return std::string_view::npos;
}

void InputReport::reject(OnInvalid policy, const std::string& file, int64_t line, const std::string& kind,
                         const std::string& detail, const std::string& fix) {
  if (policy == OnInvalid::kError) {
    throw Error(detail).at(file, line).fix(fix + " (or pass --skip-invalid to skip such records and list them)");
  }
  skipped.push_back({file, line, kind, detail});
  ++skipped_by_kind[kind];
}

std::string InputReport::summary(size_t max_listed) const {
  std::string out = "read " + std::to_string(records_read) + ", kept " + std::to_string(records_kept) +
                    ", skipped " + std::to_string(skipped.size());
  if (!skipped.empty()) {
    out += " (";
    bool first = true;
    for (const auto& [kind, n] : skipped_by_kind) {
      if (!first) out += ", ";
      out += kind + " " + std::to_string(n);
      first = false;
    }
    out += ")";
  }
  for (size_t i = 0; i < skipped.size() && i < max_listed; ++i) {
    const auto& s = skipped[i];
    out += "\n  " + s.file + ":" + std::to_string(s.line) + ": " + s.detail;
  }
  if (skipped.size() > max_listed) out += "\n  ... and " + std::to_string(skipped.size() - max_listed) + " more";
  return out;
}

void InputReport::merge(const InputReport& other) {
  records_read += other.records_read;
  records_kept += other.records_kept;
  skipped.insert(skipped.end(), other.skipped.begin(), other.skipped.end());
  for (const auto& [kind, n] : other.skipped_by_kind) skipped_by_kind[kind] += n;
}

}  // namespace aji::align
