// The class head and its trainer: unit checks 9 and 10 of post-training spec §8.3, the
// cross-entropy against its formula and finite differences, truncated backward against the
// full one, and the head file round trip.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <numeric>
#include <set>

#include "aji/align/classifier.h"
#include "aji/base/error.h"
#include "aji/base/threads.h"
#include "toy_base.h"

using namespace aji::align;
using aji::model::Model;
namespace fs = std::filesystem;

namespace {

class Classifier : public ::testing::Test {
 protected:
  void SetUp() override {
    saved_threads_ = aji::num_threads();
    aji::set_num_threads(1);  // a 105k-parameter model: one thread is fastest
  }
  void TearDown() override { aji::set_num_threads(saved_threads_); }
  int saved_threads_ = 0;
};

std::vector<float> params_copy(const Model& m) { return std::vector<float>(m.params(), m.params() + m.num_params()); }

bool tensor_equal(const Model& m, const std::vector<float>& before, const aji::model::ParamTensor& t) {
  return std::equal(m.params() + t.offset, m.params() + t.offset + t.numel, before.begin() + long(t.offset));
}

}  // namespace

TEST(ClassifierOptions, TrainableBlocksParse) {
  EXPECT_EQ(TrainableBlocks::parse("head").kind, TrainableBlocks::Kind::kHead);
  EXPECT_EQ(TrainableBlocks::parse("all").kind, TrainableBlocks::Kind::kAll);
  EXPECT_EQ(TrainableBlocks::parse("last").n, 1);
  EXPECT_EQ(TrainableBlocks::parse("last:3").n, 3);
  EXPECT_EQ(TrainableBlocks::parse("last:3").name(), "last:3");
  EXPECT_THROW(TrainableBlocks::parse("last:0"), aji::Error);
  EXPECT_THROW(TrainableBlocks::parse("last:x"), aji::Error);
  EXPECT_THROW(TrainableBlocks::parse("top"), aji::Error);
  const auto cfg = aji::toybase::toy_config();  // 2 blocks
  EXPECT_EQ(TrainableBlocks::parse("head").first_layer(cfg), 2);
  EXPECT_EQ(TrainableBlocks::parse("last:1").first_layer(cfg), 1);
  EXPECT_EQ(TrainableBlocks::parse("all").first_layer(cfg), 0);
  EXPECT_THROW(TrainableBlocks::parse("last:3").first_layer(cfg), aji::Error);
  EXPECT_EQ(parse_pooling("last"), Pooling::kLastToken);
  EXPECT_THROW(parse_pooling("mean"), aji::Error);
}

TEST(ClassifierOptions, TrainableRangesCoverTheRightTensors) {
  Model m(aji::toybase::toy_config());
  auto names_of = [&](const std::string& spec) {
    std::set<std::string> names;
    for (const auto& r : trainable_trunk_ranges(m, TrainableBlocks::parse(spec)))
      for (const auto& t : m.tensors())
        if (t.offset == r.offset) names.insert(t.name);
    return names;
  };
  EXPECT_TRUE(names_of("head").empty());
  const auto last = names_of("last:1");
  EXPECT_TRUE(last.count("transformer.h.1.attn.c_attn.weight"));
  EXPECT_TRUE(last.count("transformer.ln_f.weight"));
  EXPECT_FALSE(last.count("transformer.h.0.attn.c_attn.weight"));
  EXPECT_FALSE(last.count("transformer.wte.weight"));
  EXPECT_EQ(names_of("all").size(), m.tensors().size());
}

