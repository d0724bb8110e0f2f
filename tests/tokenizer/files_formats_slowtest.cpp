// Slow (Release-only) file-format checks on the full cl100k_base vocabulary.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "aji/base/io.h"
#include "aji/tokenizer/tokenizer_files.h"
#include "test_util.h"

namespace aji::tokenizer {
namespace {

using aji::test::source_path;
using aji::test::TempDir;
using nlohmann::json;

TEST(HfFile, Cl100kExportHasOneMergePerToken) {
  // Rebuilding merges from tiktoken ranks: 100,000 merges for cl100k's 100,256 tokens.
  TempDir dir;
  Tokenizer cl = Tokenizer::load(source_path("data/tokenizer/cl100k_base.tiktoken"));
  save_hf_tokenizer_json(cl, dir.path() / "tokenizer.json");
  Tokenizer back = Tokenizer::load(dir.path() / "tokenizer.json");
  EXPECT_EQ(back.n_ranks(), cl.n_ranks());
  EXPECT_EQ(back.encode("Hello <|endoftext|> World", SpecialPolicy::kAllow),
            (std::vector<TokenId>{9906, 220, 100257, 4435}));
  const json j = json::parse(read_file(dir.path() / "tokenizer.json"));
  EXPECT_EQ(j["model"]["merges"].size(), 100000u);
  EXPECT_EQ(j["model"]["ignore_merges"], true);
}

}  // namespace
}  // namespace aji::tokenizer
