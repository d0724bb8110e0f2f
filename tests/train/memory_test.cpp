// The one memory estimate of the trainers (train/memory.h): its activation part against
// what Model::forward really allocates, for both architectures, and the refusal message.
#include "aji/train/memory.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "aji/base/error.h"
#include "aji/model/model.h"
#include "kernels/counting_backend.h"

namespace {

aji::model::ModelConfig small(aji::model::Arch arch) {
  aji::model::ModelConfig c;
  c.arch = arch;
  c.vocab_size = 300;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = arch == aji::model::Arch::kGpt2 ? 4 : 2;
  c.d_model = 32;
  c.d_ff = arch == aji::model::Arch::kGpt2 ? 0 : 64;
  c.max_seq_len = 32;
  c.tied_embeddings = arch == aji::model::Arch::kGpt2;
  c.bias = arch == aji::model::Arch::kGpt2;
  return c;
}

TEST(TrainMemory, EstimateMatchesWhatTheModelAllocates) {
  for (auto arch : {aji::model::Arch::kGpt2, aji::model::Arch::kLlama}) {
    const aji::model::ModelConfig c = small(arch);
    aji::model::Model m(c);
    m.init_weights(1);
    for (int B : {1, 3}) {
      m.forward(std::vector<int32_t>(size_t(B) * 32, 1).data(), B, 32);
      const auto est = aji::train::training_memory(c, (int64_t)m.num_params(), int64_t(B) * 32);
      const double real = double(m.activation_bytes());
      EXPECT_NEAR(est.activations, real, 0.05 * real) << "arch " << int(arch) << " B " << B;
      EXPECT_EQ(est.weights, 4.0 * double(m.num_params()));
      EXPECT_EQ(est.grads, 4.0 * double(m.num_params()));
      EXPECT_EQ(est.optimizer, 8.0 * double(m.num_params()));
    }
    // A frozen body: no AdamW moments.
    EXPECT_EQ(aji::train::training_memory(c, 0, 32).optimizer, 0.0);
  }
}

// --precision bf16 adds the bf16 weight copy (2 bytes per parameter) and the bf16 copies of
// the widest product's input and output gradient, here the LM head's (V = 300 > 2F = 128),
// and keeps the norms' outputs and the FFN activation in bf16 (half their fp32 bytes).
TEST(TrainMemory, Bf16AddsTheWeightCopyAndTheProductScratch) {
  const aji::model::ModelConfig c = small(aji::model::Arch::kLlama);
  const double P = double(c.num_params());
  const auto fp = aji::train::training_memory(c, (int64_t)P, 64), bf = aji::train::training_memory(c, (int64_t)P, 64, true);
  EXPECT_EQ(bf.weights, fp.weights + 2.0 * P);
  EXPECT_EQ(bf.grads, fp.grads);
  EXPECT_EQ(bf.optimizer, fp.optimizer);
  // 64 rows of (max(C, F, QW) + max(QKV, 2F, C)) = 64 + 128 = 192 bf16 values for the products'
  // scratch (the LM head's logit gradient needs none: it is rounded over the logits' rows). Kept
  // in bf16: ln1, ln2 (2 x C a layer, 2 layers) and the activation (F = 64): 2 bytes saved a value.
  EXPECT_EQ(bf.activations, fp.activations + 2.0 * 64 * (64 + 128) - 2.0 * 64 * (2 * 2 * 32 + 64));
}

// The bf16 estimate against what a bf16 model allocates (the product scratch is per thread,
// outside the model's arena, so it is taken out here).
TEST(TrainMemory, Bf16EstimateMatchesWhatTheModelAllocates) {
  for (auto arch : {aji::model::Arch::kGpt2, aji::model::Arch::kLlama}) {
    const aji::model::ModelConfig c = small(arch);
    aji::model::Model m(c);
    m.init_weights(1);
    m.set_precision(aji::model::Precision::kBf16);
    const int B = 3, N = B * 32;
    m.forward(std::vector<int32_t>(size_t(N), 1).data(), B, 32);
    const auto est = aji::train::training_memory(c, (int64_t)m.num_params(), N, true);
    const double C = c.d_model, F = c.ff(), QW = c.q_width(), QKV = c.qkv_width();
    const double FF = c.is_gpt2() ? F : 2 * F;
    const double scratch = 2.0 * N * (std::max({C, F, QW}) + std::max({QKV, FF, C}));
    const double fp32_acts = aji::train::training_memory(c, (int64_t)m.num_params(), N).activations;
    const double real = double(m.activation_bytes());
    EXPECT_NEAR(est.activations - scratch, real, 0.05 * real) << "arch " << int(arch);
    EXPECT_LT(real, fp32_acts) << "arch " << int(arch);
  }
}

TEST(TrainMemory, RefusesWhatDoesNotFitWithTheNumbersAndTheFix) {
  const auto need = aji::train::training_memory(small(aji::model::Arch::kLlama), 1 << 20, 64);
  ::setenv("AJI_MEMORY_LIMIT_MB", std::to_string(0.5 * need.total() / 1048576.0).c_str(), 1);
  EXPECT_GT(aji::train::available_memory_bytes(), 0.0);
  EXPECT_LT(aji::train::available_memory_bytes(), need.total());
  try {
    aji::train::require_memory(need, "training this", "lower --batch-size");
    ADD_FAILURE() << "no error";
  } catch (const aji::Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("training this needs about ", 0), 0u) << e.describe();
    EXPECT_NE(std::string(e.what()).find("GiB is available"), std::string::npos) << e.describe();
    EXPECT_NE(e.how_to_fix().find("lower --batch-size"), std::string::npos) << e.describe();
  }
  ::setenv("AJI_MEMORY_LIMIT_MB", std::to_string(2 * need.total() / 1048576.0).c_str(), 1);
  EXPECT_NO_THROW(aji::train::require_memory(need, "training this", "lower --batch-size"));
  ::unsetenv("AJI_MEMORY_LIMIT_MB");
}

