// The shared trainer session (train/trainer_run.h): the run-dir rule, metrics truncation on
// resume, the NaN stop, and a toy trainer (a small LM plus a separate "head" with its own
// AdamW, like a reward model) stopped and resumed bit for bit against a straight run.
#include "aji/train/trainer_run.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>

#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "aji/base/dist.h"
#include "aji/kernels/backend.h"
#include "aji/model/model.h"
#include "aji/train/checkpoint.h"
#include "aji/train/safetensors.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace aji::train;
using aji::test::TempDir;
using nlohmann::json;

namespace {

aji::model::ModelConfig tiny_config() {
  aji::model::ModelConfig c;
  c.arch = aji::model::Arch::kLlama;
  c.vocab_size = 32;
  c.n_layer = 1;
  c.n_head = 2;
  c.n_kv_head = 2;
  c.d_model = 16;
  c.d_ff = 32;
  c.max_seq_len = 8;
  return c;
}

struct ToyResult {
  std::vector<float> params, head;
  std::vector<double> losses;  // this session's
  int64_t step = 0;
  bool stopped = false;
};

// A toy trainer written only against TrainerRun and train_step: an LM on fixed random
// sequences (the data cursor is the step) plus a 4-float "head" pulled towards fixed
// targets by a squared error, with its own AdamW, saved through CheckpointParts::write.
ToyResult toy_run(const fs::path& dir, bool resume, bool force, int64_t stop_after, int64_t total,
                  float poison_at_step = -1) {
  TrainerRun::Options ro;
  ro.dir.dir = dir;
  ro.dir.resume = resume;
  ro.dir.force = force;
  ro.dir.quiet = true;
  ro.dir.command = "aji toy train";
  ro.dir.fresh_command = "aji toy train --out " + dir.string();
  ro.dir.state_key = "toy";
  ro.dir.outputs = {"metrics.jsonl", "loss.svg"};
  ro.save_every = 2;
  ro.keep = 2;
  ro.stop_after = stop_after;
  ro.plot_title = "toy";
  TrainerRun run(ro);
  aji::model::Model m(tiny_config());
  AdamW opt(m.num_params(), {0.9f, 0.95f, 1e-8f, 0.1f});
  std::vector<float> head = {0.5f, -0.5f, 0.25f, 1.0f}, head_grad(4, 0.0f);
  AdamW head_opt(head.size(), {0.9f, 0.999f, 1e-8f, 0.0f});
  int64_t step = 0;
  if (run.resuming()) {
    load_weights(m, *run.checkpoint() / "model.safetensors");
    opt.load(*run.checkpoint() / "optimizer.bin");
    head_opt.load(*run.checkpoint() / "head_optimizer.bin");
    const SafeTensorsFile h = SafeTensorsFile::load(*run.checkpoint() / "head.safetensors");
    head = h.tensors.at("head").data;
    step = run.section().at("cursor").get<int64_t>();
    EXPECT_EQ(run.state().at("step").get<int64_t>(), step);
  } else {
    m.init_weights(7);
  }
  run.start_metrics(run.resuming() ? step : -1);
  run.set_checkpoint([&](int64_t s) {
    CheckpointParts p;
    p.model = &m;
    p.optimizer = &opt;
    p.section = {{"cursor", s}};
    p.write.push_back({"head.safetensors", [&](const fs::path& f) {
                         save_safetensors(f, {{"head", {int64_t(head.size())}, head.data()}});
                       }});
    p.write.push_back({"head_optimizer.bin", [&](const fs::path& f) { head_opt.save(f); }});
    return p;
  });
  std::vector<ParamGroup> groups = {ParamGroup::whole_model(m, opt),
                                    {head.data(), head_grad.data(), &head_opt, {{0, head.size(), true}}}};
  const int B = 2, T = 8;
  std::vector<int32_t> in(B * T), tgt(B * T);
  ToyResult r;
  {
    const TrainerRun::Steps stepping = run.steps(step, total);
    while (step < total) {
      aji::Rng rng(1000 + uint64_t(step));  // the batch of step k depends on k only
      for (auto& x : in) x = int32_t(rng.next_u64() % 32);
      for (size_t i = 0; i < tgt.size(); ++i) tgt[i] = i + 1 < in.size() ? in[i + 1] : 0;
      const StepStats s = train_step(groups, 3e-3f, 1.0, "Toy", dir, [&] {
        m.forward(in.data(), B, T);
        double loss = m.lm_head_loss(tgt.data());
        m.backward(m.d_hidden_buffer());
        const float want[4] = {1, 2, 3, 4};
        for (size_t i = 0; i < head.size(); ++i) {
          const float d = head[i] - want[i];
          loss += 0.5 * d * d;
          head_grad[i] += d;
        }
        if (step + 1 == int64_t(poison_at_step)) loss = NAN;
        return loss;
      }, step);
      ++step;
      r.losses.push_back(s.loss);
      run.log({{"step", step}, {"loss", s.loss}, {"grad_norm", s.grad_norm}, {"lr", s.lr}});
      if (step % 3 == 0) run.log({{"step", step}, {"val_loss", s.loss * 2}});
      if (run.after_step(step, total)) break;
    }
  }
  run.finish(step, total);
  r.params.assign(m.params(), m.params() + m.num_params());
  r.head = head;
  r.step = step;
  r.stopped = run.stopped();
  return r;
}

std::string read_or_empty(const fs::path& p) { return fs::exists(p) ? aji::read_file(p) : std::string(); }

}  // namespace

