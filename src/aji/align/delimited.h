// Streaming reader for delimited text tables.
//   CSV (RFC 4180): fields separated by ',', a field may be quoted with '"'; inside quotes
//       a delimiter or a line break is data and '""' is one quote. Lines end in LF or CRLF.
//       Like Python's csv module, a quote in the middle of an unquoted field is kept as data.
//   TSV (IANA text/tab-separated-values): fields separated by TAB, no quoting at all — a
//       '"' is an ordinary character (Korean comment data is full of them).
// Blank lines are skipped; a UTF-8 byte-order mark at the start is dropped. Input may be
// .gz/.zst (aji::LineReader underneath). Errors name the file and the record's first line.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "aji/base/io.h"

namespace aji::align {

enum class TableFormat { kCsv, kTsv };

class DelimitedReader {
 public:
  DelimitedReader(const std::filesystem::path& path, TableFormat format);
  // Reads the next record into fields; false at end of input.
  bool next(std::vector<std::string>& fields);
  // 1-based line on which the last record returned by next() starts.
  int64_t record_line() const { return record_line_; }
  const std::string& path() const { return lines_.path(); }

  // Records larger than this are a runaway quote, not data.
  static constexpr size_t kMaxRecordBytes = size_t(64) << 20;

 private:
  LineReader lines_;
  TableFormat format_;
  bool first_line_ = true;
  int64_t record_line_ = 0;
};

// Splits one already-complete CSV/TSV line (no line breaks inside) — for tests and flags.
std::vector<std::string> split_delimited_line(const std::string& line, TableFormat format);

}  // namespace aji::align