TEST(ClassXent, MatchesFormulaAndFiniteDifferences) {
  const float logits[6] = {0.5f, -1.0f, 2.0f, 0.0f, 0.3f, -0.2f};
  const int labels[2] = {2, 0};
  float d[6];
  int64_t hits = 0;
  const double loss = class_xent(logits, labels, 2, 3, d, &hits);
  auto ce = [](const float* z, int y) {
    double s = 0;
    for (int k = 0; k < 3; ++k) s += std::exp(double(z[k]));
    return std::log(s) - z[y];
  };
  EXPECT_NEAR(loss, (ce(logits, 2) + ce(logits + 3, 0)) / 2, 1e-9);
  EXPECT_EQ(hits, 1);  // row 0 argmax 2 == label; row 1 argmax 1 != 0
  for (int i = 0; i < 6; ++i) {
    float p[6], q[6];
    std::copy(logits, logits + 6, p);
    std::copy(logits, logits + 6, q);
    p[i] += 1e-3f;
    q[i] -= 1e-3f;
    const double fd = (class_xent(p, labels, 2, 3, nullptr, nullptr) - class_xent(q, labels, 2, 3, nullptr, nullptr)) / 2e-3;
    EXPECT_NEAR(d[i], fd, 1e-4) << i;
  }
}

// Check 9: output shape (B, n); last-non-pad pooling does not depend on how far a sequence is
// padded; first-token pooling sees only the first token.
TEST_F(Classifier, PoolingIsPaddingInvariantAndFirstTokenSeesOnlyTheFirst) {
  Model m = aji::toybase::load_toy_base();
  ClassHead head(2, m.config().d_model);
  head.init(3);
  auto ex = aji::toybase::toy_sum_examples(4, 11);
  const std::vector<int32_t> probe = ex.ids[0];  // "<bos>a+b=": 5..7 tokens
  ASSERT_LE(probe.size(), 10u);
  std::vector<int32_t> long10(10, 6), long40(40, 7);  // padders: rows of 10 and 40 tokens
  auto logits_with = [&](const std::vector<int32_t>& other, Pooling p) {
    std::vector<std::vector<int32_t>> seqs = {probe, other};
    auto l = classifier_logits(m, head, seqs, p, /*pad_id=*/0, 2);
    EXPECT_EQ(l.size(), 4u);  // (B=2, n=2)
    return std::vector<float>(l.begin(), l.begin() + 2);
  };
  const auto a = logits_with(long10, Pooling::kLastToken), b = logits_with(long40, Pooling::kLastToken);
  for (int k = 0; k < 2; ++k) EXPECT_NEAR(a[k], b[k], 1e-5) << k;
  // Pads of another id change nothing either.
  {
    std::vector<std::vector<int32_t>> seqs = {probe, long40};
    auto l = classifier_logits(m, head, seqs, Pooling::kLastToken, /*pad_id=*/9, 2);
    for (int k = 0; k < 2; ++k) EXPECT_NEAR(l[k], a[k], 1e-5) << k;
  }
  // Every input starting with <bos> gets the same first-token logits; last-token logits differ.
  auto first = classifier_logits(m, head, ex.ids, Pooling::kFirstToken, 0, 4);
  auto last = classifier_logits(m, head, ex.ids, Pooling::kLastToken, 0, 4);
  for (int i = 1; i < 4; ++i)
    for (int k = 0; k < 2; ++k) EXPECT_NEAR(first[size_t(i) * 2 + k], first[k], 1e-6);
  EXPECT_GT(std::fabs(last[0] - last[2]) + std::fabs(last[1] - last[3]) + std::fabs(last[0] - last[4]), 1e-4);
}

// Backward stopped at a block gives the same gradients above it as the full backward, and
// leaves everything below (and the embeddings) untouched.
TEST_F(Classifier, TruncatedBackwardMatchesFullBackwardAboveTheCut) {
  Model m = aji::toybase::load_toy_base();
  auto ex = aji::toybase::toy_sum_examples(3, 5);
  std::vector<int32_t> tokens(3 * 8, 0);
  for (int b = 0; b < 3; ++b) std::copy(ex.ids[b].begin(), ex.ids[b].end(), tokens.begin() + b * 8);
  const int C = m.config().d_model;
  std::vector<float> dh(size_t(3) * 8 * C);
  aji::Rng rng(2);
  for (float& x : dh) x = rng.uniform_float() - 0.5f;
  m.forward(tokens.data(), 3, 8);
  m.zero_grads();
  m.backward(dh.data(), 0);
  const std::vector<float> full(m.grads(), m.grads() + m.num_params());
  m.forward(tokens.data(), 3, 8);
  m.zero_grads();
  m.backward(dh.data(), 1);
  for (const auto& t : m.tensors()) {
    const bool above = t.name.rfind("transformer.h.1.", 0) == 0 || t.name.rfind("transformer.ln_f.", 0) == 0;
    for (size_t i = t.offset; i < t.offset + t.numel; ++i) {
      if (above) {
        ASSERT_EQ(m.grads()[i], full[i]) << t.name;
      } else {
        ASSERT_EQ(m.grads()[i], 0.0f) << t.name;
      }
    }
  }
}

