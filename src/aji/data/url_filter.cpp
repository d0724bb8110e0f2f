#include "aji/data/url_filter.h"

#include <algorithm>

#include "aji/base/error.h"
#include "aji/base/io.h"

namespace aji::data {

namespace {
#include "aji/data/url_filter_lists.inc"

bool is_alnum_ascii(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

// datatrove normalize(): drop [^a-zA-Z0-9]+, lower-case.
std::string normalize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s)
    if (is_alnum_ascii(c)) out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string strip(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

// datatrove parse_list(): skips lines starting with '#', normalises words (not domains/URLs).
void add_lines(std::string_view text, bool do_normalize, std::unordered_set<std::string>& out) {
  size_t p = 0;
  while (p < text.size()) {
    size_t e = text.find('\n', p);
    if (e == std::string_view::npos) e = text.size();
    std::string_view line = text.substr(p, e - p);
    p = e + 1;
    if (line.empty() || line[0] == '#') continue;
    std::string v = do_normalize ? normalize(line) : strip(line);
    if (!v.empty()) out.insert(std::move(v));
  }
}

void add_file(const std::string& path, bool do_normalize, std::unordered_set<std::string>& out) {
  if (path.empty()) return;
  add_lines(read_file(path), do_normalize, out);
}

const std::unordered_set<std::string>& known_keys() {
  static const std::unordered_set<std::string> keys = {
      "enabled", "use_builtin_lists", "soft_word_threshold", "blocked_domains_file", "blocked_urls_file",
      "banned_words_file", "soft_banned_words_file", "banned_subwords_file", "blocked_domains", "banned_words"};
  return keys;
}
}  // namespace

void to_json(nlohmann::json& j, const UrlFilterConfig& c) {
  j = nlohmann::json{{"enabled", c.enabled},
                     {"use_builtin_lists", c.use_builtin_lists},
                     {"soft_word_threshold", c.soft_word_threshold},
                     {"blocked_domains_file", c.blocked_domains_file},
                     {"blocked_urls_file", c.blocked_urls_file},
                     {"banned_words_file", c.banned_words_file},
                     {"soft_banned_words_file", c.soft_banned_words_file},
                     {"banned_subwords_file", c.banned_subwords_file},
                     {"blocked_domains", c.blocked_domains},
                     {"banned_words", c.banned_words}};
}

void from_json(const nlohmann::json& j, UrlFilterConfig& c) {
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!known_keys().count(it.key()))
      throw Error("unknown key '" + it.key() + "' in url_filter").fix("see `aji data config` for the valid keys");
  c.enabled = j.value("enabled", c.enabled);
  c.use_builtin_lists = j.value("use_builtin_lists", c.use_builtin_lists);
  c.soft_word_threshold = j.value("soft_word_threshold", c.soft_word_threshold);
  c.blocked_domains_file = j.value("blocked_domains_file", c.blocked_domains_file);
  c.blocked_urls_file = j.value("blocked_urls_file", c.blocked_urls_file);
  c.banned_words_file = j.value("banned_words_file", c.banned_words_file);
  c.soft_banned_words_file = j.value("soft_banned_words_file", c.soft_banned_words_file);
  c.banned_subwords_file = j.value("banned_subwords_file", c.banned_subwords_file);
  c.blocked_domains = j.value("blocked_domains", c.blocked_domains);
  c.banned_words = j.value("banned_words", c.banned_words);
}

std::string url_host(std::string_view url) {
  size_t p = url.find("://");
  std::string_view rest = p == std::string_view::npos ? url : url.substr(p + 3);
  if (p == std::string_view::npos && rest.substr(0, 2) == "//") rest.remove_prefix(2);
  size_t end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, end);
  size_t at = authority.rfind('@');
  if (at != std::string_view::npos) authority.remove_prefix(at + 1);
  if (!authority.empty() && authority.front() == '[') {  // IPv6 literal
    size_t close = authority.find(']');
    return std::string(authority.substr(0, close == std::string_view::npos ? authority.size() : close + 1));
  }
  size_t colon = authority.find(':');
  authority = authority.substr(0, colon);
  std::string host(authority);
  for (char& c : host) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  while (!host.empty() && host.back() == '.') host.pop_back();
  return host;
}

