// `aji data tokenize` + `aji pretrain` end to end on a micro model: outputs, the run-dir
// guard, bit-identical resume, Ctrl-C, divergence, and the CLI wiring.
#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "aji/tokenizer/tokenizer.h"
#include "aji/train/checkpoint.h"
#include "aji/train/loader.h"
#include "aji/train/pretrain.h"
#include "aji/train/tokenize_data.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace aji::train;
using aji::test::TempDir;

namespace {

// A corpus with learnable structure: sentences from a small grammar, in paragraphs.
std::string make_corpus(int paragraphs) {
  const char* subj[] = {"the cat", "a dog", "my friend", "the old king", "a small bird", "the teacher"};
  const char* verb[] = {"sees", "likes", "finds", "follows", "paints", "remembers"};
  const char* obj[] = {"the red ball", "a green tree", "the quiet river", "an open door", "the long road"};
  aji::Rng rng(5);
  std::string s;
  for (int p = 0; p < paragraphs; ++p) {
    const int n = 1 + static_cast<int>(rng.below(4));
    for (int i = 0; i < n; ++i) {
      s += subj[rng.below(6)];
      s += " ";
      s += verb[rng.below(6)];
      s += " ";
      s += obj[rng.below(5)];
      s += ". ";
    }
    s += "\n\n";
  }
  return s;
}

struct Fixture {
  TempDir dir;
  fs::path data, config;
  Fixture() {
    aji::set_num_threads(1);  // micro shapes: one thread; also makes runs comparable
    std::ofstream(dir.path() / "corpus.txt") << make_corpus(600);
    std::string out;
    const std::string cmd = std::string(AJI_BINARY) + " -q tokenizer train --input " + (dir.path() / "corpus.txt").string() +
                            " --vocab-size 320 --out " + (dir.path() / "tok.json").string() + " 2>&1";
    EXPECT_EQ(aji::test::run_command(cmd, &out), 0) << out;
    TokenizeDataOptions t;
    t.tokenizer = dir.path() / "tok.json";
    t.inputs = {(dir.path() / "corpus.txt").string()};
    t.out_dir = dir.path() / "data";
    t.val_fraction = 0.1;
    t.shard_tokens = 2048;  // several shards, so the loader's shard order matters
    t.progress = false;
    tokenize_data(t);
    data = t.out_dir;
    config = dir.path() / "micro.json";
    std::ofstream(config) << R"({"arch": "llama", "vocab_size": 320, "n_layer": 2, "n_head": 2, "n_kv_head": 1,
                                 "d_model": 32, "d_ff": 64, "max_seq_len": 32})";
  }
  PretrainOptions options(const std::string& run, int64_t steps) const {
    PretrainOptions o;
    o.config = config;
    o.data_dir = data;
    o.out_dir = dir.path() / run;
    o.steps = steps;
    o.batch = 2;
    o.seq_len = 16;
    o.total_batch_tokens = 64;  // 2 micro-batches per step: accumulation is exercised
    o.lr = 1e-2f;
    o.eval_every = 4;
    o.eval_batches = 2;
    o.sample_every = 5;
    o.sample_tokens = 8;
    o.save_every = 3;
    o.quiet = true;
    return o;
  }
};

std::vector<nlohmann::json> read_jsonl(const fs::path& p) {
  std::vector<nlohmann::json> v;
  std::ifstream in(p);
  std::string line;
  while (std::getline(in, line)) v.push_back(nlohmann::json::parse(line));
  return v;
}

}  // namespace

