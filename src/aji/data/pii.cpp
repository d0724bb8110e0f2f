#include "aji/data/pii.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cstring>

#include "aji/base/error.h"

namespace aji::data {

namespace {

// datatrove PIIFormatter's e-mail pattern (the fixed, A–Z version).
constexpr const char* kEmailPattern =
    R"(\b[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?|\[(?:(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?|[A-Za-z0-9-]*[A-Za-z0-9]:)]))";
// datatrove's IPv4 pattern (no word boundaries, as there).
constexpr const char* kIpPattern =
    R"((?:(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?))";
// Korean phone numbers: mobile / Seoul / area codes / 070, with "-", "." or " " between
// the groups (or none for mobiles), and the international +82 form without the leading 0.
// Never inside a longer run of digits.
constexpr const char* kPhonePattern =
    R"((?<![0-9])(?:\+82[ -]?(?:\(0\))?(?:1[016789]|2|[3-6][1-5]|70)[-. ]?[0-9]{3,4}[-. ]?[0-9]{4}|(?:01[016789]|02|0[3-6][1-5]|070)[-. ][0-9]{3,4}[-. ][0-9]{4}|\((?:02|0[3-6][1-5])\)[ ]?[0-9]{3,4}[-. ][0-9]{4}|01[016789][0-9]{7,8})(?![0-9]))";
// Resident registration numbers: YYMMDD, optional "-", gender/century digit, 6 digits.
constexpr const char* kRrnPattern = R"((?<![0-9])([0-9]{6})[- ]?([1-8][0-9]{6})(?![0-9]))";

struct Regex {
  pcre2_code* code = nullptr;
  Regex() = default;
  explicit Regex(const char* pattern) {
    int err = 0;
    PCRE2_SIZE off = 0;
    code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                         PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off, nullptr);
    if (!code) {
      PCRE2_UCHAR buf[256];
      pcre2_get_error_message(err, buf, sizeof buf);
      throw Error(std::string("internal: PII pattern does not compile: ") + reinterpret_cast<char*>(buf));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is unavailable
  }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  ~Regex() {
    if (code) pcre2_code_free(code);
  }
};

// Compiled once per process; pcre2_code is read-only after JIT and safe to share.
struct Patterns {
  Regex email{kEmailPattern}, ip{kIpPattern}, phone{kPhonePattern}, rrn{kRrnPattern};
};
const Patterns& patterns() {
  static const Patterns p;
  return p;
}

// Replaces every match for which decide() returns a replacement (nullptr = keep the
// match as it is). Returns the number of replacements.
template <typename Decide>
int64_t replace_all(std::string& text, const Regex& re, pcre2_match_data* md, Decide&& decide) {
  if (text.empty()) return 0;
  std::string out;
  int64_t n = 0;
  size_t pos = 0, copied = 0;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  while (pos <= text.size()) {
    int rc = pcre2_match(re.code, subject, text.size(), pos, 0, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      // A resource limit (JIT stack / match limit) on pathological text such as
      // "a.a.a.a…" (Python's re would backtrack quadratically there): skip to the next
      // whitespace and go on, so PII later in the document is still found.
      size_t ws = text.find_first_of(" \t\n\r", pos);
      if (ws == std::string::npos) break;
      pos = ws + 1;
      continue;
    }
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    size_t b = ov[0], e = ov[1];
    const std::string* rep = decide(std::string_view(text).substr(b, e - b), ov, rc);
    if (rep) {
      if (out.empty()) out.reserve(text.size());
      out.append(text, copied, b - copied);
      out.append(*rep);
      copied = e;
      ++n;
    }
    pos = e > b ? e : e + 1;
  }
  if (n) {
    out.append(text, copied, std::string::npos);
    text.swap(out);
  }
  return n;
}

// Python's ipaddress.ip_address(): dotted quad, each octet 0–255 without leading zeros.
bool parse_ipv4_strict(std::string_view s, uint32_t* out) {
  uint32_t addr = 0;
  int parts = 0;
  size_t i = 0;
  while (parts < 4) {
    size_t b = i;
    uint32_t v = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9' && i - b < 4) v = v * 10 + uint32_t(s[i++] - '0');
    size_t len = i - b;
    if (len == 0 || len > 3 || v > 255 || (len > 1 && s[b] == '0')) return false;
    addr = (addr << 8) | v;
    ++parts;
    if (parts < 4) {
      if (i >= s.size() || s[i] != '.') return false;
      ++i;
    }
  }
  if (i != s.size()) return false;
  *out = addr;
  return true;
}

bool in_net(uint32_t a, uint32_t net, int prefix) {
  uint32_t mask = prefix == 0 ? 0 : ~uint32_t(0) << (32 - prefix);
  return (a & mask) == (net & mask);
}

constexpr uint32_t ip(uint32_t a, uint32_t b, uint32_t c, uint32_t d) { return (a << 24) | (b << 16) | (c << 8) | d; }

}  // namespace

bool is_global_ipv4(uint32_t a) {
  // Python 3.11 ipaddress: not in 100.64.0.0/10 and not in _private_networks.
  struct Net {
    uint32_t net;
    int prefix;
  };
  static const Net kPrivate[] = {{ip(0, 0, 0, 0), 8},       {ip(10, 0, 0, 0), 8},      {ip(127, 0, 0, 0), 8},
                                 {ip(169, 254, 0, 0), 16},  {ip(172, 16, 0, 0), 12},   {ip(192, 0, 0, 0), 29},
                                 {ip(192, 0, 0, 170), 31},  {ip(192, 0, 2, 0), 24},    {ip(192, 168, 0, 0), 16},
                                 {ip(198, 18, 0, 0), 15},   {ip(198, 51, 100, 0), 24}, {ip(203, 0, 113, 0), 24},
                                 {ip(240, 0, 0, 0), 4},     {ip(255, 255, 255, 255), 32}};
  if (in_net(a, ip(100, 64, 0, 0), 10)) return false;
  for (const Net& n : kPrivate)
    if (in_net(a, n.net, n.prefix)) return false;
  return true;
}

bool is_valid_rrn(std::string_view d, bool check_checksum) {
  if (d.size() != 13) return false;
  for (char c : d)
    if (c < '0' || c > '9') return false;
  auto num = [&](size_t i, size_t n) {
    int v = 0;
    for (size_t k = 0; k < n; ++k) v = v * 10 + (d[i + k] - '0');
    return v;
  };
  int yy = num(0, 2), mm = num(2, 2), dd = num(4, 2), s = num(6, 1);
  // Gender/century digit: 1,2,5,6 → 1900s; 3,4,7,8 → 2000s (5–8: registered foreigners).
  if (s < 1 || s > 8) return false;
  int year = ((s == 1 || s == 2 || s == 5 || s == 6) ? 1900 : 2000) + yy;
  if (mm < 1 || mm > 12 || dd < 1) return false;
  static const int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  int max_day = kDays[mm - 1] + (mm == 2 && leap ? 1 : 0);
  if (dd > max_day) return false;
  if (check_checksum) {
    static const int kWeights[] = {2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5};
    int sum = 0;
    for (int i = 0; i < 12; ++i) sum += (d[i] - '0') * kWeights[i];
    if ((11 - sum % 11) % 10 != d[12] - '0') return false;
  }
  return true;
}

struct PiiScrubber::Impl {
  pcre2_match_data* md = nullptr;
  size_t email_i = 0, ip_i = 0;  // round-robin positions, as datatrove's PIIReplacer
  Impl() {
    // Room for the capture groups of every pattern (RRN has 2).
    md = pcre2_match_data_create(8, nullptr);
    if (!md) throw Error("out of memory creating PCRE2 match data");
  }
  ~Impl() { pcre2_match_data_free(md); }
};

PiiScrubber::PiiScrubber(PiiConfig config) : config_(std::move(config)), impl_(std::make_unique<Impl>()) {
  if (config_.emails && config_.email_replacements.empty())
    throw Error("PII config: email_replacements is empty").fix("give at least one replacement string");
  if (config_.ips && config_.ip_replacements.empty())
    throw Error("PII config: ip_replacements is empty").fix("give at least one replacement string");
  (void)patterns();
}
PiiScrubber::~PiiScrubber() = default;
PiiScrubber::PiiScrubber(PiiScrubber&&) noexcept = default;
PiiScrubber& PiiScrubber::operator=(PiiScrubber&&) noexcept = default;

PiiCounts PiiScrubber::scrub(std::string& text) {
  PiiCounts c;
  const Patterns& p = patterns();
  Impl& im = *impl_;
  if (config_.emails && text.find('@') != std::string::npos) {
    c.emails = replace_all(text, p.email, im.md, [&](std::string_view, PCRE2_SIZE*, int) {
      const std::string* r = &config_.email_replacements[im.email_i];
      im.email_i = (im.email_i + 1) % config_.email_replacements.size();
      return r;
    });
  }
  if (config_.ips && text.find('.') != std::string::npos) {
    c.ips = replace_all(text, p.ip, im.md, [&](std::string_view m, PCRE2_SIZE*, int) -> const std::string* {
      uint32_t a = 0;
      if (!parse_ipv4_strict(m, &a)) return nullptr;
      if (config_.only_public_ips && !is_global_ipv4(a)) return nullptr;
      const std::string* r = &config_.ip_replacements[im.ip_i];
      im.ip_i = (im.ip_i + 1) % config_.ip_replacements.size();
      return r;
    });
  }
  if (config_.korean_rrn) {
    c.rrns = replace_all(text, p.rrn, im.md, [&](std::string_view, PCRE2_SIZE* ov, int rc) -> const std::string* {
      if (rc < 3) return nullptr;
      std::string digits = text.substr(ov[2], ov[3] - ov[2]) + text.substr(ov[4], ov[5] - ov[4]);
      return is_valid_rrn(digits, config_.rrn_checksum) ? &config_.rrn_replacement : nullptr;
    });
  }
  if (config_.korean_phones) {
    c.phones = replace_all(text, p.phone, im.md,
                           [&](std::string_view, PCRE2_SIZE*, int) { return &config_.phone_replacement; });
  }
  return c;
}

PiiCounts PiiScrubber::scrub(Document& doc) {
  PiiCounts c = scrub(doc.text);
  if (c.total() > 0) {
    if (!doc.metadata.is_object()) doc.metadata = nlohmann::json::object();
    doc.metadata["pii"] = {{"emails", c.emails}, {"ips", c.ips}, {"phones", c.phones}, {"rrns", c.rrns}};
  }
  return c;
}

void to_json(nlohmann::json& j, const PiiConfig& c) {
  j = nlohmann::json{{"emails", c.emails},
                     {"ips", c.ips},
                     {"only_public_ips", c.only_public_ips},
                     {"korean_phones", c.korean_phones},
                     {"korean_rrn", c.korean_rrn},
                     {"rrn_checksum", c.rrn_checksum},
                     {"email_replacements", c.email_replacements},
                     {"ip_replacements", c.ip_replacements},
                     {"phone_replacement", c.phone_replacement},
                     {"rrn_replacement", c.rrn_replacement}};
}

void from_json(const nlohmann::json& j, PiiConfig& c) {
  static const char* kKeys[] = {"emails",       "ips",           "only_public_ips",    "korean_phones",
                                "korean_rrn",   "rrn_checksum",  "email_replacements", "ip_replacements",
                                "phone_replacement", "rrn_replacement"};
  if (!j.is_object()) throw Error("PII config must be a JSON object");
  for (const auto& [k, v] : j.items()) {
    bool ok = false;
    for (const char* n : kKeys) ok = ok || k == n;
    if (!ok) throw Error("unknown key '" + k + "' in PII config").fix("see `aji data config` for the keys");
  }
  try {
    c.emails = j.value("emails", c.emails);
    c.ips = j.value("ips", c.ips);
    c.only_public_ips = j.value("only_public_ips", c.only_public_ips);
    c.korean_phones = j.value("korean_phones", c.korean_phones);
    c.korean_rrn = j.value("korean_rrn", c.korean_rrn);
    c.rrn_checksum = j.value("rrn_checksum", c.rrn_checksum);
    c.email_replacements = j.value("email_replacements", c.email_replacements);
    c.ip_replacements = j.value("ip_replacements", c.ip_replacements);
    c.phone_replacement = j.value("phone_replacement", c.phone_replacement);
    c.rrn_replacement = j.value("rrn_replacement", c.rrn_replacement);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("bad value in PII config: ") + e.what());
  }
}

}  // namespace aji::data
