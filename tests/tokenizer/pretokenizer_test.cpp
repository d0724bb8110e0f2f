// The hand-written pre-tokenizer against independent references: the Unicode class
// table against utf8proc (every code point), and the scanners against PCRE2 (a
// backtracking regex engine) running the real tiktoken/GPT-2 patterns on the reference
// strings and on random strings built from the tricky characters.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "aji/base/rng.h"
#include "aji/tokenizer/pretokenizer.h"
#include "aji/tokenizer/unicode_classes.h"
#include "tokenizer_test_util.h"

namespace aji::test {
namespace {

using tokenizer::SplitPattern;
namespace uc = tokenizer::unicode;

std::vector<std::string> pieces(SplitPattern p, std::string_view text) {
  std::vector<std::string_view> v;
  tokenizer::split_into(p, text, v);
  return {v.begin(), v.end()};
}

TEST(UnicodeClasses, TableMatchesUtf8procForEveryCodePoint) {
  int bad = 0;
  for (uint32_t cp = 0; cp < 0x110000; ++cp) {
    uint8_t want = 0;
    if (cp < 0xD800 || cp > 0xDFFF) {
      switch (utf8proc_category(int32_t(cp))) {
        case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LT: want = uc::kL | uc::kUpperSet; break;
        case UTF8PROC_CATEGORY_LL: want = uc::kL | uc::kLowerSet; break;
        case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: want = uc::kL | uc::kUpperSet | uc::kLowerSet; break;
        case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
          want = uc::kM | uc::kUpperSet | uc::kLowerSet; break;
        case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO: want = uc::kN; break;
        default: break;
      }
    }
    // White_Space from PropList.txt; with utf8proc: Zs/Zl/Zp plus the C0 and NEL controls.
    auto cat = utf8proc_category(int32_t(cp));
    bool ws = cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP ||
              (cp >= 9 && cp <= 13) || cp == 0x85;
    if (ws) want |= uc::kWS;
    if (cp == '\r' || cp == '\n') want |= uc::kCrLf;
    if (uc::class_of(cp) != want && ++bad < 10) ADD_FAILURE() << std::hex << "U+" << cp;
    if (cp < 128 && uc::kAsciiClass[cp] != want) ADD_FAILURE() << "ascii " << cp;
  }
  EXPECT_EQ(bad, 0);
  EXPECT_STREQ(uc::unicode_version(), "15.0.0");
  // The traps from the spec: BOM, ZWSP, U+180E and U+001C..1F are not whitespace.
  for (uint32_t cp : {0xFEFFu, 0x200Bu, 0x180Eu, 0x1Cu, 0x1Fu}) EXPECT_FALSE(uc::class_of(cp) & uc::kWS) << cp;
  for (uint32_t cp : {0x85u, 0xA0u, 0x1680u, 0x2000u, 0x200Au, 0x2028u, 0x2029u, 0x202Fu, 0x205Fu, 0x3000u})
    EXPECT_TRUE(uc::class_of(cp) & uc::kWS) << cp;
}

// Expected pieces checked with Python's `regex` module on the tiktoken patterns.
TEST(Pretokenizer, KnownSplits) {
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces(SplitPattern::kCl100k, "Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(pieces(SplitPattern::kCl100k, "a\n  "), (V{"a", "\n", "  "}));  // original form
  EXPECT_EQ(pieces(SplitPattern::kCl100k, "it's I'LL"), (V{"it", "'s", " I", "'LL"}));
  EXPECT_EQ(pieces(SplitPattern::kCl100k, "it\xE2\x80\x99s"), (V{"it", "\xE2\x80\x99s"}));  // ’s is no contraction
  EXPECT_EQ(pieces(SplitPattern::kCl100k, "12345"), (V{"123", "45"}));
  EXPECT_EQ(pieces(SplitPattern::kCl100k, "   x  1"), (V{"  ", " x", " ", " ", "1"}));
  EXPECT_EQ(pieces(SplitPattern::kCl100k, "..a\r\n\r\n b"), (V{"..", "a", "\r\n\r\n", " b"}));
  EXPECT_EQ(pieces(SplitPattern::kO200k, "XMLHttpRequest camelCase"), (V{"XMLHttp", "Request", " camel", "Case"}));
  EXPECT_EQ(pieces(SplitPattern::kO200k, "a/b//\n"), (V{"a", "/b", "//\n"}));
  EXPECT_EQ(pieces(SplitPattern::kO200k, "HE'S"), (V{"HE'S"}));
  EXPECT_EQ(pieces(SplitPattern::kGpt2, "it'S 123456"), (V{"it", "'", "S", " 123456"}));
  EXPECT_EQ(pieces(SplitPattern::kQwen2, "x123"), (V{"x", "1", "2", "3"}));
  EXPECT_EQ(pieces(SplitPattern::kCl100k, "안녕하세요 세계"), (V{"안녕하세요", " 세계"}));
  // Invalid UTF-8: each bad byte is its own non-letter unit; pieces still cover the text.
  std::string bad = "ab\xFF\xFE" "cd\xC3";
  EXPECT_EQ(pieces(SplitPattern::kCl100k, bad), (V{"ab", "\xFF\xFE", "cd", "\xC3"}));
}

TEST(Pretokenizer, PatternNames) {
  for (auto p : {SplitPattern::kGpt2, SplitPattern::kCl100k, SplitPattern::kO200k, SplitPattern::kQwen2}) {
    EXPECT_EQ(tokenizer::parse_split_pattern(tokenizer::split_pattern_name(p)), p);
    EXPECT_EQ(tokenizer::split_pattern_from_regex(tokenizer::split_pattern_regex(p)), p);
  }
  EXPECT_EQ(tokenizer::parse_split_pattern("cl100k_base"), SplitPattern::kCl100k);
  EXPECT_FALSE(tokenizer::parse_split_pattern("bogus"));
}

// PCRE2 with the real pattern text. \s and \S are spelled out as Unicode White_Space,
// because PCRE2's \s (even with UCP) leaves out U+0085, which the Rust regex crate and
// tiktoken include.
class PcreSplitter {
 public:
  explicit PcreSplitter(std::string_view regex) {
    std::string pat;
    const std::string ws = R"(\t\n\x0B\f\r\x20\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";
    for (size_t i = 0; i < regex.size(); ++i) {
      if (regex[i] == '\\' && i + 1 < regex.size() && (regex[i + 1] == 's' || regex[i + 1] == 'S')) {
        bool inside_class = false;  // is this \s inside [...]?
        int depth = 0;
        for (size_t j = 0; j < i; ++j) {
          if (regex[j] == '\\') { ++j; continue; }
          if (regex[j] == '[') ++depth;
          if (regex[j] == ']') --depth;
        }
        inside_class = depth > 0;
        if (regex[i + 1] == 's') pat += inside_class ? ws : "[" + ws + "]";
        else pat += "[^" + ws + "]";  // \S only appears outside classes in these patterns
        ++i;
      } else {
        pat += regex[i];
      }
    }
    int err;
    PCRE2_SIZE off;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pat.data()), pat.size(), PCRE2_UTF | PCRE2_UCP, &err, &off,
                          nullptr);
    if (!code_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      ADD_FAILURE() << "pcre2: " << msg << " at " << off << " in " << pat;
    }
    md_ = pcre2_match_data_create_from_pattern(code_, nullptr);
  }
  ~PcreSplitter() {
    pcre2_match_data_free(md_);
    pcre2_code_free(code_);
  }
  std::vector<std::string> split(std::string_view text) const {
    std::vector<std::string> out;
    size_t pos = 0;
    while (pos < text.size()) {
      int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), pos, 0, md_, nullptr);
      if (rc < 0) break;
      PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md_);
      if (ov[0] != pos) out.push_back("<gap>");  // every byte must be covered by a match
      out.emplace_back(text.substr(ov[0], ov[1] - ov[0]));
      pos = ov[1];
    }
    return out;
  }

 private:
  pcre2_code* code_ = nullptr;
  pcre2_match_data* md_ = nullptr;
};