TEST(TokenizeData, ShardsManifestAndDocumentSplit) {
  Fixture f;
  const DataManifest m = DataManifest::load(f.data);
  EXPECT_GT(m.train.size(), 1u);
  EXPECT_FALSE(m.val.empty());
  uint64_t docs = 0, tokens = 0;
  for (const auto* split : {&m.train, &m.val})
    for (const auto& s : *split) {
      Shard sh = Shard::open(f.data / s.file, true);
      EXPECT_EQ(sh.size(), s.tokens);
      EXPECT_EQ(sh[0], m.bos_id);  // shards start at a document
      uint64_t bos = 0;
      for (uint64_t i = 0; i < sh.size(); ++i) bos += sh[i] == m.bos_id;
      EXPECT_EQ(bos, s.documents);
      docs += s.documents;
      tokens += s.tokens;
    }
  EXPECT_EQ(docs, 600u);  // one document per paragraph
  EXPECT_TRUE(fs::exists(f.data / "aji_tokenizer.json"));
  // Same input, same split and ids; an existing output needs --force.
  TokenizeDataOptions t;
  t.tokenizer = f.dir.path() / "tok.json";
  t.inputs = {(f.dir.path() / "corpus.txt").string()};
  t.out_dir = f.data;
  t.val_fraction = 0.1;
  t.shard_tokens = 2048;
  t.progress = false;
  EXPECT_THROW(tokenize_data(t), aji::Error);
  t.force = true;
  aji::set_num_threads(2);
  const auto again = tokenize_data(t);
  aji::set_num_threads(1);
  EXPECT_EQ(again.manifest.to_json(), m.to_json());
}

TEST(TokenizeData, JsonlErrorsNameTheLineOrAreCountedWhenSkipped) {
  Fixture f;
  std::ofstream(f.dir.path() / "docs.jsonl") << "{\"text\": \"hello there\"}\n{\"text\": 5}\n{broken\n"
                                             << "{\"text\": \"bad \\u00ff \\ud800 ok\"}\n{\"text\": \"\"}\n";
  TokenizeDataOptions t;
  t.tokenizer = f.dir.path() / "tok.json";
  t.inputs = {(f.dir.path() / "docs.jsonl").string()};
  t.jsonl_field = "text";
  t.out_dir = f.dir.path() / "jdata";
  t.val_fraction = 0;
  t.progress = false;
  try {
    tokenize_data(t);
    FAIL();
  } catch (const aji::Error& e) {
    EXPECT_EQ(e.line(), 2);
    EXPECT_NE(e.how_to_fix().find("--skip-bad-lines"), std::string::npos);
  }
  t.skip_bad_lines = true;
  auto r = tokenize_data(t);
  EXPECT_EQ(r.skipped_bad_lines, 3u);  // not a string, broken JSON, a lone surrogate (invalid UTF-8)
  EXPECT_EQ(r.skipped_empty, 1u);
  EXPECT_EQ(r.documents, 1u);
  // Plain text: a paragraph that is not UTF-8 is counted and skipped, the rest kept.
  std::ofstream(f.dir.path() / "mixed.txt") << "good one\n\nbad \xff\xfe here\n\nanother good one\n";
  t.inputs = {(f.dir.path() / "mixed.txt").string()};
  t.jsonl_field.clear();
  t.force = true;
  r = tokenize_data(t);
  EXPECT_EQ(r.skipped_invalid_utf8, 1u);
  EXPECT_EQ(r.documents, 2u);
}

