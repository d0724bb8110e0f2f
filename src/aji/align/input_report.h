// What happened to the records of an input file: how many were read and kept, and every
// one that was skipped with its file, line and reason. Readers take an OnInvalid policy:
// kError throws an aji::Error at the first bad record (the default: a typo in a training
// file should stop the run), kSkip records it here so the report can list it — never a
// silent drop.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace aji::align {

enum class OnInvalid { kError, kSkip };

struct SkippedRecord {
  std::string file;
  int64_t line = 0;
  std::string kind;    // short machine-readable category: "unknown_role", "empty_content", ...
  std::string detail;  // the human sentence
};

struct InputReport {
  int64_t records_read = 0;
  int64_t records_kept = 0;
  std::vector<SkippedRecord> skipped;
  std::map<std::string, int64_t> skipped_by_kind;

  // Under kError throws aji::Error(detail).at(file, line).fix(fix); under kSkip records it.
  void reject(OnInvalid policy, const std::string& file, int64_t line, const std::string& kind,
              const std::string& detail, const std::string& fix);
  int64_t skipped_count() const { return static_cast<int64_t>(skipped.size()); }
  // "read 120, kept 117, skipped 3 (empty_content 2, unknown_role 1)" followed by up to
  // max_listed lines "  file:line: detail".
  std::string summary(size_t max_listed = 10) const;
  void merge(const InputReport& other);
};

// Byte offset of the first invalid UTF-8 sequence in s (overlongs, surrogates and code
// points above U+10FFFF included), or std::string_view::npos when s is valid.
size_t find_invalid_utf8(std::string_view s);

}  // namespace aji::align
