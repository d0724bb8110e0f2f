// The unit of the data pipeline: one document (a web page, a JSONL record, a file) with
// its text and metadata, as it flows reader → URL filter → extraction → language ID →
// quality filters → PII scrubbing → dedup → JSONL writer.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace aji::data {

struct Document {
  std::string id;            // stable id: "<source file>:<record index>" unless the input has one
  std::string text;          // after extraction: the plain text
  std::string url;           // empty when unknown
  std::string source_file;   // where it came from, for error reports
  uint64_t source_offset = 0;  // byte offset (or line number for JSONL) in source_file
  std::string language;      // ISO 639-1 ("en", "ko") after language ID; empty before
  float language_score = 0;  // detector confidence in [0,1]
  nlohmann::json metadata = nlohmann::json::object();  // scores, cluster size, ...
  bool html = false;         // text is still raw HTML (UTF-8); extraction clears this
};

// What a filter says about a document. Every drop carries a short machine-readable
// reason ("gopher_short_document", "c4_too_few_lines", ...) that the report counts.
struct Verdict {
  bool keep = true;
  std::string reason;  // empty when kept
  static Verdict kept() { return {}; }
  static Verdict dropped(std::string why) { return {false, std::move(why)}; }
};

}  // namespace aji::data
