// Shared by the tokenizer tests: the shipped cl100k_base / o200k_base tokenizers (loaded
// once per test binary) and the reference JSONL files (tiktoken's ids, from
// data/tokenizer/, copied from ../shared/reference/tokenizer/).
#pragma once

#include <nlohmann/json.hpp>

#include <fstream>
#include <string>
#include <vector>

#include "aji/tokenizer/tokenizer.h"
#include "test_util.h"

namespace aji::test {

inline const tokenizer::Tokenizer& cl100k() {
  static const tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(source_path("data/tokenizer/cl100k_base.tiktoken"));
  return tok;
}
inline const tokenizer::Tokenizer& o200k() {
  static const tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(source_path("data/tokenizer/o200k_base.tiktoken"));
  return tok;
}

inline std::vector<nlohmann::json> read_jsonl(const std::string& rel) {
  std::ifstream in(source_path(rel));
  std::vector<nlohmann::json> rows;
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

inline std::vector<tokenizer::TokenId> ids_of(const nlohmann::json& arr) {
  std::vector<tokenizer::TokenId> ids;
  for (const auto& v : arr) ids.push_back(v.get<tokenizer::TokenId>());
  return ids;
}

}  // namespace aji::test
