// DPO trainer (align/dpo.h): the post-training spec's unit checks 24-26 at trainer level, the
// smoke test (every trainable tensor changes, the reference stays bit-identical), micro-batch
// equivalence, resume bit-identity and bad input. Pairs come from the toy SFT fixture with the
// hidden "even" rule of experiment F (dpo_toy.h).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <numbers>

#include "aji/align/dpo.h"
#include "aji/align/feedback_math.h"
#include "aji/base/error.h"
#include "aji/base/threads.h"
#include "align/dpo_toy.h"
#include "align/toy_base.h"

namespace align = aji::align;
namespace fb = aji::align::fb;
using aji::model::Model;

namespace {

const std::vector<align::PreferenceIds>& toy_pairs() {
  static const std::vector<align::PreferenceIds> pairs = [] {
    Model sft = aji::toybase::load_toy_sft();
    return aji::dpotoy::even_rule_pairs(sft, 48, 11);
  }();
  return pairs;
}

align::DpoOptions small_options() {
  align::DpoOptions o;
  o.beta = 0.5;
  o.batch = 8;
  o.lr = 1e-3f;
  o.steps = 4;
  o.pad_id = (int32_t)aji::align::toy::kPad;
  return o;
}

std::vector<float> params_of(const Model& m) { return {m.params(), m.params() + m.num_params()}; }

// "Alone = in the batch" bit for bit rests on the GEMM library giving a row the same bits at
// any row count. oneDNN's AVX-512 sgemm does for these shapes; its AVX2 kernels (an x86-64-v3
// CPU without AVX-512, e.g. AMD Zen 3) do not: there the same sums differ in the last bits
// (measured 3e-8 on a log-prob), so these checks hold within fp32 rounding instead.
bool batch_invariant_gemm() { return __builtin_cpu_supports("avx512f"); }

}  // namespace

// Unit check 24: policy == reference -> loss ln 2 exactly and accuracy 0 (ties); the step-0
// loss of a real step is ln 2 too (the policy's batched log-probs equal the precomputed ones).
TEST(Dpo, PolicyEqualsReferenceGivesLn2AndZeroAccuracy) {
  aji::set_num_threads(1);
  Model policy = aji::toybase::load_toy_sft();
  Model reference = aji::toybase::load_toy_sft();
  const auto& pairs = toy_pairs();
  align::DpoOptions o = small_options();
  const align::ReferenceLogps ref = align::dpo_reference_logps(reference, pairs, 5, o.pad_id);  // other batching
  const align::DpoEval e = align::dpo_evaluate(policy, pairs, ref, o);
  if (batch_invariant_gemm()) {
    EXPECT_NEAR(e.loss, std::numbers::ln2, 1e-12);
    EXPECT_EQ(e.accuracy, 0.0);
    EXPECT_EQ(e.margin, 0.0);
  } else {  // ties up to fp32 rounding: accuracy counts margins > 0, so it is not checked here
    EXPECT_NEAR(e.loss, std::numbers::ln2, 1e-6);
    EXPECT_NEAR(e.margin, 0.0, 1e-6);
  }
  aji::train::AdamW opt(policy.num_params(), {o.beta1, o.beta2, o.eps, o.weight_decay});
  const align::DpoStepStats s = align::dpo_step(policy, opt, pairs, ref, {3, 17, 0, 40, 9, 22, 31, 5}, o, o.lr);
  const double tol = batch_invariant_gemm() ? 0.0 : 1e-6;
  EXPECT_NEAR(s.loss, std::numbers::ln2, batch_invariant_gemm() ? 1e-12 : 1e-6);
  EXPECT_NEAR(s.chosen_logratio, 0.0, tol);
  EXPECT_NEAR(s.rejected_logratio, 0.0, tol);
}

