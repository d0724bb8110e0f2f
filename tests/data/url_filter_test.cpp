// URL filter against datatrove's URLFilter decisions (tests/reference/url_filter_reference.py).
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/data/url_filter.h"
#include "test_util.h"

namespace aji::data {
namespace {

using aji::test::source_path;
using aji::test::TempDir;

TEST(UrlFilter, AgreesWithDatatroveOnEveryCase) {
  // The same extra lists the reference script gave datatrove.
  UrlFilterConfig cfg;
  cfg.blocked_domains = {"blocked-example.com", "sub.blocked-too.org", "bad.co.kr"};
  TempDir tmp;
  {
    std::ofstream f(tmp.path() / "urls.txt");
    f << "# one URL per line\nhttps://exact.example.net/path/page.html\n";
  }
  cfg.blocked_urls_file = (tmp.path() / "urls.txt").string();
  UrlFilter filter(cfg);
  const std::map<std::string, std::string> reason_map = {
      {"domain", "url_domain"},           {"subdomain", "url_subdomain"},
      {"url", "url_exact"},               {"hard_blacklisted", "url_banned_word"},
      {"soft_blacklisted", "url_soft_banned_words"}, {"blacklisted_subword", "url_banned_subword"}};
  LineReader lines(source_path("tests/fixtures/data/url_filter_cases.jsonl"));
  std::string_view line;
  int n = 0, dropped = 0;
  while (lines.next(line)) {
    auto c = nlohmann::json::parse(line);
    Verdict v = filter.check(c["url"].get<std::string>());
    bool keep = c["keep"].get<bool>();
    EXPECT_EQ(v.keep, keep) << c["url"];
    if (!keep) {
      ++dropped;
      EXPECT_EQ(v.reason, reason_map.at(c["reason"].get<std::string>())) << c["url"];
    }
    ++n;
  }
  EXPECT_GT(n, 200);
  EXPECT_GT(dropped, 50);  // the cases exercise every rule, not only "keep"
}

TEST(UrlFilter, UserListsFromFiles) {
  TempDir tmp;
  auto write = [&](const char* name, const char* body) {
    std::ofstream f(tmp.path() / name);
    f << body;
    return (tmp.path() / name).string();
  };
  UrlFilterConfig cfg;
  cfg.use_builtin_lists = false;
  cfg.blocked_domains_file = write("d.txt", "# comment\nspam-site.com\n");
  cfg.banned_words_file = write("w.txt", "casino\n");
  cfg.banned_subwords_file = write("s.txt", "free money\n");
  UrlFilter f(cfg);
  EXPECT_EQ(f.check("https://www.spam-site.com/page").reason, "url_domain");
  EXPECT_EQ(f.check("https://x.org/casino/a").reason, "url_banned_word");
  EXPECT_EQ(f.check("https://x.org/get-FREE-MONEY-now").reason, "url_banned_subword");
  EXPECT_TRUE(f.check("https://x.org/casinos").keep);  // words are whole words
  EXPECT_TRUE(f.check("").keep);
  cfg.banned_words_file = (tmp.path() / "missing.txt").string();
  EXPECT_THROW(UrlFilter{cfg}, aji::Error);
}

TEST(UrlFilter, HostsAndRegisteredDomains) {
  EXPECT_EQ(url_host("https://User@News.Example.co.uk:8080/a?b#c"), "news.example.co.uk");
  EXPECT_EQ(registered_domain("news.example.co.uk"), "example.co.uk");
  EXPECT_EQ(registered_domain("blog.naver.com"), "naver.com");
  EXPECT_EQ(registered_domain("www.korea.go.kr"), "korea.go.kr");
  EXPECT_EQ(registered_domain("192.168.0.1"), "");
  EXPECT_EQ(url_host("//cdn.x.org/y"), "cdn.x.org");
}

TEST(UrlFilter, ConfigRoundTripAndUnknownKeys) {
  UrlFilterConfig c;
  c.soft_word_threshold = 3;
  c.blocked_domains = {"a.com"};
  nlohmann::json j = c;
  UrlFilterConfig back = j.get<UrlFilterConfig>();
  EXPECT_EQ(back.soft_word_threshold, 3);
  EXPECT_EQ(back.blocked_domains, c.blocked_domains);
  nlohmann::json bad = {{"soft_words", 1}};
  EXPECT_THROW(bad.get<UrlFilterConfig>(), aji::Error);
}

}  // namespace
}  // namespace aji::data
