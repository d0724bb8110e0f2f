#include "aji/data/quality_filters.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include <utf8proc.h>

#include "aji/base/error.h"

namespace aji::data {

namespace {

using json = nlohmann::json;

// Python's len() of each element, and find_duplicates(): how many elements were seen
// before, and their total length.
struct Duplicates {
  int64_t elements = 0;
  int64_t chars = 0;
};
Duplicates find_duplicates(const std::vector<std::string_view>& items) {
  Duplicates d;
  std::unordered_set<std::string_view> seen;
  seen.reserve(items.size() * 2);
  for (std::string_view x : items) {
    if (!seen.insert(x).second) {
      d.elements++;
      d.chars += int64_t(utf8_length(x));
    }
  }
  return d;
}

// re.split(r"\n{min_run,}", s)
std::vector<std::string_view> split_on_newline_runs(std::string_view s, size_t min_run) {
  std::vector<std::string_view> out;
  size_t start = 0, i = 0;
  while (i < s.size()) {
    if (s[i] != '\n') {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < s.size() && s[j] == '\n') ++j;
    if (j - i >= min_run) {
      out.push_back(s.substr(start, i - start));
      start = j;
    }
    i = j;
  }
  out.push_back(s.substr(start));
  return out;
}

// Python str.count(sub): non-overlapping occurrences.
int64_t count_substr(std::string_view s, std::string_view sub) {
  int64_t n = 0;
  size_t pos = 0;
  while ((pos = s.find(sub, pos)) != std::string_view::npos) {
    ++n;
    pos += sub.size();
  }
  return n;
}

bool starts_with(std::string_view s, std::string_view p) { return s.size() >= p.size() && s.substr(0, p.size()) == p; }
bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

// The last code point of s (0 if empty).
char32_t last_code_point(std::string_view s) {
  if (s.empty()) return 0;
  size_t b = s.size() - 1;
  while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80 && s.size() - b < 4) --b;
  size_t j = b;
  char32_t c = next_code_point(s, j);
  return j == s.size() ? c : 0xFFFD;
}

// Words joined with a separator in one buffer, so that any run of n consecutive words
// joined is a contiguous view (an n-gram key without copying), plus polynomial prefix
// hashes recorded at word boundaries only (memory O(words), not O(bytes)), so that each
// n-gram's hash costs O(1): h(s[b,e)) = H(e) − H(b)·K^(e−b), with K^(e−b) = K^e·K^(−b)
// (K is odd, hence invertible mod 2^64).
struct JoinedWords {
  static constexpr uint64_t kBase = 0x100000001B3ULL;
  std::string buf;
  std::vector<size_t> begin;       // (n_words + 1) byte offsets of each word in buf
  std::vector<int64_t> cp_prefix;  // (n_words + 1) prefix sums of code-point lengths
  std::vector<uint64_t> h_begin, inv_pow_begin, h_end, pow_end;  // (n_words) at word starts / ends
  size_t sep = 0;

  static uint64_t inverse(uint64_t k) {
    uint64_t inv = k;  // Newton's iteration for the inverse mod 2^64 (k odd)
    for (int i = 0; i < 6; ++i) inv *= 2 - k * inv;
    return inv;
  }

