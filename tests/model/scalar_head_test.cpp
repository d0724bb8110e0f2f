// ScalarHead (reward / value head, issue #14 groundwork 3; post-training spec §3, §8.3 check 13):
// finite differences of forward/backward alone and through the trunk, positions vs every
// position, right-padding invariance at the last non-pad index, zero initialisation, and the
// safetensors round trip ("score.weight" (1,C)) with its errors.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "aji/base/error.h"
#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "aji/model/model.h"
#include "aji/model/scalar_head.h"
#include "aji/train/safetensors.h"
#include "aji/train/scalar_head_io.h"
#include "test_util.h"

using aji::model::Model;
using aji::model::ModelConfig;
using aji::model::ScalarHead;

namespace {

std::vector<float> randn(size_t n, uint64_t seed) {
  aji::Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = (float)rng.normal();
  return v;
}

// sum_r d_out[r] * out[r] in double
double weighted(const ScalarHead& h, const std::vector<float>& hidden, int B, int T, const int* pos,
                const std::vector<float>& d_out) {
  std::vector<float> out(d_out.size());
  h.forward(hidden.data(), B, T, pos, out.data());
  double s = 0;
  for (size_t i = 0; i < out.size(); ++i) s += (double)d_out[i] * out[i];
  return s;
}

TEST(ScalarHead, ZeroInitialisedSoEveryPairStartsAsATie) {
  ScalarHead h(8);
  EXPECT_EQ(h.b, 0.0f);
  const auto hidden = randn(2 * 3 * 8, 1);
  std::vector<float> out(6, 1.0f);
  h.forward(hidden.data(), 2, 3, nullptr, out.data());
  for (float x : out) EXPECT_EQ(x, 0.0f);
  EXPECT_THROW(ScalarHead(0), aji::Error);
}

TEST(ScalarHead, BackwardMatchesFiniteDifferences) {
  const int B = 3, T = 5, C = 6;
  ScalarHead h(C);
  h.init_normal(4, 0.5f);
  auto hidden = randn((size_t)B * T * C, 2);
  const int pos[B] = {4, 0, 2};
  for (const int* p : {(const int*)pos, (const int*)nullptr}) {
    const size_t n_out = p ? B : (size_t)B * T;
    const auto d_out = randn(n_out, 3);
    h.zero_grad();
    std::vector<float> d_hidden(hidden.size(), 0.0f);
    h.backward(hidden.data(), B, T, p, d_out.data(), d_hidden.data());
    const double eps = 1e-2;  // the output is linear in each input: central differences are exact up to rounding
    for (int c = 0; c < C; ++c) {
      const float s = h.w[c];
      h.w[c] = s + (float)eps;
      const double up = weighted(h, hidden, B, T, p, d_out);
      h.w[c] = s - (float)eps;
      const double dn = weighted(h, hidden, B, T, p, d_out);
      h.w[c] = s;
      EXPECT_NEAR(h.grad[c], (up - dn) / (2 * eps), 1e-4 * (1 + std::fabs(h.grad[c]))) << "w[" << c << "]";
    }
    for (size_t i = 0; i < hidden.size(); ++i) {
      const float s = hidden[i];
      hidden[i] = s + (float)eps;
      const double up = weighted(h, hidden, B, T, p, d_out);
      hidden[i] = s - (float)eps;
      const double dn = weighted(h, hidden, B, T, p, d_out);
      hidden[i] = s;
      EXPECT_NEAR(d_hidden[i], (up - dn) / (2 * eps), 1e-4 * (1 + std::fabs(d_hidden[i]))) << "hidden[" << i << "]";
    }
    // backward accumulates: a second call doubles grad and d_hidden
    const std::vector<float> g1 = h.grad, dh1 = d_hidden;
    h.backward(hidden.data(), B, T, p, d_out.data(), d_hidden.data());
    for (int c = 0; c < C; ++c) EXPECT_FLOAT_EQ(h.grad[c], 2 * g1[c]);
    for (size_t i = 0; i < dh1.size(); ++i) EXPECT_FLOAT_EQ(d_hidden[i], 2 * dh1[i]);
  }
}

TEST(ScalarHead, PositionsAgreeWithEveryPosition) {
  const int B = 4, T = 6, C = 5;
  ScalarHead h(C);
  h.init_normal(9, 1.0f);
  const auto hidden = randn((size_t)B * T * C, 7);
  std::vector<float> all((size_t)B * T), picked(B);
  h.forward(hidden.data(), B, T, nullptr, all.data());
  const int pos[B] = {5, 0, 3, 3};
  h.forward(hidden.data(), B, T, pos, picked.data());
  for (int b = 0; b < B; ++b) EXPECT_EQ(picked[b], all[(size_t)b * T + pos[b]]) << b;
  // and against a hand-written dot product
  for (int b = 0; b < B; ++b) {
    double s = 0;
    for (int c = 0; c < C; ++c) s += (double)h.w[c] * hidden[((size_t)b * T + pos[b]) * C + c];
    EXPECT_NEAR(picked[b], s, 1e-5 * (1 + std::fabs(s)));
  }
  const int bad[B] = {0, 6, 0, 0};
  EXPECT_THROW(h.forward(hidden.data(), B, T, bad, picked.data()), aji::Error);
  const int neg[B] = {0, -1, 0, 0};
  std::vector<float> d(B, 1.0f), dh(hidden.size());
  EXPECT_THROW(h.backward(hidden.data(), B, T, neg, d.data(), dh.data()), aji::Error);
}

ModelConfig micro_llama() {
  ModelConfig c;
  c.arch = aji::model::Arch::kLlama;
  c.vocab_size = 37;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_kv_head = 1;
  c.d_model = 16;
  c.d_ff = 32;
  c.max_seq_len = 24;
  c.init_std = 0.3f;
  return c;
}

class ScalarHeadModel : public testing::Test {
 protected:
  void SetUp() override {
    saved_ = aji::num_threads();
    aji::set_num_threads(1);
  }
  void TearDown() override { aji::set_num_threads(saved_); }
  int saved_ = 0;
};

// Spec §8.3 check 13: the reward is read at the last non-pad index, so right padding to any
// length gives the same value (causal attention: later pads cannot reach it).
TEST_F(ScalarHeadModel, RightPaddingDoesNotChangeTheValueAtTheLastNonPadToken) {
  Model m(micro_llama());
  m.init_weights(5);
  ScalarHead h(m.config().d_model);
  h.init_normal(6, 0.5f);
  const std::vector<std::vector<int32_t>> rows = {{3, 9, 14, 1, 30, 7}, {12, 2, 2, 8, 19, 33, 4, 25, 11}};
  const int32_t pad = 0;
  auto values = [&](int T) {
    std::vector<int32_t> tokens(rows.size() * T, pad);
    std::vector<int> last(rows.size());
    for (size_t r = 0; r < rows.size(); ++r) {
      std::copy(rows[r].begin(), rows[r].end(), tokens.begin() + r * T);
      last[r] = (int)rows[r].size() - 1;
    }
    m.forward(tokens.data(), (int)rows.size(), T);
    std::vector<float> out(rows.size());
    h.forward(m.hidden(), (int)rows.size(), T, last.data(), out.data());
    return out;
  };
  const auto v10 = values(10), v20 = values(20);
  for (size_t r = 0; r < rows.size(); ++r) {
    m.forward(rows[r].data(), 1, (int)rows[r].size());  // the row alone, no padding
    std::vector<float> all(rows[r].size());
    h.forward(m.hidden(), 1, (int)rows[r].size(), nullptr, all.data());
    const float alone = all.back();
    EXPECT_GT(std::fabs(alone), 1e-3) << "a zero reward would make the check empty";
    EXPECT_NEAR(v10[r], alone, 1e-5 * (1 + std::fabs(alone))) << "row " << r << " padded to 10";
    EXPECT_NEAR(v20[r], alone, 1e-5 * (1 + std::fabs(alone))) << "row " << r << " padded to 20";
  }
  EXPECT_FALSE(m.has_grads());
}

// The head's d_hidden through Model::backward: finite differences of the reward wrt trunk
// parameters.
TEST_F(ScalarHeadModel, GradientThroughTheTrunkMatchesFiniteDifferences) {
  Model m(micro_llama());
  m.init_weights(12);
  ScalarHead h(m.config().d_model);
  h.init_normal(13, 0.5f);
  const int B = 2, T = 8;
  std::vector<int32_t> tokens(B * T);
  aji::Rng rng(3);
  for (auto& t : tokens) t = (int32_t)rng.below(37);
  const int last[B] = {7, 4};
  const float d_out[B] = {1.0f, -0.7f};  // e.g. dL/dr_w, dL/dr_l of a Bradley-Terry pair
  auto reward = [&] {
    m.forward(tokens.data(), B, T);
    float out[B];
    h.forward(m.hidden(), B, T, last, out);
    return (double)d_out[0] * out[0] + (double)d_out[1] * out[1];
  };
  m.zero_grads();
  h.zero_grad();
  m.forward(tokens.data(), B, T);
  float* dh = m.d_hidden_buffer();
  std::fill_n(dh, (size_t)B * T * m.config().d_model, 0.0f);
  h.backward(m.hidden(), B, T, last, d_out, dh);
  m.backward(dh);
  for (const char* name : {"model.embed_tokens.weight", "model.layers.0.self_attn.o_proj.weight",
                           "model.layers.1.mlp.gate_proj.weight", "model.norm.weight"}) {
    const auto* t = m.find_tensor(name);
    ASSERT_NE(t, nullptr) << name;
    size_t best = t->offset;  // the entry with the largest gradient
    for (size_t i = t->offset; i < t->offset + t->numel; ++i)
      if (std::fabs(m.grads()[i]) > std::fabs(m.grads()[best])) best = i;
    const float g = m.grads()[best], s = m.params()[best];
    ASSERT_GT(std::fabs(g), 1e-4) << name;
    const float eps = 1e-2f * std::max(1.0f, std::fabs(s));
    m.params()[best] = s + eps;
    const double up = reward();
    m.params()[best] = s - eps;
    const double dn = reward();
    m.params()[best] = s;
    const double fd = (up - dn) / (2.0 * eps);
    EXPECT_NEAR(g, fd, 2e-2 * std::fabs(fd)) << name;
  }
}

TEST(ScalarHeadIo, SaveLoadRoundTripAndErrors) {
  aji::test::TempDir dir;
  ScalarHead h(12);
  h.init_normal(1, 0.2f);
  aji::train::save_scalar_head(dir.path() / "score.safetensors", h);
  const auto f = aji::train::SafeTensorsFile::load(dir.path() / "score.safetensors");
  ASSERT_TRUE(f.has("score.weight"));
  EXPECT_EQ(f.tensors.at("score.weight").shape, (std::vector<int64_t>{1, 12}));
  EXPECT_FALSE(f.has("score.bias")) << "no bias unless the head has a non-zero offset";
  const ScalarHead g = aji::train::load_scalar_head(dir.path() / "score.safetensors", 12);
  EXPECT_EQ(g.w, h.w);
  EXPECT_EQ(g.d_model, 12);
  EXPECT_EQ(g.b, 0.0f);
  EXPECT_EQ(g.grad, std::vector<float>(12, 0.0f));

  h.b = -0.25f;  // a re-centred reward model
  aji::train::save_scalar_head(dir.path() / "centred.safetensors", h);
  EXPECT_EQ(aji::train::load_scalar_head(dir.path() / "centred.safetensors").b, -0.25f);

  EXPECT_THROW(aji::train::load_scalar_head(dir.path() / "score.safetensors", 16), aji::Error) << "width mismatch";
  const std::vector<float> w3(3 * 12, 0.0f), b3(3, 0.0f);
  aji::train::save_safetensors(dir.path() / "class.safetensors",
                               {{"score.weight", {3, 12}, w3.data()}, {"score.bias", {3}, b3.data()}});
  try {
    aji::train::load_scalar_head(dir.path() / "class.safetensors");
    ADD_FAILURE() << "a 3-class head loaded as a scalar head";
  } catch (const aji::Error& e) {
    EXPECT_NE(e.file().find("class.safetensors"), std::string::npos) << e.describe();
  }
  aji::train::save_safetensors(dir.path() / "other.safetensors", {{"x", {3}, b3.data()}});
  EXPECT_THROW(aji::train::load_scalar_head(dir.path() / "other.safetensors"), aji::Error);
}

}  // namespace
