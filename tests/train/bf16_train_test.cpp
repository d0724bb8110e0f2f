// bf16 mixed-precision training (model.h's Precision, --precision): the bf16 step is an
// fp32 step up to bf16 rounding (and really is a bf16 step), the bf16 copy of the weights
// follows every optimizer step, and `aji pretrain --precision bf16` resumes bit for bit,
// records its precision, and resumes in fp32 (and the reverse).
// The comparison against PyTorch autocast is tests/train/bf16_reference_test.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "aji/kernels/backend.h"
#include "aji/kernels/cpu/bf16_gemm.h"
#include "aji/model/model.h"
#include "aji/train/checkpoint.h"
#include "aji/train/optimizer.h"
#include "aji/train/pretrain.h"
#include "aji/train/tokenize_data.h"
#include "aji/train/trainer_run.h"
#include "kernels/counting_backend.h"
#include "model/tiny_configs.h"
#include "test_util.h"

namespace fs = std::filesystem;
using aji::model::Model;
using aji::model::ModelConfig;
using aji::model::Precision;

namespace {

ModelConfig small_config(const std::string& arch) {
  nlohmann::json j = {{"arch", arch},      {"vocab_size", 301}, {"n_layer", 2},     {"n_head", 4},
                      {"d_model", 64},     {"max_seq_len", 32}, {"norm_eps", 1e-5}};
  if (arch == "llama") {
    j["n_kv_head"] = 2;
    j["d_ff"] = 96;
    j["tied_embeddings"] = false;
  }
  return ModelConfig::from_json(j, "test");
}

struct StepOut {
  float loss;
  std::vector<float> grads;
};

StepOut loss_and_grads(Model& m, const std::vector<int32_t>& tok, const std::vector<int32_t>& tgt, int B, int T) {
  m.zero_grads();
  m.forward(tok.data(), B, T);
  StepOut o;
  o.loss = m.lm_head_loss(tgt.data());
  m.backward(m.d_hidden_buffer());
  o.grads.assign(m.grads(), m.grads() + m.num_params());
  return o;
}

// ||a - b|| / ||b|| over one tensor
double rel_err(const float* a, const float* b, size_t n) {
  double d = 0, r = 0;
  for (size_t i = 0; i < n; ++i) {
    d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    r += (double)b[i] * b[i];
  }
  return std::sqrt(d / std::max(r, 1e-300));
}

}  // namespace

// bf16 products change the step by about bf16's rounding (2^-9 relative per input): the
// loss agrees with fp32 to ~1e-3 and every gradient tensor to a few 1e-3 (bound 3e-2);
// it is not the fp32 step (errors above 1e-5, fp32's own level), so bf16 really ran.
TEST(Bf16Train, StepIsTheFp32StepUpToBf16Rounding) {
  aji::set_num_threads(1);
  for (const std::string arch : {"gpt2", "llama"}) {
    Model m(small_config(arch));
    m.init_weights(7);
    const int B = 2, T = 24;
    aji::Rng rng(3);
    std::vector<int32_t> tok(B * T), tgt(B * T);
    for (auto& t : tok) t = (int32_t)rng.below(301);
    for (auto& t : tgt) t = (int32_t)rng.below(301);
    const StepOut f32 = loss_and_grads(m, tok, tgt, B, T);
    m.set_precision(Precision::kBf16);
    EXPECT_EQ(m.precision(), Precision::kBf16);
    const StepOut b16 = loss_and_grads(m, tok, tgt, B, T);
    EXPECT_NEAR(b16.loss, f32.loss, 1e-2 * f32.loss) << arch;
    EXPECT_NE(b16.loss, f32.loss) << arch << ": the bf16 step computed exactly the fp32 loss";
    double worst = 0, least = 1;
    for (const auto& t : m.tensors()) {
      const double e = rel_err(b16.grads.data() + t.offset, f32.grads.data() + t.offset, t.numel);
      worst = std::max(worst, e);
      if (t.shape.size() == 2) least = std::min(least, e);
      EXPECT_LT(e, 3e-2) << arch << " " << t.name;
    }
    EXPECT_GT(least, 1e-5) << arch << ": a weight gradient equal to fp32's: not computed in bf16";
    // back to fp32: exactly the fp32 step again
    m.set_precision(Precision::kFp32);
    const StepOut again = loss_and_grads(m, tok, tgt, B, T);
    EXPECT_EQ(again.loss, f32.loss);
    EXPECT_EQ(again.grads, f32.grads);
  }
}

