// Labeled classification data: CSV (RFC 4180) and TSV through DelimitedReader, and
// read_labeled for JSONL / CSV / TSV with and without a header. The first input byte
// picks format and options, the rest is the file.
#include <cstdlib>

#include "aji/align/classify_data.h"
#include "aji/align/delimited.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace aji::align;
  if (size < 1) return 0;
  const uint8_t sel = data[0];
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  static const char* kNames[] = {"labels.csv", "labels.tsv", "labels.jsonl"};
  const auto path = aji::fuzz::write_input(kNames[sel % 3], body);
  if (sel % 3 != 2) {
    aji::fuzz::run_reader(path, [&] {
      DelimitedReader reader(path, sel % 3 == 0 ? TableFormat::kCsv : TableFormat::kTsv);
      std::vector<std::string> fields;
      int64_t last = 0;
      while (reader.next(fields)) {
        if (reader.record_line() <= last) std::abort();  // records start on increasing lines
        last = reader.record_line();
      }
    });
  }
  LabeledDataOptions opt;
  opt.header = (sel & 4) == 0;
  if (!opt.header) {
    opt.text_column = "0";
    opt.label_column = "1";
  }
  opt.require_label = (sel & 8) == 0;
  opt.on_invalid = (sel & 16) ? OnInvalid::kError : OnInvalid::kSkip;
  if (sel & 32) {
    opt.label_map = parse_label_map("1=negative,2=negative,9=positive");
    opt.skip_unmapped = true;
  }
  aji::fuzz::run_reader(path, [&] {
    InputReport report;
    auto examples = read_labeled(path, opt, &report);
    if (opt.require_label) {
      LabelSet labels = LabelSet::from_examples(examples);
      auto ids = encode_labels(examples, labels, path.string(), OnInvalid::kError, &report);
      for (int id : ids)
        if (id < 0 || static_cast<size_t>(id) >= labels.size()) std::abort();
    }
  });
  return 0;
}
