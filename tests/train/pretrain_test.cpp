// `aji data tokenize` + `aji pretrain` end to end on a micro model: outputs, the run-dir
// guard, bit-identical resume, Ctrl-C, divergence, and the CLI wiring.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <fstream>
#include <functional>
#include <set>
#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "aji/kernels/cpu/bf16_gemm.h"
#include "aji/model/config.h"
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

// The device path end to end without a GPU: a run on cpu:separate (the CPU as a device with
// memory of its own: every upload, download and device-side step of --device cuda, the
// optimizer's included, with the CPU's kernels) is the host run bit for bit — the losses, the
// validation loss and the checkpoint files — and a run stopped there resumes there exactly.
// Stage 3 of scripts/device_check.sh compares the same on a GPU (within tolerances).
TEST(Pretrain, OnASeparateMemoryDeviceTheRunIsTheHostRunBitForBit) {
  Fixture f;
  auto host = f.options("host", 9);
  host.precision = "fp32";  // (bf16 on the device path: the next test)
  const auto hr = pretrain(host);
  auto dev = f.options("dev", 9);
  dev.precision = "fp32";
  dev.device = "cpu:separate";
  const auto dr = pretrain(dev);
  EXPECT_EQ(hr.step_losses, dr.step_losses);
  EXPECT_EQ(hr.last_val_loss, dr.last_val_loss);
  EXPECT_LT(dr.step_losses.back(), dr.step_losses.front() - 0.5f) << "the device run did not learn";
  auto split = f.options("split", 9);
  split.precision = "fp32";
  split.device = "cpu:separate";
  split.stop_after = 4;
  const auto a = pretrain(split);
  EXPECT_EQ(a.step, 4);
  auto rest = f.options("split", 0);
  rest.config.clear();
  rest.data_dir.clear();
  rest.resume = true;
  rest.device = "cpu:separate";
  const auto b = pretrain(rest);
  std::vector<float> joined = a.step_losses;
  joined.insert(joined.end(), b.step_losses.begin(), b.step_losses.end());
  EXPECT_EQ(joined, hr.step_losses);
  const auto ch = list_checkpoints(f.dir.path() / "host"), cd = list_checkpoints(f.dir.path() / "dev"),
             cs = list_checkpoints(f.dir.path() / "split");
  ASSERT_FALSE(ch.empty());
  ASSERT_EQ(ch.back().first, 9);
  ASSERT_EQ(cd.back().first, 9);
  ASSERT_EQ(cs.back().first, 9);
  for (const char* file : {"model.safetensors", "optimizer.bin"}) {
    const std::string h = aji::read_file(ch.back().second / file);
    EXPECT_TRUE(h == aji::read_file(cd.back().second / file)) << file;
    EXPECT_TRUE(h == aji::read_file(cs.back().second / file)) << file << " (resumed)";
  }
}