// The bf16 weight copy follows the optimizer: after a train_step (ParamGroup::whole_model
// tells the model), the next forward equals that of a fresh bf16 model holding the new weights.
// The update rounds the weights into the model's bf16 copy as it writes them (train_step):
// after three steps the loss equals a fresh model's that rounds the weights itself; also with
// some tensors frozen (outside the optimizer's ranges, as classifier fine-tuning does).
TEST(Bf16Train, WeightCopyFollowsEveryOptimizerStep) {
  aji::set_num_threads(1);
  for (bool frozen : {false, true}) {
    Model m(small_config("gpt2"));
    m.init_weights(1);
    m.set_precision(Precision::kBf16);
    const int B = 2, T = 16;
    std::vector<int32_t> tok(B * T), tgt(B * T);
    aji::Rng rng(9);
    for (auto& t : tok) t = (int32_t)rng.below(301);
    for (auto& t : tgt) t = (int32_t)rng.below(301);
    aji::train::AdamW opt(m.num_params(), {0.9f, 0.95f, 1e-8f, 0.1f});
    std::vector<aji::train::ParamGroup> groups = {aji::train::ParamGroup::whole_model(m, opt)};
    if (frozen) groups[0].ranges.erase(groups[0].ranges.begin() + 2, groups[0].ranges.begin() + 6);
    const std::vector<float> before(m.params(), m.params() + m.num_params());
    for (int s = 0; s < 3; ++s)
      aji::train::train_step(groups, 1e-2f, 1.0, "test", "", [&] {
        m.forward(tok.data(), B, T);
        const float l = m.lm_head_loss(tgt.data());
        m.backward(m.d_hidden_buffer());
        return (double)l;
      }, s);
    const Model& cm = m;
    if (frozen) {
      const auto& t = cm.tensors()[2];
      EXPECT_TRUE(std::equal(cm.params() + t.offset, cm.params() + t.offset + t.numel, before.begin() + t.offset));
    }
    m.forward(tok.data(), B, T);
    const float after = m.lm_head_loss(tgt.data());
    Model fresh(small_config("gpt2"));
    std::copy(cm.params(), cm.params() + m.num_params(), fresh.params());
    fresh.set_precision(Precision::kBf16);
    fresh.forward(tok.data(), B, T);
    EXPECT_EQ(fresh.lm_head_loss(tgt.data()), after) << (frozen ? "some tensors frozen" : "all trained");
  }
}

TEST(Bf16Train, PrecisionChoiceAndFallbackAreSaid) {
  std::string note;
  const Precision autop = aji::train::resolve_precision("auto", &note);
  EXPECT_EQ(autop, aji::kernels::cpu::bf16_supported() ? Precision::kBf16 : Precision::kFp32);
  EXPECT_NE(note.find(aji::model::precision_name(autop)), std::string::npos) << note;
  const Precision asked = aji::train::resolve_precision("bf16", &note);
  if (!aji::kernels::cpu::bf16_supported()) {
    EXPECT_EQ(asked, Precision::kFp32);
    EXPECT_NE(note.find("falls back to fp32"), std::string::npos) << note;
  } else {
    EXPECT_EQ(asked, Precision::kBf16);
  }
  EXPECT_EQ(aji::train::resolve_precision("fp32", &note), Precision::kFp32);
  try {
    aji::train::resolve_precision("fp16", &note);
    FAIL() << "fp16 accepted";
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("fp16"), std::string::npos);
    EXPECT_NE(e.how_to_fix().find("auto, fp32, bf16 or tf32"), std::string::npos);
  }
}

