// Reward model (align/reward_model.h): the unit checks 11-13 of post-training spec §8.3 at the
// model level, the smoke test (every trainable parameter changes), resume bit for bit, the
// offset, and the RM directory (round trip; a plain model refused as an RM and the reverse).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>
#include <numeric>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "aji/align/conversation.h"
#include "aji/align/render.h"
#include "aji/align/reward_model.h"
#include "aji/align/reward_model_run.h"
#include "aji/base/error.h"
#include "aji/base/threads.h"
#include "aji/kernels/backend.h"
#include "aji/kernels/cpu/bf16_gemm.h"
#include "aji/train/checkpoint.h"
#include "kernels/counting_backend.h"
#include "micro_base.h"
#include "rm_toy.h"
#include "test_util.h"
#include "toy_base.h"

using namespace aji::align;
using aji::model::Model;
namespace fs = std::filesystem;

namespace {

// A reward model on the toy SFT trunk with a non-zero head (so scores differ).
RewardModel toy_rm(uint64_t head_seed = 5) {
  RewardModel rm(aji::toybase::load_toy_sft(), int32_t(toy::kPad));
  rm.head.init_normal(head_seed, 0.5f);
  return rm;
}

// Reference score of one sequence: an unpadded forward of just that sequence, the head's dot
// product with the hidden state of its last token, in double.
double reference_score(RewardModel& rm, const std::vector<int32_t>& seq) {
  rm.trunk.forward(seq.data(), 1, int(seq.size()));
  const int C = rm.trunk.config().d_model;
  const float* h = rm.trunk.hidden() + size_t(seq.size() - 1) * C;
  double s = 0;
  for (int c = 0; c < C; ++c) s += double(rm.head.w[size_t(c)]) * h[c];
  return s;
}

std::vector<int32_t> toy_seq(int x, const std::string& reply, bool stop = true) {
  std::vector<int32_t> s = aji::rmtoy::pick_prompt(x);
  for (uint32_t id : toy::encode(reply)) s.push_back(int32_t(id));
  if (stop) s.push_back(int32_t(toy::kAssistantEnd));
  return s;
}

// The per-group loss as the spec writes it: mean over pairs of −log σ(r_w − r_l − m), from
// scores computed one sequence at a time.
double reference_group_loss(RewardModel& rm, const RmGroup& g, const std::vector<float>& g_scores) {
  double sum = 0;
  int n = 0;
  for (size_t w = 0; w < g.sequences.size(); ++w)
    for (size_t l = 0; l < g.sequences.size(); ++l)
      if (g_scores[w] > g_scores[l]) {
        const double d = reference_score(rm, g.sequences[w]) - reference_score(rm, g.sequences[l]) - g.margin;
        sum += std::log1p(std::exp(-d));
        ++n;
      }
  return sum / n;
}

// Scores of the completions of small_groups() (higher is better).
const std::vector<std::vector<float>> kSmallScores = {{3, 1, 2, 0}, {1, 0, 1, 2}, {1, 0}};

std::vector<RmGroup> small_groups() {
  std::vector<RmGroup> gs;
  // K = 4, distinct scores: 6 pairs
  gs.push_back(rm_group_from_scores({toy_seq(12, "42"), toy_seq(12, "17"), toy_seq(12, "8"), toy_seq(12, "99", false)},
                                    kSmallScores[0]));
  // K = 4 with a tie: 5 pairs, and a margin
  gs.push_back(rm_group_from_scores({toy_seq(57, "30"), toy_seq(57, "31"), toy_seq(57, "64"), toy_seq(57, "5")},
                                    kSmallScores[1]));
  gs.back().margin = 0.3f;
  // a TRL pair: K = 2
  gs.push_back(rm_group_from_scores({toy_seq(80, "22"), toy_seq(80, "23")}, kSmallScores[2]));
  return gs;
}

}  // namespace