TEST(Pretrain, WritesMetricsCurveCheckpointsAndLearns) {
  Fixture f;
  auto o = f.options("run", 12);
  o.lr = 2e-2f;
  auto r = pretrain(o);
  ASSERT_EQ(r.step_losses.size(), 12u);
  EXPECT_EQ(r.step, 12);
  EXPECT_LT(r.step_losses.back(), r.step_losses.front() - 1.0f);  // ln(320) = 5.77 at the start
  EXPECT_TRUE(std::isfinite(r.last_val_loss));
  {
    // Validation bits per byte recomputed here: the same val windows (the first
    // eval_batches batches of the val loader) scored row by row with token_logprobs on the
    // final weights; the NLL of the tokens that stand for text over their UTF-8 bytes
    // (specials, i.e. BOS, excluded).
    auto model = load_model(list_checkpoints(o.out_dir).back().second);
    auto tok = aji::tokenizer::Tokenizer::load(o.out_dir / kAjiTokenizerFile);
    DataLoader val(o.data_dir, "val", o.batch, o.seq_len, o.seed, /*shuffle=*/true);
    const int T = o.seq_len;
    std::vector<int32_t> in(static_cast<size_t>(o.batch) * T), tgt(in.size());
    double nll = 0;
    uint64_t bytes = 0;
    for (int b = 0; b < o.eval_batches; ++b) {
      val.next_batch(in.data(), tgt.data());
      for (int row = 0; row < o.batch; ++row) {
        std::vector<int32_t> ids(in.begin() + row * T, in.begin() + (row + 1) * T);
        ids.push_back(tgt[static_cast<size_t>(row * T + T - 1)]);
        const auto lp = model.token_logprobs(ids.data(), T + 1);
        for (int t = 0; t < T; ++t) {
          const int32_t y = tgt[static_cast<size_t>(row * T + t)];
          bool special = false;
          for (const auto& sp : tok.specials()) special = special || static_cast<int32_t>(sp.id) == y;
          if (special) continue;
          nll -= lp[static_cast<size_t>(t)];
          bytes += tok.token_bytes(static_cast<aji::tokenizer::TokenId>(y)).size();
        }
      }
    }
    ASSERT_GT(bytes, 0u);
    const double want = nll / std::log(2.0) / static_cast<double>(bytes);
    EXPECT_NEAR(r.last_val_bpb, want, 1e-4 * want);
  }
  const fs::path run = o.out_dir;
  auto lines = read_jsonl(run / "metrics.jsonl");
  int steps = 0, evals = 0, samples = 0;
  for (const auto& j : lines) {
    steps += j.contains("loss");
    evals += j.contains("val_loss");
    samples += j.contains("sample");
  }
  EXPECT_EQ(steps, 12);
  EXPECT_EQ(evals, 3);    // steps 4, 8, 12
  EXPECT_EQ(samples, 3);  // steps 5, 10, 12
  const std::string svg = aji::read_file(run / "loss.svg");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("<polyline"), std::string::npos);
  auto cks = list_checkpoints(run);
  ASSERT_EQ(cks.size(), 3u);  // saved at 3, 6, 9, 12; keep 3
  EXPECT_EQ(cks.back().first, 12);
  auto st = nlohmann::json::parse(aji::read_file(cks.back().second / "trainer_state.json"));
  EXPECT_EQ(st["step"], 12);
  EXPECT_TRUE(fs::exists(cks.back().second / "tokenizer.json"));
  // The run dir is never overwritten by accident.
  try {
    pretrain(o);
    FAIL();
  } catch (const aji::Error& e) {
    EXPECT_NE(e.how_to_fix().find("--resume"), std::string::npos);
  }
  o.force = true;
  o.steps = 2;
  EXPECT_EQ(pretrain(o).step, 2);
  EXPECT_EQ(list_checkpoints(run).size(), 1u);
}

TEST(Pretrain, ResumeIsBitIdenticalToAStraightRun) {
  Fixture f;
  auto straight = pretrain(f.options("straight", 10));
  auto first = f.options("split", 10);
  first.stop_after = 5;
  auto a = pretrain(first);
  EXPECT_TRUE(a.interrupted);
  EXPECT_EQ(a.step, 5);
  auto second = f.options("split", 0);
  second.config.clear();
  second.data_dir.clear();  // taken from the checkpoint
  second.resume = true;
  auto b = pretrain(second);
  EXPECT_EQ(b.step, 10);
  std::vector<float> joined = a.step_losses;
  joined.insert(joined.end(), b.step_losses.begin(), b.step_losses.end());
  ASSERT_EQ(joined.size(), straight.step_losses.size());
  for (size_t i = 0; i < joined.size(); ++i) EXPECT_EQ(joined[i], straight.step_losses[i]) << "step " << i + 1;
  EXPECT_EQ(b.last_val_loss, straight.last_val_loss);
  auto m1 = load_model(f.dir.path() / "straight"), m2 = load_model(f.dir.path() / "split");
  EXPECT_TRUE(std::equal(m1.params(), m1.params() + m1.num_params(), m2.params()));
  // metrics.jsonl of the resumed run holds each step once.
  int step_lines = 0;
  for (const auto& j : read_jsonl(f.dir.path() / "split" / "metrics.jsonl")) step_lines += j.contains("loss");
  EXPECT_EQ(step_lines, 10);
  // Resuming with another architecture is refused.
  second.config = f.dir.path() / "other.json";
  std::ofstream(second.config) << R"({"arch": "gpt2", "vocab_size": 320, "n_layer": 2, "n_head": 2,
                                      "d_model": 32, "max_seq_len": 32})";
  EXPECT_THROW(pretrain(second), aji::Error);
}