// bf16 mixed precision on the device path: `auto` resolves for the device (cpu:separate runs
// the CPU's bf16 products), and the run is the host's bf16 run bit for bit: the device rounds
// its own weights and the products' inputs to the bits the host keeps.
TEST(Pretrain, Bf16OnASeparateMemoryDeviceIsTheHostRunBitForBit) {
  Fixture f;
  auto host = f.options("host16", 6);
  host.precision = "auto";
  const auto hr = pretrain(host);
  auto dev = f.options("dev16", 6);
  dev.precision = "auto";
  dev.device = "cpu:separate";
  const auto dr = pretrain(dev);
  EXPECT_EQ(hr.step_losses, dr.step_losses);
  EXPECT_EQ(hr.last_val_loss, dr.last_val_loss);
  const std::string saved = aji::read_file(f.dir.path() / "dev16" / "run.json");
  EXPECT_NE(saved.find(aji::kernels::cpu::bf16_supported() ? "\"bf16\"" : "\"fp32\""), std::string::npos) << saved;
  const auto ch = list_checkpoints(f.dir.path() / "host16"), cd = list_checkpoints(f.dir.path() / "dev16");
  ASSERT_FALSE(ch.empty());
  ASSERT_FALSE(cd.empty());
  EXPECT_TRUE(aji::read_file(ch.back().second / "model.safetensors") ==
              aji::read_file(cd.back().second / "model.safetensors"));
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

// --- issue #13: defects of `aji pretrain` ---------------------------------------------

namespace {
// The aji::Error that fn throws (describe()), or "" if it throws none.
template <class F>
std::string error_of(F&& fn) {
  try {
    fn();
  } catch (const aji::Error& e) {
    return e.describe();
  }
  return "";
}
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
}  // namespace

TEST(Pretrain, SigtermSavesACheckpointAndStopsLikeCtrlC) {
  Fixture f;
  auto o = f.options("sigterm", 50);
  o.save_every = 0;
  o.on_step = [](int64_t step, float) {
    if (step == 3) std::raise(SIGTERM);  // what `timeout`, `kill` and Slurm preemption send
  };
  auto r = pretrain(o);
  EXPECT_TRUE(r.interrupted);
  EXPECT_EQ(r.step, 3);
  auto cks = list_checkpoints(o.out_dir);
  ASSERT_EQ(cks.size(), 1u);
  EXPECT_EQ(cks[0].first, 3);
}

TEST(Pretrain, TimeBudgetStoppedDuringCalibrationResumesAsATimeBudgetedRun) {
  Fixture f;
  auto o = f.options("budget", 0);
  o.time_budget = 0.01;  // minutes
  o.eval_every = 0;
  o.sample_every = 0;
  o.save_every = 0;
  o.stop_after = 2;  // inside the 4 calibration steps
  auto a = pretrain(o);
  EXPECT_TRUE(a.interrupted);
  auto info = nlohmann::json::parse(aji::read_file(o.out_dir / "run.json"));
  EXPECT_EQ(info["options"]["steps"], 0) << "run.json of a run not yet calibrated";
  PretrainOptions r;
  r.out_dir = o.out_dir;
  r.resume = true;
  r.quiet = true;
  r.stop_after = 5;  // calibrates in this session, then stops
  auto b = pretrain(r);
  EXPECT_EQ(b.step, 7);
  info = nlohmann::json::parse(aji::read_file(o.out_dir / "run.json"));
  const int64_t steps = info["options"]["steps"];
  EXPECT_GT(steps, 6);
  EXPECT_LT(steps, 1000000) << "the calibrated length, not 2^40";
  auto st = nlohmann::json::parse(aji::read_file(b.checkpoint / "trainer_state.json"));
  EXPECT_EQ(st["options"]["steps"], steps);
  EXPECT_EQ(st["schedule"]["total"], steps);
}

// A trainer_state.json with a missing or malformed field (found by the checkpoint-state
// fuzzer's review) is an aji::Error naming the file, not a bare json exception.
TEST(Pretrain, DamagedTrainerStateIsNamedOnResume) {
  Fixture f;
  auto o = f.options("damaged", 6);
  o.stop_after = 3;
  pretrain(o);
  const fs::path ckpt = resolve_model_dir(o.out_dir);
  const fs::path ts = ckpt / "trainer_state.json";
  const std::string good = aji::read_file(ts);
  auto damage = [&](const std::function<void(nlohmann::json&)>& edit) {
    auto j = nlohmann::json::parse(good);
    edit(j);
    std::ofstream(ts) << j.dump();
    PretrainOptions r;
    r.out_dir = o.out_dir;
    r.resume = true;
    r.quiet = true;
    return error_of([&] { pretrain(r); });
  };
  for (auto edit : std::vector<std::function<void(nlohmann::json&)>>{
           [](nlohmann::json& j) { j.erase("loader"); },
           [](nlohmann::json& j) { j["step"] = "three"; },
           [](nlohmann::json& j) { j["loader"]["rng_state"][0] = "zz-not-hex"; },
           [](nlohmann::json& j) { j.erase("options"); }}) {
    const std::string e = damage(edit);
    EXPECT_TRUE(contains(e, "damaged trainer state")) << e;
    EXPECT_TRUE(contains(e, ts.string())) << e;
  }
  std::ofstream(ts) << good;  // intact again: resumes
  PretrainOptions r;
  r.out_dir = o.out_dir;
  r.resume = true;
  r.quiet = true;
  EXPECT_EQ(pretrain(r).step, 6);
}

TEST(Pretrain, VocabAndTokenizerMismatchesAreRefusedBeforeTraining) {
  Fixture f;
  auto o = f.options("vocab", 3);
  o.config = f.dir.path() / "big_vocab.json";
  std::ofstream(o.config) << R"({"arch": "llama", "vocab_size": 400, "n_layer": 2, "n_head": 2, "n_kv_head": 1,
                                 "d_model": 32, "d_ff": 64, "max_seq_len": 32})";
  std::string e = error_of([&] { pretrain(o); });
  EXPECT_TRUE(contains(e, "vocab_size 400")) << e;
  EXPECT_TRUE(contains(e, "\"vocab_size\": 320")) << e;  // the fix
  EXPECT_FALSE(fs::exists(o.out_dir / "run.json"));  // refused before any work
  // The manifest's tokenizer hash must be the run's on --resume.
  auto ok = f.options("hash", 6);
  ok.stop_after = 3;
  pretrain(ok);
  const fs::path other = f.dir.path() / "data2";
  fs::copy(f.data, other, fs::copy_options::recursive);
  auto m = nlohmann::json::parse(aji::read_file(other / "manifest.json"));
  m["tokenizer_hash"] = std::string(64, 'a');
  std::ofstream(other / "manifest.json") << m.dump();
  PretrainOptions r;
  r.out_dir = ok.out_dir;
  r.data_dir = other;
  r.resume = true;
  r.quiet = true;
  e = error_of([&] { pretrain(r); });
  EXPECT_TRUE(contains(e, "another tokenizer")) << e;
  // Model config numbers beyond int are reported as written, not wrapped.
  std::ofstream(f.dir.path() / "huge.json") << R"({"arch": "llama", "vocab_size": 3000000000, "n_layer": 2,
      "n_head": 2, "d_model": 32, "d_ff": 64, "max_seq_len": 32})";
  e = error_of([&] { aji::model::ModelConfig::load(f.dir.path() / "huge.json"); });
  EXPECT_TRUE(contains(e, "3000000000")) << e;
  EXPECT_FALSE(contains(e, "-1294967296")) << e;
}