// Unit check 24 (gradients): the trainer's parameter gradient equals central finite
// differences of its own loss, for plain DPO and with the RPO NLL term, away from z = 0.
TEST(Dpo, ParameterGradientMatchesFiniteDifferences) {
  aji::set_num_threads(1);
  Model reference = aji::toybase::load_toy_sft();
  const auto& all = toy_pairs();
  std::vector<align::PreferenceIds> pairs(all.begin(), all.begin() + 6);
  for (double nll : {0.0, 1.0}) {
    Model policy = aji::toybase::load_toy_sft();
    align::DpoOptions o = small_options();
    o.nll_weight = nll;
    o.batch = 6;
    const align::ReferenceLogps ref = align::dpo_reference_logps(reference, pairs, 6, o.pad_id);
    aji::train::AdamW opt(policy.num_params(), {o.beta1, o.beta2, o.eps, o.weight_decay});
    const std::vector<int64_t> idx = {0, 1, 2, 3, 4, 5};
    for (int k = 0; k < 3; ++k) align::dpo_step(policy, opt, pairs, ref, idx, o, 3e-3f);  // move off z = 0
    o.grad_clip = 0;
    aji::train::AdamW still(policy.num_params(), {o.beta1, o.beta2, o.eps, 0.0f});
    const align::DpoStepStats s = align::dpo_step(policy, still, pairs, ref, idx, o, 0.0f);  // lr 0: grads only
    EXPECT_GT(std::abs(s.margin), 1e-3) << "the check needs z != 0";
    const std::vector<float> g(policy.grads(), policy.grads() + policy.num_params());
    // A few coordinates of different tensors with a sizeable gradient.
    int checked = 0;
    for (const auto& t : policy.tensors()) {
      size_t best = t.offset;
      for (size_t i = t.offset; i < t.offset + t.numel; ++i)
        if (std::abs(g[i]) > std::abs(g[best])) best = i;
      if (std::abs(g[best]) < 1e-3) continue;
      float* p = policy.params() + best;
      const float saved = *p;
      const double h = 1e-2 * std::max(1.0f, std::abs(saved));
      *p = saved + (float)h;
      const double up = align::dpo_evaluate(policy, pairs, ref, o).loss;
      *p = saved - (float)h;
      const double down = align::dpo_evaluate(policy, pairs, ref, o).loss;
      *p = saved;
      const double fd = (up - down) / (2 * h);
      EXPECT_NEAR(g[best], fd, 2e-2 * std::abs(fd) + 2e-4) << t.name << " nll " << nll;
      ++checked;
    }
    EXPECT_GE(checked, 8);
  }
}

// Unit check 24 (swap): exchanging chosen and rejected maps z -> −z: the margin changes sign
// and, for one pair, L(z) − L(−z) = −z.
TEST(Dpo, SwappingChosenAndRejectedNegatesTheLogit) {
  aji::set_num_threads(1);
  Model policy = aji::toybase::load_toy_sft();
  Model reference = aji::toybase::load_toy_sft();
  align::DpoOptions o = small_options();
  std::vector<align::PreferenceIds> pairs(toy_pairs().begin(), toy_pairs().begin() + 8);
  const align::ReferenceLogps ref = align::dpo_reference_logps(reference, pairs, 8, o.pad_id);
  aji::train::AdamW opt(policy.num_params(), {o.beta1, o.beta2, o.eps, o.weight_decay});
  for (int k = 0; k < 3; ++k) align::dpo_step(policy, opt, pairs, ref, {0, 1, 2, 3, 4, 5, 6, 7}, o, 3e-3f);
  for (size_t i = 0; i < 3; ++i) {
    std::vector<align::PreferenceIds> one = {pairs[i]}, swapped = {pairs[i]};
    std::swap(swapped[0].chosen, swapped[0].rejected);
    const align::ReferenceLogps r1 = align::dpo_reference_logps(reference, one, 1, o.pad_id);
    const align::ReferenceLogps r2 = align::dpo_reference_logps(reference, swapped, 1, o.pad_id);
    const align::DpoEval a = align::dpo_evaluate(policy, one, r1, o);
    const align::DpoEval b = align::dpo_evaluate(policy, swapped, r2, o);
    EXPECT_NEAR(a.margin, -b.margin, 1e-9);
    EXPECT_NEAR(a.loss - b.loss, -a.margin, 1e-9);
    EXPECT_NEAR(a.chosen_logratio, b.rejected_logratio, 1e-12);
  }
}

