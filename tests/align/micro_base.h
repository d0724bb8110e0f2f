// A micro base model for end-to-end tests of the post-training commands: a BPE tokenizer
// trained (by the aji binary) on a small corpus, the corpus tokenized into shards, and a
// 2-block Llama (d32) pretrained for a few steps on it. Seconds at one thread.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "aji/train/pretrain.h"
#include "aji/train/tokenize_data.h"
#include "test_util.h"

namespace aji::test {

struct MicroBaseOptions {
  int vocab_size = 320;
  std::string tokenizer_flags;  // extra `aji tokenizer train` flags (special tokens)
  int64_t steps = 2;
  int batch = 2;
  float lr = 2e-3f;
};

// Builds dir/{tok.json, shards/, micro.json, base/} from corpus; returns the base run dir.
inline std::filesystem::path build_micro_base(const std::filesystem::path& dir, const std::filesystem::path& corpus,
                                              const MicroBaseOptions& o = {}) {
  std::string out;
  const std::string cmd = std::string(AJI_BINARY) + " -q tokenizer train --input " + corpus.string() +
                          " --vocab-size " + std::to_string(o.vocab_size) + " " + o.tokenizer_flags + " --out " +
                          (dir / "tok.json").string() + " 2>&1";
  EXPECT_EQ(run_command(cmd, &out), 0) << out;
  train::TokenizeDataOptions t;
  t.tokenizer = dir / "tok.json";
  t.inputs = {corpus.string()};
  t.out_dir = dir / "shards";
  t.val_fraction = 0.1;
  t.progress = false;
  train::tokenize_data(t);
  std::ofstream(dir / "micro.json") << R"({"arch": "llama", "vocab_size": )" << o.vocab_size
                                    << R"(, "n_layer": 2, "n_head": 2, "n_kv_head": 1, "d_model": 32, "d_ff": 64, "max_seq_len": 64})";
  train::PretrainOptions p;
  p.config = dir / "micro.json";
  p.data_dir = t.out_dir;
  p.out_dir = dir / "base";
  p.steps = o.steps;
  p.batch = o.batch;
  p.seq_len = 32;
  p.lr = o.lr;
  p.sample_every = 0;
  p.quiet = true;
  train::pretrain(p);
  return p.out_dir;
}

}  // namespace aji::test