const SplitPattern kAll[] = {SplitPattern::kGpt2, SplitPattern::kCl100k, SplitPattern::kO200k, SplitPattern::kQwen2};

TEST(Pretokenizer, MatchesPcre2OnReferenceStrings) {
  auto rows = read_jsonl("data/tokenizer/reference_encodings.jsonl");
  for (SplitPattern p : kAll) {
    PcreSplitter re(tokenizer::split_pattern_regex(p));
    int bad = 0;
    for (const auto& row : rows) {
      std::string text = row["text"].get<std::string>();
      if (re.split(text) != pieces(p, text) && ++bad <= 5)
        ADD_FAILURE() << tokenizer::split_pattern_name(p) << ": " << row.dump();
    }
    EXPECT_EQ(bad, 0) << tokenizer::split_pattern_name(p);
  }
}

// Characters chosen for the traps: every kind of space, letters of each case class
// (titlecase ǅ, modifier ʰ, Hangul, CJK), marks, numbers from other scripts, long s
// (folds to s), apostrophes, slashes, CR/LF, emoji.
const char* const kPool[] = {
    "a", "b", "s", "S", "t", "l", "L", "e", "r", "v", "m", "d", "D", "X", "'", "'", "\xE2\x80\x99", " ", " ", " ",
    "\n", "\r", "\t", "\x0B", "\x0C", "\xC2\x85", "\xC2\xA0", "\xE3\x80\x80", "\xE2\x80\xA8", "\xE2\x80\x8B",
    "\xEF\xBB\xBF", "\xE1\xA0\x8E", "\x1C", "0", "7", "\xD9\xA3", "\xC2\xB2", "\xE2\x85\xAB", ".", ",", "!", "/", "/",
    "-", "\xC7\x85", "\xCA\xB0", "\xC5\xBF", "\xE2\x84\xAA", "\xC3\xA9", "\xCC\x81", "\xE0\xA4\xBE", "\xEA\xB0\x80",
    "\xED\x95\x9C", "\xE4\xB8\xAD", "\xD0\x96", "\xD0\xB6", "\xF0\x9F\x98\x80", "\xCE\xA3", "\xCF\x83", "_", "$", "\x00"};

