#include "aji/data/text_stats.h"

#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <unordered_map>

#include "aji/base/error.h"

namespace aji::data {

namespace {

// datatrove.utils.text.PUNCTUATION (the ASCII punctuation, C0/C1 controls except \t \n,
// and the CJK/typographic marks it lists). Sorted for binary search.
constexpr char32_t kPunctuation[] = {
    0x0,    0x1,    0x2,    0x3,    0x4,    0x5,    0x6,    0x7,    0x8,    0xb,    0xc,    0xd,    0xe,
    0xf,    0x10,   0x11,   0x12,   0x13,   0x14,   0x15,   0x16,   0x17,   0x18,   0x19,   0x1a,   0x1b,
    0x1c,   0x1d,   0x1e,   0x1f,   0x21,   0x22,   0x23,   0x24,   0x25,   0x26,   0x27,   0x28,   0x29,
    0x2a,   0x2b,   0x2c,   0x2d,   0x2e,   0x2f,   0x3a,   0x3b,   0x3c,   0x3d,   0x3e,   0x3f,   0x40,
    0x5b,   0x5c,   0x5d,   0x5e,   0x5f,   0x60,   0x7b,   0x7c,   0x7d,   0x7e,   0x7f,   0x80,   0x81,
    0x82,   0x83,   0x84,   0x85,   0x86,   0x87,   0x88,   0x89,   0x8a,   0x8b,   0x8c,   0x8d,   0x8e,
    0x8f,   0x90,   0x91,   0x92,   0x93,   0x94,   0x95,   0x96,   0x97,   0x98,   0x99,   0x9a,   0x9b,
    0x9c,   0x9d,   0x9e,   0x9f,   0xab,   0xb4,   0xbb,   0x2013, 0x2014, 0x2019, 0x201c, 0x201d, 0x201e,
    0x2026, 0x2236, 0x2501, 0x25ba, 0x3001, 0x3002, 0x3008, 0x3009, 0x300a, 0x300b, 0x300c, 0x300d, 0x3010,
    0x3011, 0xff01, 0xff05, 0xff08, 0xff09, 0xff0c, 0xff0e, 0xff11, 0xff1a, 0xff1b, 0xff1f, 0xff5e};

// datatrove.utils.text.TERMINAL_PUNCTUATION (159 code points). Sorted.
constexpr char32_t kTerminal[] = {
    0x21,    0x2e,    0x3f,    0x589,   0x61d,   0x61e,   0x61f,   0x6d4,   0x700,   0x701,   0x702,   0x7f9,
    0x837,   0x839,   0x83d,   0x83e,   0x964,   0x965,   0x104a,  0x104b,  0x1362,  0x1367,  0x1368,  0x166e,
    0x1735,  0x1736,  0x17d4,  0x17d5,  0x17d6,  0x17d9,  0x17da,  0x1803,  0x1809,  0x1944,  0x1945,  0x1aa8,
    0x1aa9,  0x1aaa,  0x1aab,  0x1b5a,  0x1b5b,  0x1b5e,  0x1b5f,  0x1b7d,  0x1b7e,  0x1c3b,  0x1c3c,  0x1c7e,
    0x1c7f,  0x203c,  0x203d,  0x2047,  0x2048,  0x2049,  0x2e2e,  0x2e3c,  0x2e53,  0x2e54,  0x3002,  0xa4ff,
    0xa60e,  0xa60f,  0xa6f3,  0xa6f7,  0xa876,  0xa877,  0xa8ce,  0xa8cf,  0xa92f,  0xa9c8,  0xa9c9,  0xaa5d,
    0xaa5e,  0xaa5f,  0xaaf0,  0xaaf1,  0xabeb,  0xfe52,  0xfe56,  0xfe57,  0xff01,  0xff0e,  0xff1f,  0xff61,
    0x10a56, 0x10a57, 0x10f55, 0x10f56, 0x10f57, 0x10f58, 0x10f59, 0x10f86, 0x10f87, 0x10f88, 0x10f89, 0x11047,
    0x11048, 0x110be, 0x110bf, 0x110c0, 0x110c1, 0x11141, 0x11142, 0x11143, 0x111c5, 0x111c6, 0x111cd, 0x111de,
    0x111df, 0x11238, 0x11239, 0x1123b, 0x1123c, 0x112a9, 0x1144b, 0x1144c, 0x115c2, 0x115c3, 0x115c9, 0x115ca,
    0x115cb, 0x115cc, 0x115cd, 0x115ce, 0x115cf, 0x115d0, 0x115d1, 0x115d2, 0x115d3, 0x115d4, 0x115d5, 0x115d6,
    0x115d7, 0x11641, 0x11642, 0x1173c, 0x1173d, 0x1173e, 0x11944, 0x11946, 0x11a42, 0x11a43, 0x11a9b, 0x11a9c,
    0x11c41, 0x11c42, 0x11ef7, 0x11ef8, 0x11f43, 0x11f44, 0x16a6e, 0x16a6f, 0x16af5, 0x16b37, 0x16b38, 0x16b44,
    0x16e98, 0x1bc9f, 0x1da88};

template <size_t N>
bool in_sorted(const char32_t (&table)[N], char32_t c) {
  return std::binary_search(table, table + N, c);
}

// A decoded code point with its byte span in the source.
struct Cp {
  char32_t c;
  uint32_t begin, end;
};

std::vector<Cp> decode(std::string_view s) {
  std::vector<Cp> out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    size_t b = i;
    char32_t c = next_code_point(s, i);
    out.push_back({c, uint32_t(b), uint32_t(i)});
  }
  return out;
}

// spaCy's ALPHA_LOWER: lower-case letters plus the uncased scripts (Hangul, CJK, ...).
bool is_lower(char32_t c) {
  auto cat = utf8proc_category(int32_t(c));
  return cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LO || cat == UTF8PROC_CATEGORY_LM;
}
bool is_upper(char32_t c) { return utf8proc_category(int32_t(c)) == UTF8PROC_CATEGORY_LU; }
bool is_digit(char32_t c) { return utf8proc_category(int32_t(c)) == UTF8PROC_CATEGORY_ND; }
bool is_alnum(char32_t c) { return is_python_alpha(c) || is_digit(c); }

// spaCy's LIST_PUNCT + LIST_QUOTES (both prefixes and suffixes in its English rules).
bool is_spacy_punct_or_quote(char32_t c) {
  switch (c) {
    case ',': case ':': case ';': case '!': case '?': case '(': case ')': case '[': case ']': case '{':
    case '}': case '<': case '>': case '_': case '#': case '*': case '&': case '\'': case '"': case '`':
    case 0x2026: case 0x00bf: case 0x061f: case 0x00a1: case 0x3002: case 0xff1f: case 0xff01: case 0xff0c:
    case 0x3001: case 0xff1b: case 0xff1a: case 0xff5e: case 0x00b7: case 0x0964: case 0x060c: case 0x06d4:
    case 0x061b: case 0x066a: case 0x201d: case 0x201c: case 0x2018: case 0x00b4: case 0x2019: case 0x201a:
    case 0x201e: case 0x00bb: case 0x00ab: case 0x300c: case 0x300d: case 0x300e: case 0x300f: case 0xff08:
    case 0xff09: case 0x3014: case 0x3015: case 0x3010: case 0x3011: case 0x300a: case 0x300b: case 0x3008:
    case 0x3009: case 0x27e6: case 0x27e7:
      return true;
    default:
      return false;
  }
}

bool is_currency(char32_t c) {
  return c == '$' || c == 0xa3 || c == 0x20ac || c == 0xa5 || c == 0xe3f || (c >= 0x20a0 && c <= 0x20bf) ||
         c == 0xfdfc;
}

// spaCy LIST_ICONS: Unicode "other symbols" (So), i.e. emoji and pictographs.
bool is_icon(char32_t c) { return c >= 128 && utf8proc_category(int32_t(c)) == UTF8PROC_CATEGORY_SO; }

// spaCy English prefix characters (one is split off the front of a chunk at a time).
bool is_prefix_char(char32_t c, char32_t next) {
  if (c == '+') return !(next >= '0' && next <= '9');
  return is_spacy_punct_or_quote(c) || is_currency(c) || is_icon(c) || c == 0xa7 || c == '%' || c == '=' ||
         c == 0x2014 || c == 0x2013;
}

// spaCy English suffix characters that split unconditionally.
bool is_suffix_char(char32_t c) {
  return is_spacy_punct_or_quote(c) || is_icon(c) || c == 0x2014 || c == 0x2013;
}

bool is_hyphen(char32_t c) { return c == '-' || c == 0x2013 || c == 0x2014 || c == 0x2010; }

bool equals_ascii_ci(const std::vector<Cp>& cps, size_t b, size_t e, const char* word) {
  size_t n = 0;
  for (const char* p = word; *p; ++p) ++n;
  if (e - b != n) return false;
  for (size_t k = 0; k < n; ++k) {
    char32_t c = cps[b + k].c;
    if (c == 0x2019) c = '\'';
    if (c < 128 && c >= 'A' && c <= 'Z') c += 32;
    if (c != char32_t(word[k])) return false;
  }
  return true;
}

// spaCy's English special cases ("cannot" → can|not, "Mr." stays whole, ":)" ...).
struct SpecialCase {
  const char* text;
  uint8_t lens[4];  // byte length of each piece, 0-terminated
};
constexpr SpecialCase kSpecialCases[] = {
#include "aji/data/spacy_en_exceptions.inc"
};

const SpecialCase* find_special(std::string_view s) {
  static const std::unordered_map<std::string_view, const SpecialCase*> table = [] {
    std::unordered_map<std::string_view, const SpecialCase*> t;
    for (const SpecialCase& sc : kSpecialCases) t.emplace(sc.text, &sc);
    return t;
  }();
  if (s.size() > 16) return nullptr;
  auto it = table.find(s);
  return it == table.end() ? nullptr : it->second;
}

void emit_special(const SpecialCase* sc, std::string_view s, std::vector<std::string_view>& out) {
  size_t off = 0;
  for (int k = 0; k < 4 && sc->lens[k]; ++k) {
    out.push_back(s.substr(off, sc->lens[k]));
    off += sc->lens[k];
  }
}

// spaCy's UNITS, split off a number ("10km" → 10 km), longest first.
size_t unit_suffix_length(const std::vector<Cp>& cps, size_t b, size_t e, std::string_view text) {
  static const char* kUnits[] = {"km\xc2\xb2", "km\xc2\xb3", "dm\xc2\xb2", "dm\xc2\xb3", "cm\xc2\xb2", "cm\xc2\xb3", "mm\xc2\xb2",
                                 "mm\xc2\xb3", "m\xc2\xb2", "m\xc2\xb3", "km/h", "mbar", "m/s", "kmh", "mph", "hPa", "\xc2\xb5m",
                                 "\xc2\xb5g", "km", "dm", "cm", "mm", "ha", "nm", "yd", "in", "ft", "kg", "mg", "lb",
                                 "oz", "Pa", "mb", "MB", "kb", "KB", "gb", "GB", "tb", "TB", "m", "g", "t", "T",
                                 "G", "M", "K", "%"};
  std::string_view tail = text.substr(cps[b].begin, cps[e - 1].end - cps[b].begin);
  for (const char* u : kUnits) {
    std::string_view us(u);
    if (tail.size() <= us.size() || tail.substr(tail.size() - us.size()) != us) continue;
    // The character before the unit must be a digit.
    size_t before = tail.size() - us.size();
    char c = tail[before - 1];
    if (c >= '0' && c <= '9') {
      size_t n = 0;  // unit length in code points
      for (size_t i = 0; i < us.size(); ++i) n += (static_cast<unsigned char>(us[i]) & 0xC0) != 0x80;
      return n;
    }
  }
  return 0;
}

bool looks_like_url_or_email(std::string_view chunk) {
  if (chunk.find("://") != std::string_view::npos) return true;
  if (chunk.size() > 4 && (chunk.substr(0, 4) == "www." || chunk.substr(0, 4) == "WWW.")) return true;
  size_t at = chunk.find('@');
  if (at != std::string_view::npos && at > 0 && chunk.find('.', at) != std::string_view::npos) return true;
  return false;
}

// Splits cps[b,e) (one whitespace-separated chunk) into spaCy-like English tokens.
void split_english_chunk(std::string_view text, const std::vector<Cp>& cps, size_t b, size_t e,
                         std::vector<std::string_view>& out) {
  auto view = [&](size_t x, size_t y) { return text.substr(cps[x].begin, cps[y - 1].end - cps[x].begin); };
  auto finish_special = [&](const std::vector<std::string_view>& sufs) {
    const SpecialCase* sc = find_special(view(b, e));
    if (!sc) return false;
    emit_special(sc, view(b, e), out);
    for (auto it = sufs.rbegin(); it != sufs.rend(); ++it) out.push_back(*it);
    return true;
  };
  // Prefixes.
  while (e - b > 1) {
    if (finish_special({})) return;
    if (e - b >= 3 && cps[b].c == '.' && cps[b + 1].c == '.' && cps[b + 2].c == '.') {
      size_t k = b;
      while (k < e && cps[k].c == '.') ++k;
      if (k == e) break;
      out.push_back(view(b, k));
      b = k;
      continue;
    }
    if (is_prefix_char(cps[b].c, cps[b + 1].c)) {
      out.push_back(view(b, b + 1));
      ++b;
      continue;
    }
    break;
  }
  // Suffixes, collected back to front.
  std::vector<std::string_view> suffixes;
  while (e - b > 1) {
    if (finish_special(suffixes)) return;
    if (size_t u = unit_suffix_length(cps, b, e, text); u > 0 && u < e - b) {
      suffixes.push_back(view(e - u, e));
      e -= u;
      continue;
    }
    // Ellipsis "..." as one token.
    if (e - b >= 3 && cps[e - 1].c == '.' && cps[e - 2].c == '.' && cps[e - 3].c == '.') {
      size_t k = e;
      while (k > b && cps[k - 1].c == '.') --k;
      if (k == b) break;
      suffixes.push_back(view(k, e));
      e = k;
      continue;
    }
    // Contractions: n't, 's, 're, 've, 'll, 'd, 'm.
    if (e - b >= 4 && equals_ascii_ci(cps, e - 3, e, "n't")) {
      suffixes.push_back(view(e - 3, e));
      e -= 3;
      continue;
    }
    bool took = false;
    for (const char* c : {"'ll", "'re", "'ve", "'s", "'d", "'m"}) {
      size_t n = c[2] ? 3 : 2;
      if (e - b > n && equals_ascii_ci(cps, e - n, e, c) && is_python_alpha(cps[e - n - 1].c)) {
        suffixes.push_back(view(e - n, e));
        e -= n;
        took = true;
        break;
      }
    }
    if (took) continue;
    char32_t last = cps[e - 1].c;
    char32_t prev = cps[e - 2].c;
    if (last == '.') {
      // (?<=[0-9{al}{e}{p}{q}])\.  and  (?<=[{au}][{au}])\.
      bool split = is_lower(prev) || is_digit(prev) || is_spacy_punct_or_quote(prev) ||
                   (is_upper(prev) && e - b >= 3 && is_upper(cps[e - 3].c));
      if (!split) break;
      suffixes.push_back(view(e - 1, e));
      --e;
      continue;
    }
    if ((last == '+' || last == '%' || is_currency(last)) && is_digit(prev)) {
      suffixes.push_back(view(e - 1, e));
      --e;
      continue;
    }
    if (is_suffix_char(last)) {
      suffixes.push_back(view(e - 1, e));
      --e;
      continue;
    }
    break;
  }
  if (e > b && finish_special(suffixes)) return;
  if (e > b && looks_like_url_or_email(view(b, e))) {
    out.push_back(view(b, e));
    for (auto it = suffixes.rbegin(); it != suffixes.rend(); ++it) out.push_back(*it);
    return;
  }
  // Infixes: hyphens / ellipses / slashes / colons between letters, "," between letters,
  // "." between a lower-case and an upper-case letter.
  size_t start = b;
  for (size_t k = b + 1; k + 1 < e; ++k) {
    char32_t c = cps[k].c, l = cps[k - 1].c;
    size_t len = 0;
    if (c == '.' && cps[k + 1].c == '.' && k + 2 < e && cps[k + 2].c == '.') {
      len = 3;
      while (k + len < e && cps[k + len].c == '.') ++len;
      if (k + len >= e) len = 0;
    } else if (c == 0x2026 || is_icon(c)) {
      len = 1;
    } else if (c == '-' && cps[k + 1].c == '-' && is_alnum(l)) {
      len = 2;
      while (k + len < e && cps[k + len].c == '-') ++len;
      if (k + len >= e || !is_python_alpha(cps[k + len].c)) len = 0;
    } else {
      char32_t r = cps[k + 1].c;
      if (is_hyphen(c) && is_alnum(l) && (is_python_alpha(r) || (is_digit(l) && is_digit(r)))) len = 1;
      else if ((c == '/' || c == ':' || c == '<' || c == '>' || c == '=') && is_alnum(l) && is_python_alpha(r)) len = 1;
      else if (c == ',' && is_python_alpha(l) && is_python_alpha(r)) len = 1;
      else if (c == '.' && is_lower(l) && is_upper(r)) len = 1;
    }
    if (len == 0) continue;
    if (k > start) out.push_back(view(start, k));
    out.push_back(view(k, k + len));
    start = k + len;
    k = start;  // loop ++k skips one char: the next infix needs a char before it anyway
  }
  if (e > start) out.push_back(view(start, e));
  for (auto it = suffixes.rbegin(); it != suffixes.rend(); ++it) out.push_back(*it);
}

// Korean particles / endings (FineWeb-2's stop morphemes and their common companions)
// split off the end of a Hangul eojeol, longest first.
constexpr const char* kKoreanSuffixes[] = {
    "에서는", "으로는", "에게서", "이라는", "에서", "으로", "에게", "까지", "부터", "처럼", "보다", "이다",
    "했다", "한다", "된다", "있다", "하고", "하는", "하여", "해서", "라고", "이라", "였다", "이며",
    "은",   "는",   "이",   "가",   "을",   "를",   "의",   "에",   "로",   "도",   "와",   "과",
    "만",   "고",   "다",   "한",   "인",   "된",   "며",   "서"};

void split_korean_word(std::string_view w, std::vector<std::string_view>& out) {
  // Only eojeol made of Hangul syllables (at least two) are split.
  size_t i = 0, n = 0;
  bool all_hangul = true;
  while (i < w.size()) {
    char32_t c = next_code_point(w, i);
    ++n;
    if (!is_hangul(c)) all_hangul = false;
  }
  if (!all_hangul || n < 2) {
    out.push_back(w);
    return;
  }
  for (const char* suf : kKoreanSuffixes) {
    std::string_view s(suf);
    if (w.size() > s.size() && w.substr(w.size() - s.size()) == s) {
      std::string_view stem = w.substr(0, w.size() - s.size());
      // Multi-syllable endings starting with a verb stem (했다 → 했 다) are split again.
      if (s == "했다" || s == "한다" || s == "된다" || s == "있다" || s == "였다") {
        out.push_back(stem);
        out.push_back(s.substr(0, 3));
        out.push_back(s.substr(3));
      } else {
        out.push_back(stem);
        out.push_back(s);
      }
      return;
    }
  }
  out.push_back(w);
}

// spaCy re-joins adjacent pieces that together form one of its special cases
// (emoticons like "):" and ":)", the quote "''"), so "main():" ends in "):".
void merge_special_cases(std::vector<std::string_view>& toks, size_t from) {
  static const char* kSpecial[] = {"):", ":)", "(:", ":(", ";)", "(;", ":]", "[:", "=)", "(=", ":/", "<3", ":-)",
                                   ":-(", ";-)", ":-]", "(-:", ")-:", ":'(", ":')", "''", ":p", ":P", ":D",
                                   "=]", "[=", ":-/", ":-P", ":-p", ":-D", ":((", ":))", ">:(", ">:o", ":-*"};
  size_t w = from;
  for (size_t i = from; i < toks.size(); ++i) {
    if (w > from && toks[w - 1].data() + toks[w - 1].size() == toks[i].data()) {
      std::string_view joined(toks[w - 1].data(), toks[w - 1].size() + toks[i].size());
      bool special = false;
      for (const char* sp : kSpecial) special = special || joined == sp;
      if (special) {
        toks[w - 1] = joined;
        continue;
      }
    }
    toks[w++] = toks[i];
  }
  toks.resize(w);
}

}  // namespace