  JoinedWords(const std::vector<std::string_view>& words, std::string_view separator) {
    sep = separator.size();
    const size_t n = words.size();
    begin.reserve(n + 1);
    cp_prefix.reserve(n + 1);
    cp_prefix.push_back(0);
    h_begin.resize(n);
    inv_pow_begin.resize(n);
    h_end.resize(n);
    pow_end.resize(n);
    const uint64_t k_inv = inverse(kBase);
    uint64_t h = 0, pw = 1, ipw = 1;
    auto feed = [&](std::string_view bytes) {
      for (unsigned char c : bytes) {
        h = h * kBase + c + 1;
        pw *= kBase;
        ipw *= k_inv;
      }
    };
    for (size_t i = 0; i < n; ++i) {
      if (i) {
        buf.append(separator);
        feed(separator);
      }
      begin.push_back(buf.size());
      h_begin[i] = h;
      inv_pow_begin[i] = ipw;
      buf.append(words[i]);
      feed(words[i]);
      h_end[i] = h;
      pow_end[i] = pw;
      cp_prefix.push_back(cp_prefix.back() + int64_t(utf8_length(words[i])));
    }
    begin.push_back(buf.size() + sep);
  }
  std::string_view ngram(size_t i, size_t n) const { return std::string_view(buf).substr(begin[i], begin[i + n] - sep - begin[i]); }
  uint64_t ngram_hash(size_t i, size_t n) const {
    size_t last = i + n - 1;
    uint64_t h = h_end[last] - h_begin[i] * (pow_end[last] * inv_pow_begin[i]);
    return h ^ (h >> 29);
  }
  int64_t ngram_len(size_t i, size_t n) const { return cp_prefix[i + n] - cp_prefix[i] + int64_t(sep) * int64_t(n - 1); }
};

// Open-addressing table of n-grams (start word index + precomputed hash); equality is
// decided on the joined text, so results are exactly Python's set/Counter semantics.
struct NgramTable {
  std::vector<uint64_t> hashes;
  std::vector<uint32_t> slot;  // word index + 1; 0 = empty
  std::vector<uint32_t> count;
  size_t mask = 0;
  explicit NgramTable(size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    hashes.assign(cap, 0);
    slot.assign(cap, 0);
    count.assign(cap, 0);
    mask = cap - 1;
  }
  // Returns the table position of n-gram i (inserting it if new) and whether it existed.
  std::pair<size_t, bool> find_or_insert(const JoinedWords& jw, size_t i, size_t n) {
    uint64_t h = jw.ngram_hash(i, n);
    std::string_view g = jw.ngram(i, n);
    size_t p = size_t(h * 0x9E3779B97F4A7C15ULL >> 20) & mask;
    while (slot[p] != 0) {
      if (hashes[p] == h && jw.ngram(slot[p] - 1, n) == g) return {p, true};
      p = (p + 1) & mask;
    }
    slot[p] = uint32_t(i + 1);
    hashes[p] = h;
    return {p, false};
  }
};

// find_top_duplicate: count × len of the most common n-gram (first inserted on ties).
int64_t top_ngram_chars(const JoinedWords& jw, size_t n_words, size_t n) {
  NgramTable t(n_words);
  int64_t best_count = -1;
  size_t best_first = 0;
  for (size_t i = 0; i + n <= n_words; ++i) {
    auto [p, existed] = t.find_or_insert(jw, i, n);
    (void)existed;
    int64_t c = ++t.count[p];
    size_t first = t.slot[p] - 1;
    if (c > best_count || (c == best_count && first < best_first)) {
      best_count = c;
      best_first = first;
    }
  }
  return best_count * jw.ngram_len(best_first, n);
}

// find_all_duplicate: characters of n-grams ("".join) seen before, jumping n words.
int64_t all_duplicate_chars(const JoinedWords& jw, size_t n_words, size_t n) {
  NgramTable t(n_words);
  int64_t repeated = 0;
  size_t idx = 0;
  while (n_words >= n && idx < n_words - n + 1) {
    if (t.find_or_insert(jw, idx, n).second) {
      repeated += jw.ngram_len(idx, n);
      idx += n;
    } else {
      idx += 1;
    }
  }
  return repeated;
}

json& quality_scores(Document& doc) {
  if (!doc.metadata.is_object()) doc.metadata = json::object();
  json& q = doc.metadata["quality"];
  if (!q.is_object()) q = json::object();
  return q;
}

double round4(double x) { return std::round(x * 1e4) / 1e4; }

}  // namespace

// ---- presets ------------------------------------------------------------------------

QualityFilterConfig QualityFilterConfig::english() { return QualityFilterConfig{}; }

QualityFilterConfig QualityFilterConfig::korean() {
  QualityFilterConfig c;
  c.language = "ko";
  c.word_splitter = WordSplitter::kKorean;
  // GopherRepetition: paragraph rules and the duplicate-line-character rule off.
  c.gopher_repetition.dup_para_frac = 0;
  c.gopher_repetition.dup_para_char_frac = 0;
  c.gopher_repetition.dup_line_char_frac = 0;
  c.gopher_repetition.dup_line_frac = 0.374;
  c.gopher_repetition.top_n_grams = {{2, 0.282}, {3, 0.228}, {4, 0.185}};
  c.gopher_repetition.dup_n_grams = {{5, 0.201}, {6, 0.184}, {7, 0.168}, {8, 0.154}, {9, 0.14}, {10, 0.127}};
  // GopherQuality with Korean stop morphemes.
  c.gopher_quality.min_avg_word_length = 1;
  c.gopher_quality.max_avg_word_length = 6;
  c.gopher_quality.max_non_alpha_words_ratio = 0.791;
  c.gopher_quality.stop_words = {"의", "다", "이", "는", "에", "을", "한", "년", "하", "은", "를",
                                 "했", "고", "에서", "가", "있", "으로", "인", "월", "로", "되"};
  // No C4 in FineWeb-2.
  c.c4.enabled = false;
  // FineWebQuality: short-line rule off (999), duplicated chars 0.1, Korean thresholds.
  c.fineweb.short_line_thr = 999;
  c.fineweb.char_duplicates_ratio = 0.1;
  c.fineweb.line_punct_thr = 0.062;
  c.fineweb.new_line_ratio = 0.196;
  return c;
}

QualityFilterConfig QualityFilterConfig::for_language(std::string_view language) {
  return word_splitter_for_language(language) == WordSplitter::kKorean ? korean() : english();
}

// ---- FineWeb-2 YAML -----------------------------------------------------------------

namespace {

std::string yaml_unquote(std::string_view v, const std::string& src, int line_no) {
  v = strip_python(v);
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') {
    std::string out;
    for (size_t i = 1; i + 1 < v.size(); ++i) {
      if (v[i] != '\\') {
        out.push_back(v[i]);
        continue;
      }
      if (i + 2 >= v.size()) throw Error("dangling escape in YAML string").at(src, line_no);
      char e = v[++i];
      if (e == 'u' && i + 4 < v.size()) {
        uint32_t cp = uint32_t(std::stoul(std::string(v.substr(i + 1, 4)), nullptr, 16));
        i += 4;
        uint8_t buf[4];
        auto n = utf8proc_encode_char(int32_t(cp), buf);
        out.append(reinterpret_cast<const char*>(buf), size_t(n));
      } else if (e == 'n') {
        out.push_back('\n');
      } else {
        out.push_back(e);
      }
    }
    return out;
  }
  if (v.size() >= 2 && v.front() == '\'' && v.back() == '\'') return std::string(v.substr(1, v.size() - 2));
  return std::string(v);
}

