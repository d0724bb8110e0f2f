// Word splitting and Python-compatible string helpers. Expected token lists are spaCy
// 3.8 "en" output (datatrove's English word tokenizer), produced with
//   python3 -c "from datatrove.utils.text import split_into_words as s; print(s(TEXT, 'en'))"
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "aji/data/text_stats.h"

using namespace aji::data;

namespace {
std::vector<std::string> words(const std::string& text, WordSplitter s = WordSplitter::kEnglish) {
  std::vector<std::string> out;
  for (std::string_view w : split_words(text, s)) out.emplace_back(w);
  return out;
}
}  // namespace

TEST(TextStats, EnglishSplitterMatchesSpacy) {
  EXPECT_EQ(words("Hello, world! Don't do (that) e.g. U.S. 3.14 x--y foo/bar \"q\" it's."),
            (std::vector<std::string>{"Hello", ",", "world", "!", "Do", "n't", "do", "(", "that", ")", "e.g.", "U.S.",
                                      "3.14", "x", "--", "y", "foo", "/", "bar", "\"", "q", "\"", "it", "'s", "."}));
  EXPECT_EQ(words("well-known 10-20 and/or http://x.com/a-b www.foo.com end. Mr. Smith I'm you're $100 50% cannot "
                  "gonna 10km 5pm main():"),
            (std::vector<std::string>{"well", "-", "known", "10", "-", "20", "and/or", "http://x.com/a-b",
                                      "www.foo.com", "end", ".", "Mr.", "Smith", "I", "'m", "you", "'re", "$",
                                      "100", "50", "%", "can", "not", "gon", "na", "10", "km", "5", "pm", "main",
                                      "(", "):"}));
  EXPECT_EQ(words("USA. A. hello.World foo,bar a;b a:b x...y :) -20\xC2\xB0"
                  "C C++ #tag @user email@x.com \xF0\x9F\x98\x80"),
            (std::vector<std::string>{"USA", ".", "A.", "hello", ".", "World", "foo", ",", "bar", "a;b", "a", ":", "b",
                                      "x", "...", "y", ":)", "-20", "\xC2\xB0", "C", "C++", "#", "tag", "@user",
                                      "email@x.com", "\xF0\x9F\x98\x80"}));
}

TEST(TextStats, KoreanSplitterSeparatesParticles) {
  EXPECT_EQ(words("학교에서 공부했다. 그는 책을 읽었다", WordSplitter::kKorean),
            (std::vector<std::string>{"학교", "에서", "공부", "했", "다", ".", "그", "는", "책", "을", "읽었", "다"}));
  EXPECT_EQ(words("a  b\tc\n\nd", WordSplitter::kWhitespace), (std::vector<std::string>{"a", "b", "c", "d"}));
}

TEST(TextStats, PythonStringSemantics) {
  // str.splitlines: \r\n is one break, \x0b \x0c \x1c \u2028 also break; no trailing empty line.
  std::vector<std::string_view> lines = split_lines_python("a\r\nb\rc\x0b" "d\xE2\x80\xA8" "e\n");
  EXPECT_EQ(lines, (std::vector<std::string_view>{"a", "b", "c", "d", "e"}));
  EXPECT_EQ(strip_python("\xE3\x80\x80 x \xC2\xA0\n"), "x");  // U+3000 and NBSP are whitespace
  EXPECT_EQ(utf8_length("한국어 ok"), 6u);
  EXPECT_EQ(lower_python("ÀÉÎ Straße ABC"), "àéî straße abc");
  EXPECT_TRUE(is_python_alpha(U'한'));
  EXPECT_FALSE(is_python_alpha(U'1'));
  EXPECT_TRUE(is_terminal_punctuation(U'。'));
  EXPECT_FALSE(is_terminal_punctuation(U'"'));
  // Invalid UTF-8 decodes as U+FFFD one byte at a time, never reading past the end.
  std::string bad = "\xE2\x82";
  size_t i = 0;
  EXPECT_EQ(next_code_point(bad, i), 0xFFFDu);
  EXPECT_EQ(i, 1u);
  EXPECT_EQ(utf8_length(bad), 2u);
  EXPECT_NO_THROW(split_words(std::string("\xff\xfe abc \xc3"), WordSplitter::kKorean));
}
