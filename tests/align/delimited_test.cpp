#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "aji/align/delimited.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace aji::align;
using aji::test::TempDir;

namespace {
std::vector<std::vector<std::string>> read_all(const fs::path& p, TableFormat f, std::vector<int64_t>* lines = nullptr) {
  DelimitedReader r(p, f);
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> fields;
  while (r.next(fields)) {
    rows.push_back(fields);
    if (lines) lines->push_back(r.record_line());
  }
  return rows;
}
fs::path write(const TempDir& dir, const std::string& name, const std::string& text) {
  fs::path p = dir.path() / name;
  std::ofstream(p, std::ios::binary) << text;
  return p;
}
}  // namespace

// tests/fixtures/sft/tricky.csv and the rows Python's csv module reads from it
// (tests/reference/sft_converters.py): quotes, "" escapes, CRLF inside a quoted field,
// a blank line, a BOM, a quote in the middle of an unquoted field, Korean, no final newline.
TEST(Delimited, CsvMatchesPythonCsvModule) {
  auto expected = nlohmann::json::parse(aji::read_file(aji::test::source_path("tests/fixtures/sft/tricky_expected.json")));
  std::vector<int64_t> lines;
  auto rows = read_all(aji::test::source_path("tests/fixtures/sft/tricky.csv"), TableFormat::kCsv, &lines);
  ASSERT_EQ(rows.size(), expected.size());
  for (size_t i = 0; i < rows.size(); ++i) EXPECT_EQ(nlohmann::json(rows[i]), expected[i]) << "row " << i;
  // Record lines: the multi-line record starts on line 4, the one after the blank line on 7.
  EXPECT_EQ(lines[3], 4);
  EXPECT_EQ(lines[4], 7);
}

TEST(Delimited, TsvHasNoQuoting) {
  TempDir dir;
  auto p = write(dir, "t.tsv", "a\tb\tc\r\n\"quoted\"\t say \"x\" \t\n\nlast\t\t");
  auto rows = read_all(p, TableFormat::kTsv);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(rows[1], (std::vector<std::string>{"\"quoted\"", " say \"x\" ", ""}));
  EXPECT_EQ(rows[2], (std::vector<std::string>{"last", "", ""}));
}

TEST(Delimited, UnterminatedQuoteNamesTheRecordsFirstLine) {
  TempDir dir;
  auto p = write(dir, "bad.csv", "a,b\n1,\"never closed\n2,3\n4,5\n");
  DelimitedReader r(p, TableFormat::kCsv);
  std::vector<std::string> f;
  ASSERT_TRUE(r.next(f));
  try {
    r.next(f);
    FAIL() << "expected an error";
  } catch (const aji::Error& e) {
    EXPECT_EQ(e.line(), 2);
    EXPECT_EQ(e.file(), p.string());
    EXPECT_NE(std::string(e.what()).find("ends inside a quoted field"), std::string::npos);
  }
}

TEST(Delimited, TextAfterClosingQuoteIsAnError) {
  TempDir dir;
  auto p = write(dir, "bad.csv", "x,y\n\"ab\"c,d\n");
  DelimitedReader r(p, TableFormat::kCsv);
  std::vector<std::string> f;
  ASSERT_TRUE(r.next(f));
  try {
    r.next(f);
    FAIL();
  } catch (const aji::Error& e) {
    EXPECT_EQ(e.line(), 2);
    EXPECT_NE(std::string(e.what()).find("after the closing quote"), std::string::npos);
  }
}

TEST(Delimited, EmptyFileAndSplitHelper) {
  TempDir dir;
  auto p = write(dir, "empty.csv", "");
  EXPECT_TRUE(read_all(p, TableFormat::kCsv).empty());
  EXPECT_EQ(split_delimited_line("a,\"b,c\",\"d\"\"e\",", TableFormat::kCsv),
            (std::vector<std::string>{"a", "b,c", "d\"e", ""}));
  EXPECT_EQ(split_delimited_line("a\t\"b\"", TableFormat::kTsv), (std::vector<std::string>{"a", "\"b\""}));
}