// §8.3 check 13: the reward is read at the last non-pad index, whatever the right padding.
TEST(RewardModel, ReadsTheLastNonPadTokenUnderRightPadding) {
  aji::set_num_threads(1);
  RewardModel rm = toy_rm();
  const std::vector<std::vector<int32_t>> seqs = {toy_seq(12, "4"), toy_seq(33, "70"), toy_seq(45, "1234"),
                                                  aji::rmtoy::pick_prompt(9), toy_seq(99, "", true)};
  std::vector<double> ref;
  for (const auto& s : seqs) ref.push_back(reference_score(rm, s));
  for (int batch : {1, 2, 3, 5}) {  // different groupings = different padded lengths per row
    const std::vector<float> r = rm.raw_scores(seqs, batch);
    ASSERT_EQ(r.size(), seqs.size());
    for (size_t i = 0; i < seqs.size(); ++i) EXPECT_NEAR(r[i], ref[i], 1e-4) << "batch " << batch << " seq " << i;
  }
  // Right padding explicitly: the row with 20 pads appended. Reading its last position (what
  // a "last position of the row" bug does) gives another number than the last real token.
  const std::vector<int32_t> base = toy_seq(21, "56");
  std::vector<int32_t> padded = base;
  padded.insert(padded.end(), 20, int32_t(toy::kPad));
  const float good = rm.raw_scores({base}, 1)[0];
  EXPECT_NEAR(good, reference_score(rm, base), 1e-4);
  const double at_pad = reference_score(rm, padded);  // the last position of the padded row
  EXPECT_GT(std::fabs(at_pad - good), 1e-3) << "the test could not tell a pad position from the last token";
  // And rm_forward_backward (the training path, right padding inside each micro-batch) sees
  // the same rewards: its reward range over one group equals the reference one.
  const RmGroup g = rm_group_from_scores(seqs, {4, 3, 2, 1, 0});
  RmOptions o;
  RmStepStats st;
  rm.trunk.zero_grads();
  const int64_t idx = 0;
  rm_forward_backward(rm, {g}, &idx, 1, o, st);
  EXPECT_NEAR(st.reward_min, *std::min_element(ref.begin(), ref.end()), 1e-4);
  EXPECT_NEAR(st.reward_max, *std::max_element(ref.begin(), ref.end()), 1e-4);
}

// §8.3 checks 11-12 at the model level: ln 2 at a zero head, K forwards per prompt, the
// K-ranking expansion (ties removed), per-prompt loss = mean over its pairs, margin.
TEST(RewardModel, RankingLossMatchesTheSpecAtModelLevel) {
  aji::set_num_threads(1);
  const std::vector<RmGroup> gs = small_groups();
  {  // zero head: every pair a tie
    RewardModel rm(aji::toybase::load_toy_sft(), int32_t(toy::kPad));
    RmStepStats st;
    const std::vector<int64_t> idx = {0, 2};
    rm_forward_backward(rm, gs, idx.data(), 2, RmOptions{}, st);
    EXPECT_NEAR(st.loss, std::log(2.0), 1e-12);
    EXPECT_EQ(st.accuracy, 0.5);
    EXPECT_EQ(st.pairs, 6 + 1);
  }
  RewardModel rm = toy_rm();
  const std::vector<int64_t> idx = {0, 1, 2};
  for (int micro : {1, 4, 64}) {  // micro-batching never splits a group; the result is the same
    RmOptions o;
    o.micro_rows = micro;
    RmStepStats st;
    rm.trunk.zero_grads();
    rm.head.zero_grad();
    rm_forward_backward(rm, gs, idx.data(), 3, o, st);
    EXPECT_EQ(st.sequences_forwarded, 4 + 4 + 2) << "exactly K forwards per prompt";
    EXPECT_EQ(st.pairs, 6 + 5 + 1) << "K(K-1)/2 pairs, ties removed";
    EXPECT_EQ(st.groups, 3);
    const double want = (reference_group_loss(rm, gs[0], kSmallScores[0]) + reference_group_loss(rm, gs[1], kSmallScores[1]) +
                         reference_group_loss(rm, gs[2], kSmallScores[2])) /
                        3;
    EXPECT_NEAR(st.loss, want, 1e-5) << "micro_rows " << micro;
    if (micro == 1) {
      EXPECT_EQ(st.forwards, 3);  // one forward per group (a group goes whole)
    }
  }
}