TEST(Pretrain, ResumeKeepsTheRunsSettingsAcceptsSafeChangesRefusesOthers) {
  Fixture f;
  auto o = f.options("keep", 12);
  o.keep = 0;
  o.stop_after = 2;
  pretrain(o);
  PretrainOptions r;  // defaults everywhere (save_every 500, lr 2e-3, ...), nothing given
  r.out_dir = o.out_dir;
  r.resume = true;
  r.quiet = true;
  r.stop_after = 4;
  auto b = pretrain(r);
  EXPECT_EQ(b.step, 6);
  std::vector<int64_t> steps;
  for (const auto& [s, p] : list_checkpoints(o.out_dir)) steps.push_back(s);
  EXPECT_EQ(steps, (std::vector<int64_t>{2, 3, 6})) << "the run's --save-every 3 and --keep 0 were kept";
  auto st = nlohmann::json::parse(aji::read_file(b.checkpoint / "trainer_state.json"));
  EXPECT_EQ(st["options"]["save_every"], 3);
  EXPECT_EQ(st["options"]["lr"].get<float>(), 1e-2f);
  // An explicit --lr that differs from the run's is refused, by name.
  r.lr = 0.5f;
  r.given = {"lr"};
  std::string e = error_of([&] { pretrain(r); });
  EXPECT_TRUE(contains(e, "--lr")) << e;
  // --batch-size may change (the step's batch, --total-batch-tokens, is the run's), but a
  // micro-batch that does not divide the run's step is refused, naming the sizes.
  r.lr = 1e-2f;  // the run's own value, given again: fine
  r.batch = 3;  // 3 x 16 does not divide the run's 64 tokens a step (4 would: tests/train/dist_mpirun_test.cpp)
  r.given = {"lr", "batch-size"};
  e = error_of([&] { pretrain(r); });
  EXPECT_TRUE(contains(e, "--total-batch-tokens")) << e;
  EXPECT_TRUE(contains(e, "batch*seq_len")) << e;
  // Safe changes are taken: a new --save-every.
  r.batch = 2;
  r.save_every = 4;
  r.stop_after = 0;
  r.given = {"lr", "batch-size", "save-every"};
  auto c = pretrain(r);
  EXPECT_EQ(c.step, 12);
  steps.clear();
  for (const auto& [s, p] : list_checkpoints(o.out_dir)) steps.push_back(s);
  EXPECT_EQ(steps, (std::vector<int64_t>{2, 3, 6, 8, 12}));
}

