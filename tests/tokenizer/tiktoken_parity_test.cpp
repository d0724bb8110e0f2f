// Parity with Python tiktoken (0.14, same rank files) on ~3 MB of real English and
// Korean text: per 64-line document, the token count and an FNV-1a hash of the ids must
// equal the fixture written by tests/reference/tiktoken_parity.py.
#include <gtest/gtest.h>

#include <cinttypes>
#include <map>
#include <sstream>

#include "aji/base/io.h"
#include "tokenizer_test_util.h"

namespace aji::test {
namespace {

uint64_t fnv1a64(const std::vector<tokenizer::TokenId>& ids) {
  uint64_t h = 0xCBF29CE484222325ULL;
  for (uint32_t id : ids)
    for (int k = 0; k < 4; ++k) {
      h ^= (id >> (8 * k)) & 0xFF;
      h *= 0x100000001B3ULL;
    }
  return h;
}

// The same split as the Python oracle: 64 lines per document, "\n" kept.
std::vector<std::string_view> documents(std::string_view data) {
  std::vector<std::string_view> docs;
  size_t start = 0, pos = 0;
  int lines = 0;
  while (pos < data.size()) {
    size_t eol = data.find('\n', pos);
    pos = eol == std::string_view::npos ? data.size() : eol + 1;
    if (++lines == 64 || pos == data.size()) {
      docs.push_back(data.substr(start, pos - start));
      start = pos;
      lines = 0;
    }
  }
  return docs;
}

TEST(TiktokenParity, RealEnglishAndKoreanText) {
  std::istringstream fixture(read_file(source_path("tests/fixtures/tokenizer/tiktoken_parity.tsv")));
  std::map<std::string, std::string> samples;
  std::map<std::string, std::vector<std::string_view>> docs;
  std::string line;
  size_t checked = 0, bytes = 0;
  bool sanitizer = false;
#if defined(__SANITIZE_ADDRESS__)
  sanitizer = true;  // every 4th document keeps the sanitizer run short
#endif
  std::map<std::string, size_t> rows_per_encoding;
  while (std::getline(fixture, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream row(line);
    std::string enc, sample, hash_hex;
    size_t doc = 0, n_bytes = 0, n_tokens = 0;
    row >> enc >> sample >> doc >> n_bytes >> n_tokens >> hash_hex;
    ++rows_per_encoding[enc];
    if (!samples.count(sample)) {
      samples[sample] = read_file(source_path("tests/fixtures/tokenizer/parity/" + sample));
      docs[sample] = documents(samples[sample]);
    }
    ASSERT_LT(doc, docs[sample].size()) << line;
    std::string_view text = docs[sample][doc];
    ASSERT_EQ(text.size(), n_bytes) << line;
    if (sanitizer && doc % 4 != 0) continue;
    const auto& tok = enc == "cl100k_base" ? cl100k() : o200k();
    std::vector<tokenizer::TokenId> ids;
    tok.encode_ordinary(text, ids);
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016" PRIx64, fnv1a64(ids));
    EXPECT_EQ(ids.size(), n_tokens) << line;
    EXPECT_EQ(hex, hash_hex) << line;
    ++checked;
    bytes += text.size();
  }
  EXPECT_EQ(samples.size(), 5u);
  EXPECT_EQ(rows_per_encoding["cl100k_base"], rows_per_encoding["o200k_base"]);
  EXPECT_GT(rows_per_encoding["cl100k_base"], 900u);
  EXPECT_GT(bytes, sanitizer ? 1000000u : 6000000u);  // ~3.3 MB per encoding
  EXPECT_GT(checked, 0u);
}

}  // namespace
}  // namespace aji::test