TEST(TrainerRun, ToyTrainerStoppedAndResumedIsBitIdentical) {
  aji::set_num_threads(1);
  TempDir d;
  const ToyResult straight = toy_run(d.path() / "straight", false, false, 0, 7);
  EXPECT_EQ(straight.step, 7);
  EXPECT_FALSE(straight.stopped);
  ASSERT_EQ(straight.losses.size(), 7u);
  EXPECT_LT(straight.losses.back(), straight.losses.front());  // it learns

  const fs::path run = d.path() / "stopped";
  const ToyResult first = toy_run(run, false, false, 3, 7);  // --stop-after 3: saved at step 3
  EXPECT_TRUE(first.stopped);
  EXPECT_EQ(first.step, 3);
  EXPECT_EQ(list_checkpoints(run).back().first, 3);
  const ToyResult second = toy_run(run, true, false, 0, 7);
  EXPECT_EQ(second.step, 7);
  ASSERT_EQ(second.losses.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(second.losses[i], straight.losses[3 + i]) << "step " << 4 + i;
  EXPECT_EQ(0, std::memcmp(second.params.data(), straight.params.data(), straight.params.size() * sizeof(float)));
  EXPECT_EQ(second.head, straight.head);
  EXPECT_NE(second.head, (std::vector<float>{0.5f, -0.5f, 0.25f, 1.0f}));  // the head trained
  // The metrics file reads as the straight run's (no line twice), and so does the plot.
  EXPECT_EQ(read_or_empty(run / "metrics.jsonl"), read_or_empty(d.path() / "straight" / "metrics.jsonl"));
  EXPECT_TRUE(fs::exists(run / "loss.svg"));
  // Keep 2: the newest two checkpoints, each with the extra files and the named section.
  const auto cks = list_checkpoints(run);
  ASSERT_EQ(cks.size(), 2u);
  EXPECT_EQ(cks[0].first, 6);
  EXPECT_EQ(cks[1].first, 7);
  for (const char* f : {"model.safetensors", "optimizer.bin", "head.safetensors", "head_optimizer.bin"})
    EXPECT_TRUE(fs::exists(cks[1].second / f)) << f;
  const json ts = json::parse(aji::read_file(cks[1].second / "trainer_state.json"));
  EXPECT_EQ(ts.at("step"), 7);
  EXPECT_EQ(ts.at("toy").at("cursor"), 7);
  EXPECT_EQ(ts.at("toy").at("threads"), 1);
  EXPECT_FALSE(fs::exists(run / ".checkpoint-files"));  // the staging dir is gone
}

TEST(TrainerRun, MetricsAreCutBackToTheCheckpointOnResume) {
  aji::set_num_threads(1);
  TempDir d;
  const fs::path run = d.path() / "r";
  toy_run(run, false, false, 0, 4);  // checkpoints at 2 and 4
  // Pretend the run went on past its last checkpoint (killed at step 6 before saving),
  // with a line cut by the kill.
  fs::remove_all(run / "ckpt-4");
  aji::write_file_atomic(run / "latest", "ckpt-2\n");
  {
    std::ofstream m(run / "metrics.jsonl", std::ios::app);
    m << json{{"step", 5}, {"loss", 9.0}}.dump() << "\n" << json{{"step", 6}, {"loss", 9.0}}.dump() << "\n{\"step\": 7, \"lo";
  }
  TrainerRun::Options ro;
  ro.dir.dir = run;
  ro.dir.resume = true;
  ro.dir.quiet = true;
  ro.dir.state_key = "toy";
  TrainerRun r(ro);
  ASSERT_TRUE(r.resuming());
  EXPECT_EQ(r.checkpoint()->filename(), "ckpt-2");
  std::vector<int64_t> seen;
  r.start_metrics(2, [&](const json& j) { seen.push_back(j.at("step").get<int64_t>()); });
  EXPECT_EQ(seen, (std::vector<int64_t>{1, 2}));
  std::ifstream in(run / "metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    ++lines;
    EXPECT_LE(json::parse(line).at("step").get<int64_t>(), 2) << line;
  }
  EXPECT_EQ(lines, 2);
}

TEST(TrainerRun, FreshRefuseForceResumeRules) {
  aji::set_num_threads(1);
  TempDir d;
  const fs::path run = d.path() / "r";
  // --resume with nothing there: the fix is the fresh command.
  try {
    toy_run(run, true, false, 0, 2);
    FAIL() << "resumed an empty dir";
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("nothing to resume"), std::string::npos) << e.describe();
    EXPECT_NE(e.describe().find("aji toy train --out"), std::string::npos) << e.describe();
  }
  // A dir an earlier run left before its first checkpoint (metrics, a torn temp file of a
  // killed write): a fresh start replaces it without --force.
  fs::create_directories(run);
  aji::write_file_atomic(run / "metrics.jsonl", json{{"step", 1}, {"loss", 777.25}}.dump() + "\n");
  std::ofstream(run / "latest.tmp.12345") << "ckpt-";
  toy_run(run, false, false, 0, 2);
  EXPECT_FALSE(fs::exists(run / "latest.tmp.12345"));
  EXPECT_EQ(read_or_empty(run / "metrics.jsonl").find("777.25"), std::string::npos);
  // A fresh start on a run with checkpoints is refused; the fix names --resume and --force.
  try {
    toy_run(run, false, false, 0, 2);
    FAIL() << "overwrote a run";
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("already holds a run"), std::string::npos) << e.describe();
    EXPECT_NE(e.describe().find("--resume"), std::string::npos) << e.describe();
    EXPECT_NE(e.describe().find("--force"), std::string::npos) << e.describe();
  }
  // --resume and --force together contradict each other.
  EXPECT_THROW(toy_run(run, true, true, 0, 2), aji::Error);
  // --force replaces it: the old metrics are gone, the new run is a fresh one.
  {
    std::ofstream m(run / "metrics.jsonl", std::ios::app);
    m << json{{"step", 99}, {"loss", 1.0}}.dump() << "\n";
  }
  const ToyResult again = toy_run(run, false, true, 0, 2);
  EXPECT_EQ(again.losses.size(), 2u);
  EXPECT_EQ(read_or_empty(run / "metrics.jsonl").find("\"step\":99"), std::string::npos);
  // A checkpoint of another trainer is refused on resume.
  TrainerRun::Options ro;
  ro.dir.dir = run;
  ro.dir.resume = true;
  ro.dir.quiet = true;
  ro.dir.command = "aji other train";
  ro.dir.state_key = "other";
  EXPECT_THROW(TrainerRun r(ro), aji::Error);
}