TEST(Pretrain, NoValidationDataIsAWarningNotASilentNan) {
  Fixture f;
  TokenizeDataOptions t;
  t.tokenizer = f.dir.path() / "tok.json";
  t.inputs = {(f.dir.path() / "corpus.txt").string()};
  t.out_dir = f.dir.path() / "noval";
  t.val_fraction = 0;
  t.progress = false;
  tokenize_data(t);
  auto o = f.options("noval", 3);
  o.data_dir = t.out_dir;
  auto r = pretrain(o);
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_TRUE(contains(r.warnings[0], "no validation data")) << r.warnings[0];
  // A deleted val shard.
  const DataManifest m = DataManifest::load(f.data);
  ASSERT_FALSE(m.val.empty());
  fs::remove(f.data / m.val[0].file);
  o = f.options("valgone", 3);
  r = pretrain(o);
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_TRUE(contains(r.warnings[0], "no validation")) << r.warnings[0];
  // Through the CLI: the warning, and no "final val loss nan".
  std::string out;
  const int rc = aji::test::run_command(std::string(AJI_BINARY) + " --threads 1 pretrain --config " +
                                            f.config.string() + " --data " + t.out_dir.string() + " --out " +
                                            (f.dir.path() / "noval-cli").string() +
                                            " --steps 2 --batch-size 2 --seq-len 16 --sample-every 0 --peak-gflops 50 2>&1",
                                        &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_TRUE(contains(out, "warning: no validation data")) << out;
  EXPECT_FALSE(contains(out, "loss nan")) << out;
  EXPECT_TRUE(contains(out, "no validation data (see the warning above)")) << out;
}

// An MFU above 100% is never printed: a peak given (or measured) too low is raised to what
// the step did, with a note (the demo once printed "MFU 123.5%" after a busy start).
TEST(Pretrain, MfuNeverExceedsOneHundredPercent) {
  Fixture f;
  std::string out;
  const int rc = aji::test::run_command(std::string(AJI_BINARY) + " --threads 1 pretrain --config " +
                                            f.config.string() + " --data " + f.data.string() + " --out " +
                                            (f.dir.path() / "mfu").string() +
                                            " --steps 3 --batch-size 2 --seq-len 16 --sample-every 0 --peak-gflops 0.000001 2>&1",
                                        &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(contains(out, "the peak estimate was too low")) << out;
  int lines = 0;
  for (size_t at = out.find("MFU "); at != std::string::npos; at = out.find("MFU ", at + 4)) {
    const double pct = std::atof(out.c_str() + at + 4);
    if (out.compare(at + 4, 3, "is ") == 0) continue;  // "MFU is against ..."
    ++lines;
    EXPECT_LE(pct, 100.0) << out;
  }
  EXPECT_EQ(lines, 3) << out;
  std::ifstream metrics(f.dir.path() / "mfu" / "metrics.jsonl");
  std::string line;
  while (std::getline(metrics, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("mfu")) {
      EXPECT_LE(j["mfu"].get<double>(), 1.0) << line;
    }
  }
}

TEST(Pretrain, OptionsAreValidatedBeforeAnyWork) {
  Fixture f;
  struct Case {
    std::function<void(PretrainOptions&)> set;
    std::string says;
  };
  const std::vector<Case> cases = {
      {[](PretrainOptions& o) { o.lr = -1; }, "--lr must be > 0, not -1"},
      {[](PretrainOptions& o) { o.lr = NAN; }, "--lr must be > 0"},
      {[](PretrainOptions& o) { o.beta1 = 1.5f; }, "--beta1 must be in [0, 1)"},
      {[](PretrainOptions& o) { o.warmup = -3; }, "--warmup must be >= 0"},
      {[](PretrainOptions& o) { o.steps = -5; }, "--steps must be >= 0, not -5"},
      {[](PretrainOptions& o) { o.batch = 0; }, "--batch-size must be in [1, 1048576], not 0"},
      {[](PretrainOptions& o) { o.eval_batches = 0; }, "--eval-batches must be >= 1"},
      {[](PretrainOptions& o) { o.decay = "cosin"; }, "cosin"},
  };
  for (const auto& c : cases) {
    auto o = f.options("bad", 3);
    c.set(o);
    const std::string e = error_of([&] { pretrain(o); });
    EXPECT_TRUE(contains(e, c.says)) << c.says << " vs\n" << e;
    EXPECT_FALSE(fs::exists(o.out_dir)) << c.says;
  }
  // The CLI rejects them at parse time with the same words.
  const std::string base = std::string(AJI_BINARY) + " pretrain --config " + f.config.string() + " --data " +
                           f.data.string() + " --out " + (f.dir.path() / "badcli").string();
  for (const auto& [args, says] : std::vector<std::pair<std::string, std::string>>{
           {"--steps 3 --lr -1", "--lr must be > 0, not -1"},
           {"--steps 3 --lr nan", "--lr must be > 0, not nan"},
           {"--steps 3 --beta1 1.5", "--beta1 must be in [0, 1), not 1.5"},
           {"--steps 3 --warmup -2", "--warmup must be >= 0, not -2"},
           {"--steps -5", "--steps must be >= 0, not -5"},
           {"--steps 3 --batch-size 3000000000", "3000000000"}}) {
    std::string out;
    const int rc = aji::test::run_command(base + " " + args + " 2>&1", &out);
    EXPECT_NE(rc, 0) << args;
    EXPECT_TRUE(contains(out, says)) << args << "\n" << out;
    EXPECT_FALSE(fs::exists(f.dir.path() / "badcli")) << args;
  }
}

TEST(Pretrain, MemoryEstimateRefusesAModelThatDoesNotFitBeforeAllocating) {
  Fixture f;
  auto o = f.options("huge", 3);
  o.config = f.dir.path() / "huge.json";
  std::ofstream(o.config) << R"({"arch": "llama", "vocab_size": 320, "n_layer": 20000, "n_head": 32,
                                 "n_kv_head": 32, "d_model": 4096, "d_ff": 16384, "max_seq_len": 32})";
  const std::string e = error_of([&] { pretrain(o); });  // ~86 TB: a bad_alloc (or the OOM killer) before
  EXPECT_TRUE(contains(e, "needs about")) << e;
  EXPECT_TRUE(contains(e, "available")) << e;
  EXPECT_TRUE(contains(e, "--batch-size")) << e;
}