// Unit check 25: a sequence log-prob sums exactly the completion tokens (prompt and padding
// contribute nothing), against Model::token_logprobs on the unpadded sequence, and does not
// depend on what else is in the batch.
TEST(Dpo, SequenceLogprobSumsOnlyCompletionTokens) {
  aji::set_num_threads(1);
  Model m = aji::toybase::load_toy_sft();
  const auto& pairs = toy_pairs();
  std::vector<align::PreferenceIds> some(pairs.begin(), pairs.begin() + 10);
  some[0].rejected.assign({6, 7, 8, 9, 10, 11, 12});  // a long reply: everything else gets padded
  const align::ReferenceLogps batched = align::dpo_reference_logps(m, some, 10, 0);
  const align::ReferenceLogps padded_other = align::dpo_reference_logps(m, some, 10, 13);  // another pad id
  for (size_t i = 0; i < some.size(); ++i) {
    for (int side = 0; side < 2; ++side) {
      const auto& comp = side == 0 ? some[i].chosen : some[i].rejected;
      std::vector<int32_t> ids = some[i].prompt;
      ids.insert(ids.end(), comp.begin(), comp.end());
      const std::vector<float> lp = m.token_logprobs(ids.data(), (int)ids.size());  // lp[k] = log p(ids[k+1])
      double want = 0;
      for (size_t k = some[i].prompt.size() - 1; k < lp.size(); ++k) want += lp[k];
      const double got = side == 0 ? batched.chosen[i] : batched.rejected[i];
      EXPECT_NEAR(got, want, 1e-4) << "pair " << i << " side " << side;
      EXPECT_EQ(got, side == 0 ? padded_other.chosen[i] : padded_other.rejected[i]);
    }
  }
  // One pair alone vs in the batch: the same bits.
  const align::ReferenceLogps alone = align::dpo_reference_logps(m, {some[3]}, 1, 0);
  const double tol = batch_invariant_gemm() ? 0.0 : 1e-5;
  EXPECT_NEAR(alone.chosen[0], batched.chosen[3], tol);
  EXPECT_NEAR(alone.rejected[0], batched.rejected[3], tol);
}

// Unit check 26 + smoke test (check 30): a short run gives a finite loss, changes every
// trainable tensor, and leaves the reference without gradients and bit-identical.
TEST(Dpo, SmokeRunChangesEveryTensorAndNotTheReference) {
  aji::set_num_threads(2);
  Model policy = aji::toybase::load_toy_sft();
  Model reference = aji::toybase::load_toy_sft();
  const std::vector<float> ref_before = params_of(reference), start = params_of(policy);
  const auto& pairs = toy_pairs();
  align::DpoOptions o = small_options();
  o.nll_weight = 1.0;
  const align::ReferenceLogps ref = align::dpo_reference_logps(reference, pairs, 16, o.pad_id);
  aji::train::AdamW opt(policy.num_params(), {o.beta1, o.beta2, o.eps, o.weight_decay});
  const align::DpoResult r = align::dpo_train(policy, opt, pairs, ref, o, {});
  ASSERT_EQ(r.steps.size(), 4u);
  for (const auto& s : r.steps) EXPECT_TRUE(std::isfinite(s.loss));
  EXPECT_LT(r.steps.back().dpo_loss, r.steps.front().dpo_loss);
  for (const auto& t : policy.tensors()) {
    size_t changed = 0;
    for (size_t i = t.offset; i < t.offset + t.numel; ++i) changed += policy.params()[i] != start[i];
    // Position rows past the longest pair get no gradient; every other tensor changes.
    EXPECT_GT(changed, 0u) << t.name;
    if (t.name.find("wpe") == std::string::npos) {
      EXPECT_GT(changed, t.numel / 2) << t.name;
    }
  }
  // The reference: a separate model that only ran forward passes.
  EXPECT_FALSE(reference.has_grads());
  EXPECT_EQ(std::memcmp(reference.params(), ref_before.data(), ref_before.size() * sizeof(float)), 0);
  // The KL on samples: 0 for the reference against itself, positive for the trained policy.
  const std::vector<std::vector<int32_t>> prompts = aji::dpotoy::pick_prompts(8, 5);
  const align::DpoSampleEval self = align::dpo_sample_eval(reference, reference, prompts, aji::dpotoy::sample_options(2, 1));
  EXPECT_NEAR(self.kl, 0.0, 1e-4);
  const align::DpoSampleEval moved = align::dpo_sample_eval(policy, reference, prompts, aji::dpotoy::sample_options(2, 1));
  EXPECT_GT(moved.kl, 1e-3);
  EXPECT_FALSE(reference.has_grads());
}

