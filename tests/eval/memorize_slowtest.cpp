// A reduced scripts/memorization_run.sh through the built binary: a corpus from the bundled
// news where 8 documents occur 32 times and the rest once, a tiny model trained on it,
// and `aji eval memorize`: the 32-copy documents must be extracted far more often than
// the single ones (the run in docs/eval-memorization.md: 0.83 against 0.00).
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "aji/base/rng.h"
#include "test_util.h"

namespace {

using aji::test::run_command;
using aji::test::source_path;

TEST(MemorizeExperiment, DuplicatedDocumentsAreExtractedMoreOften) {
  aji::test::TempDir tmp;
  const auto& w = tmp.path();
  // Documents: 2+ consecutive news lines (>= 240 bytes), as the script builds them.
  std::ifstream in(source_path("data/corpus/train/en_news.txt"));
  std::vector<std::string> docs;
  std::string line, cur;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    cur += (cur.empty() ? "" : " ") + line;
    if (cur.size() >= 240) {
      docs.push_back(cur);
      cur.clear();
    }
  }
  ASSERT_GE(docs.size(), 200u);
  std::vector<std::string> corpus;
  for (int d = 0; d < 8; ++d)
    for (int c = 0; c < 32; ++c) corpus.push_back(docs[d]);
  for (int d = 8; d < 108; ++d) corpus.push_back(docs[d]);
  aji::Rng rng(1);
  for (size_t i = corpus.size() - 1; i > 0; --i) std::swap(corpus[i], corpus[rng.next_u64() % (i + 1)]);
  {
    std::ofstream f(w / "corpus.jsonl");
    for (const auto& t : corpus) f << nlohmann::json{{"text", t}}.dump() << "\n";
  }
  {
    std::ofstream f(w / "model.json");
    f << R"({"arch": "llama", "vocab_size": 2048, "n_layer": 2, "n_head": 3, "n_kv_head": 3, "d_model": 96,
             "d_ff": 256, "max_seq_len": 80, "norm_eps": 1e-5, "rope_theta": 10000, "tied_embeddings": true})";
  }
  const std::string aji = std::string(AJI_BINARY) + " -q ";
  const std::string ws = w.string();
  std::string out;
  ASSERT_EQ(run_command(aji + "tokenizer train --input " + source_path("data/corpus/train/en_news.txt").string() +
                            " --vocab-size 2048 --out " + ws + "/tok.json 2>&1",
                        &out),
            0)
      << out;
  ASSERT_EQ(run_command(aji + "data tokenize --tokenizer " + ws + "/tok.json --input " + ws +
                            "/corpus.jsonl --jsonl-field text --out " + ws + "/shards --val-fraction 0.02 2>&1",
                        &out),
            0)
      << out;
  ASSERT_EQ(run_command(aji + "pretrain --config " + ws + "/model.json --data " + ws + "/shards --out " + ws +
                            "/run --steps 250 --batch-size 8 --seq-len 80 --lr 3e-3 --warmup 20 --seed 1 "
                            "--eval-every 250 --eval-batches 2 --save-every 250 --keep 1 2>&1",
                        &out),
            0)
      << out;
  ASSERT_EQ(run_command(aji + "eval memorize --model " + ws + "/run --data " + ws + "/corpus.jsonl --out " + ws +
                            "/probe --max-per-bucket 32 2>&1",
                        &out),
            0)
      << out;
  std::printf("%s", out.c_str());
  std::ifstream rf(w / "probe" / "results.json");
  const nlohmann::json r = nlohmann::json::parse(rf);
  double rate1 = -1, rate32 = -1;
  int64_t n32 = 0;
  for (const auto& b : r["buckets"]) {
    if (b["lo"] == 1) rate1 = b["rate"].get<double>();
    if (b["lo"] == 32) {
      rate32 = b["rate"].get<double>();
      n32 = b["n"].get<int64_t>();
    }
  }
  EXPECT_EQ(n32, 8);
  ASSERT_GE(rate1, 0.0);
  EXPECT_GE(rate32, 0.5);
  EXPECT_LE(rate1, 0.1);
  EXPECT_TRUE(std::filesystem::exists(w / "probe" / "memorization.svg"));
}

}  // namespace
