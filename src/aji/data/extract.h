// HTML → main text, with gumbo (a full HTML5 parser, as browsers parse).
//
// What is kept: paragraphs, headings, list items ("- " prefix), tables (one line per row,
// cells joined by " | ", like trafilatura's text output), code blocks (verbatim), block
// quotes, definition lists. What is dropped:
//   - tags that never hold main text: script, style, noscript, template, nav, footer,
//     aside, form, button, select, textarea, iframe, svg, canvas, menu, dialog, head;
//     <header> outside an article / main;
//   - elements whose class or id names boilerplate (nav, menu, footer, sidebar, cookie,
//     breadcrumb, share, social, related, comments, advert, banner, popup, pagination...):
//     a whole class name, or its head or tail part ("navbar-top", "site-footer"), never a
//     part in the middle ("wy-nav-content" is Read the Docs' content column);
//   - hidden elements (hidden, aria-hidden="true", style display:none/visibility:hidden);
//   - link lists: containers and blocks whose text is mostly link text (menus, tag
//     clouds, "related posts"), as readability / trafilatura do with link density.
// Neither a class/id hint nor the link-list rule prunes a container that holds the page's
// main text: a main-content marker (<main>, role="main", itemprop="articleBody"), or at least
// half of the page's non-link text (>= 200 bytes). Names are guesses; the text is the page.
// Each page has a time budget (ExtractConfig::max_millis); over it, it is skipped with a reason.
// When the page has a main-content container (<main>, role="main", <article>, or a
// Sphinx-style div.body) holding a fair part of the text, only that is extracted.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include <nlohmann/json.hpp>

namespace aji::data {

struct ExtractConfig {
  bool enabled = true;
  bool include_tables = true;
  bool include_code = true;
  bool include_title = false;   // prepend <title> (trafilatura's txt output does not)
  bool list_markers = true;     // "- " before list items
  // A block (paragraph, list item, cell row) whose link text is more than this fraction
  // of its text is navigation; so is a container with >= 3 links above container_link_density.
  double max_link_density = 0.5;
  double container_link_density = 0.66;
  // Restrict to the main-content container when it holds at least this fraction of the
  // page's (non-boilerplate) text.
  double main_container_min_fraction = 0.25;
  // Documents with less extracted text (in bytes) are dropped as "extract_too_short".
  int64_t min_text_bytes = 1;
  // Per-document time budget (wall clock, checked every 1024 tree nodes): a page that takes
  // longer yields no text and skip_reason "extract_timeout". 0 = unlimited.
  int64_t max_millis = 5000;
};
void to_json(nlohmann::json& j, const ExtractConfig& c);
void from_json(const nlohmann::json& j, ExtractConfig& c);  // unknown keys throw aji::Error

struct ExtractResult {
  std::string text;   // lines of main text joined by "\n"
  std::string title;  // <title>, whitespace-collapsed
  int blocks_kept = 0;
  int blocks_dropped = 0;  // dropped for link density
  // Non-empty when the page was skipped rather than extracted ("extract_timeout": over
  // ExtractConfig::max_millis); text is then empty.
  std::string skip_reason;
};

// html must be UTF-8 (the readers decode it). Never throws on malformed HTML: the HTML5
// parsing algorithm accepts anything.
ExtractResult extract_main_text(std::string_view html, const ExtractConfig& config = {});


// Site chrome that survives extraction (a "Skip to content" line, a newsletter blurb, the
// copyright line, a theme's "Built with ..." line) repeats on many pages of one host. Two
// passes: add() every extracted page of a run, then filter() each page; a line is dropped when
// it occurs on at least min_pages pages of its host and on at least min_fraction of them.
// Memory: one 64-bit hash and a counter per distinct (host, line). Lines are compared after
// trimming; a page counts each distinct line once. Hosts with fewer than min_pages pages are
// left alone. Designed for `aji data run` as a pass between extraction and the filters.
struct RepeatedLineConfig {
  int min_pages = 5;
  double min_fraction = 0.5;
  size_t max_line_bytes = 400;  // longer lines are never treated as chrome
};

class RepeatedLineFilter {
 public:
  explicit RepeatedLineFilter(RepeatedLineConfig config = {}) : cfg_(config) {}
  // host: e.g. url_host(doc.url) (src/aji/data/url_filter.h); "" is a host like any other.
  void add(std::string_view host, std::string_view text);
  // text without the repeated lines; *dropped (if given) = number of lines removed.
  std::string filter(std::string_view host, std::string_view text, int* dropped = nullptr) const;
  int64_t pages(std::string_view host) const;

 private:
  RepeatedLineConfig cfg_;
  std::unordered_map<uint64_t, uint32_t> line_pages_;  // hash(host, line) -> pages with it
  std::unordered_map<std::string, int64_t> host_pages_;
};

}  // namespace aji::data