TEST(Pretrain, ARunWithoutACheckpointYetIsResumedNotContradicted) {
  Fixture f;
  auto straight = pretrain(f.options("straight", 6));
  // A run stopped before its first checkpoint (kill -9): run.json and metrics, no ckpt.
  auto o = f.options("early", 6);
  pretrain(o);
  for (const auto& [s, p] : list_checkpoints(o.out_dir)) fs::remove_all(p);
  fs::remove(o.out_dir / "latest");
  // A fresh start advises --resume ...
  std::string e = error_of([&] { pretrain(o); });
  EXPECT_TRUE(contains(e, "--resume")) << e;
  // ... and --resume does it: the run again from step 0 with its saved settings.
  PretrainOptions r;
  r.out_dir = o.out_dir;
  r.resume = true;
  r.quiet = true;
  auto b = pretrain(r);
  EXPECT_EQ(b.step, 6);
  EXPECT_EQ(b.step_losses, straight.step_losses);
  auto m1 = load_model(f.dir.path() / "straight"), m2 = load_model(o.out_dir);
  EXPECT_TRUE(std::equal(m1.params(), m1.params() + m1.num_params(), m2.params()));
  int step_lines = 0;
  for (const auto& j : read_jsonl(o.out_dir / "metrics.jsonl")) step_lines += j.contains("loss");
  EXPECT_EQ(step_lines, 6);
  // An empty directory has nothing to resume, and says so.
  fs::create_directories(f.dir.path() / "empty");
  r.out_dir = f.dir.path() / "empty";
  e = error_of([&] { pretrain(r); });
  EXPECT_TRUE(contains(e, "nothing to resume")) << e;
  EXPECT_TRUE(contains(e, "without --resume")) << e;
}