double yaml_number(std::string_view v, const std::string& src, int line_no) {
  std::string s(strip_python(v));
  try {
    size_t used = 0;
    double d = std::stod(s, &used);
    if (used != s.size()) throw std::invalid_argument(s);
    return d;
  } catch (const std::exception&) {
    throw Error("expected a number, got '" + s + "'").at(src, line_no).fix("write thresholds as plain numbers");
  }
}

}  // namespace

void apply_fineweb2_yaml(QualityFilterConfig& c, const std::string& yaml_text, const std::string& src) {
  // The files are flat: "key: scalar", or "key:" followed by "- item" lines, where an
  // item may itself be a two-element list ("- - 5" / "  - 0.201").
  struct Item {
    std::vector<std::string> values;
    int line;
  };
  std::string key;
  int key_line = 0;
  std::vector<Item> items;
  std::string scalar;
  bool has_scalar = false;

  auto flush = [&]() {
    if (key.empty()) return;
    auto pairs = [&]() {
      std::vector<std::pair<int, double>> out;
      for (const Item& it : items) {
        if (it.values.size() != 2) throw Error("expected [n, fraction] pairs under '" + key + "'").at(src, it.line);
        out.emplace_back(int(yaml_number(it.values[0], src, it.line)), yaml_number(it.values[1], src, it.line));
      }
      return out;
    };
    auto number = [&]() {
      if (!has_scalar) throw Error("'" + key + "' needs a value").at(src, key_line);
      return yaml_number(scalar, src, key_line);
    };
    if (key == "dup_line_frac") c.gopher_repetition.dup_line_frac = number();
    else if (key == "dup_para_frac") c.gopher_repetition.dup_para_frac = number();
    else if (key == "dup_line_char_frac") c.gopher_repetition.dup_line_char_frac = number();
    else if (key == "dup_para_char_frac") c.gopher_repetition.dup_para_char_frac = number();
    else if (key == "top_n_grams") c.gopher_repetition.top_n_grams = pairs();
    else if (key == "dup_n_grams") c.gopher_repetition.dup_n_grams = pairs();
    else if (key == "language_score") { /* used by language ID, not here */ (void)number(); }
    else if (key == "line_punct_thr") c.fineweb.line_punct_thr = number();
    else if (key == "new_line_ratio") c.fineweb.new_line_ratio = number();
    else if (key == "short_line_thr") c.fineweb.short_line_thr = number();
    else if (key == "char_duplicates_ratio") c.fineweb.char_duplicates_ratio = number();
    else if (key == "min_avg_word_length") c.gopher_quality.min_avg_word_length = number();
    else if (key == "max_avg_word_length") c.gopher_quality.max_avg_word_length = number();
    else if (key == "max_non_alpha_words_ratio") c.gopher_quality.max_non_alpha_words_ratio = number();
    else if (key == "min_stop_words") c.gopher_quality.min_stop_words = int(number());
    else if (key == "stopwords") {
      c.gopher_quality.stop_words.clear();
      for (const Item& it : items) {
        if (it.values.size() != 1) throw Error("expected one stop word per item").at(src, it.line);
        c.gopher_quality.stop_words.push_back(it.values[0]);
      }
    } else {
      throw Error("unknown key '" + key + "' in FineWeb-2 language config")
          .at(src, key_line)
          .fix("known keys: dup_line_frac, dup_n_grams, top_n_grams, line_punct_thr, new_line_ratio, "
               "min_avg_word_length, max_avg_word_length, max_non_alpha_words_ratio, stopwords, language_score");
    }
    key.clear();
    items.clear();
    has_scalar = false;
  };

  int line_no = 0;
  size_t pos = 0;
  while (pos <= yaml_text.size()) {
    size_t nl = yaml_text.find('\n', pos);
    if (nl == std::string::npos) nl = yaml_text.size();
    std::string_view line(yaml_text.data() + pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    std::string_view t = strip_python(line);
    if (t.empty() || t[0] == '#') {
      if (nl == yaml_text.size()) break;
      continue;
    }
    bool indented = line[0] == ' ' || line[0] == '-';
    if (!indented) {
      flush();
      size_t colon = t.find(':');
      if (colon == std::string_view::npos) throw Error("expected 'key: value'").at(src, line_no);
      key = std::string(strip_python(t.substr(0, colon)));
      key_line = line_no;
      std::string_view rest = strip_python(t.substr(colon + 1));
      if (!rest.empty()) {
        scalar = yaml_unquote(rest, src, line_no);
        has_scalar = true;
      }
    } else {
      if (key.empty()) throw Error("list item without a key").at(src, line_no);
      if (starts_with(line, "  - ")) {
        if (items.empty()) throw Error("list continuation without an item").at(src, line_no);
        items.back().values.push_back(yaml_unquote(t.substr(2), src, line_no));
      } else if (starts_with(t, "- - ")) {
        items.push_back({{yaml_unquote(t.substr(4), src, line_no)}, line_no});
      } else if (starts_with(t, "- ")) {
        items.push_back({{yaml_unquote(t.substr(2), src, line_no)}, line_no});
      } else {
        throw Error("unexpected line in FineWeb-2 language config").at(src, line_no);
      }
    }
    if (nl == yaml_text.size()) break;
  }
  flush();
}

// ---- JSON ---------------------------------------------------------------------------

namespace {

void check_keys(const json& j, std::initializer_list<const char*> known, const char* what) {
  if (!j.is_object()) throw Error(std::string(what) + " config must be a JSON object");
  for (const auto& [k, v] : j.items()) {
    bool ok = false;
    for (const char* n : known) ok = ok || k == n;
    if (!ok) {
      std::string list;
      for (const char* n : known) list += std::string(list.empty() ? "" : ", ") + n;
      throw Error(std::string("unknown key '") + k + "' in " + what + " config").fix("known keys: " + list);
    }
  }
}

template <typename T>
void get_if(const json& j, const char* key, T& out) {
  if (j.contains(key)) {
    try {
      j.at(key).get_to(out);
    } catch (const json::exception& e) {
      throw Error(std::string("bad value for '") + key + "': " + e.what());
    }
  }
}

}  // namespace

void to_json(json& j, const GopherRepetitionConfig& c) {
  j = json{{"enabled", c.enabled},           {"dup_line_frac", c.dup_line_frac},
           {"dup_para_frac", c.dup_para_frac}, {"dup_line_char_frac", c.dup_line_char_frac},
           {"dup_para_char_frac", c.dup_para_char_frac}, {"top_n_grams", c.top_n_grams},
           {"dup_n_grams", c.dup_n_grams}};
}
void from_json(const json& j, GopherRepetitionConfig& c) {
  check_keys(j, {"enabled", "dup_line_frac", "dup_para_frac", "dup_line_char_frac", "dup_para_char_frac",
                 "top_n_grams", "dup_n_grams"},
             "gopher_repetition");
  get_if(j, "enabled", c.enabled);
  get_if(j, "dup_line_frac", c.dup_line_frac);
  get_if(j, "dup_para_frac", c.dup_para_frac);
  get_if(j, "dup_line_char_frac", c.dup_line_char_frac);
  get_if(j, "dup_para_char_frac", c.dup_para_char_frac);
  get_if(j, "top_n_grams", c.top_n_grams);
  get_if(j, "dup_n_grams", c.dup_n_grams);
}

void to_json(json& j, const GopherQualityConfig& c) {
  j = json{{"enabled", c.enabled},
           {"min_doc_words", c.min_doc_words},
           {"max_doc_words", c.max_doc_words},
           {"min_avg_word_length", c.min_avg_word_length},
           {"max_avg_word_length", c.max_avg_word_length},
           {"max_symbol_word_ratio", c.max_symbol_word_ratio},
           {"max_bullet_lines_ratio", c.max_bullet_lines_ratio},
           {"max_ellipsis_lines_ratio", c.max_ellipsis_lines_ratio},
           {"max_non_alpha_words_ratio", c.max_non_alpha_words_ratio},
           {"min_stop_words", c.min_stop_words},
           {"stop_words", c.stop_words},
           {"count_distinct_stop_words", c.count_distinct_stop_words}};
}
void from_json(const json& j, GopherQualityConfig& c) {
  check_keys(j, {"enabled", "min_doc_words", "max_doc_words", "min_avg_word_length", "max_avg_word_length",
                 "max_symbol_word_ratio", "max_bullet_lines_ratio", "max_ellipsis_lines_ratio",
                 "max_non_alpha_words_ratio", "min_stop_words", "stop_words", "count_distinct_stop_words"},
             "gopher_quality");
  get_if(j, "enabled", c.enabled);
  get_if(j, "min_doc_words", c.min_doc_words);
  get_if(j, "max_doc_words", c.max_doc_words);
  get_if(j, "min_avg_word_length", c.min_avg_word_length);
  get_if(j, "max_avg_word_length", c.max_avg_word_length);
  get_if(j, "max_symbol_word_ratio", c.max_symbol_word_ratio);
  get_if(j, "max_bullet_lines_ratio", c.max_bullet_lines_ratio);
  get_if(j, "max_ellipsis_lines_ratio", c.max_ellipsis_lines_ratio);
  get_if(j, "max_non_alpha_words_ratio", c.max_non_alpha_words_ratio);
  get_if(j, "min_stop_words", c.min_stop_words);
  get_if(j, "stop_words", c.stop_words);
  get_if(j, "count_distinct_stop_words", c.count_distinct_stop_words);
}

void to_json(json& j, const C4QualityConfig& c) {
  j = json{{"enabled", c.enabled},
           {"remove_citations", c.remove_citations},
           {"filter_no_terminal_punct", c.filter_no_terminal_punct},
           {"min_num_sentences", c.min_num_sentences},
           {"min_words_per_line", c.min_words_per_line},
           {"max_word_length", c.max_word_length},
           {"filter_lorem_ipsum", c.filter_lorem_ipsum},
           {"filter_javascript", c.filter_javascript},
           {"filter_curly_bracket", c.filter_curly_bracket},
           {"filter_policy", c.filter_policy}};
}
void from_json(const json& j, C4QualityConfig& c) {
  check_keys(j, {"enabled", "remove_citations", "filter_no_terminal_punct", "min_num_sentences",
                 "min_words_per_line", "max_word_length", "filter_lorem_ipsum", "filter_javascript",
                 "filter_curly_bracket", "filter_policy"},
             "c4_quality");
  get_if(j, "enabled", c.enabled);
  get_if(j, "remove_citations", c.remove_citations);
  get_if(j, "filter_no_terminal_punct", c.filter_no_terminal_punct);
  get_if(j, "min_num_sentences", c.min_num_sentences);
  get_if(j, "min_words_per_line", c.min_words_per_line);
  get_if(j, "max_word_length", c.max_word_length);
  get_if(j, "filter_lorem_ipsum", c.filter_lorem_ipsum);
  get_if(j, "filter_javascript", c.filter_javascript);
  get_if(j, "filter_curly_bracket", c.filter_curly_bracket);
  get_if(j, "filter_policy", c.filter_policy);
}

void to_json(json& j, const FineWebQualityConfig& c) {
  j = json{{"enabled", c.enabled},
           {"line_punct_thr", c.line_punct_thr},
           {"line_punct_exclude_zero", c.line_punct_exclude_zero},
           {"stop_chars", c.stop_chars},
           {"short_line_thr", c.short_line_thr},
           {"short_line_length", c.short_line_length},
           {"char_duplicates_ratio", c.char_duplicates_ratio},
           {"new_line_ratio", c.new_line_ratio}};
}
void from_json(const json& j, FineWebQualityConfig& c) {
  check_keys(j, {"enabled", "line_punct_thr", "line_punct_exclude_zero", "stop_chars", "short_line_thr",
                 "short_line_length", "char_duplicates_ratio", "new_line_ratio"},
             "fineweb_quality");
  get_if(j, "enabled", c.enabled);
  get_if(j, "line_punct_thr", c.line_punct_thr);
  get_if(j, "line_punct_exclude_zero", c.line_punct_exclude_zero);
  get_if(j, "stop_chars", c.stop_chars);
  get_if(j, "short_line_thr", c.short_line_thr);
  get_if(j, "short_line_length", c.short_line_length);
  get_if(j, "char_duplicates_ratio", c.char_duplicates_ratio);
  get_if(j, "new_line_ratio", c.new_line_ratio);
}

void to_json(json& j, const QualityFilterConfig& c) {
  j = json{{"language", c.language},
           {"word_splitter", word_splitter_name(c.word_splitter)},
           {"gopher_repetition", c.gopher_repetition},
           {"gopher_quality", c.gopher_quality},
           {"c4_quality", c.c4},
           {"fineweb_quality", c.fineweb}};
}
void from_json(const json& j, QualityFilterConfig& c) {
  check_keys(j, {"language", "word_splitter", "gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"},
             "quality filter");
  std::string lang = j.value("language", c.language);
  c = QualityFilterConfig::for_language(lang);
  c.language = lang;
  if (j.contains("word_splitter")) c.word_splitter = parse_word_splitter(j.at("word_splitter").get<std::string>());
  if (j.contains("gopher_repetition")) from_json(j.at("gopher_repetition"), c.gopher_repetition);
  if (j.contains("gopher_quality")) from_json(j.at("gopher_quality"), c.gopher_quality);
  if (j.contains("c4_quality")) from_json(j.at("c4_quality"), c.c4);
  if (j.contains("fineweb_quality")) from_json(j.at("fineweb_quality"), c.fineweb);
}

// ---- the filters --------------------------------------------------------------------

Verdict gopher_repetition_filter(Document& doc, const GopherRepetitionConfig& cfg, WordSplitter splitter) {
  const std::string& text = doc.text;
  if (text.empty()) return Verdict::dropped("empty");
  json& q = quality_scores(doc);
  const double text_len = double(utf8_length(text));

  std::vector<std::string_view> paragraphs = split_on_newline_runs(strip_python(text), 2);
  Duplicates pd = find_duplicates(paragraphs);
  double para_frac = double(pd.elements) / double(paragraphs.size());
  double para_char_frac = double(pd.chars) / text_len;
  q["dup_para_frac"] = round4(para_frac);
  q["dup_para_char_frac"] = round4(para_char_frac);
  if (cfg.dup_para_frac != 0 && para_frac > cfg.dup_para_frac) return Verdict::dropped("dup_para_frac");
  if (cfg.dup_para_char_frac != 0 && para_char_frac > cfg.dup_para_char_frac)
    return Verdict::dropped("dup_para_char_frac");

  std::vector<std::string_view> lines = split_on_newline_runs(text, 1);
  Duplicates ld = find_duplicates(lines);
  double line_frac = double(ld.elements) / double(lines.size());
  double line_char_frac = double(ld.chars) / text_len;
  q["dup_line_frac"] = round4(line_frac);
  q["dup_line_char_frac"] = round4(line_char_frac);
  if (cfg.dup_line_frac != 0 && line_frac > cfg.dup_line_frac) return Verdict::dropped("dup_line_frac");
  if (cfg.dup_line_char_frac != 0 && line_char_frac > cfg.dup_line_char_frac)
    return Verdict::dropped("dup_line_char_frac");

  std::vector<std::string_view> words = split_words(text, splitter);
  if (!cfg.top_n_grams.empty()) {
    JoinedWords spaced(words, " ");
    for (auto [n, frac] : cfg.top_n_grams) {
      if (n <= 0 || size_t(n) > words.size()) continue;
      double f = double(top_ngram_chars(spaced, words.size(), size_t(n))) / text_len;
      q["top_" + std::to_string(n) + "_gram"] = round4(f);
      if (f > frac) return Verdict::dropped("top_" + std::to_string(n) + "_gram");
    }
  }
  if (!cfg.dup_n_grams.empty()) {
    JoinedWords glued(words, "");
    for (auto [n, frac] : cfg.dup_n_grams) {
      if (n <= 0) continue;
      double f = double(all_duplicate_chars(glued, words.size(), size_t(n))) / text_len;
      q["duplicated_" + std::to_string(n) + "_n_grams"] = round4(f);
      if (f > frac) return Verdict::dropped("duplicated_" + std::to_string(n) + "_n_grams");
    }
  }
  return Verdict::kept();
}

Verdict gopher_quality_filter(Document& doc, const GopherQualityConfig& cfg, WordSplitter splitter) {
  const std::string& text = doc.text;
  json& q = quality_scores(doc);
  std::vector<std::string_view> words = split_words(text, splitter);
  const double n_words = double(words.size());

  int64_t non_symbol = 0, non_symbol_chars = 0, alpha_words = 0;
  for (std::string_view w : words) {
    bool has_non_punct = false, has_alpha = false;
    int64_t len = 0;
    size_t i = 0;
    while (i < w.size()) {
      char32_t c = next_code_point(w, i);
      ++len;
      if (!has_non_punct && !is_datatrove_punctuation(c)) has_non_punct = true;
      if (!has_alpha && is_python_alpha(c)) has_alpha = true;
    }
    if (has_non_punct) {
      ++non_symbol;
      non_symbol_chars += len;
    }
    if (has_alpha) ++alpha_words;
  }
  q["n_words"] = non_symbol;
  if (cfg.min_doc_words != 0 && non_symbol < cfg.min_doc_words) return Verdict::dropped("gopher_short_doc");
  if (cfg.max_doc_words != 0 && non_symbol > cfg.max_doc_words) return Verdict::dropped("gopher_long_doc");

  // np.mean of an empty list is nan: every comparison with it is false.
  double avg = non_symbol ? double(non_symbol_chars) / double(non_symbol) : std::nan("");
  if (non_symbol) q["avg_word_length"] = round4(avg);
  if (cfg.min_avg_word_length != 0 && avg < cfg.min_avg_word_length)
    return Verdict::dropped("gopher_below_avg_threshold");
  if (cfg.max_avg_word_length != 0 && avg > cfg.max_avg_word_length)
    return Verdict::dropped("gopher_above_avg_threshold");
  if (words.empty()) return Verdict::dropped("gopher_short_doc");  // Python would divide by zero here

  double hash_ratio = double(count_substr(text, "#")) / n_words;
  double ellipsis_ratio = double(count_substr(text, "...") + count_substr(text, "\xE2\x80\xA6")) / n_words;
  q["hash_ratio"] = round4(hash_ratio);
  q["ellipsis_ratio"] = round4(ellipsis_ratio);
  if (cfg.max_symbol_word_ratio != 0 && hash_ratio > cfg.max_symbol_word_ratio)
    return Verdict::dropped("gopher_too_many_hashes");
  if (cfg.max_symbol_word_ratio != 0 && ellipsis_ratio > cfg.max_symbol_word_ratio)
    return Verdict::dropped("gopher_too_many_ellipsis");

  std::vector<std::string_view> lines = split_lines_python(text);
  if (lines.empty()) return Verdict::dropped("gopher_short_doc");
  int64_t bullets = 0, end_ellipsis = 0;
  for (std::string_view l : lines) {
    std::string_view ls = lstrip_python(l);
    if (starts_with(ls, "\xE2\x80\xA2") || starts_with(ls, "-")) ++bullets;
    std::string_view rs = rstrip_python(l);
    if (ends_with(rs, "...") || ends_with(rs, "\xE2\x80\xA6")) ++end_ellipsis;
  }
  double bullet_ratio = double(bullets) / double(lines.size());
  double end_ellipsis_ratio = double(end_ellipsis) / double(lines.size());
  q["bullet_lines_ratio"] = round4(bullet_ratio);
  q["end_ellipsis_lines_ratio"] = round4(end_ellipsis_ratio);
  if (cfg.max_bullet_lines_ratio != 0 && bullet_ratio > cfg.max_bullet_lines_ratio)
    return Verdict::dropped("gopher_too_many_bullets");
  if (cfg.max_ellipsis_lines_ratio != 0 && end_ellipsis_ratio > cfg.max_ellipsis_lines_ratio)
    return Verdict::dropped("gopher_too_many_end_ellipsis");

  double alpha_ratio = double(alpha_words) / n_words;
  q["alpha_words_ratio"] = round4(alpha_ratio);
  if (cfg.max_non_alpha_words_ratio != 0 && alpha_ratio < cfg.max_non_alpha_words_ratio)
    return Verdict::dropped("gopher_below_alpha_threshold");

  if (cfg.min_stop_words != 0) {
    std::unordered_set<std::string_view> stop(cfg.stop_words.begin(), cfg.stop_words.end());
    int64_t found = 0;
    if (cfg.count_distinct_stop_words) {
      std::unordered_set<std::string_view> seen;
      for (std::string_view w : words)
        if (stop.count(w)) seen.insert(w);
      found = int64_t(seen.size());
    } else {
      for (std::string_view w : words) found += stop.count(w) ? 1 : 0;
    }
    q["stop_words"] = found;
    if (found < cfg.min_stop_words) return Verdict::dropped("gopher_enough_stop_words");
  }
  return Verdict::kept();
}

namespace {

// CITATION_REGEX = r"\[\d*]|\[edit]|\[citation needed]"
std::string remove_citations(std::string_view line) {
  std::string out;
  out.reserve(line.size());
  size_t i = 0;
  while (i < line.size()) {
    if (line[i] == '[') {
      size_t j = i + 1;
      while (j < line.size()) {
        size_t k = j;
        char32_t c = next_code_point(line, k);
        if (utf8proc_category(int32_t(c)) != UTF8PROC_CATEGORY_ND) break;
        j = k;
      }
      if (j < line.size() && line[j] == ']') {
        i = j + 1;
        continue;
      }
      if (line.substr(i, 6) == "[edit]") {
        i += 6;
        continue;
      }
      if (line.substr(i, 17) == "[citation needed]") {
        i += 17;
        continue;
      }
    }
    out.push_back(line[i]);
    ++i;
  }
  return out;
}

bool is_unicode_punct(char32_t c) {
  switch (utf8proc_category(int32_t(c))) {
    case UTF8PROC_CATEGORY_PC: case UTF8PROC_CATEGORY_PD: case UTF8PROC_CATEGORY_PS: case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI: case UTF8PROC_CATEGORY_PF: case UTF8PROC_CATEGORY_PO:
      return true;
    default:
      return false;
  }
}

// spaCy's Sentencizer default punct_chars (the ones that occur outside rare scripts).
bool is_sentencizer_punct(std::string_view tok) {
  static const char* kPunct[] = {"!", ".", "?", "\xD6\x89", "\xD8\x9F", "\xDB\x94", "\xDC\x80", "\xDC\x81",
                                 "\xDC\x82", "\xE0\xA5\xA4", "\xE0\xA5\xA5", "\xE1\x81\x8A", "\xE1\x81\x8B",
                                 "\xE1\x8D\xA2", "\xE1\x8D\xA7", "\xE1\x8D\xA8", "\xE2\x80\xBC", "\xE2\x80\xBD",
                                 "\xE2\x81\x87", "\xE2\x81\x88", "\xE2\x81\x89", "\xE3\x80\x82", "\xEF\xB9\x92",
                                 "\xEF\xB9\x96", "\xEF\xB9\x97", "\xEF\xBC\x81", "\xEF\xBC\x8E", "\xEF\xBC\x9F",
                                 "\xEF\xBD\xA1"};
  for (const char* p : kPunct)
    if (tok == p) return true;
  return false;
}

bool all_unicode_punct(std::string_view tok) {
  size_t i = 0;
  if (tok.empty()) return false;
  while (i < tok.size())
    if (!is_unicode_punct(next_code_point(tok, i))) return false;
  return true;
}

}  // namespace

int count_sentences(std::string_view line) {
  // spaCy's Sentencizer: a new sentence starts at the first non-punctuation token after
  // a token that is one of punct_chars.
  std::vector<std::string_view> toks = split_words(line, WordSplitter::kEnglish);
  if (toks.empty()) return 0;
  int n = 1;
  bool seen_period = false;
  for (size_t i = 0; i < toks.size(); ++i) {
    bool in_punct_chars = is_sentencizer_punct(toks[i]);
    if (seen_period && !all_unicode_punct(toks[i]) && !in_punct_chars) {
      ++n;
      seen_period = false;
    } else if (in_punct_chars) {
      seen_period = true;
    }
  }
  return n;
}

Verdict c4_quality_filter(Document& doc, const C4QualityConfig& cfg) {
  static const char* kPolicy[] = {"terms of use", "privacy policy", "cookie policy",
                                  "uses cookies", "use of cookies", "use cookies"};
  std::vector<std::string_view> lines = split_lines_python(doc.text);
  int64_t num_sentences = 0;
  std::vector<std::string> kept;
  int64_t dropped_lines = 0;
  for (std::string_view raw : lines) {
    std::string_view stripped = strip_python(raw);
    std::vector<std::string_view> words = split_whitespace(stripped);
    if (cfg.max_word_length != -1) {
      bool too_long = false;
      for (std::string_view w : words)
        if (w.size() > size_t(cfg.max_word_length) && utf8_length(w) > size_t(cfg.max_word_length)) too_long = true;
      if (too_long) {
        ++dropped_lines;
        continue;
      }
    }
    std::string line = cfg.remove_citations ? remove_citations(stripped) : std::string(stripped);
    if (cfg.filter_no_terminal_punct) {
      char32_t last = last_code_point(line);
      bool terminal = last == '.' || last == '?' || last == '!' || last == '"' || last == '\'';
      if (!terminal || ends_with(line, "...")) {
        ++dropped_lines;
        continue;
      }
    }
    if (cfg.min_words_per_line != -1 && int64_t(words.size()) < cfg.min_words_per_line) {
      ++dropped_lines;
      continue;
    }
    std::string lower = lower_python(line);
    if (cfg.filter_lorem_ipsum && lower.find("lorem ipsum") != std::string::npos)
      return Verdict::dropped("lorem_ipsum");
    if (cfg.filter_javascript && lower.find("javascript") != std::string::npos) {
      ++dropped_lines;
      continue;
    }
    if (cfg.filter_curly_bracket && line.find('{') != std::string::npos) return Verdict::dropped("curly_bracket");
    if (cfg.filter_policy) {
      bool policy = false;
      for (const char* p : kPolicy) policy = policy || lower.find(p) != std::string::npos;
      if (policy) {
        ++dropped_lines;
        continue;
      }
    }
    if (cfg.min_num_sentences != -1) num_sentences += count_sentences(line);
    kept.push_back(std::move(line));
  }
  json& q = quality_scores(doc);
  q["c4_sentences"] = num_sentences;
  q["c4_dropped_lines"] = dropped_lines;
  if (num_sentences < cfg.min_num_sentences) return Verdict::dropped("too_few_sentences");
  std::string out;
  for (size_t i = 0; i < kept.size(); ++i) {
    if (i) out.push_back('\n');
    out.append(kept[i]);
  }
  doc.text = std::string(strip_python(out));
  return Verdict::kept();
}

Verdict fineweb_quality_filter(Document& doc, const FineWebQualityConfig& cfg, WordSplitter splitter) {
  const std::string& text = doc.text;
  std::vector<std::string_view> lines;
  {
    size_t start = 0;
    for (size_t i = 0; i <= text.size(); ++i) {
      if (i == text.size() || text[i] == '\n') {
        std::string_view l(text.data() + start, i - start);
        if (!strip_python(l).empty()) lines.push_back(l);
        start = i + 1;
      }
    }
  }
  if (lines.empty()) return Verdict::dropped("empty");
  json& q = quality_scores(doc);
  const double n_lines = double(lines.size());

  int64_t punct_lines = 0;
  for (std::string_view l : lines) {
    if (cfg.stop_chars.empty()) {
      if (is_terminal_punctuation(last_code_point(l))) ++punct_lines;
    } else {
      for (const std::string& s : cfg.stop_chars)
        if (ends_with(l, s)) {
          ++punct_lines;
          break;
        }
    }
  }
  double punct_ratio = double(punct_lines) / n_lines;
  q["line_punct_ratio"] = round4(punct_ratio);
  if (punct_ratio < cfg.line_punct_thr && !(punct_ratio == 0 && cfg.line_punct_exclude_zero))
    return Verdict::dropped("line_punct_ratio");

  int64_t short_lines = 0;
  for (std::string_view l : lines)
    if (int64_t(utf8_length(l)) <= cfg.short_line_length) ++short_lines;
  double short_ratio = double(short_lines) / n_lines;
  q["short_line_ratio"] = round4(short_ratio);
  if (short_ratio > cfg.short_line_thr) return Verdict::dropped("short_line_ratio");

  int64_t newlines = int64_t(std::count(text.begin(), text.end(), '\n'));
  double chars_without_newlines = double(int64_t(utf8_length(text)) - newlines);
  double dup_ratio = double(find_duplicates(lines).chars) / chars_without_newlines;
  q["char_dup_ratio"] = round4(dup_ratio);
  if (dup_ratio > cfg.char_duplicates_ratio) return Verdict::dropped("char_dup_ratio");

  std::vector<std::string_view> words = split_words(text, splitter);
  if (words.empty()) return Verdict::dropped("list_ratio");
  double list_ratio = double(newlines) / double(words.size());
  q["list_ratio"] = round4(list_ratio);
  if (list_ratio > cfg.new_line_ratio) return Verdict::dropped("list_ratio");
  return Verdict::kept();
}

Verdict apply_quality_filters(Document& doc, const QualityFilterConfig& cfg, std::string* failed_filter) {
  auto fail = [&](Verdict v, const char* stage) {
    if (failed_filter) *failed_filter = stage;
    return v;
  };
  if (cfg.gopher_repetition.enabled) {
    Verdict v = gopher_repetition_filter(doc, cfg.gopher_repetition, cfg.word_splitter);
    if (!v.keep) return fail(std::move(v), "gopher_repetition");
  }
  if (cfg.gopher_quality.enabled) {
    Verdict v = gopher_quality_filter(doc, cfg.gopher_quality, cfg.word_splitter);
    if (!v.keep) return fail(std::move(v), "gopher_quality");
  }
  if (cfg.c4.enabled) {
    Verdict v = c4_quality_filter(doc, cfg.c4);
    if (!v.keep) return fail(std::move(v), "c4_quality");
  }
  if (cfg.fineweb.enabled) {
    Verdict v = fineweb_quality_filter(doc, cfg.fineweb, cfg.word_splitter);
    if (!v.keep) return fail(std::move(v), "fineweb_quality");
  }
  return Verdict::kept();
}

}  // namespace aji::data