// A step split into micro-batches gives the gradient of the whole step's mean loss.
TEST(Dpo, MicroBatchesGiveTheSameStep) {
  aji::set_num_threads(1);
  Model reference = aji::toybase::load_toy_sft();
  const auto& pairs = toy_pairs();
  align::DpoOptions o = small_options();
  o.nll_weight = 0.5;
  o.grad_clip = 0;
  const align::ReferenceLogps ref = align::dpo_reference_logps(reference, pairs, 16, o.pad_id);
  const std::vector<int64_t> idx = {1, 4, 9, 16, 25, 36, 2, 7};
  std::vector<std::vector<float>> grads;
  std::vector<double> losses;
  for (int mb : {0, 3}) {
    Model policy = aji::toybase::load_toy_sft();
    aji::train::AdamW opt(policy.num_params(), {o.beta1, o.beta2, o.eps, o.weight_decay});
    align::dpo_step(policy, opt, pairs, ref, idx, o, 3e-3f);  // off z = 0
    o.micro_batch = mb;
    aji::train::AdamW still(policy.num_params(), {o.beta1, o.beta2, o.eps, 0.0f});
    losses.push_back(align::dpo_step(policy, still, pairs, ref, idx, o, 0.0f).loss);
    grads.emplace_back(policy.grads(), policy.grads() + policy.num_params());
    o.micro_batch = 0;
  }
  EXPECT_NEAR(losses[0], losses[1], 1e-6);
  double max_abs = 0, max_diff = 0;
  for (size_t i = 0; i < grads[0].size(); ++i) {
    max_abs = std::max(max_abs, (double)std::abs(grads[0][i]));
    max_diff = std::max(max_diff, (double)std::abs(grads[0][i] - grads[1][i]));
  }
  EXPECT_GT(max_abs, 1e-3);
  EXPECT_LT(max_diff, 1e-5 * max_abs + 1e-7);
}

// Stopping after k steps, saving weights and AdamW, and continuing from the state gives the
// uninterrupted run's weights bit for bit.
TEST(Dpo, ResumeIsBitIdentical) {
  aji::set_num_threads(2);
  Model reference = aji::toybase::load_toy_sft();
  const auto& pairs = toy_pairs();
  align::DpoOptions o = small_options();
  o.steps = 9;  // crosses an epoch boundary (48 pairs / 8 = 6 steps per epoch)
  o.decay = "linear";
  o.nll_weight = 0.3;
  const align::ReferenceLogps ref = align::dpo_reference_logps(reference, pairs, 16, o.pad_id);
  Model straight = aji::toybase::load_toy_sft();
  aji::train::AdamW opt1(straight.num_params(), {o.beta1, o.beta2, o.eps, o.weight_decay});
  align::dpo_train(straight, opt1, pairs, ref, o, {});

  Model first = aji::toybase::load_toy_sft();
  aji::train::AdamW opt2(first.num_params(), {o.beta1, o.beta2, o.eps, o.weight_decay});
  align::DpoHooks h;
  h.after_step = [](const align::DpoState& s) { return s.step == 4; };
  const align::DpoResult part = align::dpo_train(first, opt2, pairs, ref, o, {}, h);
  ASSERT_TRUE(part.stopped_early);
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / ("aji_dpo_resume_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  opt2.save(dir / "optimizer.bin");
  const nlohmann::json state = part.state.to_json();
  Model resumed = aji::toybase::load_toy_sft();
  std::memcpy(resumed.params(), first.params(), first.num_params() * sizeof(float));
  aji::train::AdamW opt3(resumed.num_params(), {o.beta1, o.beta2, o.eps, o.weight_decay});
  opt3.load(dir / "optimizer.bin");
  std::filesystem::remove_all(dir);
  align::dpo_train(resumed, opt3, pairs, ref, o, align::DpoState::from_json(state));
  EXPECT_EQ(std::memcmp(resumed.params(), straight.params(), straight.num_params() * sizeof(float)), 0);
}

// Bad input: each refused with the pair index and a fix.
TEST(Dpo, BadPairsAreRefused) {
  const aji::model::ModelConfig cfg = aji::toybase::toy_config();
  auto refused = [&](align::PreferenceIds p, const char* what) {
    try {
      align::check_preference_ids({toy_pairs()[0], p}, cfg);
      ADD_FAILURE() << "accepted: " << what;
    } catch (const aji::Error& e) {
      EXPECT_NE(std::string(e.what()).find("pair 1"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
      EXPECT_FALSE(e.how_to_fix().empty());
    }
  };
  const align::PreferenceIds good = toy_pairs()[0];
  EXPECT_NO_THROW(align::check_preference_ids({good}, cfg));
  align::PreferenceIds p = good;
  p.rejected = p.chosen;
  refused(p, "chosen equals rejected");
  p = good;
  p.chosen.clear();
  refused(p, "empty chosen");
  p = good;
  p.prompt.clear();
  refused(p, "empty prompt");
  p = good;
  p.rejected.push_back(99);
  refused(p, "outside the vocabulary");
  p = good;
  p.prompt.assign(47, 6);
  refused(p, "longer than the model's context");
}