TEST(Pretrain, ResumeFromAnEarlierCheckpointAndInitFromAModel) {
  Fixture f;
  auto straight = pretrain(f.options("straight", 9));
  auto o = f.options("from", 9);
  o.keep = 0;
  pretrain(o);  // ckpt-3, 6, 9
  PretrainOptions r;
  r.out_dir = o.out_dir;
  r.resume_from = "ckpt-3";
  r.quiet = true;
  auto b = pretrain(r);
  EXPECT_EQ(b.step, 9);
  ASSERT_EQ(b.step_losses.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(b.step_losses[i], straight.step_losses[i + 3]) << i;
  auto m1 = load_model(f.dir.path() / "straight"), m2 = load_model(o.out_dir);
  EXPECT_TRUE(std::equal(m1.params(), m1.params() + m1.num_params(), m2.params()));
  r.resume_from = "ckpt-4";
  std::string e = error_of([&] { pretrain(r); });
  EXPECT_TRUE(contains(e, "ckpt-3")) << e;  // names the checkpoints there are
  // Continued pretraining: the trained weights, a new optimizer and schedule.
  auto i = f.options("init", 2);
  i.config.clear();
  i.init = f.dir.path() / "straight";
  auto c = pretrain(i);
  ASSERT_EQ(c.step_losses.size(), 2u);
  EXPECT_LT(c.step_losses[0], straight.step_losses[0] - 0.3f) << "starts from the trained model";
  i.config = f.config;
  i.force = true;
  e = error_of([&] { pretrain(i); });
  EXPECT_TRUE(contains(e, "--init")) << e;
}

TEST(Pretrain, ThreadCountsAreValidatedAndCapped) {
  Fixture f;
  const std::string cmd = std::string(AJI_BINARY) + " pretrain --config " + f.config.string() + " --data " +
                          f.data.string() + " --steps 1 --batch-size 2 --seq-len 16 --sample-every 0 --peak-gflops 50";
  std::string out;
  int rc = aji::test::run_command(cmd + " --threads 100000 --out " + (f.dir.path() / "t1").string() + " 2>&1", &out);
  EXPECT_EQ(rc, 0) << out;  // was a segfault inside the OpenMP runtime
  EXPECT_TRUE(contains(out, "100000 threads asked")) << out;
  rc = aji::test::run_command("AJI_THREADS=100000 " + cmd + " --out " + (f.dir.path() / "t2").string() + " 2>&1", &out);
  EXPECT_EQ(rc, 0) << out;
  rc = aji::test::run_command("AJI_THREADS=lots " + cmd + " --out " + (f.dir.path() / "t3").string() + " 2>&1", &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_TRUE(contains(out, "AJI_THREADS must be a whole number")) << out;
  rc = aji::test::run_command(cmd + " --threads -2 --out " + (f.dir.path() / "t4").string() + " 2>&1", &out);
  EXPECT_NE(rc, 0) << out;
  EXPECT_TRUE(contains(out, "--threads must be")) << out;
  EXPECT_FALSE(fs::exists(f.dir.path() / "t3"));
  EXPECT_FALSE(fs::exists(f.dir.path() / "t4"));
}

namespace {
// Starts AJI_BINARY with args (output discarded); returns its pid.
pid_t spawn_aji(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  std::string bin = AJI_BINARY;
  argv.push_back(bin.data());
  std::vector<std::string> copy = args;
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}
}  // namespace

// The design promises bit-identical resume: kill -9 at random moments (process start,
// steps, checkpoint writes), restart with --resume each time, and the final checkpoint
// must equal an uninterrupted run's byte for byte.
TEST(Pretrain, KillNineAtRandomMomentsThenResumeEqualsAStraightRun) {
  Fixture f;
  auto args = [&](const fs::path& out, bool resume) {
    std::vector<std::string> a = {"--threads", "1", "-q", "pretrain", "--out", out.string()};
    if (resume) {
      a.push_back("--resume");
    } else {
      for (const std::string& s : std::vector<std::string>{"--config", f.config.string(), "--data", f.data.string(), "--steps", "20",
                                  "--batch-size", "2", "--seq-len", "16", "--total-batch-tokens", "64", "--lr", "1e-2",
                                  "--save-every", "1", "--keep", "2", "--eval-every", "6", "--eval-batches", "2",
                                  "--sample-every", "7", "--sample-tokens", "8", "--peak-gflops", "50"})
        a.push_back(s);
    }
    return a;
  };
  auto wait_exit = [](pid_t pid) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    return status;
  };
  const fs::path straight = f.dir.path() / "straight", killed = f.dir.path() / "killed";
  const auto t0 = std::chrono::steady_clock::now();
  int status = wait_exit(spawn_aji(args(straight, false)));
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  const double run_us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
  aji::Rng rng(2026);
  int kills = 0;
  std::set<std::string> torn;
  bool done = false;
  for (int launch = 0; launch < 40 && !done; ++launch) {
    const bool started = fs::exists(killed / "run.json");
    const pid_t pid = spawn_aji(args(killed, started));
    if (kills < 8) {
      // Between 2% and 10% of a whole run: start-up, steps or a checkpoint write (most of
      // a step's time here is the fsync of its checkpoint); 8 sessions cannot reach the
      // run's end, so all 8 kills happen.
      ::usleep(static_cast<useconds_t>((0.02 + 0.08 * rng.uniform()) * run_us));
      ::kill(pid, SIGKILL);
    }
    status = wait_exit(pid);
    if (WIFSIGNALED(status)) {
      ++kills;
      if (fs::exists(killed))  // (a kill during start-up can come before the run directory exists)
        for (const auto& e : fs::directory_iterator(killed))  // a checkpoint write the kill interrupted
          if (e.path().filename().string().find(".tmp.") != std::string::npos) torn.insert(e.path().filename());
      continue;
    }
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "launch " << launch << " status " << status;
    done = true;  // the run is complete (possibly before a planned kill)
  }
  ASSERT_TRUE(done);
  EXPECT_EQ(kills, 8);
  for (const auto& e : fs::directory_iterator(killed))  // --resume removed the torn writes
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
  const auto a = list_checkpoints(straight), b = list_checkpoints(killed);
  ASSERT_FALSE(a.empty());
  ASSERT_FALSE(b.empty());
  ASSERT_EQ(a.back().first, 20);
  ASSERT_EQ(b.back().first, 20);
  for (const char* file : {"model.safetensors", "optimizer.bin"})
    EXPECT_TRUE(aji::read_file(a.back().second / file) == aji::read_file(b.back().second / file)) << file;
  auto sa = nlohmann::json::parse(aji::read_file(a.back().second / "trainer_state.json"));
  auto sb = nlohmann::json::parse(aji::read_file(b.back().second / "trainer_state.json"));
  EXPECT_EQ(sa["loader"], sb["loader"]);
  EXPECT_EQ(sa["metrics"], sb["metrics"]);
  int step_lines = 0;
  for (const auto& j : read_jsonl(killed / "metrics.jsonl")) step_lines += j.contains("loss");
  EXPECT_EQ(step_lines, 20);
  std::printf("[ kill -9 ] %d kills (%d during a checkpoint write) over a %.0f ms run\n", kills, static_cast<int>(torn.size()),
              run_us / 1000);
}
