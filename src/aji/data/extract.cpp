#include "aji/data/extract.h"

#include <gumbo.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "aji/base/error.h"

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
                     {"min_text_bytes", c.min_text_bytes}};
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

bool has_boilerplate_hint(const GumboElement& el) {
  for (const char* name : {"class", "id"}) {
    const char* v = attr(el, name);
    if (!v) continue;
    std::string l = lower_ascii(v);
    size_t i = 0;
    while (i < l.size()) {
      while (i < l.size() && !std::isalnum(static_cast<unsigned char>(l[i]))) ++i;
      size_t j = i;
      while (j < l.size() && std::isalnum(static_cast<unsigned char>(l[j]))) ++j;
      if (j > i && is_boilerplate_token(std::string_view(l).substr(i, j - i))) return true;
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

  // Pass 1: visible-text statistics per element; marks boilerplate subtrees as pruned.
  NodeStats measure(const GumboNode* node, bool in_link, bool in_article, int depth = 0) {
    NodeStats s;
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
    if (debug && tag != GUMBO_TAG_HTML && tag != GUMBO_TAG_BODY && !is_skipped_tag(tag) &&
        (is_hidden(el) ||
         (tag != GUMBO_TAG_MAIN && tag != GUMBO_TAG_ARTICLE && has_boilerplate_hint(el) &&
          (!is_inline_hint_exempt(tag) || is_headerlink(el)))))
      std::fprintf(stderr, "[extract] prune <%s class=%s id=%s>\n", gumbo_normalized_tagname(tag),
                   attr(el, "class") ? attr(el, "class") : "", attr(el, "id") ? attr(el, "id") : "");
    if (tag != GUMBO_TAG_HTML && tag != GUMBO_TAG_BODY &&
        (is_skipped_tag(tag) || is_hidden(el) ||
         (tag != GUMBO_TAG_MAIN && tag != GUMBO_TAG_ARTICLE && has_boilerplate_hint(el) &&
          (!is_inline_hint_exempt(tag) || is_headerlink(el))))) {
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
        s.links >= 3 && s.text > 0 && s.link > cfg.container_link_density * s.text) {
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
      if (is_space(c)) {
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

  void emit_table(const GumboNode* table) {
    // Rows in document order, nested sections (thead/tbody) included; nested tables are
    // flattened into their cell.
    std::vector<const GumboNode*> stack = {table};
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
    for (const GumboNode* row : rows) {
      std::string line;
      uint32_t text = 0, link = 0;
      int cells = 0;
      const GumboElement& el = row->v.element;
      for (unsigned i = 0; i < el.children.length; ++i) {
        const GumboNode* cell = static_cast<const GumboNode*>(el.children.data[i]);
        if (cell->type != GUMBO_NODE_ELEMENT || pruned.count(cell)) continue;
        GumboTag t = cell->v.element.tag;
        if (t != GUMBO_TAG_TD && t != GUMBO_TAG_TH) continue;
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
      if (cfg.include_tables) emit_table(node);
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

}  // namespace

ExtractResult extract_main_text(std::string_view html, const ExtractConfig& config) {
  ExtractResult result;
  GumboOptions options = kGumboDefaultOptions;
  options.max_errors = 0;  // we never look at parse errors; recording them costs time
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
  NodeStats body_stats = ex.measure(body, false, false);
  const GumboNode* start = ex.find_main(body, body_stats.text);
  ex.emit(start ? start : body);
  ex.flush();
  gumbo_destroy_output(&options, out);

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

}  // namespace aji::data
