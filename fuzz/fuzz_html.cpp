// HTML files: DocumentReader's HTML path (binary sniffing, charset detection from
// <meta>, decoding), then main-text extraction (gumbo + aji's boilerplate rules) on
// the decoded text. The extracted text must be valid UTF-8.
#include <cstdlib>

#include "aji/data/extract.h"
#include "aji/data/readers.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const auto path = aji::fuzz::write_input("input.html", bytes);
  aji::data::ReaderOptions opt;
  opt.format = aji::data::InputFormat::kHtml;
  aji::data::DocumentReader reader(path, opt);
  aji::data::Document doc;
  while (reader.next(doc)) {
    aji::data::ExtractResult r = aji::data::extract_main_text(doc.text);
    if (!aji::data::is_valid_utf8(r.text) || !aji::data::is_valid_utf8(r.title)) std::abort();
  }
  // The extractor is documented to accept any UTF-8: also feed it the repaired raw bytes
  // with the non-default switches.
  std::string repaired;
  aji::data::repair_utf8(bytes, repaired);
  aji::data::ExtractConfig cfg;
  cfg.include_title = true;
  cfg.include_tables = size % 2 == 0;
  cfg.list_markers = size % 3 == 0;
  aji::data::ExtractResult r = aji::data::extract_main_text(repaired, cfg);
  if (!aji::data::is_valid_utf8(r.text)) std::abort();
  return 0;
}
