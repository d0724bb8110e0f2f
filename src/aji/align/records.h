// The record loop every JSONL reader of the post-training stage shares (conversations,
// preference pairs, RL tasks, PPO prompts): blank lines skipped, every other line handed to
// the reader's parser, a violation rejected through InputReport (an error naming file:line
// with the fix, or a counted skip under OnInvalid::kSkip), the rest counted as kept.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "aji/align/conversation.h"
#include "aji/align/input_report.h"
#include "aji/base/io.h"

namespace aji::align {

inline bool is_blank_line(std::string_view s) { return s.find_first_not_of(" \t\r\n\f\v") == std::string_view::npos; }

// parse(line, line_number) -> std::optional<RuleViolation>: nothing when the record was
// taken (the parser keeps it), else the violation.
template <class Parse>
void for_each_record(const std::filesystem::path& path, OnInvalid policy, InputReport& rep, const std::string& fix,
                     Parse&& parse) {
  LineReader reader(path, size_t(256) << 20);
  std::string_view line;
  const std::string file = path.string();
  while (reader.next(line)) {
    if (is_blank_line(line)) continue;
    ++rep.records_read;
    if (std::optional<RuleViolation> bad = parse(line, reader.line_number())) {
      rep.reject(policy, file, reader.line_number(), bad->kind, bad->detail, fix);
      continue;
    }
    ++rep.records_kept;
  }
}

}  // namespace aji::align