// The head gradient of the step loss against central finite differences of the loss
// computed from independent one-sequence scores, with margin and centering on.
// A reward model trained in bf16 (--precision bf16) scores in fp32: evaluations, the offset
// and PPO's rewards are what the saved model gives (loaded in fp32), bit for bit, and the
// trunk is back in bf16 for the next training step. The bf16 forward itself differs.
TEST(RewardModel, ScoresAreFp32InABf16Run) {
  aji::set_num_threads(1);
  if (!aji::kernels::cpu::bf16_supported()) GTEST_SKIP() << "this CPU has no native bf16 products (the run is fp32)";
  RewardModel bf = toy_rm(), fp = toy_rm();
  bf.trunk.set_precision(aji::model::Precision::kBf16);
  std::vector<std::vector<int32_t>> seqs;
  for (const RmGroup& g : small_groups())
    for (const auto& q : g.sequences) seqs.push_back(q);
  const std::vector<float> a = bf.raw_scores(seqs, 4), b = fp.raw_scores(seqs, 4);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << i;
  EXPECT_EQ(bf.trunk.precision(), aji::model::Precision::kBf16);
  // The training forward in bf16 is not the fp32 one (the bf16 path really runs).
  const std::vector<int32_t>& q = seqs.front();
  bf.trunk.forward(q.data(), 1, int(q.size()));
  fp.trunk.forward(q.data(), 1, int(q.size()));
  const size_t n = q.size() * size_t(bf.trunk.config().d_model);
  double diff = 0;
  for (size_t i = 0; i < n; ++i) diff = std::max(diff, double(std::fabs(bf.trunk.hidden()[i] - fp.trunk.hidden()[i])));
  EXPECT_GT(diff, 0.0);
  EXPECT_LT(diff, 0.5);
}

TEST(RewardModel, HeadGradientMatchesFiniteDifferences) {
  aji::set_num_threads(1);
  const std::vector<RmGroup> gs = small_groups();
  RewardModel rm = toy_rm(9);
  RmOptions o;
  o.center_coef = 0.05;
  const std::vector<int64_t> idx = {0, 1, 2};
  RmStepStats st;
  rm.trunk.zero_grads();
  rm.head.zero_grad();
  rm_forward_backward(rm, gs, idx.data(), 3, o, st);
  const std::vector<float> grad = rm.head.grad;
  auto loss_at = [&]() {
    double total = 0;
    for (size_t gi = 0; gi < gs.size(); ++gi) {
      const RmGroup& g = gs[gi];
      double bt = 0, center = 0;
      int n = 0;
      for (size_t w = 0; w < g.sequences.size(); ++w)
        for (size_t l = 0; l < g.sequences.size(); ++l)
          if (kSmallScores[gi][w] > kSmallScores[gi][l]) {
            const double rw = reference_score(rm, g.sequences[w]), rl = reference_score(rm, g.sequences[l]);
            bt += std::log1p(std::exp(-(rw - rl - g.margin)));
            center += (rw + rl) * (rw + rl);
            ++n;
          }
      total += bt / n + o.center_coef * center / n;
    }
    return total / double(gs.size());
  };
  EXPECT_NEAR(st.loss, loss_at(), 1e-5);
  const double h = 1e-2;
  for (int c : {0, 7, 31, 63}) {
    const float keep = rm.head.w[size_t(c)];
    rm.head.w[size_t(c)] = keep + float(h);
    const double up = loss_at();
    rm.head.w[size_t(c)] = keep - float(h);
    const double down = loss_at();
    rm.head.w[size_t(c)] = keep;
    EXPECT_NEAR(grad[size_t(c)], (up - down) / (2 * h), 2e-3 + 1e-2 * std::fabs(grad[size_t(c)])) << "c " << c;
  }
}

