// Input readers of the data pipeline: plain text, JSONL (.gz/.zst), HTML files and
// WARC/WET (.warc.gz with one gzip member per record, as Common Crawl writes it).
//
// A reader streams one input file and hands out Documents one at a time; it never
// loads a whole file. Bad input never stops it: a malformed JSONL line, a truncated
// gzip member, a WARC record whose Content-Length is wrong, binary bytes labelled as
// HTML, an oversized document... each becomes a ReadError (file + byte offset or line)
// and reading goes on with the next record.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "aji/data/document.h"

namespace aji::data {

enum class InputFormat { kAuto, kText, kJsonl, kHtml, kWarc };

// "auto" | "text" | "jsonl" | "html" | "warc" (WET files are WARC files).
InputFormat parse_input_format(const std::string& name);
const char* input_format_name(InputFormat f);
// Format from the file name: *.jsonl[.gz|.zst], *.json[.gz], *.warc[.gz], *.wet[.gz],
// *.html/*.htm/*.xhtml, else text.
InputFormat detect_input_format(const std::filesystem::path& path);

struct ReaderOptions {
  InputFormat format = InputFormat::kAuto;
  std::string jsonl_text_field = "text";  // the field that holds the document text
  std::string jsonl_id_field = "id";
  std::string jsonl_url_field = "url";
  // Larger documents / records are skipped (streamed past, never buffered) and counted.
  uint64_t max_document_bytes = uint64_t(64) << 20;
  // WARC: which WARC-Identified-Payload-Type values are kept (datatrove's set). WET
  // conversion records are text/plain and always kept.
  std::vector<std::string> warc_payload_types = {"text/html", "application/xhtml+xml"};
};

// One problem in the input. offset is a byte offset in the (compressed) file for WARC
// and binary formats, a 1-based line number for JSONL (then `line` is true).
struct ReadError {
  std::string file;
  uint64_t offset = 0;
  bool line = false;
  std::string kind;     // machine-readable: "jsonl_malformed", "gzip_corrupt", ...
  std::string message;  // for humans
};

// Counts of what a reader saw but did not hand out as documents (not errors).
struct ReadSkips {
  uint64_t warc_non_response = 0;  // request, metadata, warcinfo, revisit records
  uint64_t warc_payload_type = 0;  // response records with a non-HTML payload
  uint64_t empty = 0;              // documents with no text
};

class DocumentReader {
 public:
  DocumentReader(const std::filesystem::path& path, const ReaderOptions& options);
  ~DocumentReader();
  DocumentReader(const DocumentReader&) = delete;
  DocumentReader& operator=(const DocumentReader&) = delete;

  // Fills doc with the next document; false at the end of the file. Never throws for
  // bad content (that becomes an error in errors()); throws aji::Error only when the
  // file cannot be opened at all.
  bool next(Document& doc);

  const std::vector<ReadError>& errors() const;
  const ReadSkips& skips() const;
  InputFormat format() const;
  // Bytes of the input file consumed so far (compressed bytes for .gz/.zst).
  uint64_t bytes_consumed() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// ---- charset handling, shared by the HTML and WARC readers (exposed for tests) ----

// True if s is valid UTF-8 (no overlongs, no surrogates, max U+10FFFF).
bool is_valid_utf8(std::string_view s);
// Replaces every invalid UTF-8 sequence with U+FFFD; returns how many were replaced.
size_t repair_utf8(std::string_view in, std::string& out);
// True if the bytes look like binary data (NUL bytes or many control characters).
bool looks_binary(std::string_view bytes);
// The charset declared in an HTML <meta charset=...> / http-equiv in the first bytes,
// lower-cased; empty if none.
std::string html_meta_charset(std::string_view html);
// The charset parameter of an HTTP Content-Type value, lower-cased; empty if none.
std::string content_type_charset(std::string_view content_type);

struct DecodeResult {
  std::string text;         // UTF-8
  std::string charset;      // what was used: "utf-8", "cp949", "windows-1252", ...
  bool label_wrong = false; // the declared charset did not fit the bytes
  size_t replaced = 0;      // invalid sequences replaced by U+FFFD
};
// Decodes bytes to UTF-8: BOM first, then: valid UTF-8 is kept as is whatever the label
// says; otherwise the declared charset (HTTP header, else HTML meta) through iconv,
// then CP949 (EUC-KR superset, for older Korean sites), then UTF-8 with replacement
// characters when almost all of it is valid, else windows-1252.
DecodeResult decode_to_utf8(std::string_view bytes, std::string_view declared_charset, bool is_html);

}  // namespace aji::data
