// Charset detection and decoding: the first line is the declared charset (an HTTP
// Content-Type value or a bare label), the rest the bytes. Checks the decoder's promises:
// the output is valid UTF-8; repair_utf8 agrees with is_valid_utf8.
#include <cstdlib>

#include "aji/data/readers.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto [head, body] = aji::fuzz::split_first_line(data, size);
  using namespace aji::data;
  std::string declared = content_type_charset(head);
  if (declared.empty()) declared = std::string(head);
  (void)html_meta_charset(body);
  (void)looks_binary(body);
  for (bool is_html : {true, false}) {
    DecodeResult r = decode_to_utf8(body, declared, is_html);
    if (!is_valid_utf8(r.text)) {
      std::abort();
    }
  }
  std::string repaired;
  size_t replaced = repair_utf8(body, repaired);
  if (!is_valid_utf8(repaired)) std::abort();
  if ((replaced == 0) != is_valid_utf8(body)) std::abort();
  if (replaced == 0 && repaired != body) std::abort();
  return 0;
}