// Check 10 (and spec check 30): after training steps, exactly the intended parameters changed.
TEST_F(Classifier, OnlyTheTrainableParametersChange) {
  auto ex = aji::toybase::toy_sum_examples(64, 9);
  LabeledIds data{ex.ids, ex.labels};
  for (const std::string spec : {"head", "last:1", "all"}) {
    SCOPED_TRACE(spec);
    Model m = aji::toybase::load_toy_base();
    const auto before = params_copy(m);
    ClassHead head(2, m.config().d_model);
    head.init(1);
    const auto head_before = head.params;
    ClassifyOptions o;
    o.batch = 16;
    o.steps = 3;
    o.lr = 1e-3f;
    o.trainable = TrainableBlocks::parse(spec);
    bool grad_seen = false;
    ClassifyHooks hooks;
    hooks.on_step = [&](const ClassifyStepInfo& s) { grad_seen = grad_seen || s.grad_norm > 0; };
    auto r = classify_train(m, head, data, {}, o, hooks);
    EXPECT_EQ(r.steps_done, 3);
    EXPECT_EQ(r.cached_features, spec == "head");
    EXPECT_TRUE(grad_seen);
    EXPECT_NE(head.params, head_before);
    const int first = o.trainable.first_layer(m.config());
    for (const auto& t : m.tensors()) {
      const bool in_block = t.name.rfind("transformer.h.", 0) == 0;
      const int block = in_block ? std::atoi(t.name.c_str() + 14) : -1;
      bool trains = false;
      if (spec == "all") trains = true;
      if (spec == "last:1") trains = (in_block && block >= first) || t.name.rfind("transformer.ln_f.", 0) == 0;
      if (trains)
        EXPECT_FALSE(tensor_equal(m, before, t)) << t.name << " should have changed";
      else
        EXPECT_TRUE(tensor_equal(m, before, t)) << t.name << " should be bit-identical";
    }
  }
}

TEST_F(Classifier, CachedHeadOnlyTrainingMatchesTheLossOfRecomputedFeatures) {
  // The head-only path trains on features computed once; its first-step loss must equal the
  // loss of the same head on features computed by a fresh forward.
  Model m = aji::toybase::load_toy_base();
  auto ex = aji::toybase::toy_sum_examples(16, 4);
  ClassHead head(2, m.config().d_model);
  head.init(5);
  ClassHead fresh = head;
  ClassifyOptions o;
  o.batch = 16;
  o.steps = 1;
  o.trainable = TrainableBlocks::parse("head");
  auto r = classify_train(m, head, {ex.ids, ex.labels}, {}, o);
  ClassifyEval ev = classify_evaluate(m, fresh, {ex.ids, ex.labels}, Pooling::kLastToken, 0, 16);
  EXPECT_NEAR(r.step_losses[0], ev.loss, 1e-5);
}

TEST_F(Classifier, NanLossIsAnError) {
  Model m = aji::toybase::load_toy_base();
  auto ex = aji::toybase::toy_sum_examples(8, 4);
  ClassHead head(2, m.config().d_model);
  head.weight()[0] = NAN;
  ClassifyOptions o;
  o.steps = 2;
  o.trainable = TrainableBlocks::parse("head");
  EXPECT_THROW(classify_train(m, head, {ex.ids, ex.labels}, {}, o), aji::Error);
}