TEST(Pretokenizer, MatchesPcre2OnRandomStrings) {
  Rng rng(12345);
  for (SplitPattern p : kAll) {
    PcreSplitter re(tokenizer::split_pattern_regex(p));
    int bad = 0;
    for (int iter = 0; iter < 3000; ++iter) {
      std::string text;
      size_t len = 1 + rng.next_u64() % 24;
      for (size_t k = 0; k < len; ++k) {
        const char* c = kPool[rng.next_u64() % (sizeof kPool / sizeof kPool[0])];
        text += c[0] ? std::string(c) : std::string(1, '\0');
      }
      if (re.split(text) != pieces(p, text) && ++bad <= 5) {
        std::string hex;
        for (unsigned char ch : text) hex += std::to_string(ch) + " ";
        ADD_FAILURE() << tokenizer::split_pattern_name(p) << " bytes: " << hex;
      }
    }
    EXPECT_EQ(bad, 0) << tokenizer::split_pattern_name(p);
  }
}

TEST(Pretokenizer, PiecesCoverAnyByteString) {
  Rng rng(7);
  for (SplitPattern p : kAll)
    for (int iter = 0; iter < 2000; ++iter) {
      std::string text(rng.next_u64() % 40, '\0');
      for (char& c : text) c = char(rng.next_u64());
      std::string joined;
      for (const auto& piece : pieces(p, text)) {
        EXPECT_FALSE(piece.empty());
        joined += piece;
      }
      EXPECT_EQ(joined, text);
    }
}

}  // namespace
}  // namespace aji::test