// On a device the whole estimate must fit in the device's free memory (checked before anything
// is allocated there), and the host only its copies of the weights, gradients and moments.
TEST(TrainMemory, OnADeviceTheDeviceMustHoldItAllAndTheHostTheCopies) {
  const auto need = aji::train::training_memory(small(aji::model::Arch::kLlama), 1 << 20, 4096);
  ASSERT_GT(need.activations, 0.0);
  aji::test::CountingBackend dev(aji::kernels::make_separate_cpu_backend());
  dev.fake_total = size_t(4 * need.total());
  dev.fake_free = size_t(0.5 * need.total());
  try {
    aji::train::require_memory(need, "training this", "lower --batch-size", &dev);
    ADD_FAILURE() << "no error";
  } catch (const aji::Error& e) {
    const std::string w = e.what();
    EXPECT_EQ(w.rfind("training this needs about ", 0), 0u) << e.describe();
    EXPECT_NE(w.find("activations"), std::string::npos) << e.describe();
    EXPECT_NE(w.find("on test device ("), std::string::npos) << e.describe();
    EXPECT_NE(w.find("GiB is free"), std::string::npos) << e.describe();
    EXPECT_NE(e.how_to_fix().find("lower --batch-size"), std::string::npos) << e.describe();
    EXPECT_EQ(dev.up + dev.down, 0u) << "the check moved data";
  }
  dev.fake_free = size_t(1.1 * need.total());
  EXPECT_NO_THROW(aji::train::require_memory(need, "training this", "lower --batch-size", &dev));
  // The host: not the activations (they live on the device), but the copies.
  const double copies = need.total() - need.activations;
  ::setenv("AJI_MEMORY_LIMIT_MB", std::to_string((copies + 0.5 * need.activations) / 1048576.0).c_str(), 1);
  EXPECT_THROW(aji::train::require_memory(need, "training this", "x", nullptr), aji::Error);
  EXPECT_NO_THROW(aji::train::require_memory(need, "training this", "x", &dev));
  ::setenv("AJI_MEMORY_LIMIT_MB", std::to_string(0.5 * copies / 1048576.0).c_str(), 1);
  try {
    aji::train::require_memory(need, "training this", "x", &dev);
    ADD_FAILURE() << "no error";
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("on the host but only"), std::string::npos) << e.describe();
  }
  ::unsetenv("AJI_MEMORY_LIMIT_MB");
}

}  // namespace
