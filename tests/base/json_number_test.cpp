#include "aji/base/json_number.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

using nlohmann::json;

// Every number form a damaged or hand-written file can hold: only integers that fit pass.
TEST(JsonNumber, AcceptsOnlyWholeNumbersThatFit) {
  EXPECT_EQ(aji::json_int<int64_t>(json::parse("-7"), "x"), -7);
  EXPECT_EQ(aji::json_int<uint64_t>(json::parse("18446744073709551615"), "x"), UINT64_MAX);
  EXPECT_EQ(aji::json_int<uint32_t>(json::parse("4294967295"), "x"), UINT32_MAX);
  EXPECT_EQ(aji::json_int<int>(json::parse("-2147483648"), "x"), INT32_MIN);
  for (const char* bad : {"4.6e23", "2.5", "1e3", "-1e30", "\"3\"", "null", "true", "[1]", "NaN"}) {
    json v = json::parse(bad, nullptr, false);
    EXPECT_FALSE(aji::json_int_fits<int64_t>(v)) << bad;
    EXPECT_THROW(aji::json_int<int64_t>(v, "x"), aji::Error) << bad;
  }
  EXPECT_THROW(aji::json_int<uint64_t>(json::parse("-1"), "x"), aji::Error);
  EXPECT_THROW(aji::json_int<uint32_t>(json::parse("4294967296"), "x"), aji::Error);
  EXPECT_THROW(aji::json_int<int>(json::parse("2147483648"), "x"), aji::Error);
  EXPECT_THROW(aji::json_int<int64_t>(json::parse("9223372036854775808"), "x"), aji::Error);
  try {
    aji::json_int<int64_t>(json::parse("4.6e23"), "the saved \"step\"");
    FAIL();
  } catch (const aji::Error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("the saved \"step\" must be a whole number"), std::string::npos) << w;
    EXPECT_NE(w.find("4.6e+23"), std::string::npos) << w;
  }
  const json obj = {{"a", 3}, {"b", 1.5}};
  EXPECT_EQ(aji::json_int_or<int>(obj, "a", 9, "a"), 3);
  EXPECT_EQ(aji::json_int_or<int>(obj, "missing", 9, "m"), 9);
  EXPECT_THROW(aji::json_int_or<int>(obj, "b", 9, "b"), aji::Error);
}
