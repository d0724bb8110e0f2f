// aji's bf16 training step against PyTorch's CPU mixed precision on the same GPT-2 and batch
// (tests/fixtures/model/bf16_gpt2.bin, written by tests/reference/bf16_vs_torch.py: float64,
// torch.autocast("cpu", dtype=torch.bfloat16), float32).
//
// Tolerances, and why. bf16 keeps 8 significant bits: each rounded input is off by up to
// 2^-9 = 2e-3 relative, and a product of K such terms (fp32 accumulation) has a relative
// error of about 2^-9 / sqrt(terms that do not cancel) to 2^-9; through two layers,
// attention and the softmax the gradients of the measured run are 0.2-1.3% off float64 in
// PyTorch's autocast (printed by the script). So:
//   - every gradient tensor (relative L2 vs float64) within 3e-2, and within 2x + 2e-3 of
//     autocast's own error for that tensor: aji's bf16 is no worse than PyTorch's;
//   - aji bf16 vs autocast directly: every gradient tensor within 3e-2 (both ~1e-2 off exact);
//   - logits (relative L2) within 2e-2 of float64; the loss within 1e-3 relative;
//   - and bf16 really ran: aji's bf16 weight gradients are > 20x further from float64 than
//     aji's fp32 ones (fp32: ~1e-6).
// aji keeps the logits and attention's softmax in fp32 where autocast rounds them to bf16
// (attention's products are bf16 in both), so aji's errors are expected at or below autocast's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "aji/base/threads.h"
#include "aji/kernels/cpu/bf16_gemm.h"
#include "aji/model/model.h"
#include "model/fixture.h"
#include "test_util.h"

using aji::model::Model;
using aji::model::ModelConfig;
using aji::model::Precision;
using aji::test::ModelFixture;

namespace {

double rel(const float* a, const float* b, size_t n) {
  double d = 0, r = 0;
  for (size_t i = 0; i < n; ++i) {
    d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    r += (double)b[i] * b[i];
  }
  return std::sqrt(d / std::max(r, 1e-300));
}

struct Step {
  float loss;
  std::vector<float> grads, logits;
};

Step run(Model& m, const ModelFixture& fx, int B, int T) {
  const auto& tok = fx.i("tokens");
  const auto& tgt = fx.i("targets");
  const int64_t N = (int64_t)B * T, V = m.config().vocab_size, C = m.config().d_model;
  Step s;
  m.zero_grads();
  m.forward(tok.data(), B, T);
  // the logits as the LM-head loss computes them (bf16 product in bf16 mode)
  s.logits.resize(N * V);
  std::vector<uint16_t> w16(V * C);
  const float* wte = m.params() + m.find_tensor("transformer.wte.weight")->offset;
  if (m.precision() == Precision::kBf16) {
    aji::kernels::cpu::round_to_bf16(w16.data(), wte, V * C);
    aji::kernels::cpu::matmul_forward_bf16(s.logits.data(), m.hidden(), w16.data(), nullptr, N, (int)C, (int)V,
                                           aji::kernels::cpu::WeightLayout::kOutIn);
  } else {
    m.lm_logits(m.hidden(), (int)N, s.logits.data());
  }
  s.loss = m.lm_head_loss(tgt.data());
  m.backward(m.d_hidden_buffer());
  s.grads.assign(m.grads(), m.grads() + m.num_params());
  return s;
}

}  // namespace

TEST(Bf16Reference, StepAgainstPytorchAutocastAndFloat64) {
  aji::set_num_threads(1);
  const ModelFixture fx = ModelFixture::load(aji::test::source_path("tests/fixtures/model/bf16_gpt2.bin"));
  const ModelConfig cfg = ModelConfig::from_json(fx.config, "bf16_gpt2");
  const int B = fx.meta["B"].get<int>(), T = fx.meta["T"].get<int>();
  Model m(cfg);
  for (const auto& t : m.tensors()) {
    const auto& v = fx.f("param." + t.name);
    ASSERT_EQ(v.size(), t.numel) << t.name;
    std::memcpy(m.params() + t.offset, v.data(), sizeof(float) * t.numel);
  }
  const Step f32 = run(m, fx, B, T);
  m.set_precision(Precision::kBf16);
  const Step b16 = run(m, fx, B, T);

  const float loss64 = fx.f("f64.loss")[0], loss_tb = fx.f("bf16.loss")[0];
  EXPECT_NEAR(f32.loss, loss64, 1e-5 * loss64);
  EXPECT_NEAR(b16.loss, loss64, 1e-3 * loss64);
  EXPECT_NEAR(b16.loss, loss_tb, 1e-3 * loss64);
  const auto& lg64 = fx.f("f64.logits");
  const double logit_err = rel(b16.logits.data(), lg64.data(), lg64.size());
  const double logit_err_torch = rel(fx.f("bf16.logits").data(), lg64.data(), lg64.size());
  EXPECT_LT(logit_err, 2e-2);
  EXPECT_LT(logit_err, 2 * logit_err_torch + 2e-3);
  std::printf("logits rel err vs float64: aji bf16 %.2e, torch autocast %.2e, aji fp32 %.2e\n", logit_err,
              logit_err_torch, rel(f32.logits.data(), lg64.data(), lg64.size()));
  std::printf("loss: float64 %.7f | aji bf16 %.7f | torch autocast %.7f | aji fp32 %.7f\n", loss64, b16.loss, loss_tb,
              f32.loss);

  double worst_aji = 0, worst_torch = 0, worst_f32 = 0, worst_direct = 0;
  for (const auto& t : m.tensors()) {
    const auto& g64 = fx.f("f64.grad." + t.name);
    const auto& gtb = fx.f("bf16.grad." + t.name);
    const double e_aji = rel(b16.grads.data() + t.offset, g64.data(), t.numel);
    const double e_torch = rel(gtb.data(), g64.data(), t.numel);
    const double e_f32 = rel(f32.grads.data() + t.offset, g64.data(), t.numel);
    const double e_direct = rel(b16.grads.data() + t.offset, gtb.data(), t.numel);
    EXPECT_LT(e_aji, 3e-2) << t.name;
    EXPECT_LT(e_aji, 2 * e_torch + 2e-3) << t.name << ": aji bf16 further from float64 than autocast";
    EXPECT_LT(e_direct, 3e-2) << t.name;
    EXPECT_LT(e_f32, 1e-4) << t.name;
    if (t.shape.size() == 2) {
      EXPECT_GT(e_aji, 20 * e_f32) << t.name << ": not computed in bf16?";
    }
    worst_aji = std::max(worst_aji, e_aji);
    worst_torch = std::max(worst_torch, e_torch);
    worst_f32 = std::max(worst_f32, e_f32);
    worst_direct = std::max(worst_direct, e_direct);
  }
  std::printf("worst gradient tensor rel err vs float64: aji bf16 %.2e, torch autocast %.2e, aji fp32 %.2e; "
              "aji bf16 vs autocast %.2e\n", worst_aji, worst_torch, worst_f32, worst_direct);
}
