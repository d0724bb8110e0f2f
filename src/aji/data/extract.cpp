#include "aji/data/extract.h"

#include <gumbo.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "aji/base/error.h"

// clang spells "built with AddressSanitizer" as a feature test, gcc as __SANITIZE_ADDRESS__.
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AJI_HAS_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(AJI_HAS_ASAN)
#include <sanitizer/asan_interface.h>
#endif

namespace aji::data {

void to_json(nlohmann::json& j, const ExtractConfig& c) {
  j = nlohmann::json{{"enabled", c.enabled},
                     {"include_tables", c.include_tables},
                     {"include_code", c.include_code},
                     {"include_title", c.include_title},
                     {"list_markers", c.list_markers},
                     {"max_link_density", c.max_link_density},
                     {"container_link_density", c.container_link_density},
                     {"main_container_min_fraction", c.main_container_min_fraction},
                     {"min_text_bytes", c.min_text_bytes},
                     {"max_millis", c.max_millis}};
}

void from_json(const nlohmann::json& j, ExtractConfig& c) {
  nlohmann::json known;
  to_json(known, c);
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!known.contains(it.key()))
      throw Error("unknown key '" + it.key() + "' in extract").fix("see `aji data config` for the valid keys");
  c.enabled = j.value("enabled", c.enabled);
  c.include_tables = j.value("include_tables", c.include_tables);
  c.include_code = j.value("include_code", c.include_code);
  c.include_title = j.value("include_title", c.include_title);
  c.list_markers = j.value("list_markers", c.list_markers);
  c.max_link_density = j.value("max_link_density", c.max_link_density);
  c.container_link_density = j.value("container_link_density", c.container_link_density);
  c.main_container_min_fraction = j.value("main_container_min_fraction", c.main_container_min_fraction);
  c.min_text_bytes = j.value("min_text_bytes", c.min_text_bytes);
  c.max_millis = j.value("max_millis", c.max_millis);
}

