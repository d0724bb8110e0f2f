#include "aji/tokenizer/unicode_classes.h"

namespace aji::tokenizer::unicode {
namespace {
#include "aji/tokenizer/unicode_classes.inc"
}  // namespace

uint8_t class_of(uint32_t cp) {
  if (cp >= 0x110000) return 0;
  uint8_t c = kUnicodeStage2[size_t(kUnicodeStage1[cp >> 8]) * 256 + (cp & 0xFF)];
  if (cp == '\r' || cp == '\n') c |= kCrLf;
  return c;
}

const char* unicode_version() { return AJI_UNICODE_VERSION; }

// ASCII fast path (the test checks it equals class_of for 0..127): \t\n\v\f\r and
// space are White_Space, digits N, A-Z Lu, a-z Ll; \r \n carry kCrLf.
const uint8_t kAsciiClass[128] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 68, 4, 4, 68, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 17, 0, 0, 0, 0, 0, 0, 33, 33, 33, 33, 33, 33, 33, 33, 33, 33, 33, 33, 33, 33, 33, 33, 33, 33, 33, 33, 33, 33, 33, 33, 33, 33, 0, 0, 0, 0, 0};

}  // namespace aji::tokenizer::unicode
