// PII scrubbing (spec §4.10 + Korean additions): replaces
//   - e-mail addresses (datatrove's PIIFormatter regex, A–Z fixed version), round-robin
//     with "email@example.com", "firstname.lastname@example.org";
//   - IPv4 addresses that are public (Python ipaddress is_global), round-robin with
//     datatrove's six replacement addresses; private/reserved ones are kept;
//   - Korean phone numbers: mobile 01[016789]-XXX(X)-XXXX, Seoul 02-XXX(X)-XXXX, area
//     0[3-6][1-5]-XXX(X)-XXXX, with '-', '.', ' ' or no separators, and the +82 forms
//     (+82-10-1234-5678, +82 2 123 4567); replaced with "010-0000-0000";
//   - Korean resident registration numbers YYMMDD-SXXXXXX (S in 1–4; also 5–8 for
//     foreigners) whose date is a real calendar date (leap years included), optionally
//     also checking the check digit; replaced with "000000-0000000".
// Counts per kind go to doc.metadata["pii"] when anything was found.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/data/document.h"

namespace aji::data {

struct PiiConfig {
  bool emails = true;
  bool ips = true;
  bool only_public_ips = true;
  bool korean_phones = true;
  bool korean_rrn = true;
  bool rrn_checksum = false;  // also require a valid check digit (pre-2020 numbers)
  std::vector<std::string> email_replacements = {"email@example.com", "firstname.lastname@example.org"};
  std::vector<std::string> ip_replacements = {"22.214.171.124", "126.96.36.199", "188.8.131.52",
                                              "184.108.40.206", "220.127.116.11", "18.104.22.168"};
  std::string phone_replacement = "010-0000-0000";
  std::string rrn_replacement = "000000-0000000";
};
void to_json(nlohmann::json& j, const PiiConfig& c);
void from_json(const nlohmann::json& j, PiiConfig& c);  // unknown keys throw aji::Error

struct PiiCounts {
  int64_t emails = 0;
  int64_t ips = 0;
  int64_t phones = 0;
  int64_t rrns = 0;
  int64_t total() const { return emails + ips + phones + rrns; }
};

// One scrubber per thread: it keeps the round-robin position of the replacements (as
// datatrove's PIIReplacer does) and PCRE2 match data. Compiling the patterns is done once.
class PiiScrubber {
 public:
  explicit PiiScrubber(PiiConfig config = {});
  ~PiiScrubber();
  PiiScrubber(PiiScrubber&&) noexcept;
  PiiScrubber& operator=(PiiScrubber&&) noexcept;

  // Rewrites text in place; returns what was replaced.
  PiiCounts scrub(std::string& text);
  // scrub(doc.text) and, when anything was replaced, doc.metadata["pii"] = counts.
  PiiCounts scrub(Document& doc);
  const PiiConfig& config() const { return config_; }

  struct Impl;

 private:
  PiiConfig config_;
  std::unique_ptr<Impl> impl_;
};

// Exposed for tests.
bool is_global_ipv4(uint32_t address);  // Python ipaddress.IPv4Address.is_global
bool is_valid_rrn(std::string_view digits13, bool check_checksum);  // "YYMMDDSXXXXXX"

}  // namespace aji::data