WordSplitter word_splitter_for_language(std::string_view language) {
  if (language == "en" || language == "eng" || language == "eng_Latn") return WordSplitter::kEnglish;
  if (language == "ko" || language == "kor" || language == "kor_Hang") return WordSplitter::kKorean;
  return WordSplitter::kWhitespace;
}

const char* word_splitter_name(WordSplitter s) {
  switch (s) {
    case WordSplitter::kEnglish: return "english";
    case WordSplitter::kKorean: return "korean";
    case WordSplitter::kWhitespace: return "whitespace";
  }
  return "english";
}

WordSplitter parse_word_splitter(std::string_view name) {
  if (name == "english") return WordSplitter::kEnglish;
  if (name == "korean") return WordSplitter::kKorean;
  if (name == "whitespace") return WordSplitter::kWhitespace;
  throw Error("unknown word splitter '" + std::string(name) + "'").fix("use english, korean or whitespace");
}

char32_t next_code_point(std::string_view s, size_t& i) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size();
  unsigned char c0 = p[i];
  if (c0 < 0x80) {
    ++i;
    return c0;
  }
  int len = 0;
  char32_t cp = 0;
  if ((c0 & 0xE0) == 0xC0) { len = 2; cp = c0 & 0x1F; }
  else if ((c0 & 0xF0) == 0xE0) { len = 3; cp = c0 & 0x0F; }
  else if ((c0 & 0xF8) == 0xF0) { len = 4; cp = c0 & 0x07; }
  else { ++i; return 0xFFFD; }
  if (i + len > n) { ++i; return 0xFFFD; }
  for (int k = 1; k < len; ++k) {
    unsigned char c = p[i + k];
    if ((c & 0xC0) != 0x80) { ++i; return 0xFFFD; }
    cp = (cp << 6) | (c & 0x3F);
  }
  // Overlong forms, surrogates and out-of-range values are invalid.
  if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
      (cp >= 0xD800 && cp <= 0xDFFF)) {
    ++i;
    return 0xFFFD;
  }
  i += len;
  return cp;
}