// Diverged weights (a NaN in the head) stop the step with train_step's error, not a crash or
// a silent update.
TEST(RewardModel, NonFiniteRewardStopsTheStepWithAClearError) {
  aji::set_num_threads(1);
  const std::vector<RmGroup> gs = small_groups();
  RewardModel rm = toy_rm();
  rm.head.w[3] = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> before(rm.trunk.params(), rm.trunk.params() + rm.trunk.num_params());
  RmProgress pg;
  const std::vector<int64_t> idx = {0, 1};
  try {
    rm_step(rm, gs, idx.data(), 2, RmOptions{}, pg, 1e-3f, 6);
    ADD_FAILURE() << "no error";
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("diverged at step 7"), std::string::npos) << e.what();
  }
  EXPECT_EQ(0, std::memcmp(before.data(), rm.trunk.params(), sizeof(float) * before.size())) << "weights changed";
}

// Smoke test (§8.3 check 30): a short run => finite loss and EVERY trainable parameter
// changed (every trunk tensor, the head); step-0 loss ln 2; offset makes chosen mean 0.
TEST(RewardModel, ShortRunChangesEveryParameter) {
  aji::set_num_threads(2);
  Model policy = aji::toybase::load_toy_sft();
  const aji::rmtoy::ToyPrefs data = aji::rmtoy::toy_preferences(policy, 24, 4, 31);
  RewardModel rm(aji::toybase::load_toy_sft(), int32_t(toy::kPad));
  const std::vector<float> before(rm.trunk.params(), rm.trunk.params() + rm.trunk.num_params());
  RmOptions o;
  o.batch = 8;
  o.steps = 4;
  o.lr = 1e-3f;
  const RmTrainResult r = rm_train(rm, data.groups, {}, o);
  EXPECT_EQ(r.steps_done, 4);
  EXPECT_NEAR(r.first_step.loss, std::log(2.0), 1e-9);
  EXPECT_EQ(r.skipped_groups, int64_t(data.groups.size()) - data.prompts_with_pairs);
  for (float l : r.step_losses) EXPECT_TRUE(std::isfinite(l));
  for (const auto& t : rm.trunk.tensors()) {
    bool changed = false;
    for (size_t i = t.offset; i < t.offset + t.numel && !changed; ++i) changed = rm.trunk.params()[i] != before[i];
    EXPECT_TRUE(changed) << t.name << " did not change";
  }
  int head_nonzero = 0;
  for (float w : rm.head.w) head_nonzero += w != 0.0f;
  EXPECT_EQ(head_nonzero, rm.head.d_model);
  EXPECT_NE(rm.offset, 0.0f);
  EXPECT_NEAR(rm_chosen_mean(rm, data.groups) - rm.offset, 0.0, 1e-5);
}

// The trunk on a device (a separate CPU backend that counts transfers): the same run as on the
// host, bit for bit, and a step after the first brings back far less than the weights (the
// step's parameter groups are built once per run: taking the trunk's params() every step
// downloaded the weights and re-uploaded them at the next forward).
TEST(RewardModel, OnADeviceTheRunIsTheHostRunAndStepsMoveNoWeights) {
  aji::set_num_threads(2);
  Model policy = aji::toybase::load_toy_sft();
  const aji::rmtoy::ToyPrefs data = aji::rmtoy::toy_preferences(policy, 24, 4, 33);
  RmOptions o;
  o.batch = 8;
  o.steps = 4;
  o.lr = 1e-3f;
  RewardModel host(aji::toybase::load_toy_sft(), int32_t(toy::kPad));
  const RmTrainResult rh = rm_train(host, data.groups, {}, o);

  RewardModel dev(aji::toybase::load_toy_sft(), int32_t(toy::kPad));
  auto counting = std::make_shared<aji::test::CountingBackend>(aji::kernels::make_separate_cpu_backend());
  dev.trunk.set_device(counting);
  std::vector<size_t> down;
  RmHooks hooks;
  hooks.on_step = [&](int64_t, int64_t, const RmStepStats&) { down.push_back(counting->down); };
  const RmTrainResult rd = rm_train(dev, data.groups, {}, o, hooks);
  ASSERT_EQ(rd.step_losses.size(), rh.step_losses.size());
  for (size_t i = 0; i < rh.step_losses.size(); ++i) EXPECT_EQ(rd.step_losses[i], rh.step_losses[i]) << "step " << i;
  ASSERT_EQ(down.size(), 4u);
  const size_t weight_bytes = sizeof(float) * dev.trunk.num_params();
  for (size_t i = 1; i < down.size(); ++i) EXPECT_LT(down[i] - down[i - 1], weight_bytes / 4) << "step " << i + 1;
  EXPECT_EQ(0, std::memcmp(dev.trunk.params(), host.trunk.params(), weight_bytes));
  EXPECT_EQ(dev.head.w, host.head.w);
}

