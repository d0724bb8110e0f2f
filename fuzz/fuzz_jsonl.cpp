// JSONL documents (data pipeline input, optionally .gz/.zst by magic) via DocumentReader.
// A malformed line is a ReadError with its line number, never a throw.
#include <cstdlib>

#include "aji/data/readers.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = aji::fuzz::write_input("input.jsonl", std::string_view(reinterpret_cast<const char*>(data), size));
  aji::data::ReaderOptions opt;
  opt.format = aji::data::InputFormat::kJsonl;
  opt.max_document_bytes = 1 << 16;
  aji::fuzz::run_reader(path, [&] {
    aji::data::DocumentReader reader(path, opt);
    aji::data::Document doc;
    int n = 0;
    while (reader.next(doc) && ++n < 100000) {
    }
    for (const auto& e : reader.errors())
      if (e.file.empty() || e.kind.empty()) std::abort();
  });
  return 0;
}
