// The extraction layout benchmark (data/extract_layouts/, issue #13): real pages of 19 layout
// families (documentation generators, wikis, blogs/CMSs, news, forums, Stack Exchange threads,
// product pages, SPA shells, Korean docs and blogs) against trafilatura's committed output for
// the same decoded HTML (tests/reference/extract_layouts_vs_trafilatura.py --fixtures). Before
// the fix of the class-hint mechanism every Sphinx Read-the-Docs page came out empty.
// Q&A threads have a second reference, the thread's post bodies read with lxml
// (bench/extract_layouts/qa_post_reference.py): trafilatura keeps one post of them.
#include <gtest/gtest.h>

#include <map>
#include <sstream>

#include "aji/base/io.h"
#include "aji/data/extract.h"
#include "aji/data/readers.h"
#include "data/extract_test_util.h"
#include "test_util.h"

namespace aji::data {
namespace {

namespace fs = std::filesystem;
using aji::test::source_path;
using aji::test::token_f1;
using aji::test::token_score;

size_t utf8_chars(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

struct Page {
  std::string family, file;
  double f1;                  // against trafilatura
  double thread_f1 = -1;      // against the thread's post bodies (Q&A pages only)
  double traf_recall = 0;     // share of trafilatura's words that aji keeps
  size_t aji_chars, traf_chars;
  // What the page is scored by: the thread reference where there is one.
  double score() const { return thread_f1 >= 0 ? thread_f1 : f1; }
};

std::vector<Page> measure_benchmark() {
  fs::path dir = source_path("data/extract_layouts");
  std::istringstream manifest(read_file(dir / "manifest.tsv"));
  std::string line;
  std::getline(manifest, line);  // header
  std::vector<Page> pages;
  while (std::getline(manifest, line)) {
    if (line.empty()) continue;
    size_t t1 = line.find('\t'), t2 = line.find('\t', t1 + 1);
    Page p;
    p.family = line.substr(0, t1);
    p.file = line.substr(t1 + 1, t2 - t1 - 1);
    DocumentReader r(dir / p.file, {});  // .html.gz: gunzipped and charset-decoded as in a run
    Document d;
    EXPECT_TRUE(r.next(d)) << p.file;
    std::string ref_name = p.file.substr(0, p.file.size() - std::strlen(".html.gz")) + ".trafilatura.txt";
    std::string ref = read_file(dir / "reference" / ref_name);
    while (!ref.empty() && ref.back() == '\n') ref.pop_back();
    ExtractConfig no_budget;  // the time budget is tested below; slow sanitizer builds must not hit it here
    no_budget.max_millis = 0;
    std::string text = extract_main_text(d.text, no_budget).text;
    aji::test::TokenScore ts = token_score(text, ref);
    p.f1 = ts.f1;
    p.traf_recall = ts.recall;
    fs::path posts = dir / "reference" / (p.file.substr(0, p.file.size() - std::strlen(".html.gz")) + ".posts.txt");
    if (fs::exists(posts)) p.thread_f1 = token_f1(text, read_file(posts));
    p.aji_chars = utf8_chars(text);
    p.traf_chars = utf8_chars(ref);
    pages.push_back(p);
  }
  return pages;
}

// Measured once for the tests below.
const std::vector<Page>& run_benchmark() {
  static const std::vector<Page> pages = measure_benchmark();
  return pages;
}

TEST(ExtractLayouts, EveryFamilyAgreesWithTrafilaturaAndNoPageIsLost) {
  const std::vector<Page>& pages = run_benchmark();
  ASSERT_GE(pages.size(), 81u);
  std::map<std::string, std::pair<double, int>> fam;
  double sum = 0;
  for (const Page& p : pages) {
    SCOPED_TRACE(p.file);
    // The target: no page where trafilatura keeps >= 500 characters of main text
    // while aji keeps under 100.
    if (p.traf_chars >= 500) {
      EXPECT_GE(p.aji_chars, 100u) << "F1 " << p.f1;
    }
    // Pages with real text on both sides agree (measured minimum 0.63: a Doxygen class page
    // where aji keeps the member tables trafilatura's precision mode drops).
    if (p.traf_chars >= 500) {
      EXPECT_GE(p.score(), 0.6);
    }
    if (p.thread_f1 >= 0) {
      // A Stack Exchange thread: trafilatura keeps one post (F1 0.18 - 0.46 against it); aji
      // keeps that post (measured recall 0.98 - 1.0) and the rest of the thread (thread F1
      // 0.87 - 0.98, the difference being vote counts and user cards).
      EXPECT_GE(p.traf_recall, 0.95) << "F1 against trafilatura " << p.f1;
      EXPECT_GE(p.thread_f1, 0.85);
    }
    fam[p.family].first += p.score();
    fam[p.family].second += 1;
    sum += p.score();
  }
  for (const auto& [name, v] : fam) {
    SCOPED_TRACE(name);
    // Target: no family mean below 0.7 (measured 0.77 - 1.00; the lowest, sphinx-rtd, holds
    // two table-of-contents pages where trafilatura keeps only the copyright line).
    EXPECT_GE(v.first / v.second, 0.7);
  }
  EXPECT_GE(fam.size(), 20u);
  EXPECT_GE(sum / pages.size(), 0.89);  // measured 0.918 over 81 pages
}

TEST(ExtractLayouts, ReadTheDocsPagesAreExtracted) {
  // Regression pages of issue #13: Sphinx with sphinx_rtd_theme (generated, and three Debian doc
  // packages), MkDocs' readthedocs theme (typer) and Blogger (main post in "widget Blog").
  std::map<std::string, double> floors = {  // measured 0.897 - 1.0, minus a margin
      {"sphinx-rtd/sphinx-sphinx_rtd_theme_faq.html.gz", 0.88},
      {"sphinx-rtd/python-git-doc_tutorial.html.gz", 0.95},
      {"sphinx-rtd/python-git-doc_intro.html.gz", 0.9},
      {"sphinx-rtd/cyrus-sasl2-doc_sysadmin.html.gz", 0.9},
      {"sphinx-rtd/python-tweepy-doc_authentication.html.gz", 0.85},
      {"mkdocs/python-typer-doc_first-steps.html.gz", 0.95},
      {"blog-cms/readability_blogger.html.gz", 0.95}};
  int seen = 0;
  for (const Page& p : run_benchmark()) {
    auto it = floors.find(p.file);
    if (it == floors.end()) continue;
    ++seen;
    EXPECT_GE(p.f1, it->second) << p.file;
  }
  EXPECT_EQ(seen, static_cast<int>(floors.size()));
}

TEST(ExtractLayouts, HintedWrapperThatHoldsTheTextIsKept) {
  std::string prose;
  for (int i = 0; i < 30; ++i) prose += "<p>Paragraph " + std::to_string(i) + " of real documentation prose text.</p>";
  std::string side = "<div class='wy-nav-side'><ul>";
  for (int i = 0; i < 8; ++i) side += "<li><a href='/p" + std::to_string(i) + "'>SIDE_LINK" + std::to_string(i) + "</a></li>";
  side += "</ul></div>";
  // The Read the Docs skeleton: every wrapper's class has "nav" in it.
  std::string rtd = "<body><div class='wy-grid-for-nav'>" + side +
                    "<section class='wy-nav-content-wrap'><div class='wy-nav-content'><div class='rst-content'>" +
                    prose + "</div></div></section></div></body>";
  std::string text = extract_main_text(rtd).text;
  EXPECT_NE(text.find("Paragraph 0 of real"), std::string::npos);
  EXPECT_NE(text.find("Paragraph 29 of real"), std::string::npos);
  EXPECT_EQ(text.find("SIDE_LINK"), std::string::npos);
  // A hinted container ("widget", as Blogger names its post) holding most of the text stays;
  // a small hinted block beside it goes.
  std::string blog = "<body><div class='widget Blog'>" + prose + "</div><div class='widget HTML'>WIDGET_TEXT</div></body>";
  text = extract_main_text(blog).text;
  EXPECT_NE(text.find("Paragraph 29 of real"), std::string::npos);
  EXPECT_EQ(text.find("WIDGET_TEXT"), std::string::npos);
  // Names: head or tail part, or the whole name, not a part in the middle.
  for (const char* cls : {"main-nav", "site-footer", "navbar-header", "footer-links", "post-comments", "sidebar"}) {
    std::string page = "<body><div class='" + std::string(cls) + "'>CHROME_TEXT</div><p>" + prose + "</p></body>";
    EXPECT_EQ(extract_main_text(page).text.find("CHROME_TEXT"), std::string::npos) << cls;
  }
  std::string mid = "<body><div class='x-nav-content'>SHORT_BUT_CONTENT</div>" + prose + "</body>";
  EXPECT_NE(extract_main_text(mid).text.find("SHORT_BUT_CONTENT"), std::string::npos);
  // A heading's slug as id (Sphinx, Markdown) is not a hint; a short id is.
  std::string slug = "<body><section id='how-do-i-share-global-variables'><p>SLUG_SECTION</p></section>" +
                     std::string("<div id='main-nav'>NAV_ID_TEXT</div>") + prose + "</body>";
  std::string slug_text = extract_main_text(slug).text;
  EXPECT_NE(slug_text.find("SLUG_SECTION"), std::string::npos);
  EXPECT_EQ(slug_text.find("NAV_ID_TEXT"), std::string::npos);
}

TEST(ExtractLayouts, TimeBudgetSkipsAPathologicalPage) {
  std::string big = "<body>";
  for (int i = 0; i < 50000; ++i) big += "<p>word <b>bold</b> <i>it</i></p>";
  big += "</body>";
  ExtractConfig tight;
  tight.max_millis = 1;
  ExtractResult r = extract_main_text(big, tight);
  EXPECT_EQ(r.skip_reason, "extract_timeout");
  EXPECT_EQ(r.text, "");
  ExtractConfig unlimited;
  unlimited.max_millis = 0;
  ExtractResult ok = extract_main_text(big, unlimited);  // the default budget is 5 s
  EXPECT_EQ(ok.skip_reason, "");
  EXPECT_NE(ok.text.find("word bold it"), std::string::npos);
}

TEST(RepeatedLineFilter, DropsLinesRepeatedAcrossAHostsPagesOnly) {
  RepeatedLineFilter f;  // defaults: >= 5 pages and >= half of the host's pages
  auto page = [](int i, bool chrome, bool sometimes) {
    std::string t = "Skip to main content\nArticle " + std::to_string(i) + " talks about topic number " +
                    std::to_string(i * 7) + ".\n}\n...\nShared | Header |";
    if (chrome) t += "\nCopyright 2024 Example Corp. All rights reserved.";
    if (sometimes) t += "\nSee the related article below";
    return t;
  };
  for (int i = 0; i < 10; ++i) f.add("a.example", page(i, true, i < 4));
  f.add("b.example", page(0, true, false));
  f.add("b.example", page(1, true, false));
  EXPECT_EQ(f.pages("a.example"), 10);
  int dropped = -1;
  std::string out = f.filter("a.example", page(3, true, true), &dropped);
  // Chrome on every page goes; a phrase on 4 of 10 pages, code lines and table rows stay.
  EXPECT_EQ(out, "Article 3 talks about topic number 21.\n}\n...\nShared | Header |\nSee the related article below");
  EXPECT_EQ(dropped, 2);
  // A host with fewer pages than min_pages is left alone.
  std::string b = page(1, true, false);
  EXPECT_EQ(f.filter("b.example", b, &dropped), b);
  EXPECT_EQ(dropped, 0);
  // Counts are per host: the same chrome line on another host is not known there.
  EXPECT_EQ(f.filter("c.example", b), b);
}

}  // namespace
}  // namespace aji::data