size_t utf8_length(std::string_view s) {
  size_t n = 0;
  // Fast path: count bytes that are not continuation bytes; exact for valid UTF-8.
  bool ascii_only = true;
  for (unsigned char c : s) {
    if (c >= 0x80) { ascii_only = false; break; }
  }
  if (ascii_only) return s.size();
  size_t i = 0;
  while (i < s.size()) {
    next_code_point(s, i);
    ++n;
  }
  return n;
}

bool is_python_alpha(char32_t c) {
  if (c < 128) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  switch (utf8proc_category(int32_t(c))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
      return true;
    default:
      return false;
  }
}

bool is_python_space(char32_t c) {
  if (c < 128) return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F);
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool is_datatrove_punctuation(char32_t c) { return in_sorted(kPunctuation, c) || in_sorted(kTerminal, c); }
bool is_terminal_punctuation(char32_t c) { return in_sorted(kTerminal, c); }
bool is_simplify_punctuation(char32_t c) { return in_sorted(kPunctuation, c); }
bool is_hangul(char32_t c) {
  return (c >= 0xAC00 && c <= 0xD7A3) || (c >= 0x1100 && c <= 0x11FF) || (c >= 0x3130 && c <= 0x318F);
}

std::vector<std::string_view> split_whitespace(std::string_view text) {
  std::vector<std::string_view> out;
  size_t i = 0, start = std::string_view::npos;
  while (i < text.size()) {
    size_t b = i;
    char32_t c = next_code_point(text, i);
    if (is_python_space(c)) {
      if (start != std::string_view::npos) out.push_back(text.substr(start, b - start));
      start = std::string_view::npos;
    } else if (start == std::string_view::npos) {
      start = b;
    }
  }
  if (start != std::string_view::npos) out.push_back(text.substr(start));
  return out;
}