// --precision tf32: the models in fp32 and a CUDA device's TF32 products; anywhere else (the
// CPU, a separate-memory CPU device) a clear error before the run starts.
TEST(Bf16Train, Tf32IsForCudaDevicesOnly) {
  std::string note;
  EXPECT_EQ(aji::train::resolve_precision("tf32", &note), Precision::kFp32);
  EXPECT_NE(note.find("TF32"), std::string::npos) << note;
  std::string requested = "tf32";
  EXPECT_EQ(aji::train::run_precision(requested, nlohmann::json(), true, true), Precision::kFp32);
  EXPECT_EQ(requested, "tf32");  // saved as asked
  aji::model::Model m(aji::test::tiny_llama_config());
  for (const std::shared_ptr<aji::kernels::Backend>& be :
       {std::shared_ptr<aji::kernels::Backend>(), aji::kernels::make_separate_cpu_backend()}) {
    std::string p = "tf32";
    try {
      aji::train::apply_run_device(be, p, true, "test", {&m});
      FAIL() << "tf32 accepted on " << (be ? be->describe() : "the CPU");
    } catch (const aji::Error& e) {
      EXPECT_NE(std::string(e.what()).find("CUDA"), std::string::npos) << e.describe();
      EXPECT_NE(e.how_to_fix().find("--device cuda"), std::string::npos) << e.describe();
    }
    EXPECT_FALSE(m.on_device());  // refused before the model moved
  }
  auto be = aji::kernels::make_separate_cpu_backend();
  std::string p = "fp32";
  aji::train::apply_run_device(be, p, true, "test", {&m});
  EXPECT_FALSE(be->matmul_tf32());
  EXPECT_THROW(be->set_matmul_tf32(true), aji::Error);
}

// With a device the device decides what `auto` and `bf16` give (Backend::bf16_products: a
// CUDA GPU of compute capability 8.0+), not the CPU; apply_run_device keeps the precision.
TEST(Bf16Train, TheRunsDeviceDecidesThePrecision) {
  struct Device : aji::test::CountingBackend {
    bool has;
    explicit Device(bool h) : CountingBackend(aji::kernels::make_separate_cpu_backend()), has(h) {}
    bool bf16_products() const override { return has; }
  };
  const auto yes = std::make_shared<Device>(true), none = std::make_shared<Device>(false);
  std::string note;
  EXPECT_EQ(aji::train::resolve_precision("auto", &note, yes.get()), Precision::kBf16);
  EXPECT_NE(note.find("bf16 mixed precision (the default on test device"), std::string::npos) << note;
  EXPECT_EQ(aji::train::resolve_precision("bf16", &note, yes.get()), Precision::kBf16);
  EXPECT_EQ(aji::train::resolve_precision("auto", &note, none.get()), Precision::kFp32);
  EXPECT_NE(note.find("test device"), std::string::npos) << note;
  EXPECT_NE(note.find("has no native bf16 products"), std::string::npos) << note;
  EXPECT_EQ(aji::train::resolve_precision("bf16", &note, none.get()), Precision::kFp32);
  EXPECT_NE(note.find("compute capability 8.0"), std::string::npos) << note;
  EXPECT_NE(note.find("falls back to fp32"), std::string::npos) << note;
  EXPECT_EQ(aji::train::resolve_precision("fp32", &note, yes.get()), Precision::kFp32);
  aji::model::Model m(aji::test::tiny_llama_config());
  m.set_precision(Precision::kBf16);
  aji::train::apply_run_device(yes, "bf16", /*quiet=*/true, "test", {&m});
  EXPECT_TRUE(m.on_device());
  EXPECT_EQ(m.precision(), Precision::kBf16);
}

