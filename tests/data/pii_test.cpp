// PII scrubbing: e-mails and IPs byte-for-byte as datatrove's PIIFormatter (fixture from
// tests/reference/pii_vs_datatrove.py), Korean phones and resident registration numbers
// by hand-made positives and negatives.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/data/pii.h"
#include "test_util.h"

using aji::data::PiiConfig;
using aji::data::PiiScrubber;

TEST(Pii, EmailsAndIpsMatchDatatroveExactly) {
  PiiConfig cfg;
  cfg.korean_phones = false;
  cfg.korean_rrn = false;
  PiiScrubber scrubber(cfg);  // one scrubber: replacements cycle across documents as in datatrove
  aji::LineReader r(aji::test::source_path("tests/fixtures/data_filters/pii_cases.jsonl"));
  std::string_view line;
  int n = 0, same = 0;
  while (r.next(line)) {
    auto j = nlohmann::json::parse(line);
    std::string text = j["in"];
    scrubber.scrub(text);
    ++n;
    if (text == j["out"].get<std::string>()) ++same;
    else ADD_FAILURE() << "in:  " << j["in"].get<std::string>() << "\nref: " << j["out"].get<std::string>()
                       << "\naji: " << text;
  }
  EXPECT_GT(n, 250);
  EXPECT_EQ(same, n);
}

TEST(Pii, IsGlobalMatchesPythonIpaddress) {
  auto ip = [](int a, int b, int c, int d) { return uint32_t(a) << 24 | uint32_t(b) << 16 | uint32_t(c) << 8 | uint32_t(d); };
  EXPECT_TRUE(aji::data::is_global_ipv4(ip(8, 8, 8, 8)));
  EXPECT_TRUE(aji::data::is_global_ipv4(ip(224, 0, 0, 1)));  // multicast counts as global in Python 3.11
  EXPECT_TRUE(aji::data::is_global_ipv4(ip(172, 32, 0, 1)));
  EXPECT_FALSE(aji::data::is_global_ipv4(ip(172, 31, 255, 255)));
  EXPECT_FALSE(aji::data::is_global_ipv4(ip(100, 127, 0, 1)));
  EXPECT_TRUE(aji::data::is_global_ipv4(ip(100, 128, 0, 1)));
  EXPECT_FALSE(aji::data::is_global_ipv4(ip(192, 0, 0, 7)));
  EXPECT_TRUE(aji::data::is_global_ipv4(ip(192, 0, 0, 8)));
}

TEST(Pii, KoreanPhoneNumbers) {
  PiiScrubber s;
  struct Case {
    const char* in;
    const char* out;
    int phones;
  } cases[] = {
      {"연락처 010-1234-5678 로 주세요", "연락처 010-0000-0000 로 주세요", 1},
      {"전화:01012345678", "전화:010-0000-0000", 1},
      {"011.234.5678 / 016 1234 5678", "010-0000-0000 / 010-0000-0000", 2},
      {"서울 02-123-4567, 부산 051-1234-5678, (02) 123-4567", "서울 010-0000-0000, 부산 010-0000-0000, 010-0000-0000", 3},
      {"인터넷전화 070-1234-5678", "인터넷전화 010-0000-0000", 1},
      {"+82-10-1234-5678 or +82 2 123 4567", "010-0000-0000 or 010-0000-0000", 2},
      // Negatives: too short/long, inside longer digit runs, not a Korean prefix, prices.
      {"주문번호 2010-1234-56789", "주문번호 2010-1234-56789", 0},
      {"코드 01012345678901", "코드 01012345678901", 0},
      {"가격 12,000원, 2023-10-05 날짜", "가격 12,000원, 2023-10-05 날짜", 0},
      {"ISBN 978-89-1234-5678", "ISBN 978-89-1234-5678", 0},
      {"080-123-4567 무료", "080-123-4567 무료", 0},
  };
  for (const Case& c : cases) {
    std::string t = c.in;
    auto counts = s.scrub(t);
    EXPECT_EQ(t, c.out) << c.in;
    EXPECT_EQ(counts.phones, c.phones) << c.in;
  }
}

