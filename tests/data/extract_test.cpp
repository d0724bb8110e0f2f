// HTML extraction: agreement with trafilatura (the fixtures' *.trafilatura.txt, made by
// tests/reference/extract_vs_trafilatura.py) and boilerplate that must never come out.
#include <gtest/gtest.h>
#include <gumbo.h>
#include <utf8proc.h>

#include <cctype>
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

std::string extract_file(const fs::path& p) {
  DocumentReader r(p, {});
  Document d;
  EXPECT_TRUE(r.next(d));
  return extract_main_text(d.text).text;
}

// Text of every node under the given tags (and of nothing else, for `outside`).
void collect_text(const GumboNode* n, bool inside, const std::vector<GumboTag>& tags, std::vector<std::string>& in,
                  std::string& outside) {
  if (n->type == GUMBO_NODE_TEXT || n->type == GUMBO_NODE_CDATA) {
    if (inside) in.emplace_back(n->v.text.text);
    else outside += std::string(n->v.text.text) + "\n";
    return;
  }
  if (n->type != GUMBO_NODE_ELEMENT) return;
  bool now = inside || std::find(tags.begin(), tags.end(), n->v.element.tag) != tags.end();
  for (unsigned i = 0; i < n->v.element.children.length; ++i)
    collect_text(static_cast<const GumboNode*>(n->v.element.children.data[i]), now, tags, in, outside);
}