std::vector<std::string_view> split_words(std::string_view text, WordSplitter splitter) {
  std::vector<std::string_view> chunks = split_whitespace(text);
  if (splitter == WordSplitter::kWhitespace) return chunks;
  std::vector<std::string_view> out;
  out.reserve(chunks.size() + chunks.size() / 4);
  std::vector<Cp> cps;
  for (std::string_view chunk : chunks) {
    bool ascii_word = true;
    for (unsigned char c : chunk) {
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) { ascii_word = false; break; }
    }
    if (ascii_word) {  // the common case: nothing to split, unless a special case ("cannot")
      if (const SpecialCase* sc = find_special(chunk)) emit_special(sc, chunk, out);
      else out.push_back(chunk);
      continue;
    }
    cps = decode(chunk);
    size_t before = out.size();
    split_english_chunk(chunk, cps, 0, cps.size(), out);
    merge_special_cases(out, before);
    if (splitter == WordSplitter::kKorean) {
      std::vector<std::string_view> parts(out.begin() + before, out.end());
      out.resize(before);
      for (std::string_view p : parts) split_korean_word(p, out);
    }
  }
  return out;
}

std::vector<std::string_view> split_lines_python(std::string_view text) {
  std::vector<std::string_view> out;
  size_t i = 0, start = 0;
  while (i < text.size()) {
    size_t b = i;
    char32_t c = next_code_point(text, i);
    bool brk = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D || c == 0x1E ||
               c == 0x85 || c == 0x2028 || c == 0x2029;
    if (!brk) continue;
    out.push_back(text.substr(start, b - start));
    if (c == '\r' && i < text.size() && text[i] == '\n') ++i;
    start = i;
  }
  if (start < text.size()) out.push_back(text.substr(start));
  return out;
}

