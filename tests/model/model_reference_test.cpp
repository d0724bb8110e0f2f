// The model against an independent PyTorch implementation (tests/reference/torch_reference.py,
// float64): logits, loss, every parameter gradient and 10 AdamW steps, for GPT-2, Llama
// with GQA and ignored targets, and Llama with QK-norm, tied embeddings and loss weights.
// Tolerances are fp32 tolerances relative to each tensor's scale (stated below).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "aji/model/model.h"
#include "model/fixture.h"
#include "test_util.h"

using aji::model::Model;
using aji::model::ModelConfig;
using aji::test::ModelFixture;

namespace {

// max |a-b| / max(max|b|, floor): error relative to the tensor's scale.
double scaled_err(const float* a, const float* b, size_t n, double floor = 1e-3) {
  double m = 0.0, s = floor;
  for (size_t i = 0; i < n; ++i) {
    m = std::max(m, (double)std::fabs(a[i] - b[i]));
    s = std::max(s, (double)std::fabs(b[i]));
  }
  return m / s;
}

struct Loaded {
  ModelFixture fx;
  ModelConfig cfg;
  int B, T;
};

Loaded load(const std::string& name) {
  Loaded l{ModelFixture::load(aji::test::source_path("tests/fixtures/model/" + name + ".bin")), {}, 0, 0};
  l.cfg = ModelConfig::from_json(l.fx.config, name);
  l.B = l.fx.meta["B"].get<int>();
  l.T = l.fx.meta["T"].get<int>();
  return l;
}

void set_weights(Model& m, const ModelFixture& fx) {
  size_t n_fixture = 0;
  for (const auto& [name, v] : fx.f32)
    if (name.rfind("param.", 0) == 0) ++n_fixture;
  ASSERT_EQ(m.tensors().size(), n_fixture) << "tensor table and reference disagree on the number of tensors";
  for (const auto& t : m.tensors()) {
    const std::string key = "param." + t.name;
    ASSERT_TRUE(fx.f32.count(key)) << "reference has no " << t.name;
    ASSERT_EQ(fx.shapes.at(key), t.shape) << t.name;
    const auto& v = fx.f(key);
    std::memcpy(m.params() + t.offset, v.data(), sizeof(float) * t.numel);
  }
}

class ModelReference : public testing::TestWithParam<std::string> {};

TEST_P(ModelReference, LogitsLossAndEveryGradient) {
  Loaded L = load(GetParam());
  Model m(L.cfg);
  set_weights(m, L.fx);
  const auto& tokens = L.fx.i("tokens");
  const auto& targets = L.fx.i("targets");
  const auto& weights = L.fx.f("loss_weights");
  const int64_t N = (int64_t)L.B * L.T, V = L.cfg.vocab_size;

  m.forward(tokens.data(), L.B, L.T);
  std::vector<float> logits(N * V);
  m.lm_logits(m.hidden(), (int)N, logits.data());
  const double logit_err = scaled_err(logits.data(), L.fx.f("logits").data(), logits.size());
  EXPECT_LT(logit_err, 5e-6) << "logits";

  m.zero_grads();
  std::vector<float> per_token(N);
  const float loss = m.lm_head_loss(targets.data(), weights.data(), 1.0f, per_token.data());
  const float ref_loss = L.fx.f("loss")[0];
  EXPECT_NEAR(loss, ref_loss, 2e-6 * std::fabs(ref_loss)) << "loss";
  m.backward(m.d_hidden_buffer());
  double worst = 0.0;
  std::string worst_name;
  for (const auto& t : m.tensors()) {
    const double e = scaled_err(m.grads() + t.offset, L.fx.f("grad." + t.name).data(), t.numel, 1e-6);
    if (e > worst) worst = e, worst_name = t.name;
    EXPECT_LT(e, 2e-5) << "gradient of " << t.name;
  }
  std::printf("[%s] logits err %.2e, loss %.7f vs %.7f, worst grad err %.2e (%s)\n", GetParam().c_str(), logit_err,
              loss, ref_loss, worst, worst_name.c_str());
}

// AdamW as torch.optim.AdamW (decoupled decay, bias correction); the engine-train optimizer
// is tested against the same fixture numbers.
TEST_P(ModelReference, TenAdamWSteps) {
  Loaded L = load(GetParam());
  Model m(L.cfg);
  set_weights(m, L.fx);
  const auto& tokens = L.fx.i("tokens");
  const auto& targets = L.fx.i("targets");
  const auto& weights = L.fx.f("loss_weights");
  const auto& ref = L.fx.f("adamw_losses");
  const double lr = 1e-3, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
  std::vector<float> mom(m.num_params(), 0.0f), vel(m.num_params(), 0.0f);
  for (int step = 1; step <= (int)ref.size(); ++step) {
    m.zero_grads();
    m.forward(tokens.data(), L.B, L.T);
    const float loss = m.lm_head_loss(targets.data(), weights.data());
    m.backward(m.d_hidden_buffer());
    EXPECT_NEAR(loss, ref[step - 1], 2e-5 * std::fabs(ref[step - 1])) << "step " << step;
    const double bc1 = 1.0 - std::pow(b1, step), bc2 = 1.0 - std::pow(b2, step);
    for (const auto& t : m.tensors()) {
      float* p = m.params() + t.offset;
      const float* g = m.grads() + t.offset;
      for (size_t i = 0; i < t.numel; ++i) {
        const size_t k = t.offset + i;
        if (t.decay) p[i] -= (float)(lr * wd) * p[i];
        mom[k] = (float)b1 * mom[k] + (float)(1 - b1) * g[i];
        vel[k] = (float)b2 * vel[k] + (float)(1 - b2) * g[i] * g[i];
        p[i] -= (float)(lr * (mom[k] / bc1) / (std::sqrt(vel[k] / bc2) + eps));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ModelReference, testing::Values("gpt2_small", "llama_gqa", "llama_qknorm_tied"));

TEST(ModelTable, DecayOnlyOnMatrices) {
  for (const char* preset : {"tiny", "tiny-gpt2"}) {
    Model m(ModelConfig::load(aji::test::source_path(std::string("configs/") + preset + ".json")));
    size_t total = 0;
    for (const auto& t : m.tensors()) {
      total += t.numel;
      const bool embedding = t.name.find("wte") != std::string::npos || t.name.find("wpe") != std::string::npos ||
                             t.name.find("embed_tokens") != std::string::npos;
      EXPECT_EQ(t.decay, t.shape.size() == 2 && !embedding) << t.name;
    }
    EXPECT_EQ(total, m.num_params());
    EXPECT_EQ((int64_t)m.num_params(), m.config().num_params());
  }
}

}  // namespace