TEST(TrainerRun, NanLossStopsNamingTheStepAndTheLastCheckpoint) {
  aji::set_num_threads(1);
  TempDir d;
  const fs::path run = d.path() / "r";
  try {
    toy_run(run, false, false, 0, 6, /*poison_at_step=*/5);
    FAIL() << "a NaN loss did not stop the run";
  } catch (const aji::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("Toy diverged at step 5"), std::string::npos) << what;
    EXPECT_NE(what.find("ckpt-4"), std::string::npos) << what;  // the last good checkpoint, named
    EXPECT_NE(e.describe().find("--lr"), std::string::npos) << e.describe();
  }
  // The last good checkpoint is kept and resumable; nothing of step 5 was saved.
  const auto cks = list_checkpoints(run);
  ASSERT_FALSE(cks.empty());
  EXPECT_EQ(cks.back().first, 4);
  const ToyResult resumed = toy_run(run, true, false, 0, 6);
  EXPECT_EQ(resumed.step, 6);
}

TEST(TrainerRun, TrainStepClipsOverEveryGroupLikeClipGradNorm) {
  aji::set_num_threads(1);
  // Two groups; the clipped gradients the optimizers see equal clip_grad_norm's over the
  // concatenation (same norm to rounding, same scale), checked through a plain SGD-like
  // AdamW with lr such that the update is sign-preserving: compare the norms and the scale.
  std::vector<float> p1(5, 0.0f), g1(5), p2(3, 0.0f), g2(3);
  AdamW o1(5, {0.9f, 0.999f, 1e-8f, 0.0f}), o2(3, {0.9f, 0.999f, 1e-8f, 0.0f});
  std::vector<ParamGroup> groups = {{p1.data(), g1.data(), &o1, {{0, 5, false}}},
                                    {p2.data(), g2.data(), &o2, {{0, 3, false}}}};
  const float v1[5] = {3, -4, 0, 12, 1}, v2[3] = {-2, 2, 6};
  const StepStats s = train_step(groups, 0.1f, 2.0, "Test", {}, [&] {
    for (int i = 0; i < 5; ++i) g1[i] += v1[i];  // accumulates into zeroed gradients
    for (int i = 0; i < 3; ++i) g2[i] += v2[i];
    return 1.5;
  }, 0);
  std::vector<float> all(v1, v1 + 5);
  all.insert(all.end(), v2, v2 + 3);
  const double ref = clip_grad_norm(all.data(), all.size(), 2.0);  // also clips `all`
  EXPECT_NEAR(s.grad_norm, ref, 1e-12 * ref);
  EXPECT_EQ(s.loss, 1.5);
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(g1[i], all[i], 1e-6) << i;
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(g2[i], all[5 + i], 1e-6) << i;
  EXPECT_EQ(o1.step_count(), 1);
  EXPECT_EQ(o2.step_count(), 1);
  // An infinite gradient norm is a divergence too (the loss alone is finite).
  EXPECT_THROW(train_step(groups, 0.1f, 2.0, "Test", {}, [&] {
                 g1[0] = INFINITY;
                 return 1.0;
               }, 1),
               aji::Error);
}

// The ranks' devices join one collective (join_device_collective: rank 0's id broadcast by the
// host communicator): cpu:separate joins the host communicator; a plain CPU has none, and
// GPUs named one by one (cuda:N) are not trusted to NCCL — both said, the same on every rank.
TEST(TrainerRun, DevicesJoinTheJobsCollectiveOrSayWhyNot) {
  aji::dist::Communicator& comm = aji::dist::world();  // one process here
  const auto sep = aji::kernels::make_separate_cpu_backend();
  EXPECT_EQ(join_device_collective(*sep, comm, /*gpus_named=*/false), "");
  EXPECT_TRUE(sep->in_collective());
  const auto named = aji::kernels::make_separate_cpu_backend();
  const std::string why = join_device_collective(*named, comm, /*gpus_named=*/true);
  EXPECT_NE(why.find("cuda:N"), std::string::npos) << why;
  EXPECT_FALSE(named->in_collective());
  const std::string cpu_why = join_device_collective(aji::kernels::cpu_backend(), comm, false);
  EXPECT_FALSE(cpu_why.empty());
  EXPECT_FALSE(aji::kernels::cpu_backend().in_collective());
}
