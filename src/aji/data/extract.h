// HTML → main text, with gumbo (a full HTML5 parser, as browsers parse).
//
// What is kept: paragraphs, headings, list items ("- " prefix), tables (one line per row,
// cells joined by " | ", like trafilatura's text output), code blocks (verbatim), block
// quotes, definition lists. What is dropped:
//   - tags that never hold main text: script, style, noscript, template, nav, footer,
//     aside, form, button, select, textarea, iframe, svg, canvas, menu, dialog, head;
//     <header> outside an article / main;
//   - elements whose class or id names boilerplate (nav, menu, footer, sidebar, cookie,
//     breadcrumb, share, social, related, comments, advert, banner, popup, pagination...);
//   - hidden elements (hidden, aria-hidden="true", style display:none/visibility:hidden);
//   - link lists: containers and blocks whose text is mostly link text (menus, tag
//     clouds, "related posts"), as readability / trafilatura do with link density.
// When the page has a main-content container (<main>, role="main", <article>, or a
// Sphinx-style div.body) holding a fair part of the text, only that is extracted.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

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
};
void to_json(nlohmann::json& j, const ExtractConfig& c);
void from_json(const nlohmann::json& j, ExtractConfig& c);  // unknown keys throw aji::Error

struct ExtractResult {
  std::string text;   // lines of main text joined by "\n"
  std::string title;  // <title>, whitespace-collapsed
  int blocks_kept = 0;
  int blocks_dropped = 0;  // dropped for link density
};

// html must be UTF-8 (the readers decode it). Never throws on malformed HTML: the HTML5
// parsing algorithm accepts anything.
ExtractResult extract_main_text(std::string_view html, const ExtractConfig& config = {});

}  // namespace aji::data