std::string_view lstrip_python(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t b = i;
    if (!is_python_space(next_code_point(s, i))) return s.substr(b);
  }
  return s.substr(s.size());
}

std::string_view rstrip_python(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    // Step back to the start of the last code point.
    size_t b = end - 1;
    while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80 && end - b < 4) --b;
    size_t j = b;
    char32_t c = next_code_point(s, j);
    if (j != end) {  // invalid sequence: treat the last byte alone (not a space)
      return s.substr(0, end);
    }
    if (!is_python_space(c)) return s.substr(0, end);
    end = b;
  }
  return s.substr(0, 0);
}

std::string_view strip_python(std::string_view s) { return rstrip_python(lstrip_python(s)); }

std::string lower_python(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      out.push_back(char(c >= 'A' && c <= 'Z' ? c + 32 : c));
      ++i;
      continue;
    }
    size_t b = i;
    char32_t cp = next_code_point(s, i);
    if (cp == 0xFFFD && !(i - b == 3 && s.substr(b, 3) == "\xEF\xBF\xBD")) {
      out.append(s.substr(b, i - b));  // keep invalid bytes as they were
      continue;
    }
    char32_t lc = char32_t(utf8proc_tolower(int32_t(cp)));
    uint8_t buf[4];
    auto n = utf8proc_encode_char(int32_t(lc), buf);
    out.append(reinterpret_cast<const char*>(buf), size_t(n));
  }
  return out;
}

}  // namespace aji::data
