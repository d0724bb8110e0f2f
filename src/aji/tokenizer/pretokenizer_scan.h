// The hand-written pre-tokenizer scanners (internal to src/aji/tokenizer/). Each
// next_end_*() returns where the piece starting at byte i ends, reproducing the
// leftmost-first (backtracking) semantics of the tiktoken / GPT-2 regexes exactly;
// docs/tokenizer.md ("Pre-tokenization") walks through each alternative. Header-only
// so the encoder's hot loop can inline it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "aji/tokenizer/unicode_classes.h"

namespace aji::tokenizer::scan {

using unicode::Unit;
using unicode::unit_at;
using unicode::kAsciiClass;
using unicode::kCrLf;
using unicode::kL;
using unicode::kLowerSet;
using unicode::kN;
using unicode::kUpperSet;
using unicode::kWS;

// "other" = [^\s\p{L}\p{N}] (marks and invalid bytes included).
inline bool is_other(uint8_t cls) { return (cls & (kL | kN | kWS)) == 0; }

// End of the run of units whose class has any bit of `mask`, starting at j.
inline size_t run_end(const uint8_t* s, size_t n, size_t j, uint8_t mask) {
  while (j < n) {
    uint8_t b = s[j];
    if (b < 0x80) {
      if (!(kAsciiClass[b] & mask)) break;
      ++j;
    } else {
      Unit u = unit_at(s, n, j);
      if (!(u.cls & mask)) break;
      j += u.len;
    }
  }
  return j;
}

// End of the run of [^\s\p{L}\p{N}] starting at j.
inline size_t others_end(const uint8_t* s, size_t n, size_t j) {
  while (j < n) {
    uint8_t b = s[j];
    if (b < 0x80) {
      if (!is_other(kAsciiClass[b])) break;
      ++j;
    } else {
      Unit u = unit_at(s, n, j);
      if (!is_other(u.cls)) break;
      j += u.len;
    }
  }
  return j;
}

// Bytes matched by 's|'t|'re|'ve|'m|'ll|'d at s[i] == '\'' (0 if none). Caseless
// matching folds only the suffix letters, as (?i:...) does: 'S, 'Ll, and U+017F
// (long s, which Unicode simple case folding maps to s).
inline size_t contraction_len(const uint8_t* s, size_t n, size_t i, bool caseless) {
  if (i + 1 >= n) return 0;
  auto fold = [caseless](uint8_t c) -> uint8_t {
    return (caseless && c >= 'A' && c <= 'Z') ? uint8_t(c | 0x20) : c;
  };
  uint8_t a = fold(s[i + 1]);
  switch (a) {
    case 's': case 't': case 'm': case 'd':
      return 2;
    case 'r': case 'v':
      return (i + 2 < n && fold(s[i + 2]) == 'e') ? 3 : 0;
    case 'l':
      return (i + 2 < n && fold(s[i + 2]) == 'l') ? 3 : 0;
    case 0xC5:
      return (caseless && i + 2 < n && s[i + 2] == 0xBF) ? 3 : 0;
    default:
      return 0;
  }
}

// The whitespace alternatives, for a whitespace unit at i:
//   [cl100k/o200k only] \s*[\r\n]+  -> up to and including the run's last \r or \n
//   \s+(?!\S)                       -> the run, minus its last unit if a non-space follows
//   \s+                             -> (a single space unit before a non-space)
inline size_t whitespace_end(const uint8_t* s, size_t n, size_t i, bool newline_alt) {
  size_t j = i, last_start = i, newline_end = 0;
  while (j < n) {
    uint8_t b = s[j];
    if (b < 0x80) {
      uint8_t c = kAsciiClass[b];
      if (!(c & kWS)) break;
      if (c & kCrLf) newline_end = j + 1;
      last_start = j++;
    } else {
      Unit u = unit_at(s, n, j);
      if (!(u.cls & kWS)) break;
      last_start = j;
      j += u.len;
    }
  }
  if (newline_alt && newline_end) return newline_end;
  if (j == n) return j;
  return last_start > i ? last_start : j;
}

// cl100k_base, original form (the one Llama-3 and the HF/JS ports use):
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// max_digits = 3; Qwen2's pattern is the same with \p{N} alone (max_digits = 1).
inline size_t next_end_cl100k(const uint8_t* s, size_t n, size_t i, int max_digits = 3) {
  Unit c = unit_at(s, n, i);
  if (s[i] == '\'') {
    size_t k = contraction_len(s, n, i, true);
    if (k) return i + k;
  }
  if (c.cls & kL) return run_end(s, n, i + c.len, kL);
  size_t p = i + c.len;
  if (!(c.cls & (kL | kN | kCrLf)) && p < n) {
    Unit d = unit_at(s, n, p);
    if (d.cls & kL) return run_end(s, n, p + d.len, kL);
  }
  if (c.cls & kN) {
    size_t j = p;
    for (int k = 1; k < max_digits && j < n; ++k) {
      Unit d = unit_at(s, n, j);
      if (!(d.cls & kN)) break;
      j += d.len;
    }
    return j;
  }
  size_t j = i;
  if (s[i] == ' ' && p < n && is_other(unit_at(s, n, p).cls)) j = p;
  if (j != i || is_other(c.cls)) {
    j = others_end(s, n, j);
    while (j < n && (s[j] == '\r' || s[j] == '\n')) ++j;
    return j;
  }
  return whitespace_end(s, n, i, true);
}

// o200k letter alternative 1 from `start`: [Upper]*[Lower]+ (0 if no match).
inline size_t o200k_upper_lower(const uint8_t* s, size_t n, size_t start) {
  size_t j = start, last_lower_end = 0;
  while (j < n) {
    Unit u = unit_at(s, n, j);
    if (!(u.cls & kUpperSet)) break;
    if (u.cls & kLowerSet) last_lower_end = j + u.len;
    j += u.len;
  }
  if (j < n) {
    Unit u = unit_at(s, n, j);
    if (u.cls & kLowerSet) return run_end(s, n, j + u.len, kLowerSet);
  }
  // Backtracking [Upper]* gives the [Lower]+ its last unit that is in both sets.
  return last_lower_end;
}

// o200k letter alternative 2 from `start`: [Upper]+[Lower]* (0 if no match).
inline size_t o200k_upper_then_lower(const uint8_t* s, size_t n, size_t start) {
  if (!(unit_at(s, n, start).cls & kUpperSet)) return 0;
  size_t j = run_end(s, n, start, kUpperSet);
  return run_end(s, n, j, kLowerSet);
}

// o200k_base (seven alternatives):
//   [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//   [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//   \p{N}{1,3} |  ?[^\s\p{L}\p{N}]+[\r\n/]* | \s*[\r\n]+ | \s+(?!\S) | \s+
inline size_t next_end_o200k(const uint8_t* s, size_t n, size_t i) {
  Unit c = unit_at(s, n, i);
  size_t p = i + c.len;
  bool can_prefix = !(c.cls & (kL | kN | kCrLf)) && p < n;
  size_t e = 0;
  if (can_prefix) e = o200k_upper_lower(s, n, p);
  if (!e && (c.cls & (kUpperSet | kLowerSet))) e = o200k_upper_lower(s, n, i);
  if (!e && can_prefix) e = o200k_upper_then_lower(s, n, p);
  if (!e && (c.cls & kUpperSet)) e = o200k_upper_then_lower(s, n, i);
  if (e) {
    if (e < n && s[e] == '\'') e += contraction_len(s, n, e, true);
    return e;
  }
  if (c.cls & kN) {
    size_t j = p;
    for (int k = 1; k < 3 && j < n; ++k) {
      Unit d = unit_at(s, n, j);
      if (!(d.cls & kN)) break;
      j += d.len;
    }
    return j;
  }
  size_t j = i;
  if (s[i] == ' ' && p < n && is_other(unit_at(s, n, p).cls)) j = p;
  if (j != i || is_other(c.cls)) {
    j = others_end(s, n, j);
    while (j < n && (s[j] == '\r' || s[j] == '\n' || s[j] == '/')) ++j;
    return j;
  }
  return whitespace_end(s, n, i, true);
}

// GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
inline size_t next_end_gpt2(const uint8_t* s, size_t n, size_t i) {
  if (s[i] == '\'') {
    size_t k = contraction_len(s, n, i, false);
    if (k) return i + k;
  }
  if (s[i] == ' ' && i + 1 < n) {
    Unit d = unit_at(s, n, i + 1);
    if (d.cls & kL) return run_end(s, n, i + 1 + d.len, kL);
    if (d.cls & kN) return run_end(s, n, i + 1 + d.len, kN);
    if (is_other(d.cls)) return others_end(s, n, i + 1 + d.len);
  }
  Unit c = unit_at(s, n, i);
  if (c.cls & kL) return run_end(s, n, i + c.len, kL);
  if (c.cls & kN) return run_end(s, n, i + c.len, kN);
  if (is_other(c.cls)) return others_end(s, n, i + c.len);
  return whitespace_end(s, n, i, false);
}

}  // namespace aji::tokenizer::scan