TEST(ClassHeadFile, RoundTripAndErrors) {
  const fs::path dir = fs::temp_directory_path() / "aji_class_head_test";
  fs::create_directories(dir);
  ClassHead h(3, 8);
  h.init(7);
  h.save((dir / "class_head.safetensors").string());
  ClassHead g = ClassHead::load((dir / "class_head.safetensors").string());
  EXPECT_EQ(g.n_classes, 3);
  EXPECT_EQ(g.d_model, 8);
  EXPECT_EQ(g.params, h.params);  // weight and bias
  Model m(aji::toybase::toy_config());
  aji::train::save_model_dir(dir / "m", m, {});
  try {
    ClassHead::load((dir / "m" / "model.safetensors").string());
    FAIL() << "expected an error";
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a class head"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ClassHead(1, 8), aji::Error);
  fs::remove_all(dir);
}

TEST(ClassifierBatches, EveryExampleOncePerEpochAndGroupedBatchesHaveSimilarLengths) {
  aji::Rng rng(3);
  std::vector<std::vector<int32_t>> seqs;
  for (int i = 0; i < 1003; ++i) seqs.emplace_back(1 + rng.below(120), 1);
  auto padding = [&](const std::vector<std::vector<int64_t>>& batches) {
    int64_t real = 0, padded = 0;
    for (const auto& b : batches) {
      size_t longest = 0;
      for (int64_t i : b) longest = std::max(longest, seqs[size_t(i)].size()), real += int64_t(seqs[size_t(i)].size());
      padded += int64_t(longest * b.size());
    }
    return double(padded - real) / double(padded);
  };
  for (bool grouped : {false, true}) {
    SCOPED_TRACE(grouped);
    const auto batches = plan_epoch_batches(seqs, 8, 1, 0, grouped);
    std::vector<int> seen(seqs.size(), 0);
    for (const auto& b : batches) {
      EXPECT_GE(b.size(), 1u);
      EXPECT_LE(b.size(), 8u);
      for (int64_t i : b) ++seen[size_t(i)];
    }
    for (int c : seen) ASSERT_EQ(c, 1);
    EXPECT_EQ(batches, plan_epoch_batches(seqs, 8, 1, 0, grouped));   // deterministic
    EXPECT_NE(batches, plan_epoch_batches(seqs, 8, 1, 1, grouped));   // another epoch, another order
    if (grouped) EXPECT_LT(padding(batches), 0.05);
    else EXPECT_GT(padding(batches), 0.3);
  }
}

// --keep-best: the weights kept are exactly those after the best evaluation's step (the
// same run stopped there, with a constant LR, gives them bit for bit), and its validation
// result is the best one seen.
TEST_F(Classifier, KeepBestRestoresTheWeightsOfTheBestEvaluation) {
  auto train = aji::toybase::toy_sum_examples(256, 21);
  auto val = aji::toybase::toy_sum_examples(64, 22);
  for (const std::string spec : {"head", "last:1"}) {
    SCOPED_TRACE(spec);
    ClassifyOptions o;
    o.batch = 16;
    o.steps = 48;
    o.lr = 2e-2f;  // high enough that validation accuracy goes up and down
    o.eval_every = 4;
    o.trainable = TrainableBlocks::parse(spec);
    o.keep_best = true;
    Model m = aji::toybase::load_toy_base();
    ClassHead head(2, m.config().d_model);
    head.init(2);
    std::vector<std::pair<int64_t, double>> seen;
    ClassifyHooks hooks;
    hooks.on_eval = [&](int64_t step, const ClassifyEval& e) { seen.push_back({step, e.accuracy}); };
    auto r = classify_train(m, head, {train.ids, train.labels}, {val.ids, val.labels}, o, hooks);
    ASSERT_FALSE(seen.empty());
    auto best = seen.front();
    for (auto& s : seen)
      if (s.second > best.second) best = s;
    std::printf("  %s: best val accuracy %.3f at step %lld of %lld (last %.3f)\n", spec.c_str(), best.second,
                (long long)best.first, (long long)o.steps, seen.back().second);
    EXPECT_EQ(r.best_step, best.first);
    EXPECT_DOUBLE_EQ(r.best_val_accuracy, best.second);
    EXPECT_DOUBLE_EQ(r.last_val.accuracy, best.second);

    ClassifyOptions shorter = o;
    shorter.steps = best.first;
    shorter.keep_best = false;
    Model m2 = aji::toybase::load_toy_base();
    ClassHead head2(2, m2.config().d_model);
    head2.init(2);
    classify_train(m2, head2, {train.ids, train.labels}, {val.ids, val.labels}, shorter);
    EXPECT_EQ(head.params, head2.params);  // weight and bias
    EXPECT_TRUE(std::equal(m.params(), m.params() + m.num_params(), m2.params()));
    // The saved weights really score the best accuracy.
    EXPECT_DOUBLE_EQ(classify_evaluate(m, head, {val.ids, val.labels}, Pooling::kLastToken, 0, 64).accuracy,
                     best.second);
  }
}

// The gradient of the classification loss through head, pooling and the trainable blocks
// against central finite differences of the loss (forward only), on the entries with the
// largest analytic gradient of each checked tensor; frozen blocks get exactly zero.
TEST_F(Classifier, ForwardBackwardMatchesFiniteDifferences) {
  Model m = aji::toybase::load_toy_base();
  ClassHead head(2, m.config().d_model);
  head.init(4);
  auto ex = aji::toybase::toy_sum_examples(6, 31);
  const std::vector<int64_t> index = {0, 1, 2, 3, 4, 5};
  const TrainableBlocks blocks = TrainableBlocks::parse("last:1");
  m.zero_grads();
  head.zero_grads();
  classify_forward_backward(m, head, ex.ids, index.data(), 6, ex.labels.data(), Pooling::kLastToken, 0, blocks);
  const std::vector<float> g_trunk(m.grads(), m.grads() + m.num_params()), g_head = head.grads;
  auto loss = [&] {
    auto logits = classifier_logits(m, head, ex.ids, Pooling::kLastToken, 0, 6);
    return class_xent(logits.data(), ex.labels.data(), 6, 2, nullptr, nullptr);
  };
  auto check = [&](float* p, float analytic, const std::string& what) {
    const float keep = *p, eps = 1e-2f * std::max(1.0f, std::fabs(keep));
    *p = keep + eps;
    const double up = loss();
    *p = keep - eps;
    const double down = loss();
    *p = keep;
    const double fd = (up - down) / (2.0 * eps);
    EXPECT_NEAR(analytic, fd, 2e-3 + 0.05 * std::fabs(fd)) << what;
  };
  auto top = [](const float* g, size_t n, int k) {
    std::vector<size_t> idx(n);
    std::iota(idx.begin(), idx.end(), size_t{0});
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                      [&](size_t a, size_t b) { return std::fabs(g[a]) > std::fabs(g[b]); });
    idx.resize(size_t(k));
    return idx;
  };
  for (size_t i : top(g_head.data(), g_head.size(), 4)) check(&head.params[i], g_head[i], "head " + std::to_string(i));
  for (const char* name : {"transformer.h.1.attn.c_attn.weight", "transformer.h.1.mlp.c_fc.weight",
                           "transformer.ln_f.weight", "transformer.h.1.ln_1.bias"}) {
    const auto* t = m.find_tensor(name);
    ASSERT_NE(t, nullptr) << name;
    for (size_t i : top(g_trunk.data() + t->offset, t->numel, 3))
      check(m.params() + t->offset + i, g_trunk[t->offset + i], std::string(name) + "[" + std::to_string(i) + "]");
  }
  const auto* frozen = m.find_tensor("transformer.h.0.mlp.c_fc.weight");
  for (size_t i = 0; i < frozen->numel; ++i) ASSERT_EQ(g_trunk[frozen->offset + i], 0.0f);
}