TEST(Pretrain, CtrlCSavesACheckpointAndStops) {
  Fixture f;
  auto o = f.options("sigint", 50);
  o.save_every = 0;
  o.on_step = [](int64_t step, float) {
    if (step == 4) std::raise(SIGINT);
  };
  auto r = pretrain(o);
  EXPECT_TRUE(r.interrupted);
  EXPECT_EQ(r.step, 4);
  auto cks = list_checkpoints(o.out_dir);
  ASSERT_EQ(cks.size(), 1u);
  EXPECT_EQ(cks[0].first, 4);
}

TEST(Pretrain, DivergenceStopsWithAClearErrorAndKeepsTheLastCheckpoint) {
  Fixture f;
  auto o = f.options("nan", 20);
  o.lr = 1e30f;  // absurd: the first update sends the weights to ~1e30
  o.warmup = 0;
  o.save_every = 1;
  try {
    pretrain(o);
    FAIL() << "an absurd learning rate did not diverge";
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("diverged"), std::string::npos) << e.describe();
    EXPECT_NE(e.how_to_fix().find("--lr"), std::string::npos);
  }
  auto cks = list_checkpoints(o.out_dir);
  ASSERT_FALSE(cks.empty());
  // The checkpoints that exist are complete and loadable (nothing half-written).
  fs::path resolved;
  auto m = load_model(o.out_dir, &resolved);
  EXPECT_EQ(resolved, cks.back().second);
  EXPECT_TRUE(fs::exists(resolved / "optimizer.bin"));
}

TEST(Pretrain, CliRunsAndRefusesBadInput) {
  Fixture f;
  const std::string bin = AJI_BINARY;
  const fs::path run = f.dir.path() / "cli";
  std::string out;
  int rc = aji::test::run_command(bin + " --threads 1 pretrain --config " + f.config.string() + " --data " +
                                      f.data.string() + " --out " + run.string() +
                                      " --steps 3 --batch-size 2 --seq-len 16 --eval-every 3 --sample-every 0 2>&1",
                                  &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("step     3/3 | loss"), std::string::npos) << out;
  EXPECT_NE(out.find("MFU"), std::string::npos);
  EXPECT_NE(out.find("val loss"), std::string::npos);
  rc = aji::test::run_command(bin + " pretrain --config " + f.config.string() + " --data " + f.data.string() +
                                  " --out " + run.string() + " --steps 3 2>&1",
                              &out);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("already holds a run"), std::string::npos) << out;
  rc = aji::test::run_command(bin + " pretrain --config " + f.config.string() + " --data " +
                                  (f.dir.path() / "nodata").string() + " --out " + (f.dir.path() / "x").string() +
                                  " --steps 3 2>&1",
                              &out);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("aji data tokenize"), std::string::npos) << out;
  rc = aji::test::run_command(bin + " pretrain --config " + f.config.string() + " --data " + f.data.string() +
                                  " --out " + (f.dir.path() / "y").string() + " --steps 3 --seq-len 64 2>&1",
                              &out);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("context"), std::string::npos) << out;
  // The trained model scores and generates through the CLI.
  std::ofstream(f.dir.path() / "t.txt") << "the cat sees the red ball.";
  rc = aji::test::run_command(bin + " --threads 1 score --model " + run.string() + " --input " +
                                  (f.dir.path() / "t.txt").string() + " --json",
                              &out);
  ASSERT_EQ(rc, 0) << out;
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["logprobs"].size() + 1, j["tokens"].size());
  EXPECT_GT(j["perplexity"].get<double>(), 1.0);
  rc = aji::test::run_command(bin + " --threads 1 generate --model " + run.string() +
                                  " --prompt 'the cat' --max-tokens 5 --temperature 0",
                              &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(out.rfind("the cat", 0), 0u) << out;
}
