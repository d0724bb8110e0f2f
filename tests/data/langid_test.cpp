// Language ID (CLD2) on real Korean, English and other-language text from /work/shared/data
// (copied into tests/fixtures/data), labelled independently of the detector: the corpora's
// own language (parallel news, Korean UI translations) and, for the web pages, by reading them.
#include <gtest/gtest.h>

#include <map>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/data/extract.h"
#include "aji/data/langid.h"
#include "aji/data/readers.h"
#include "test_util.h"

namespace aji::data {
namespace {

using aji::test::source_path;

std::vector<std::string> lines_of(const std::string& rel) {
  std::vector<std::string> out;
  LineReader r(source_path(rel));
  std::string_view line;
  while (r.next(line))
    if (!line.empty()) out.emplace_back(line);
  return out;
}

void expect_groups(const std::string& rel, const std::string& lang, size_t group) {
  auto lines = lines_of(rel);
  ASSERT_GE(lines.size(), group * 4);
  for (size_t i = 0; i + group <= lines.size(); i += group) {
    std::string doc;
    for (size_t k = i; k < i + group; ++k) doc += lines[k] + "\n";
    LangIdResult r = identify_language(doc);
    EXPECT_EQ(r.language, lang) << doc;
    EXPECT_GE(r.score, 0.65f) << doc;
    EXPECT_LE(r.score, 1.0f);
  }
}

TEST(LangId, KoreanAndEnglishNews) {
  expect_groups("tests/fixtures/data/langid/ko_news.txt", "ko", 5);
  expect_groups("tests/fixtures/data/langid/en_news.txt", "en", 5);
}

TEST(LangId, KoreanUiStringsOneByOne) {
  auto lines = lines_of("tests/fixtures/data/langid/ko_ui_strings.txt");
  int ko = 0;
  for (const auto& l : lines) ko += identify_language(l).language == "ko";
  EXPECT_GE(ko, static_cast<int>(lines.size()) * 9 / 10);
}

TEST(LangId, KoreanPageWithEnglishCommands) {
  DocumentReader r(source_path("tests/fixtures/data/extract/basic-defs.ko.html"), {});
  Document d;
  ASSERT_TRUE(r.next(d));
  LangIdResult res = identify_language(extract_main_text(d.text).text);
  EXPECT_EQ(res.language, "ko");
  EXPECT_GE(res.score, 0.65f);
}

TEST(LangId, OtherLanguagesFromRealPages) {
  // Labelled by reading each page's text (Russian fire-safety company, Dutch gardener,
  // English chemicals company, Chinese gambling / fiction / news pages).
  const std::map<std::string, std::string> labels = {
      {"http://01spb.ru/company/", "ru"},
      {"http://0900-hovenier.nl/gelderland/oosterbeek/", "nl"},
      {"http://037426.cn/", "en"},
      {"http://044545.com/topic/20200207/015849.html", "zh"},
      {"http://0513mt.com/index.php/art/detail/id/8884.html", "zh"},
      {"http://003338.cn/l41/481397.html", "zh"}};
  DocumentReader r(source_path("tests/fixtures/data/warc/resiliparse-warcfile.warc.gz"), {});
  Document d;
  size_t seen = 0;
  while (r.next(d)) {
    auto it = labels.find(d.url);
    if (it == labels.end()) continue;
    ++seen;
    EXPECT_EQ(identify_language(extract_main_text(d.text).text).language, it->second) << d.url;
  }
  EXPECT_EQ(seen, labels.size());
}

TEST(LangId, NoTextOrBadBytes) {
  EXPECT_EQ(identify_language("").language, "un");
  EXPECT_EQ(identify_language("").score, 0.0f);
  EXPECT_EQ(identify_language("12345 !!! ...").score, 0.0f);
  LangIdResult r = identify_language("\xFF\xFE\xC0 한국어 문서입니다 \xED\xA0\x80 한국어로 된 긴 문장이 여기에 있습니다.");
  EXPECT_EQ(r.language, "ko");
  // Only the first max_bytes are looked at, and a UTF-8 sequence is never cut.
  std::string long_ko;
  for (int i = 0; i < 5000; ++i) long_ko += "한국어 문장입니다. ";
  EXPECT_EQ(identify_language(long_ko, 1001).language, "ko");
}

TEST(LangId, Config) {
  nlohmann::json j = {{"languages", {"en", "ja"}}, {"keep_other_languages", true}};
  LangIdConfig c = j.get<LangIdConfig>();
  EXPECT_EQ(c.languages.size(), 2u);
  EXPECT_DOUBLE_EQ(c.languages["ja"], 0.65);
  EXPECT_TRUE(c.keep_other_languages);
  nlohmann::json bad = {{"threshold", 0.5}};
  EXPECT_THROW(bad.get<LangIdConfig>(), aji::Error);
}

}  // namespace
}  // namespace aji::data
