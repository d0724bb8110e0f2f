// Per-code-point class bits for the pre-tokenizer (internal to src/aji/tokenizer/).
// The table is generated offline from utf8proc 2.8 (Unicode 15) by
// tools/tokenizer/gen_unicode_classes.cpp; ASCII gets its own 128-entry fast path.
#pragma once

#include <cstddef>
#include <cstdint>

namespace aji::tokenizer::unicode {

enum : uint8_t {
  kL = 1,           // \p{L}
  kN = 2,           // \p{N}
  kWS = 4,          // \s = Unicode White_Space
  kM = 8,           // \p{M}
  kUpperSet = 16,   // o200k [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]
  kLowerSet = 32,   // o200k [\p{Ll}\p{Lm}\p{Lo}\p{M}]
  kCrLf = 64,       // '\r' or '\n'
};

// Class bits of a code point (0 for unassigned, private use, surrogates, > U+10FFFF).
uint8_t class_of(uint32_t cp);
const char* unicode_version();

// One decoded unit of text: a code point, or one byte of invalid UTF-8 (cls 0: not a
// letter, number or space, so every byte string splits and round-trips).
struct Unit {
  uint8_t cls;
  uint8_t len;  // bytes consumed, 1..4
};

extern const uint8_t kAsciiClass[128];

// Decodes the unit at s[i] (i < n). Strict UTF-8: overlong forms, surrogates and code
// points above U+10FFFF are invalid and come back one byte at a time.
inline Unit unit_at(const uint8_t* s, size_t n, size_t i) {
  uint8_t b0 = s[i];
  if (b0 < 0x80) return {kAsciiClass[b0], 1};
  size_t left = n - i;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    if (left >= 2 && (s[i + 1] & 0xC0) == 0x80) return {class_of(((b0 & 0x1Fu) << 6) | (s[i + 1] & 0x3Fu)), 2};
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    if (left >= 3 && (s[i + 1] & 0xC0) == 0x80 && (s[i + 2] & 0xC0) == 0x80) {
      uint32_t cp = ((b0 & 0x0Fu) << 12) | ((s[i + 1] & 0x3Fu) << 6) | (s[i + 2] & 0x3Fu);
      if (cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF)) return {class_of(cp), 3};
    }
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    if (left >= 4 && (s[i + 1] & 0xC0) == 0x80 && (s[i + 2] & 0xC0) == 0x80 && (s[i + 3] & 0xC0) == 0x80) {
      uint32_t cp = ((b0 & 0x07u) << 18) | ((s[i + 1] & 0x3Fu) << 12) | ((s[i + 2] & 0x3Fu) << 6) |
                    (s[i + 3] & 0x3Fu);
      if (cp >= 0x10000 && cp <= 0x10FFFF) return {class_of(cp), 4};
    }
  }
  return {0, 1};
}

}  // namespace aji::tokenizer::unicode