TEST(Pii, KoreanResidentRegistrationNumbers) {
  // Dates validated: month 1–12, day within the month, 29 Feb only in leap years
  // (century from the 7th digit: 1/2 → 1900s, 3/4 → 2000s).
  EXPECT_TRUE(aji::data::is_valid_rrn("9001011234567", false));
  EXPECT_TRUE(aji::data::is_valid_rrn("0002294234567", false));   // 2000-02-29 (leap)
  EXPECT_FALSE(aji::data::is_valid_rrn("0002291234567", false));  // 1900-02-29: 1900 is not leap
  EXPECT_TRUE(aji::data::is_valid_rrn("9602291234567", false));   // 1996-02-29
  EXPECT_FALSE(aji::data::is_valid_rrn("9702291234567", false));
  EXPECT_FALSE(aji::data::is_valid_rrn("9013011234567", false));  // month 13
  EXPECT_FALSE(aji::data::is_valid_rrn("9004311234567", false));  // 31 April
  EXPECT_FALSE(aji::data::is_valid_rrn("9001009234567", false));  // day 0 / digit 9
  EXPECT_FALSE(aji::data::is_valid_rrn("9001019234567", false));  // gender digit 9
  // Checksum: weights 2..9,2..5; check = (11 - sum % 11) % 10.
  // 900101-123456?: sum = 9*2+0*3+0*4+1*5+0*6+1*7+1*8+2*9+3*2+4*3+5*4+6*5 = 124 → (11-3)%10 = 8
  EXPECT_TRUE(aji::data::is_valid_rrn("9001011234568", true));
  EXPECT_FALSE(aji::data::is_valid_rrn("9001011234567", true));

  PiiScrubber s;
  std::string t = "주민번호 900101-1234567 와 9001011234567, 가짜 901301-1234567, 991231-5123456";
  auto c = s.scrub(t);
  EXPECT_EQ(t, "주민번호 000000-0000000 와 000000-0000000, 가짜 901301-1234567, 000000-0000000");
  EXPECT_EQ(c.rrns, 3);
  PiiConfig strict;
  strict.rrn_checksum = true;
  PiiScrubber s2(strict);
  std::string u = "900101-1234568 900101-1234567";
  EXPECT_EQ(s2.scrub(u).rrns, 1);
  EXPECT_EQ(u, "000000-0000000 900101-1234567");
}

TEST(Pii, DocumentMetadataAndBadInput) {
  PiiScrubber s;
  aji::data::Document d;
  d.text = "mail me: a@example.com, call 010-9876-5432, server 8.8.4.4";
  s.scrub(d);
  EXPECT_EQ(d.metadata["pii"]["emails"], 1);
  EXPECT_EQ(d.metadata["pii"]["phones"], 1);
  EXPECT_EQ(d.metadata["pii"]["ips"], 1);
  aji::data::Document clean;
  clean.text = "nothing to see";
  s.scrub(clean);
  EXPECT_FALSE(clean.metadata.contains("pii"));
  // Invalid UTF-8 around a match: no crash, the valid part is still scrubbed.
  std::string bad = "\xff\xfe x@example.com \xc3 8.8.8.8 \xe2\x82";
  auto c = s.scrub(bad);
  EXPECT_EQ(c.emails + c.ips, 2);
  EXPECT_EQ(bad.find("x@example.com"), std::string::npos);
  PiiConfig empty;
  empty.email_replacements.clear();
  EXPECT_THROW(PiiScrubber{empty}, aji::Error);
}

TEST(Pii, PathologicalTextDoesNotHideLaterPii) {
  // "a.a.a.…" makes the e-mail pattern backtrack quadratically (Python's re would take
  // minutes); PCRE2 stops at its limit and the scan resumes at the next whitespace.
  std::string t;
  for (int i = 0; i < 50000; ++i) t += "a.";
  t += " x@example.com 8.8.8.8 010-1234-5678";
  PiiScrubber s;
  auto c = s.scrub(t);
  EXPECT_EQ(c.emails, 1);
  EXPECT_EQ(c.ips, 1);
  EXPECT_EQ(c.phones, 1);
  EXPECT_EQ(t.find("x@example.com"), std::string::npos);
}
