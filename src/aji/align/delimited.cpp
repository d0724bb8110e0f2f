#include "aji/align/delimited.h"

#include <string_view>

#include "aji/base/error.h"

namespace aji::align {

DelimitedReader::DelimitedReader(const std::filesystem::path& path, TableFormat format)
    : lines_(path), format_(format) {}

bool DelimitedReader::next(std::vector<std::string>& fields) {
  fields.clear();
  std::string_view line;
  // Skip blank lines; the record starts at the first non-blank one.
  for (;;) {
    if (!lines_.next(line)) return false;
    if (first_line_) {
      first_line_ = false;
      if (line.size() >= 3 && line.substr(0, 3) == "\xEF\xBB\xBF") line.remove_prefix(3);
    }
    std::string_view body = line;
    if (!body.empty() && body.back() == '\r') body.remove_suffix(1);
    if (!body.empty()) break;
  }
  record_line_ = lines_.line_number();

  if (format_ == TableFormat::kTsv) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    size_t start = 0;
    for (;;) {
      size_t tab = line.find('\t', start);
      if (tab == std::string_view::npos) {
        fields.emplace_back(line.substr(start));
        return true;
      }
      fields.emplace_back(line.substr(start, tab - start));
      start = tab + 1;
    }
  }

  // CSV state machine over physical lines (a quoted field may span several).
  std::string field;
  bool in_quotes = false;     // inside a quoted field
  bool field_quoted = false;  // the current field started with a quote
  bool after_close = false;   // just saw the closing quote of the current field
  size_t record_bytes = 0;
  for (;;) {
    bool has_cr = !line.empty() && line.back() == '\r';
    std::string_view body = has_cr ? line.substr(0, line.size() - 1) : line;
    record_bytes += line.size() + 1;
    if (record_bytes > kMaxRecordBytes)
      throw Error("CSV record is larger than 64 MiB — most likely a quote that is never closed")
          .at(path(), record_line_)
          .fix("check the quoting of the record that starts on this line");
    for (size_t i = 0; i < body.size(); ++i) {
      char c = body[i];
      if (in_quotes) {
        if (c == '"') {
          if (i + 1 < body.size() && body[i + 1] == '"') {
            field += '"';
            ++i;
          } else {
            in_quotes = false;
            after_close = true;
          }
        } else {
          field += c;
        }
      } else if (c == ',') {
        fields.push_back(std::move(field));
        field.clear();
        field_quoted = after_close = false;
      } else if (after_close) {
        throw Error("unexpected character '" + std::string(1, c) + "' after the closing quote of field " +
                    std::to_string(fields.size() + 1))
            .at(path(), lines_.line_number())
            .fix("a quoted CSV field must end right before ',' or the line end; write a quote inside a "
                 "quoted field as \"\"");
      } else if (c == '"' && field.empty() && !field_quoted) {
        in_quotes = field_quoted = true;
      } else {
        field += c;
      }
    }
    if (!in_quotes) break;
    // A line break inside a quoted field is data; keep the file's own line ending.
    field += has_cr ? "\r\n" : "\n";
    if (!lines_.next(line))
      throw Error("CSV file ends inside a quoted field (field " + std::to_string(fields.size() + 1) + ")")
          .at(path(), record_line_)
          .fix("close the quote that opens on this line, or write a quote inside a quoted field as \"\"");
  }
  fields.push_back(std::move(field));
  return true;
}

std::vector<std::string> split_delimited_line(const std::string& line, TableFormat format) {
  std::vector<std::string> out;
  if (format == TableFormat::kTsv) {
    size_t start = 0;
    for (;;) {
      size_t tab = line.find('\t', start);
      if (tab == std::string::npos) break;
      out.push_back(line.substr(start, tab - start));
      start = tab + 1;
    }
    out.push_back(line.substr(start));
    return out;
  }
  std::string field;
  bool in_quotes = false, field_quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (in_quotes) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        in_quotes = false;
      } else {
        field += c;
      }
    } else if (c == ',') {
      out.push_back(std::move(field));
      field.clear();
      field_quoted = false;
    } else if (c == '"' && field.empty() && !field_quoted) {
      in_quotes = field_quoted = true;
    } else {
      field += c;
    }
  }
  out.push_back(std::move(field));
  return out;
}

}  // namespace aji::align