std::string registered_domain(std::string_view host) {
  std::vector<std::string_view> labels;
  size_t p = 0;
  while (p <= host.size()) {
    size_t e = host.find('.', p);
    if (e == std::string_view::npos) e = host.size();
    labels.push_back(host.substr(p, e - p));
    p = e + 1;
  }
  if (labels.size() < 2) return "";
  bool numeric = std::all_of(host.begin(), host.end(), [](char c) { return (c >= '0' && c <= '9') || c == '.'; });
  if (numeric) return "";  // an IP address has no registered domain (as tldextract)
  // Common second-level public suffixes under country TLDs (co.uk, co.kr, or.kr, com.au...).
  static const std::unordered_set<std::string_view> kSecondLevel = {
      "co", "com", "net", "org", "ac", "go", "or", "ne", "re", "gov", "edu", "mil", "pe", "hs", "ms", "es", "sc", "kg"};
  size_t n = labels.size();
  size_t take = 2;
  if (n >= 3 && labels[n - 1].size() == 2 && kSecondLevel.count(labels[n - 2])) take = 3;
  size_t start = static_cast<size_t>(labels[n - take].data() - host.data());
  return std::string(host.substr(start));
}

UrlFilter::UrlFilter(const UrlFilterConfig& config) : config_(config) {
  if (config.use_builtin_lists) {
    add_lines(kBannedWords, true, banned_words_);
    add_lines(kSoftBannedWords, true, soft_banned_words_);
    std::unordered_set<std::string> sub;
    add_lines(kBannedSubwords, true, sub);
    banned_subwords_.assign(sub.begin(), sub.end());
  }
  add_file(config.blocked_domains_file, false, blocked_domains_);
  add_file(config.blocked_urls_file, false, blocked_urls_);
  add_file(config.banned_words_file, true, banned_words_);
  add_file(config.soft_banned_words_file, true, soft_banned_words_);
  std::unordered_set<std::string> sub;
  add_file(config.banned_subwords_file, true, sub);
  for (auto& s : sub) banned_subwords_.push_back(s);
  for (const auto& d : config.blocked_domains) blocked_domains_.insert(strip(d));
  for (const auto& w : config.banned_words) {
    std::string v = normalize(w);
    if (!v.empty()) banned_words_.insert(v);
  }
  std::sort(banned_subwords_.begin(), banned_subwords_.end());
  banned_subwords_.erase(std::unique(banned_subwords_.begin(), banned_subwords_.end()), banned_subwords_.end());
}

Verdict UrlFilter::check(std::string_view url) const {
  if (!config_.enabled || url.empty()) return Verdict::kept();
  if (!blocked_domains_.empty()) {
    std::string host = url_host(url);
    if (blocked_domains_.count(registered_domain(host))) return Verdict::dropped("url_domain");
    if (blocked_domains_.count(host)) return Verdict::dropped("url_subdomain");
  }
  if (!blocked_urls_.empty() && blocked_urls_.count(std::string(url))) return Verdict::dropped("url_exact");
  // URL words: re.split("[^a-zA-Z0-9]+", url), case kept.
  int soft = 0;
  std::unordered_set<std::string_view> seen;
  size_t i = 0;
  bool hard = false;
  while (i <= url.size()) {
    size_t j = i;
    while (j < url.size() && is_alnum_ascii(url[j])) ++j;
    std::string_view w = url.substr(i, j - i);
    if (seen.insert(w).second) {
      std::string ws(w);
      if (banned_words_.count(ws)) hard = true;
      if (soft_banned_words_.count(ws)) ++soft;
    }
    if (j >= url.size()) break;
    i = j;
    while (i < url.size() && !is_alnum_ascii(url[i])) ++i;
    if (i >= url.size()) {  // trailing separators give one empty word in Python; harmless
      break;
    }
  }
  if (hard) return Verdict::dropped("url_banned_word");
  if (soft >= config_.soft_word_threshold) return Verdict::dropped("url_soft_banned_words");
  if (!banned_subwords_.empty()) {
    std::string norm = normalize(url);
    for (const auto& s : banned_subwords_)
      if (norm.find(s) != std::string::npos) return Verdict::dropped("url_banned_subword");
  }
  return Verdict::kept();
}

}  // namespace aji::data
