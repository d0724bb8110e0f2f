// URL filter: datatrove's URLFilter (spec §4.2) with its word lists built in, plus the
// user's own blocklists of domains, URLs and words (one entry per line, '#' comments).
//
// A document is dropped ("url_domain", "url_subdomain", "url_exact", "url_banned_word",
// "url_soft_banned_words", "url_banned_subword") when
//   - its registered domain or its full host is a blocked domain;
//   - its exact URL is a blocked URL;
//   - a hard-banned word is among the URL's words (split on [^a-zA-Z0-9]+, case kept,
//     as datatrove does — so "SEX" does not match "sex");
//   - >= soft_word_threshold soft-banned words are among them;
//   - a banned subword is a substring of the URL with non-alphanumerics removed, lower-cased.
// Registered domains come from a built-in approximation of the public-suffix list (the
// last two labels, three under common second-level suffixes like co.uk, co.kr, or.kr);
// tldextract uses the full list.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/data/document.h"

namespace aji::data {

struct UrlFilterConfig {
  bool enabled = true;
  bool use_builtin_lists = true;  // datatrove's banned / soft-banned / subword lists
  int soft_word_threshold = 2;
  // Extra lists, one entry per line ('#' starts a comment line), read when the filter is built.
  std::string blocked_domains_file;
  std::string blocked_urls_file;
  std::string banned_words_file;
  std::string soft_banned_words_file;
  std::string banned_subwords_file;
  // Inline extras (handy in a config file).
  std::vector<std::string> blocked_domains;
  std::vector<std::string> banned_words;
};
void to_json(nlohmann::json& j, const UrlFilterConfig& c);
void from_json(const nlohmann::json& j, UrlFilterConfig& c);  // unknown keys throw aji::Error

// Host of a URL, lower-cased, without user info and port ("" if there is none).
std::string url_host(std::string_view url);
// Registered domain ("news.bbc.co.uk" → "bbc.co.uk", "a.b.example.com" → "example.com").
std::string registered_domain(std::string_view host);

class UrlFilter {
 public:
  explicit UrlFilter(const UrlFilterConfig& config);  // reads the list files; throws aji::Error
  // Documents without a URL are kept.
  Verdict check(std::string_view url) const;
  Verdict operator()(const Document& doc) const { return check(doc.url); }
  size_t num_banned_words() const { return banned_words_.size(); }

 private:
  UrlFilterConfig config_;
  std::unordered_set<std::string> blocked_domains_, blocked_urls_, banned_words_, soft_banned_words_;
  std::vector<std::string> banned_subwords_;
};

}  // namespace aji::data