namespace {

struct NodeStats {
  uint32_t text = 0;   // non-space bytes of visible text
  uint32_t link = 0;   // of which inside <a>
  uint32_t links = 0;  // number of <a href> elements
};

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string lower_ascii(const char* s) {
  std::string out = s ? s : "";
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

const char* attr(const GumboElement& el, const char* name) {
  const GumboAttribute* a = gumbo_get_attribute(&el.attributes, name);
  return a ? a->value : nullptr;
}

// Tags whose subtree never holds main text.
bool is_skipped_tag(GumboTag t) {
  switch (t) {
    case GUMBO_TAG_SCRIPT: case GUMBO_TAG_STYLE: case GUMBO_TAG_NOSCRIPT: case GUMBO_TAG_TEMPLATE:
    case GUMBO_TAG_NAV: case GUMBO_TAG_FOOTER: case GUMBO_TAG_ASIDE: case GUMBO_TAG_FORM:
    case GUMBO_TAG_BUTTON: case GUMBO_TAG_SELECT: case GUMBO_TAG_OPTION: case GUMBO_TAG_TEXTAREA:
    case GUMBO_TAG_INPUT: case GUMBO_TAG_IFRAME: case GUMBO_TAG_SVG: case GUMBO_TAG_CANVAS:
    case GUMBO_TAG_OBJECT: case GUMBO_TAG_EMBED: case GUMBO_TAG_HEAD: case GUMBO_TAG_MENU:
    case GUMBO_TAG_MAP: case GUMBO_TAG_AUDIO: case GUMBO_TAG_VIDEO:
    case GUMBO_TAG_MATH: case GUMBO_TAG_FRAMESET: case GUMBO_TAG_LABEL: case GUMBO_TAG_DATALIST:
      return true;
    default:
      return false;
  }
}

bool is_block_tag(GumboTag t) {
  switch (t) {
    case GUMBO_TAG_P: case GUMBO_TAG_DIV: case GUMBO_TAG_SECTION: case GUMBO_TAG_ARTICLE:
    case GUMBO_TAG_MAIN: case GUMBO_TAG_H1: case GUMBO_TAG_H2: case GUMBO_TAG_H3: case GUMBO_TAG_H4:
    case GUMBO_TAG_H5: case GUMBO_TAG_H6: case GUMBO_TAG_LI: case GUMBO_TAG_UL: case GUMBO_TAG_OL:
    case GUMBO_TAG_DL: case GUMBO_TAG_DT: case GUMBO_TAG_DD: case GUMBO_TAG_BLOCKQUOTE:
    case GUMBO_TAG_PRE: case GUMBO_TAG_TABLE: case GUMBO_TAG_TR: case GUMBO_TAG_HR:
    case GUMBO_TAG_FIGURE: case GUMBO_TAG_FIGCAPTION: case GUMBO_TAG_ADDRESS: case GUMBO_TAG_DETAILS:
    case GUMBO_TAG_SUMMARY: case GUMBO_TAG_CENTER: case GUMBO_TAG_HEADER: case GUMBO_TAG_BODY:
    case GUMBO_TAG_CAPTION: case GUMBO_TAG_THEAD: case GUMBO_TAG_TBODY: case GUMBO_TAG_TFOOT:
    case GUMBO_TAG_HTML:
      return true;
    default:
      return false;
  }
}

// Class / id tokens that name boilerplate. Whole tokens, or token prefixes for the
// compound names sites use ("navbar", "navheader", "footer-links", "sidebar-left").
bool is_boilerplate_token(std::string_view tok) {
  static const std::unordered_set<std::string_view> kExact = {
      "nav", "menu", "footer", "sidebar", "cookie", "cookies", "breadcrumb", "breadcrumbs", "share",
      "sharing", "social", "related", "comments", "comment", "advert", "advertisement", "ads", "ad",
      "banner", "popup", "modal", "newsletter", "subscribe", "widget", "widgets", "masthead", "skip",
      "pagination", "pager", "toolbar", "topbar", "toc", "sphinxsidebar", "copyright", "disclaimer",
      "tags", "tagcloud", "login", "signup", "search", "searchbox", "consent", "gdpr", "promo",
      "sponsored", "outbrain", "taboola", "footnav", "topnav", "sitemap", "header-nav", "site-header",
      "navigation", "relatedposts", "printfooter", "catlinks", "mw-navigation", "jump", "headerlink"};
  if (kExact.count(tok)) return true;
  static const char* const kPrefixes[] = {"nav", "menu", "footer", "sidebar", "breadcrumb", "cookie",
                                          "advert", "social", "share", "popup", "pagination", "skiplink"};
  for (const char* p : kPrefixes) {
    size_t n = std::strlen(p);
    if (tok.size() > n && tok.substr(0, n) == p) return true;
  }
  return false;
}

// One class name or id ("wy-nav-content", "site-footer", "navbar") names boilerplate when
// the whole name is a boilerplate word, or its head or tail part is: "navbar-header",
// "footer-links", "main-nav", "post-comments". A part in the middle does not count: theme
// prefixes and content wrappers ("wy-nav-content", "wy-nav-content-wrap" of the Read the
// Docs theme) carry words like "nav" that say where the content sits, not that it is chrome.
bool is_boilerplate_name(std::string_view name) {
  if (name.empty()) return false;
  if (is_boilerplate_token(name)) return true;
  size_t head_end = 0;
  while (head_end < name.size() && std::isalnum(static_cast<unsigned char>(name[head_end]))) ++head_end;
  if (head_end == name.size()) return false;  // a single part, already checked whole
  size_t tail_begin = name.size();
  while (tail_begin > 0 && std::isalnum(static_cast<unsigned char>(name[tail_begin - 1]))) --tail_begin;
  std::string_view head = name.substr(0, head_end), tail = name.substr(tail_begin);
  return (!head.empty() && is_boilerplate_token(head)) || (!tail.empty() && is_boilerplate_token(tail));
}

bool has_boilerplate_hint(const GumboElement& el) {
  for (const char* name : {"class", "id"}) {
    const char* v = attr(el, name);
    if (!v) continue;
    std::string l = lower_ascii(v);
    size_t i = 0;
    while (i < l.size()) {  // class names are separated by whitespace
      while (i < l.size() && is_space(l[i])) ++i;
      size_t j = i;
      while (j < l.size() && !is_space(l[j])) ++j;
      std::string_view one = std::string_view(l).substr(i, j - i);
      // Ids of four or more parts are slugs of a heading ("how-do-i-share-global-variables",
      // "related-work-and-further-reading", as Sphinx and Markdown generators write them).
      if (j > i && !(name[0] == 'i' && std::count(one.begin(), one.end(), '-') + std::count(one.begin(), one.end(), '_') >= 3) &&
          is_boilerplate_name(one))
        return true;
      i = j;
    }
  }
  const char* role = attr(el, "role");
  if (role) {
    std::string r = lower_ascii(role);
    if (r == "navigation" || r == "banner" || r == "contentinfo" || r == "complementary" || r == "search" ||
        r == "menu" || r == "menubar" || r == "dialog" || r == "alert")
      return true;
  }
  return false;
}

// An element that marks the page's main content: <main>, role="main", itemprop="articleBody"
// / "mainContentOfPage" (schema.org).
bool is_main_marker(const GumboElement& el) {
  if (el.tag == GUMBO_TAG_MAIN) return true;
  const char* role = attr(el, "role");
  if (role && lower_ascii(role) == "main") return true;
  const char* ip = attr(el, "itemprop");
  if (ip) {
    std::string l = lower_ascii(ip);
    if (l.find("articlebody") != std::string::npos || l.find("maincontentofpage") != std::string::npos) return true;
  }
  return false;
}

// Sphinx / Docutils permalink anchors ("¶") next to headings.
bool is_headerlink(const GumboElement& el) {
  const char* c = attr(el, "class");
  return c && std::strstr(c, "headerlink") != nullptr;
}

bool is_hidden(const GumboElement& el) {
  if (attr(el, "hidden")) return true;
  const char* aria = attr(el, "aria-hidden");
  if (aria && lower_ascii(aria) == "true") return true;
  const char* style = attr(el, "style");
  if (style) {
    std::string s = lower_ascii(style);
    s.erase(std::remove_if(s.begin(), s.end(), [](char c) { return is_space(c); }), s.end());
    if (s.find("display:none") != std::string::npos || s.find("visibility:hidden") != std::string::npos) return true;
  }
  return false;
}

uint32_t count_nonspace(const char* s) {
  uint32_t n = 0;
  for (; *s; ++s) n += !is_space(*s);
  return n;
}

constexpr int kMaxDepth = 512;

struct Extractor {
  const ExtractConfig& cfg;
  bool inside_article = false;
  std::unordered_map<const GumboNode*, NodeStats> stats;
  std::unordered_set<const GumboNode*> pruned;  // boilerplate subtrees

  // The line being built, with its link bytes; lines are the output.
  std::vector<std::string> lines;
  std::string cur;
  uint32_t cur_text = 0, cur_link = 0;
  int link_depth = 0;
  std::string pending_prefix;
  int blocks_kept = 0, blocks_dropped = 0;

  bool debug = std::getenv("AJI_EXTRACT_DEBUG") != nullptr;  // prints what is pruned and why
  explicit Extractor(const ExtractConfig& c) : cfg(c) {}

  // Pass 0: non-link visible text per element before any boilerplate rule, and which
  // elements hold a main-content marker. A container that holds the page's main text is
  // never pruned by a class/id hint or as a link list: the hints are guesses from names
  // ("wy-grid-for-nav" wraps a whole Read the Docs page, Blogger's post is "widget Blog"),
  // the text distribution is what the page is.
  struct RawText {
    uint32_t all = 0, nonlink = 0;
  };
  std::unordered_map<const GumboNode*, RawText> raw;
  std::unordered_set<const GumboNode*> holds_marker;
  RawText page_raw;

  RawText prescan(const GumboNode* node, bool in_link, int depth = 0) {
    RawText r;
    if (!tick() || depth > kMaxDepth) return r;
    if (node->type == GUMBO_NODE_TEXT || node->type == GUMBO_NODE_CDATA) {
      r.all = count_nonspace(node->v.text.text);
      r.nonlink = in_link ? 0 : r.all;
      return r;
    }
    if (node->type != GUMBO_NODE_ELEMENT) return r;
    const GumboElement& el = node->v.element;
    if (el.tag != GUMBO_TAG_HTML && el.tag != GUMBO_TAG_BODY && (is_skipped_tag(el.tag) || is_hidden(el))) return r;
    bool link = in_link || (el.tag == GUMBO_TAG_A && attr(el, "href"));
    bool marker = is_main_marker(el);
    for (unsigned i = 0; i < el.children.length; ++i) {
      const GumboNode* c = static_cast<const GumboNode*>(el.children.data[i]);
      RawText cr = prescan(c, link, depth + 1);
      r.all += cr.all;
      r.nonlink += cr.nonlink;
      if (holds_marker.count(c)) marker = true;
    }
    if (r.all > 0) raw[node] = r;
    if (marker) holds_marker.insert(node);
    return r;
  }

  // Holds a main-content marker, or at least half of the page's visible text with enough
  // plain (non-link) prose in it: a footer that is half of a table-of-contents page's plain
  // text is not the main text, the wrapper of the whole page is.
  static constexpr uint32_t kMinMainText = 200;
  bool holds_main_text(const GumboNode* node) const {
    if (holds_marker.count(node)) return true;
    auto it = raw.find(node);
    return it != raw.end() && it->second.nonlink >= kMinMainText && 2 * uint64_t(it->second.all) >= page_raw.all &&
           2 * uint64_t(it->second.nonlink) >= page_raw.nonlink;
  }

  // Work budget: a page that would take longer than cfg.max_millis stops being walked
  // (result.skip_reason = "extract_timeout"). The clock is read every 1024 nodes.
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  uint64_t work = 0;
  bool timed_out = false;
  bool tick() {
    if (timed_out) return false;
    if ((++work & 1023) == 0 && std::chrono::steady_clock::now() > deadline) timed_out = true;
    return !timed_out;
  }

  // Pass 1: visible-text statistics per element; marks boilerplate subtrees as pruned.
  NodeStats measure(const GumboNode* node, bool in_link, bool in_article, int depth = 0) {
    NodeStats s;
    if (!tick()) return s;
    if (depth > kMaxDepth) {  // pathological nesting: ignore the subtree, keep the stack safe
      pruned.insert(node);
      return s;
    }
    if (node->type == GUMBO_NODE_TEXT || node->type == GUMBO_NODE_CDATA) {
      s.text = count_nonspace(node->v.text.text);
      if (in_link) s.link = s.text;
      return s;
    }
    if (node->type != GUMBO_NODE_ELEMENT) return s;
    const GumboElement& el = node->v.element;
    GumboTag tag = el.tag;
    bool article = in_article || tag == GUMBO_TAG_ARTICLE || tag == GUMBO_TAG_MAIN;
    bool hinted = tag != GUMBO_TAG_HTML && tag != GUMBO_TAG_BODY && tag != GUMBO_TAG_MAIN &&
                  tag != GUMBO_TAG_ARTICLE && has_boilerplate_hint(el) &&
                  (!is_inline_hint_exempt(tag) || is_headerlink(el));
    if (hinted && holds_main_text(node)) {
      if (debug)
        std::fprintf(stderr, "[extract] keep hinted <%s class=%s id=%s>: holds the main text\n",
                     gumbo_normalized_tagname(tag), attr(el, "class") ? attr(el, "class") : "",
                     attr(el, "id") ? attr(el, "id") : "");
      hinted = false;
    }
    if (tag != GUMBO_TAG_HTML && tag != GUMBO_TAG_BODY && (is_skipped_tag(tag) || is_hidden(el) || hinted)) {
      if (debug && !is_skipped_tag(tag))
        std::fprintf(stderr, "[extract] prune <%s class=%s id=%s>\n", gumbo_normalized_tagname(tag),
                     attr(el, "class") ? attr(el, "class") : "", attr(el, "id") ? attr(el, "id") : "");
      pruned.insert(node);
      return s;
    }
    // Only <a href> is a link: XHTML pages write anchors as <a id="x"/>, which HTML5
    // parsing leaves open around the following text.
    bool is_link = tag == GUMBO_TAG_A && attr(el, "href");
    bool link = in_link || is_link;
    if (is_link) s.links = 1;
    for (unsigned i = 0; i < el.children.length; ++i) {
      NodeStats c = measure(static_cast<const GumboNode*>(el.children.data[i]), link, article, depth + 1);
      s.text += c.text;
      s.link += c.link;
      s.links += c.links;
    }
    // Link lists (menus, tag clouds): prune the container.
    if ((tag == GUMBO_TAG_UL || tag == GUMBO_TAG_OL || tag == GUMBO_TAG_DIV || tag == GUMBO_TAG_TABLE ||
         tag == GUMBO_TAG_DL || tag == GUMBO_TAG_SECTION) &&
        s.links >= 3 && s.text > 0 && s.link > cfg.container_link_density * s.text && !holds_marker.count(node)) {
      if (debug)
        std::fprintf(stderr, "[extract] link list <%s class=%s> text=%u link=%u\n", gumbo_normalized_tagname(tag),
                     attr(el, "class") ? attr(el, "class") : "", s.text, s.link);
      pruned.insert(node);
      return NodeStats{};
    }
    stats[node] = s;
    return s;
  }

  // Inline elements carry class names like "menuselection" (Sphinx) that are content.
  static bool is_inline_hint_exempt(GumboTag t) {
    switch (t) {
      case GUMBO_TAG_SPAN: case GUMBO_TAG_A: case GUMBO_TAG_CODE: case GUMBO_TAG_EM: case GUMBO_TAG_STRONG:
      case GUMBO_TAG_B: case GUMBO_TAG_I: case GUMBO_TAG_KBD: case GUMBO_TAG_SAMP: case GUMBO_TAG_VAR:
      case GUMBO_TAG_TT: case GUMBO_TAG_SUB: case GUMBO_TAG_SUP: case GUMBO_TAG_ABBR:
        return true;
      default:
        return false;
    }
  }

  void append_text(const char* s) {
    for (; *s; ++s) {
      char c = *s;
      // U+00A0 (&nbsp;) is a space here, as trafilatura's whitespace normalisation makes it:
      // a paragraph of only &nbsp; (an editor's blank line) is then no line at all.
      const bool nbsp = static_cast<unsigned char>(c) == 0xC2 && static_cast<unsigned char>(s[1]) == 0xA0;
      if (nbsp) ++s;
      if (nbsp || is_space(c)) {
        if (!cur.empty() && cur.back() != ' ') cur += ' ';
      } else {
        if (cur.empty() && !pending_prefix.empty()) {
          cur = pending_prefix;
          pending_prefix.clear();
        }
        cur += c;
        ++cur_text;
        if (link_depth > 0) ++cur_link;
      }
    }
  }

  void flush() {
    while (!cur.empty() && cur.back() == ' ') cur.pop_back();
    size_t start = 0;
    while (start < cur.size() && cur[start] == ' ') ++start;
    if (cur_text > 0 && start < cur.size()) {
      // A short line of only link text inside a block is navigation ("Next", "Home").
      if (cur_link > cfg.max_link_density * cur_text) {
        ++blocks_dropped;
      } else {
        lines.emplace_back(cur.substr(start));
        ++blocks_kept;
      }
    }
    cur.clear();
    cur_text = cur_link = 0;
  }

  // Text of a subtree as one inline string (table cells).
  void collect_inline(const GumboNode* node, std::string& out, uint32_t& text, uint32_t& link, bool in_link) {
    if (node->type == GUMBO_NODE_TEXT || node->type == GUMBO_NODE_CDATA || node->type == GUMBO_NODE_WHITESPACE) {
      for (const char* s = node->v.text.text; *s; ++s) {
        if (is_space(*s)) {
          if (!out.empty() && out.back() != ' ') out += ' ';
        } else {
          out += *s;
          ++text;
          if (in_link) ++link;
        }
      }
      return;
    }
    if (node->type != GUMBO_NODE_ELEMENT || pruned.count(node)) return;
    const GumboElement& el = node->v.element;
    bool l = in_link || (el.tag == GUMBO_TAG_A && attr(el, "href"));
    for (unsigned i = 0; i < el.children.length; ++i) {
      if (el.tag == GUMBO_TAG_BR || is_block_tag(el.tag)) {
        if (!out.empty() && out.back() != ' ') out += ' ';
      }
      collect_inline(static_cast<const GumboNode*>(el.children.data[i]), out, text, link, l);
    }
  }

  void raw_text(const GumboNode* node, std::string& out) {
    if (node->type == GUMBO_NODE_TEXT || node->type == GUMBO_NODE_CDATA || node->type == GUMBO_NODE_WHITESPACE) {
      out += node->v.text.text;
      return;
    }
    if (node->type != GUMBO_NODE_ELEMENT || pruned.count(node)) return;
    const GumboElement& el = node->v.element;
    if (el.tag == GUMBO_TAG_BR) out += '\n';
    for (unsigned i = 0; i < el.children.length; ++i) raw_text(static_cast<const GumboNode*>(el.children.data[i]), out);
  }

  // The rows of a table in document order, nested sections (thead/tbody) included, not the
  // rows of tables nested in its cells.
  std::vector<const GumboNode*> table_rows(const GumboNode* table) const {
    std::vector<const GumboNode*> rows;
    auto walk = [&](auto&& self, const GumboNode* n) -> void {
      if (n->type != GUMBO_NODE_ELEMENT || pruned.count(n)) return;
      const GumboElement& el = n->v.element;
      if (el.tag == GUMBO_TAG_TR) {
        rows.push_back(n);
        return;
      }
      if (n != table && el.tag == GUMBO_TAG_TABLE) return;
      for (unsigned i = 0; i < el.children.length; ++i) self(self, static_cast<const GumboNode*>(el.children.data[i]));
    };
    walk(walk, table);
    return rows;
  }

  // The cells (td, th) of a row that are not pruned, in order.
  std::vector<const GumboNode*> row_cells(const GumboNode* row) const {
    std::vector<const GumboNode*> cells;
    const GumboElement& el = row->v.element;
    for (unsigned i = 0; i < el.children.length; ++i) {
      const GumboNode* cell = static_cast<const GumboNode*>(el.children.data[i]);
      if (cell->type != GUMBO_NODE_ELEMENT || pruned.count(cell)) continue;
      const GumboTag t = cell->v.element.tag;
      if (t == GUMBO_TAG_TD || t == GUMBO_TAG_TH) cells.push_back(cell);
    }
    return cells;
  }

  // A layout table (a page laid out in table cells, as older CMSs, forums and Naver's
  // SmartEditor 2 blogs do): some cell holds a nested table with text, or prose in blocks -
  // two or more paragraphs/divs/headings/lists, or lines split by two or more <br> - of at
  // least kMinLayoutCellText visible characters. Such a table is not data: its cells are
  // emitted as blocks, each paragraph its own line, instead of one "a | b" line per row
  // that would run a whole post together.
  static constexpr uint32_t kMinLayoutCellText = 200;
  bool is_layout_cell(const GumboNode* cell) const {
    auto it = raw.find(cell);
    const uint32_t text = it == raw.end() ? 0 : it->second.all;
    if (text == 0) return false;
    int blocks = 0, brs = 0;
    bool nested_table = false;
    auto walk = [&](auto&& self, const GumboNode* n, int depth) -> void {
      if (nested_table || depth > kMaxDepth || n->type != GUMBO_NODE_ELEMENT || pruned.count(n)) return;
      const GumboElement& el = n->v.element;
      if (n != cell) {
        if (el.tag == GUMBO_TAG_BR) ++brs;
        if (el.tag == GUMBO_TAG_TABLE) {
          nested_table = raw.count(n) > 0;
          return;
        }
        if (is_block_tag(el.tag) && el.tag != GUMBO_TAG_LI && el.tag != GUMBO_TAG_TR && raw.count(n)) ++blocks;
      }
      for (unsigned i = 0; i < el.children.length; ++i)
        self(self, static_cast<const GumboNode*>(el.children.data[i]), depth + 1);
    };
    walk(walk, cell, 0);
    return nested_table || ((blocks >= 2 || brs >= 2) && text >= kMinLayoutCellText);
  }
  bool is_layout_table(const GumboNode* table) const {
    for (const GumboNode* row : table_rows(table))
      for (const GumboNode* cell : row_cells(row))
        if (is_layout_cell(cell)) return true;
    return false;
  }
  // Each cell of a layout table as blocks (nested tables are judged on their own).
  void emit_layout_table(const GumboNode* table) {
    for (const GumboNode* row : table_rows(table))
      for (const GumboNode* cell : row_cells(row)) {
        flush();
        const GumboElement& c = cell->v.element;
        for (unsigned k = 0; k < c.children.length; ++k) emit(static_cast<const GumboNode*>(c.children.data[k]));
        flush();
      }
  }

  void emit_table(const GumboNode* table) {
    // Nested tables are flattened into their cell.
    for (const GumboNode* row : table_rows(table)) {
      std::string line;
      uint32_t text = 0, link = 0;
      int cells = 0;
      for (const GumboNode* cell : row_cells(row)) {
        std::string c;
        collect_inline(cell, c, text, link, false);
        while (!c.empty() && c.back() == ' ') c.pop_back();
        size_t s = 0;
        while (s < c.size() && c[s] == ' ') ++s;
        line += c.substr(s);
        line += " | ";
        ++cells;
      }
      while (!line.empty() && line.back() == ' ') line.pop_back();
      if (text == 0) continue;
      if (link > cfg.max_link_density * text) {
        ++blocks_dropped;
        continue;
      }
      if (cells == 1 && line.size() >= 2) line.resize(line.size() - 2);  // single cell: no "|"
      lines.push_back(line);
      ++blocks_kept;
    }
  }

  void emit(const GumboNode* node) {
    if (!tick()) return;
    if (node->type == GUMBO_NODE_TEXT || node->type == GUMBO_NODE_CDATA) {
      append_text(node->v.text.text);
      return;
    }
    if (node->type == GUMBO_NODE_WHITESPACE) {
      if (!cur.empty() && cur.back() != ' ') cur += ' ';
      return;
    }
    if (node->type != GUMBO_NODE_ELEMENT || pruned.count(node)) return;
    const GumboElement& el = node->v.element;
    GumboTag tag = el.tag;
    if (tag == GUMBO_TAG_BR) {
      flush();
      return;
    }
    if (tag == GUMBO_TAG_TABLE) {
      flush();
      if (is_layout_table(node))
        emit_layout_table(node);  // the page's own text, whether or not data tables are kept
      else if (cfg.include_tables)
        emit_table(node);
      return;
    }
    if (tag == GUMBO_TAG_PRE) {
      flush();
      if (!cfg.include_code) return;
      std::string raw;
      raw_text(node, raw);
      // Keep the code verbatim, line by line; drop leading/trailing blank lines.
      size_t p = 0;
      std::vector<std::string> code;
      while (p <= raw.size()) {
        size_t e = raw.find('\n', p);
        if (e == std::string::npos) e = raw.size();
        std::string line = raw.substr(p, e - p);
        while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\r')) line.pop_back();
        code.push_back(std::move(line));
        p = e + 1;
      }
      while (!code.empty() && code.back().empty()) code.pop_back();
      size_t first = 0;
      while (first < code.size() && code[first].empty()) ++first;
      if (first < code.size()) {
        for (size_t i = first; i < code.size(); ++i) lines.push_back(std::move(code[i]));
        ++blocks_kept;
      }
      return;
    }
    bool block = is_block_tag(tag);
    if (block) flush();
    if (tag == GUMBO_TAG_LI && cfg.list_markers) pending_prefix = "- ";
    bool is_link = tag == GUMBO_TAG_A && attr(el, "href");
    if (is_link) ++link_depth;
    for (unsigned i = 0; i < el.children.length; ++i) emit(static_cast<const GumboNode*>(el.children.data[i]));
    if (is_link) --link_depth;
    if (block) {
      flush();
      if (tag == GUMBO_TAG_LI) pending_prefix.clear();
    }
  }

  // The main-content container, if the page has one that holds enough of the text.
  const GumboNode* find_main(const GumboNode* body, uint32_t body_text) {
    const GumboNode* best = nullptr;
    uint32_t best_text = 0;
    std::vector<const GumboNode*> stack = {body};
    while (!stack.empty()) {
      const GumboNode* n = stack.back();
      stack.pop_back();
      if (n->type != GUMBO_NODE_ELEMENT || pruned.count(n)) continue;
      const GumboElement& el = n->v.element;
      bool candidate = false;
      if (n != body) {
        if (el.tag == GUMBO_TAG_MAIN || el.tag == GUMBO_TAG_ARTICLE) candidate = true;
        const char* role = attr(el, "role");
        if (role && lower_ascii(role) == "main") candidate = true;
        const char* id = attr(el, "id");
        if (id) {
          std::string l = lower_ascii(id);
          if (l == "content" || l == "main-content" || l == "maincontent" || l == "main" || l == "article" ||
              l == "bodycontent" || l == "mw-content-text")
            candidate = true;
        }
      }
      if (candidate) {
        auto it = stats.find(n);
        uint32_t t = it == stats.end() ? 0 : it->second.text;
        if (t > best_text) {
          best = n;
          best_text = t;
        }
      }
      for (unsigned i = 0; i < el.children.length; ++i) stack.push_back(static_cast<const GumboNode*>(el.children.data[i]));
    }
    if (best && best_text >= cfg.main_container_min_fraction * body_text) return best;
    return nullptr;
  }
};

const GumboNode* find_tag(const GumboNode* node, GumboTag tag) {
  if (node->type != GUMBO_NODE_ELEMENT) return nullptr;
  if (node->v.element.tag == tag) return node;
  const GumboVector& ch = node->v.element.children;
  for (unsigned i = 0; i < ch.length; ++i)
    if (const GumboNode* f = find_tag(static_cast<const GumboNode*>(ch.data[i]), tag)) return f;
  return nullptr;
}

// Pages with tens of thousands of unclosed elements would make gumbo (whose tree code is
// recursive) overflow the stack; they are never real content, so a plain tag stripper
// is enough for them.
bool pathologically_nested(std::string_view html) {
  int64_t opens = 0, closes = 0;
  for (size_t i = 0; i + 1 < html.size(); ++i) {
    if (html[i] != '<') continue;
    if (html[i + 1] == '/') ++closes;
    else if (std::isalpha(static_cast<unsigned char>(html[i + 1]))) ++opens;
  }
  return opens - closes > 20000;
}

std::string strip_tags(std::string_view html) {
  std::string out;
  size_t i = 0;
  while (i < html.size()) {
    if (html[i] == '<') {
      size_t e = html.find('>', i);
      if (e == std::string_view::npos) break;
      std::string tag = lower_ascii(std::string(html.substr(i + 1, std::min<size_t>(e - i - 1, 10))).c_str());
      for (const char* skip : {"script", "style"}) {
        if (tag.rfind(skip, 0) == 0) {
          size_t close = html.find(std::string("</") + skip, e);
          e = close == std::string_view::npos ? html.size() - 1 : html.find('>', close);
          if (e == std::string_view::npos) e = html.size() - 1;
        }
      }
      if (!out.empty() && out.back() != ' ') out += ' ';
      i = e + 1;
      continue;
    }
    char c = html[i++];
    if (is_space(c)) {
      if (!out.empty() && out.back() != ' ') out += ' ';
    } else {
      out += c;
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  if (!out.empty() && out.front() == ' ') out.erase(0, 1);
  return out;
}

// Every block libgumbo allocates for one parse, in an arena freed together when the parse is
// done. libgumbo 0.10.1 (Debian's) leaks some strings on malformed pages (names of ignored
// tokens from gumbo_string_buffer_to_string, attribute copies from gumbo_copy_stringz),
// even after gumbo_destroy_output: tens to hundreds of bytes per page, which a long
// `aji data run` would accumulate. Found by fuzz_html (fuzz/corpus/html/leak-gumbo-*).
// gumbo makes one small allocation per node, attribute, string and vector growth: a bump
// allocator in 64 KiB chunks replaces a malloc + free for each (a quarter of the extraction
// time natively, more under AddressSanitizer, whose allocator is slower). A free of the
// newest block gives its bytes back (gumbo's token buffers come and go that way); other frees
// wait for the end of the parse, so the arena holds the tree plus the garbage of one parse,
// linear in the page. Under AddressSanitizer the arena's unused and freed bytes are poisoned,
// and blocks are 16 bytes apart, so reads past a gumbo block or after its free still fail.
// The allocator itself never throws (a failed chunk allocation returns null to gumbo).
class GumboHeap {
 public:
  GumboHeap() = default;
  GumboHeap(const GumboHeap&) = delete;
  GumboHeap& operator=(const GumboHeap&) = delete;
  ~GumboHeap() {
    while (chunks_) {
      Chunk* next = chunks_->next;
      unpoison(chunks_, sizeof(Chunk) + chunks_->size);
      std::free(chunks_);
      chunks_ = next;
    }
  }
  void use_in(GumboOptions& options) {
    options.allocator = &GumboHeap::allocate;
    options.deallocator = &GumboHeap::deallocate;
    options.userdata = this;
  }

 private:
  static constexpr size_t kAlign = alignof(std::max_align_t);
  static constexpr size_t kChunk = 64 * 1024;
  static constexpr size_t kGap = 16;  // between blocks: an AddressSanitizer redzone
  struct alignas(kAlign) Chunk {
    Chunk* next;
    size_t size;  // usable bytes after the header
  };
  static size_t round_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

  static void* allocate(void* self, size_t n) { return static_cast<GumboHeap*>(self)->alloc(n); }
  static void deallocate(void* self, void* p) { static_cast<GumboHeap*>(self)->free_block(p); }

  void* alloc(size_t n) {
    size_t need = round_up(n == 0 ? 1 : n) + kGap;
    if (need > size_t(end_ - top_)) {
      size_t size = std::max(kChunk, need);
      auto* c = static_cast<Chunk*>(std::malloc(sizeof(Chunk) + size));
      if (!c) return nullptr;
      c->next = chunks_;
      c->size = size;
      chunks_ = c;
      top_ = reinterpret_cast<char*>(c + 1);
      end_ = top_ + size;
      poison(top_, size);
    }
    char* p = top_;
    top_ += need;
    last_ = p;
    unpoison(p, n);
    return p;
  }

  void free_block(void* p) {
    if (!p) return;
    if (p == last_) {  // the newest block: its bytes are reused
      poison(last_, size_t(top_ - last_));
      top_ = last_;
      last_ = nullptr;
      return;
    }
    // Older blocks stay until the parse is done; their size is not recorded, so they stay
    // readable under AddressSanitizer only up to the next block's redzone.
  }

  static void poison(const void* p, size_t n) {
#if defined(__SANITIZE_ADDRESS__) || defined(AJI_HAS_ASAN)
    // gcc 12 takes the const volatile void* parameter for a read of the (fresh, never
    // written) block and warns -Wmaybe-uninitialized; the call only marks the range.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
    __asan_poison_memory_region(p, n);
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#else
    (void)p, (void)n;
#endif
  }
  static void unpoison(const void* p, size_t n) {
#if defined(__SANITIZE_ADDRESS__) || defined(AJI_HAS_ASAN)
    __asan_unpoison_memory_region(p, n);
#else
    (void)p, (void)n;
#endif
  }

  Chunk* chunks_ = nullptr;
  char* top_ = nullptr;
  char* end_ = nullptr;
  char* last_ = nullptr;
};

}  // namespace

ExtractResult extract_main_text(std::string_view html, const ExtractConfig& config) {
  ExtractResult result;
  if (pathologically_nested(html)) {
    result.text = strip_tags(html);
    return result;
  }
  // The time budget covers parsing too (gumbo cannot be interrupted, so an over-long parse is
  // noticed when it returns).
  auto deadline = config.max_millis > 0
                      ? std::chrono::steady_clock::now() + std::chrono::milliseconds(config.max_millis)
                      : std::chrono::steady_clock::time_point::max();
  GumboOptions options = kGumboDefaultOptions;
  options.max_errors = 0;  // we never look at parse errors; recording them costs time
  GumboHeap heap;  // frees what gumbo_destroy_output misses (and all of it if we throw)
  heap.use_in(options);
  // gumbo's tree depth is bounded by its own limits; deep nesting is flattened by the
  // HTML5 algorithm's adoption-agency steps, so recursion stays modest on real pages.
  GumboOutput* out = gumbo_parse_with_options(&options, html.data(), html.size());
  if (!out) return result;
  const GumboNode* root = out->root;
  if (const GumboNode* title = find_tag(root, GUMBO_TAG_TITLE)) {
    std::string t;
    uint32_t a = 0, b = 0;
    Extractor tmp(config);
    tmp.collect_inline(title, t, a, b, false);
    while (!t.empty() && t.back() == ' ') t.pop_back();
    result.title = t.substr(t.find_first_not_of(' ') == std::string::npos ? t.size() : t.find_first_not_of(' '));
  }
  const GumboNode* body = find_tag(root, GUMBO_TAG_BODY);
  if (!body) body = root;
  Extractor ex(config);
  ex.deadline = deadline;
  if (std::chrono::steady_clock::now() > deadline) ex.timed_out = true;
  ex.page_raw = ex.prescan(body, false);
  NodeStats body_stats = ex.measure(body, false, false);
  const GumboNode* start = ex.find_main(body, body_stats.text);
  ex.emit(start ? start : body);
  ex.flush();
  gumbo_destroy_output(&options, out);
  if (ex.timed_out) {
    result.skip_reason = "extract_timeout";
    return result;
  }

  std::string text;
  if (config.include_title && !result.title.empty()) {
    text = result.title;
    text += '\n';
  }
  for (size_t i = 0; i < ex.lines.size(); ++i) {
    if (i) text += '\n';
    text += ex.lines[i];
  }
  result.text = std::move(text);
  result.blocks_kept = ex.blocks_kept;
  result.blocks_dropped = ex.blocks_dropped;
  return result;
}

namespace {

std::string_view trim_line(std::string_view l) {
  while (!l.empty() && is_space(l.front())) l.remove_prefix(1);
  while (!l.empty() && is_space(l.back())) l.remove_suffix(1);
  return l;
}

// FNV-1a over host, a separator byte and the line.
uint64_t host_line_hash(std::string_view host, std::string_view line) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](std::string_view s) {
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  };
  mix(host);
  h = (h ^ 0xFFu) * 1099511628211ull;
  mix(line);
  return h;
}

// Chrome lines are sentences or phrases ("Skip to content", "Built with Sphinx using a theme
// provided by Read the Docs"): at least two words of two or more letters, not a table row.
// Code lines ("...", "}", "pass") and table headers that a site's pages share are content.
bool chrome_candidate(std::string_view line, size_t max_bytes) {
  if (line.empty() || line.size() > max_bytes) return false;
  if (line.size() >= 2 && line.substr(line.size() - 2) == " |") return false;
  int words = 0, run = 0;
  for (unsigned char c : line) {
    if (std::isalpha(c) || c >= 0x80) {
      ++run;
    } else {
      words += run >= 2;
      run = 0;
    }
  }
  words += run >= 2;
  return words >= 2;
}

template <typename F>
void for_each_line(std::string_view text, F&& f) {
  size_t p = 0;
  while (p <= text.size()) {
    size_t e = text.find('\n', p);
    if (e == std::string_view::npos) e = text.size();
    f(text.substr(p, e - p));
    p = e + 1;
  }
}

}  // namespace

void RepeatedLineFilter::add(std::string_view host, std::string_view text) {
  ++host_pages_[std::string(host)];
  std::unordered_set<uint64_t> seen;
  for_each_line(text, [&](std::string_view line) {
    line = trim_line(line);
    if (!chrome_candidate(line, cfg_.max_line_bytes)) return;
    uint64_t h = host_line_hash(host, line);
    if (seen.insert(h).second) ++line_pages_[h];
  });
}

int64_t RepeatedLineFilter::pages(std::string_view host) const {
  auto it = host_pages_.find(std::string(host));
  return it == host_pages_.end() ? 0 : it->second;
}

std::string RepeatedLineFilter::filter(std::string_view host, std::string_view text, int* dropped) const {
  int n_dropped = 0;
  int64_t n_pages = pages(host);
  std::string out;
  if (n_pages < cfg_.min_pages) {
    out.assign(text);
  } else {
    double need = std::max<double>(cfg_.min_pages, cfg_.min_fraction * static_cast<double>(n_pages));
    for_each_line(text, [&](std::string_view line) {
      std::string_view t = trim_line(line);
      if (chrome_candidate(t, cfg_.max_line_bytes)) {
        auto it = line_pages_.find(host_line_hash(host, t));
        if (it != line_pages_.end() && it->second >= need) {
          ++n_dropped;
          return;
        }
      }
      if (!out.empty()) out += '\n';
      out.append(line);
    });
  }
  if (dropped) *dropped = n_dropped;
  return out;
}

}  // namespace aji::data