// `aji pretrain --precision bf16`: a run stopped and resumed equals a straight run bit for
// bit; run.json records the precision; the bf16 checkpoint resumes in fp32.
TEST(Bf16Train, PretrainResumeIsBitIdenticalAndSwitchesPrecision) {
  aji::set_num_threads(1);
  aji::test::TempDir dir;
  {
    std::ofstream corpus(dir.path() / "corpus.txt");
    aji::Rng rng(5);
    const char* words[] = {"the cat", "a dog", "sees", "likes", "the red ball", "a green tree", "runs", "home"};
    for (int p = 0; p < 300; ++p) {
      for (int i = 0; i < 6; ++i) corpus << words[rng.below(8)] << (i % 3 == 2 ? ". " : " ");
      corpus << "\n\n";
    }
  }
  std::string out;
  ASSERT_EQ(aji::test::run_command(std::string(AJI_BINARY) + " -q tokenizer train --input " +
                                       (dir.path() / "corpus.txt").string() + " --vocab-size 300 --out " +
                                       (dir.path() / "tok.json").string() + " 2>&1",
                                   &out),
            0)
      << out;
  aji::train::TokenizeDataOptions t;
  t.tokenizer = dir.path() / "tok.json";
  t.inputs = {(dir.path() / "corpus.txt").string()};
  t.out_dir = dir.path() / "data";
  t.val_fraction = 0.1;
  t.progress = false;
  aji::train::tokenize_data(t);
  std::ofstream(dir.path() / "micro.json") << R"({"arch": "gpt2", "vocab_size": 300, "n_layer": 2, "n_head": 2,
                                                  "d_model": 32, "max_seq_len": 32})";
  auto options = [&](const std::string& run, int64_t steps, bool resume = false) {
    aji::train::PretrainOptions o;
    o.config = dir.path() / "micro.json";
    o.data_dir = t.out_dir;
    o.out_dir = dir.path() / run;
    o.steps = steps;
    o.batch = 2;
    o.seq_len = 16;
    o.total_batch_tokens = 64;  // 2 micro-batches: accumulation in bf16 too
    o.lr = 1e-2f;
    o.eval_every = 3;
    o.eval_batches = 1;
    o.sample_every = 0;
    o.save_every = 3;
    o.quiet = true;
    o.precision = "bf16";
    if (resume) {  // the model and the data are the run's
      o.resume = true;
      o.config.clear();
      o.data_dir.clear();
    }
    return o;
  };
  const std::string expect = aji::kernels::cpu::bf16_supported() ? "bf16" : "fp32";
  auto bad = options("bad", 2);
  bad.precision = "fp16";
  EXPECT_THROW(aji::train::pretrain(bad), aji::Error);
  EXPECT_FALSE(fs::exists(dir.path() / "bad")) << "an unknown --precision must be refused before any work";
  const auto straight = aji::train::pretrain(options("straight", 6));
  auto first = options("split", 6);
  first.stop_after = 3;
  const auto a = aji::train::pretrain(first);
  ASSERT_EQ(a.step, 3);
  auto second = options("split", 0, true);
  second.precision = "auto";  // not given: the run's own
  const auto b = aji::train::pretrain(second);
  ASSERT_EQ(b.step, 6);
  std::vector<float> joined = a.step_losses;
  joined.insert(joined.end(), b.step_losses.begin(), b.step_losses.end());
  ASSERT_EQ(joined, straight.step_losses);
  EXPECT_EQ(b.last_val_loss, straight.last_val_loss);
  Model m1 = aji::train::load_model(dir.path() / "straight"), m2 = aji::train::load_model(dir.path() / "split");
  EXPECT_TRUE(std::equal(m1.params(), m1.params() + m1.num_params(), m2.params()));
  const nlohmann::json info = nlohmann::json::parse(std::ifstream(dir.path() / "straight" / "run.json"));
  EXPECT_EQ(info.at("options").at("precision"), expect);

  // the bf16 run continued in fp32 (given explicitly): it trains on from the fp32 master weights
  auto in_fp32 = options("split", 9, true);
  in_fp32.given = {"precision", "steps"};
  in_fp32.precision = "fp32";
  const auto c = aji::train::pretrain(in_fp32);
  EXPECT_EQ(c.step, 9);
  ASSERT_EQ(c.step_losses.size(), 3u);
  for (float l : c.step_losses) EXPECT_TRUE(std::isfinite(l));
  // and an fp32 run resumes in bf16
  auto f32 = options("f32", 3);
  f32.precision = "fp32";
  (void)aji::train::pretrain(f32);
  auto to_bf16 = options("f32", 6, true);
  to_bf16.given = {"precision", "steps"};
  const auto d = aji::train::pretrain(to_bf16);
  EXPECT_EQ(d.step, 6);
}