// Stop after k steps, save everything (RM dir + optimizer files + progress JSON), load into
// fresh objects, continue == the uninterrupted run, bit for bit.
TEST(RewardModel, ResumeIsBitIdentical) {
  aji::set_num_threads(2);
  Model policy = aji::toybase::load_toy_sft();
  const aji::rmtoy::ToyPrefs data = aji::rmtoy::toy_preferences(policy, 24, 4, 32);
  RmOptions o;
  o.batch = 4;
  o.epochs = 2;  // crosses an epoch boundary
  o.lr = 1e-3f;
  o.decay = "cosine";
  RewardModel full(aji::toybase::load_toy_sft(), int32_t(toy::kPad));
  const RmTrainResult rf = rm_train(full, data.groups, {}, o);
  ASSERT_GT(rf.steps_done, 6);

  const fs::path dir = fs::temp_directory_path() / ("aji_rm_resume_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  RewardModel part(aji::toybase::load_toy_sft(), int32_t(toy::kPad));
  RmProgress pg;
  RmHooks hooks;
  hooks.after_step = [](const RmProgress& p) { return p.step == 5; };
  const RmTrainResult r1 = rm_train(part, data.groups, {}, o, hooks, &pg);
  EXPECT_TRUE(r1.stopped_early);
  save_reward_model(dir / "rm", part, {});
  pg.trunk_opt.save(dir / "trunk_opt.bin");
  pg.head_opt.save(dir / "head_opt.bin");
  const nlohmann::json state = pg.to_json();

  RewardModel resumed = load_reward_model(dir / "rm");
  RmProgress pg2;
  pg2.scalars_from_json(state);
  const aji::train::AdamWConfig acfg{o.beta1, o.beta2, o.eps, o.weight_decay};
  pg2.trunk_opt = aji::train::AdamW(resumed.trunk.num_params(), acfg);
  pg2.head_opt = aji::train::AdamW(resumed.head.w.size(), acfg);
  pg2.trunk_opt.load(dir / "trunk_opt.bin");
  pg2.head_opt.load(dir / "head_opt.bin");
  const RmTrainResult r2 = rm_train(resumed, data.groups, {}, o, {}, &pg2);
  EXPECT_EQ(r2.steps_done, rf.steps_done);
  ASSERT_EQ(r1.step_losses.size() + r2.step_losses.size(), rf.step_losses.size());
  for (size_t i = 0; i < r2.step_losses.size(); ++i)
    EXPECT_EQ(r2.step_losses[i], rf.step_losses[r1.step_losses.size() + i]) << "step " << i;
  EXPECT_EQ(0, std::memcmp(resumed.trunk.params(), full.trunk.params(), sizeof(float) * full.trunk.num_params()));
  EXPECT_EQ(resumed.head.w, full.head.w);
  EXPECT_EQ(resumed.offset, full.offset);
  fs::remove_all(dir);
}

// The RM directory: round trip (weights, head, offset: the same shifted scores); a plain
// model dir is refused as an RM, an RM dir is refused as a policy, both with the fix.
TEST(RewardModel, DirectoryRoundTripAndRefusals) {
  aji::set_num_threads(1);
  const fs::path dir = fs::temp_directory_path() / ("aji_rm_dir_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  RewardModel rm = toy_rm(3);
  rm.offset = 0.625f;
  save_reward_model(dir / "rm", rm, {}, {{"training", {{"steps", 7}}}});
  EXPECT_TRUE(is_reward_model_dir(dir / "rm"));
  EXPECT_FALSE(is_reward_model_dir(aji::toybase::sft_fixture_dir()));
  RewardModel back = load_reward_model(dir / "rm");
  EXPECT_EQ(back.offset, 0.625f);
  EXPECT_EQ(back.info["training"]["steps"], 7);
  const std::vector<int32_t> s = toy_seq(40, "18");
  EXPECT_EQ(back.score(s), rm.score(s));
  EXPECT_NEAR(rm.score(s), reference_score(rm, s) - 0.625, 1e-4);

  try {
    load_reward_model(aji::toybase::sft_fixture_dir());
    ADD_FAILURE() << "a plain model dir was accepted as a reward model";
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a reward model"), std::string::npos) << e.what();
    EXPECT_NE(e.how_to_fix().find("aji rm train"), std::string::npos);
  }
  try {
    aji::train::load_model(dir / "rm");
    ADD_FAILURE() << "a reward model dir was accepted as a policy";
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("reward model"), std::string::npos) << e.what();
    EXPECT_FALSE(e.how_to_fix().empty());
  }
  // An offset beyond a float's range would make every reward infinite: refused by name.
  {
    const fs::path f = dir / "rm" / aji::align::kRewardModelFile;
    std::ifstream in(f);
    nlohmann::json j = nlohmann::json::parse(in);
    in.close();
    j["offset"] = 1e39;
    std::ofstream(f) << j.dump();
    try {
      load_reward_model(dir / "rm");
      ADD_FAILURE() << "an offset of 1e39 was accepted";
    } catch (const aji::Error& e) {
      EXPECT_NE(e.describe().find("offset"), std::string::npos) << e.describe();
      EXPECT_NE(e.describe().find(f.string()), std::string::npos) << e.describe();
    }
  }
  fs::remove_all(dir);
}

// ---- `aji rm train` / `aji rm score` end to end on a micro model (micro_base.h) ------------

namespace {

const char* kRmQa[][3] = {{"What color is the sky?", "The sky is blue.", "The sky is green."},
                          {"How many legs does a cat have?", "A cat has four legs.", "A cat has nine legs."},
                          {"Say hello.", "Hello! How can I help you today?", "Go away."},
                          {"하늘은 무슨 색이야?", "하늘은 파란색이야.", "하늘은 초록색이야."}};

std::string msg(const char* role, const std::string& content) {
  return R"({"role": ")" + std::string(role) + R"(", "content": ")" + content + R"("})";
}

struct RmRunFixture {
  aji::test::TempDir dir;
  fs::path base, prefs, convs;
  RmRunFixture() {
    aji::set_num_threads(1);
    {
      std::ofstream c(dir.path() / "corpus.txt");
      for (int i = 0; i < 200; ++i)
        for (auto& qa : kRmQa) c << qa[0] << " " << qa[1] << " " << qa[2] << "\n\n";
    }
    base = aji::test::build_micro_base(dir.path(), dir.path() / "corpus.txt");
    prefs = dir.path() / "prefs.jsonl";
    convs = dir.path() / "convs.jsonl";
    std::ofstream p(prefs), c(convs);
    for (int i = 0; i < 16; ++i) {
      auto& qa = kRmQa[i % 4];
      if (i % 4 == 3)  // a 3-way ranking: 3 pairs
        p << R"({"prompt": [)" << msg("user", qa[0]) << R"(], "responses": [[)" << msg("assistant", qa[2]) << "], ["
          << msg("assistant", qa[1]) << "], [" << msg("assistant", "Hmm.") << R"(]], "ranking": [1, 2, 0]})" << "\n";
      else
        p << R"({"prompt": [)" << msg("user", qa[0]) << R"(], "chosen": [)" << msg("assistant", qa[1])
          << R"(], "rejected": [)" << msg("assistant", qa[2]) << "]}\n";
    }
    for (auto& qa : kRmQa)
      for (int k = 1; k <= 2; ++k)
        c << R"({"messages": [)" << msg("user", qa[0]) << ", " << msg("assistant", qa[k]) << "]}\n";
  }
  RmRunOptions options(const std::string& run, int64_t steps) const {
    RmRunOptions o;
    o.model = base;
    o.data = {prefs};
    o.out_dir = dir.path() / run;
    o.quiet = true;
    o.val_fraction = 0.25;
    o.train.batch = 3;
    o.train.steps = steps;
    o.train.lr = 3e-3f;
    o.train.eval_every = 4;
    o.save_every = 3;
    return o;
  }
};

std::vector<float> head_of(const fs::path& out) { return load_reward_model(resolve_reward_model_dir(out)).head.w; }

}  // namespace

TEST(RewardModelRun, TrainsWritesTheRmDirAndScoresThroughTheCli) {
  RmRunFixture f;
  const RmRunResult r = run_rm_train(f.options("run", 12));
  EXPECT_EQ(r.steps, 12);
  EXPECT_EQ(r.n_train + r.n_val, 16);
  EXPECT_EQ(r.n_val, 4);
  EXPECT_NEAR(r.first_loss, std::log(2.0), 1e-9);  // zero head
  EXPECT_EQ(r.val_before.accuracy, 0.5);
  EXPECT_LT(r.step_losses.back(), r.first_loss);
  const fs::path run = f.dir.path() / "run";
  for (const char* name : {"rm/rm.json", "rm/score.safetensors", "rm/model.safetensors", "rm/aji_tokenizer.json",
                           "summary.json", "metrics.jsonl", "loss.svg", "run.json"})
    EXPECT_TRUE(fs::exists(run / name)) << name;
  // metrics.jsonl: every step has loss/accuracy/margin/rewards; evaluations val_accuracy.
  int steps = 0, evals = 0;
  std::ifstream m(run / "metrics.jsonl");
  for (std::string line; std::getline(m, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("loss")) {
      ++steps;
      for (const char* k : {"accuracy", "margin", "reward_min", "reward_mean", "reward_max", "grad_norm"})
        EXPECT_TRUE(j.contains(k)) << k;
    }
    if (j.contains("val_accuracy")) ++evals;
  }
  EXPECT_EQ(steps, 12);
  EXPECT_GE(evals, 3);  // step 0, 4, 8, 12
  // The RM dir: its offset is the chosen replies' mean raw score.
  RewardModel rm = load_reward_model(resolve_reward_model_dir(run));
  EXPECT_EQ(rm.offset, r.offset);
  EXPECT_NE(rm.offset, 0.0f);
  // A policy loader refuses the RM run dir (its checkpoints are reward models too) and the RM dir.
  EXPECT_THROW(aji::train::load_model(run), aji::Error);
  EXPECT_THROW(aji::train::load_model(run / "rm"), aji::Error);
  // Through the CLI: `aji rm train` in the issue's form; given a reward model as --model it
  // refuses with the fix.
  std::string out;
  const std::string train_cmd = std::string(AJI_BINARY) + " -q rm train --data " + f.prefs.string() +
                                " --epochs 1 --lr 0.003 --batch-size 4 --val-fraction 0.25 --model ";
  ASSERT_EQ(aji::test::run_command(train_cmd + f.base.string() + " --out " + (f.dir.path() / "cli").string() + " 2>&1",
                                   &out),
            0)
      << out;
  EXPECT_TRUE(is_reward_model_dir(f.dir.path() / "cli" / "rm"));
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(f.dir.path() / "cli" / "summary.json"))["steps"], 3);  // 12 prompts / 4
  EXPECT_NE(aji::test::run_command(train_cmd + (run / "rm").string() + " --out " + (f.dir.path() / "again").string() +
                                       " 2>&1",
                                   &out),
            0);
  EXPECT_NE(out.find("reward model"), std::string::npos) << out;
  EXPECT_NE(out.find("fix:"), std::string::npos) << out;

  // `aji rm score`: one JSON line per input line, score = reference score − offset.
  ASSERT_EQ(aji::test::run_command(std::string(AJI_BINARY) + " rm score --model " + run.string() + " --input " +
                                       f.convs.string() + " 2>&1",
                                   &out),
            0)
      << out;
  const aji::tokenizer::Tokenizer tok = aji::tokenizer::Tokenizer::load(run / "rm" / "aji_tokenizer.json");
  InputReport rep;
  const std::vector<Conversation> convs = read_conversations(f.convs, OnInvalid::kError, &rep);
  std::istringstream lines(out);
  size_t n = 0;
  for (std::string line; std::getline(lines, line); ++n) {
    ASSERT_LT(n, convs.size()) << out;
    const nlohmann::json j = nlohmann::json::parse(line);
    EXPECT_EQ(j["line"], int64_t(n + 1));
    const RenderedSequence rs = render_conversation(tok, convs[n]);
    const double want = reference_score(rm, std::vector<int32_t>(rs.ids.begin(), rs.ids.end())) - rm.offset;
    EXPECT_NEAR(j["score"].get<double>(), want, 1e-4) << line;
  }
  EXPECT_EQ(n, convs.size());
  // A plain model given to `rm score` is refused with the fix.
  EXPECT_NE(aji::test::run_command(std::string(AJI_BINARY) + " rm score --model " + f.base.string() + " --input " +
                                       f.convs.string() + " 2>&1",
                                   &out),
            0);
  EXPECT_NE(out.find("not a reward model"), std::string::npos) << out;
  EXPECT_NE(out.find("aji rm train"), std::string::npos) << out;
}

