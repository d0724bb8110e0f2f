// WARC / WET records, plain or as gzip members (the reader sniffs the 1f 8b magic), read
// by the data pipeline's DocumentReader. Bad records must become ReadErrors (never a
// throw); every document handed out must be valid UTF-8.
#include <cstdlib>

#include "aji/data/readers.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = aji::fuzz::write_input("input.warc", std::string_view(reinterpret_cast<const char*>(data), size));
  aji::data::ReaderOptions opt;
  opt.format = aji::data::InputFormat::kWarc;
  opt.max_document_bytes = 1 << 16;  // exercise the skip-oversized path on small inputs
  aji::data::DocumentReader reader(path, opt);
  aji::data::Document doc;
  int n = 0;
  while (reader.next(doc) && ++n < 10000) {
    if (!doc.html && !aji::data::is_valid_utf8(doc.text)) std::abort();
  }
  if (reader.bytes_consumed() > size) std::abort();
  for (const auto& e : reader.errors())
    if (e.file.empty() || e.kind.empty()) std::abort();
  return 0;
}