std::string squeeze(const std::string& s) {
  std::string out;
  for (char c : s) {
    bool sp = c == ' ' || c == '\n' || c == '\t' || c == '\r';
    if (sp) {
      if (!out.empty() && out.back() != ' ') out += ' ';
    } else {
      out += c;
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  if (!out.empty() && out.front() == ' ') out.erase(0, 1);
  return out;
}

const char* const kPages[] = {"basic-defs.en.html", "ch08.en.html", "errors.html",
                              "basic-defs.ko.html", "collab.html",  "fontwork.html"};

TEST(Extract, AgreesWithTrafilaturaOnRealPages) {
  // Floors measured on these pages (per page 0.876 … 0.96, mean 0.92) minus a margin.
  double sum = 0;
  for (const char* name : kPages) {
    fs::path html = source_path(std::string("tests/fixtures/data/extract/") + name);
    fs::path ref = html;
    ref.replace_extension(".trafilatura.txt");
    double f1 = token_f1(extract_file(html), read_file(ref));
    EXPECT_GE(f1, 0.82) << name;
    sum += f1;
  }
  EXPECT_GE(sum / std::size(kPages), 0.88);
}

TEST(Extract, ScriptStyleAndNavigationTextNeverAppear) {
  // The fixture pages and every HTML record of two real WARC files.
  std::vector<std::pair<std::string, std::string>> pages;  // (name, html)
  for (const char* name : kPages) {
    DocumentReader r(source_path(std::string("tests/fixtures/data/extract/") + name), {});
    Document d;
    if (r.next(d)) pages.emplace_back(name, d.text);
  }
  for (const char* warc : {"dolma-sample-0000.warc.gz", "resiliparse-warcfile.warc.gz"}) {
    DocumentReader r(source_path(std::string("tests/fixtures/data/warc/") + warc), {});
    Document d;
    while (r.next(d)) pages.emplace_back(d.url, d.text);
  }
  int checked = 0;
  for (const auto& [name, html] : pages) {
    SCOPED_TRACE(name);
    std::string out = squeeze(extract_main_text(html).text);
    GumboOutput* g = gumbo_parse_with_options(&kGumboDefaultOptions, html.data(), html.size());
    std::vector<std::string> code, nav;
    std::string rest, rest2;
    collect_text(g->root, false, {GUMBO_TAG_SCRIPT, GUMBO_TAG_STYLE, GUMBO_TAG_NOSCRIPT}, code, rest);
    collect_text(g->root, false, {GUMBO_TAG_NAV, GUMBO_TAG_FOOTER, GUMBO_TAG_SCRIPT, GUMBO_TAG_STYLE}, nav, rest2);
    gumbo_destroy_output(&kGumboDefaultOptions, g);
    for (const auto& c : code) {
      std::string s = squeeze(c);
      if (s.size() < 20) continue;
      ++checked;
      EXPECT_EQ(out.find(s.substr(0, 60)), std::string::npos) << s.substr(0, 80);
    }
    std::string rest_sq = squeeze(rest2);
    for (const auto& c : nav) {
      std::string s = squeeze(c);
      // Navigation text that the page also has in its body (a heading repeated in a
      // "next page" link) may legitimately appear.
      if (s.size() < 25 || rest_sq.find(s) != std::string::npos) continue;
      ++checked;
      EXPECT_EQ(out.find(s), std::string::npos) << s;
    }
  }
  EXPECT_GT(checked, 100);  // the pages do have scripts and navigation to check
}

TEST(Extract, SyntheticPageKeepsContentDropsBoilerplate) {
  const std::string html = R"(<!doctype html><html><head><title> The  Title </title>
<style>.x { color: red } STYLE_TEXT</style><script>var s = "SCRIPT_TEXT";</script></head><body>
<header class="site-header"><a href="/">Home</a> <a href="/a">About</a> <a href="/b">Blog</a></header>
<nav><ul><li><a href="/1">NAV_ONE</a></li><li><a href="/2">NAV_TWO</a></li></ul></nav>
<div class="cookie-banner">We use cookies COOKIE_TEXT <button>OK</button></div>
<main>
<h1>Main heading</h1>
<p>First paragraph with <a href="/x">a link</a> inside   a  sentence that is long enough.</p>
<ul><li>item one</li><li>item two</li></ul>
<table><tr><th>Name</th><th>Value</th></tr><tr><td>alpha</td><td>1</td></tr></table>
<pre><code>def f(x):
    return x + 1
</code></pre>
<div style="display: none">HIDDEN_TEXT</div>
<p>Second<br>line after a break.</p>
<div class="share-buttons"><a href="/s1">Share</a> <a href="/s2">Tweet</a> <a href="/s3">Mail</a></div>
</main>
<aside>ASIDE_TEXT</aside>
<div id="sidebar">SIDEBAR_TEXT</div>
<footer>FOOTER_TEXT © 2024</footer>
<form>FORM_TEXT<input name=q></form>
</body></html>)";
  ExtractResult r = extract_main_text(html);
  EXPECT_EQ(r.title, "The Title");
  EXPECT_EQ(r.text,
            "Main heading\n"
            "First paragraph with a link inside a sentence that is long enough.\n"
            "- item one\n"
            "- item two\n"
            "Name | Value |\n"
            "alpha | 1 |\n"
            "def f(x):\n"
            "    return x + 1\n"
            "Second\n"
            "line after a break.");
  for (const char* bad : {"STYLE_TEXT", "SCRIPT_TEXT", "NAV_ONE", "COOKIE_TEXT", "HIDDEN_TEXT", "ASIDE_TEXT",
                          "SIDEBAR_TEXT", "FOOTER_TEXT", "FORM_TEXT", "Tweet", "Home"})
    EXPECT_EQ(r.text.find(bad), std::string::npos) << bad;
}

TEST(Extract, LinkListsAreDroppedButLinkedProseIsKept) {
  std::string menu = "<div>";
  for (int i = 0; i < 10; ++i) menu += "<a href='/p" + std::to_string(i) + "'>Page " + std::to_string(i) + "</a> ";
  menu += "</div>";
  std::string html = "<body>" + menu +
                     "<p>This sentence mentions <a href='/w'>one page</a> among many other plain words of prose.</p></body>";
  std::string text = extract_main_text(html).text;
  EXPECT_EQ(text, "This sentence mentions one page among many other plain words of prose.");
}

// A page laid out in table cells (older CMSs and forums, Naver's SmartEditor 2 blogs): the
// cells are emitted as blocks, one line per paragraph, where the data-table path ran the whole
// post into one "a | b" row. A data table stays one line per row; a paragraph of only &nbsp;
// (an editor's blank line) is no line; the layout table's text stays without data tables.
TEST(Extract, LayoutTablesKeepParagraphsAndDataTablesKeepRows) {
  std::string post;
  for (int i = 0; i < 4; ++i)
    post += "<p><span style='font-size:11pt'>Paragraph " + std::to_string(i) +
            " of a travel post that is long enough to be a real paragraph of prose text.</span></p><p>&nbsp;</p>";
  const std::string data_table =
      "<table><tr><th>City</th><th>Days</th></tr><tr><td>Gyeongju</td><td>2</td></tr><tr><td>Busan</td><td>1</td></tr></table>";
  const std::string html = "<body><table id='body-table'><tr><td class='side'>Profile</td><td id='content'>"
                           "<table class='post-top'><tr><td>Post title here</td></tr></table>" +
                           post + data_table + "</td></tr></table></body>";
  const std::string text = extract_main_text(html).text;
  for (int i = 0; i < 4; ++i) {
    const std::string line = "Paragraph " + std::to_string(i) +
                             " of a travel post that is long enough to be a real paragraph of prose text.";
    EXPECT_TRUE(text.find("\n" + line + "\n") != std::string::npos || text.rfind(line, 0) == 0) << text;
  }
  EXPECT_NE(text.find("\nGyeongju | 2 |\n"), std::string::npos) << text;  // a data row
  EXPECT_EQ(text.find("\n\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("\xC2\xA0"), std::string::npos) << "a line of only &nbsp; is no line";

  ExtractConfig no_tables;
  no_tables.include_tables = false;
  const std::string t2 = extract_main_text(html, no_tables).text;
  EXPECT_NE(t2.find("Paragraph 3 of a travel post"), std::string::npos) << t2;
  EXPECT_EQ(t2.find("Gyeongju"), std::string::npos) << t2;

  // A short two-column table of plain cells (a key/value box) is data, not layout.
  const std::string kv = "<body><p>Some prose before the table, written as a full sentence of text.</p>"
                         "<table><tr><td>Height</td><td>1.8 m</td></tr><tr><td>Weight</td><td>70 kg</td></tr></table></body>";
  EXPECT_NE(extract_main_text(kv).text.find("Height | 1.8 m |"), std::string::npos) << extract_main_text(kv).text;
}

TEST(Extract, MalformedAndPathologicalInputNeverCrash) {
  EXPECT_EQ(extract_main_text("").text, "");
  EXPECT_EQ(extract_main_text("just text, no tags").text, "just text, no tags");
  EXPECT_EQ(extract_main_text("<p>unclosed <b>bold <i>both</p><p>next").text, "unclosed bold both\nnext");
  std::string deep;
  for (int i = 0; i < 5000; ++i) deep += "<div>";
  deep += "deep text";
  std::string r = extract_main_text("<body><p>shallow text</p>" + deep + "</body>").text;
  EXPECT_NE(r.find("shallow text"), std::string::npos);
  // 200k unclosed elements: the stack-safe fallback.
  std::string deeper = "<body><script>SCRIPT_TEXT</script><p>kept text</p>";
  for (int i = 0; i < 200000; ++i) deeper += "<div>";
  r = extract_main_text(deeper).text;
  EXPECT_EQ(r, "kept text");
  std::string junk;
  aji::Rng rng(5);
  for (int i = 0; i < 20000; ++i) junk += static_cast<char>("<>/=\"' abcpdiv&;#\n"[rng.next_u64() % 19]);
  (void)extract_main_text(junk);
}

TEST(Extract, ConfigRoundTrip) {
  ExtractConfig c;
  c.include_tables = false;
  c.max_link_density = 0.3;
  nlohmann::json j = c;
  ExtractConfig back = j.get<ExtractConfig>();
  EXPECT_FALSE(back.include_tables);
  EXPECT_DOUBLE_EQ(back.max_link_density, 0.3);
  ExtractResult no_tables = extract_main_text("<table><tr><td>cell</td></tr></table><p>para</p>", back);
  EXPECT_EQ(no_tables.text, "para");
}

// libgumbo 0.10.1 leaks some strings on malformed pages even after gumbo_destroy_output
// (two inputs found by fuzz_html). extract_main_text gives gumbo an allocator that frees
// them after the parse: LeakSanitizer in the sanitizer build checks that nothing leaks.
// Here: each input does make gumbo leak (counted with the test's own allocator, so the
// inputs stay relevant), and every word extracted is a word of gumbo's own parse tree.
struct CountingHeap {
  std::map<void*, size_t> live;
  static void* allocate(void* self, size_t n) {
    void* p = std::malloc(n);
    static_cast<CountingHeap*>(self)->live[p] = n;
    return p;
  }
  static void deallocate(void* self, void* p) {
    if (!p) return;
    static_cast<CountingHeap*>(self)->live.erase(p);
    std::free(p);
  }
  ~CountingHeap() {
    for (auto& [p, n] : live) std::free(p);
  }
};

TEST(Extract, GumboLeaksOnMalformedPagesAreFreed) {
  for (const char* name : {"leak-gumbo-ignored-token", "leak-gumbo-attribute-copy"}) {
    SCOPED_TRACE(name);
    const std::string html = read_file(source_path(std::string("fuzz/corpus/html/") + name));
    CountingHeap heap;
    GumboOptions options = kGumboDefaultOptions;
    options.allocator = &CountingHeap::allocate;
    options.deallocator = &CountingHeap::deallocate;
    options.userdata = &heap;
    GumboOutput* g = gumbo_parse_with_options(&options, html.data(), html.size());
    ASSERT_NE(g, nullptr);
    std::vector<std::string> unused;
    std::string all_text;
    collect_text(g->root, false, {}, unused, all_text);
    gumbo_destroy_output(&options, g);
    EXPECT_GT(heap.live.size(), 0u) << "gumbo no longer leaks on this page";
    std::string joined;  // the tree's text without whitespace: extraction may join inline nodes
    for (char c : all_text)
      if (!std::isspace(static_cast<unsigned char>(c))) joined += c;
    ExtractConfig cfg;
    cfg.include_title = true;
    const ExtractResult r = extract_main_text(html, cfg);
    EXPECT_TRUE(is_valid_utf8(r.text));
    EXPECT_FALSE(r.text.empty());
    std::istringstream words(r.text + " " + r.title);
    for (std::string w; words >> w;) EXPECT_NE(joined.find(w), std::string::npos) << w;
  }
}

}  // namespace
}  // namespace aji::data