TEST(RewardModelRun, ResumeIsBitIdenticalAndBadInputIsClear) {
  RmRunFixture f;
  run_rm_train(f.options("full", 9));
  auto first = f.options("part", 9);
  first.stop_after = 4;  // checkpoint at 4, stop
  EXPECT_TRUE(run_rm_train(first).interrupted);
  EXPECT_THROW(resolve_reward_model_dir(f.dir.path() / "part"), aji::Error);  // not finished yet
  auto rest = f.options("part", 9);
  rest.resume = true;
  rest.given = {"--lr"};  // the same value as saved: accepted
  const RmRunResult r2 = run_rm_train(rest);
  EXPECT_EQ(r2.steps, 9);
  EXPECT_EQ(head_of(f.dir.path() / "part"), head_of(f.dir.path() / "full"));
  const RewardModel a = load_reward_model(f.dir.path() / "full" / "rm");
  const RewardModel b = load_reward_model(f.dir.path() / "part" / "rm");
  EXPECT_EQ(0, std::memcmp(a.trunk.params(), b.trunk.params(), sizeof(float) * a.trunk.num_params()));
  EXPECT_EQ(a.offset, b.offset);
  // A finished run is not overwritten without --force.
  EXPECT_THROW(run_rm_train(f.options("full", 9)), aji::Error);

  // Bad input: chosen equal to rejected names file:line; --skip-invalid counts it instead.
  const fs::path bad = f.dir.path() / "bad.jsonl";
  {
    std::ofstream b(bad);
    b << R"({"prompt": [)" << msg("user", "hi") << R"(], "chosen": [)" << msg("assistant", "hello")
      << R"(], "rejected": [)" << msg("assistant", "bye") << "]}\n";
    b << R"({"prompt": [)" << msg("user", "hi") << R"(], "chosen": [)" << msg("assistant", "same")
      << R"(], "rejected": [)" << msg("assistant", "same") << "]}\n";
    b << R"({"prompt": [)" << msg("user", "yo") << R"(], "chosen": [)" << msg("assistant", "hey")
      << R"(], "rejected": [)" << msg("assistant", "no") << "]}\n";
  }
  auto o = f.options("bad", 2);
  o.data = {bad};
  o.val_fraction = 0;
  try {
    run_rm_train(o);
    ADD_FAILURE() << "no error";
  } catch (const aji::Error& e) {
    EXPECT_NE(e.describe().find("bad.jsonl:2"), std::string::npos) << e.describe();
  }
  o.skip_invalid = true;
  o.force = true;
  const RmRunResult rs = run_rm_train(o);
  EXPECT_EQ(rs.n_train, 2);
}
