// AdamW, gradient clipping and the LR schedule against PyTorch (fixture written by
// tests/reference/adamw_reference.py with torch.optim.AdamW and clip_grad_norm_).
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/threads.h"
#include "aji/kernels/cpu/bf16_gemm.h"
#include "aji/train/optimizer.h"
#include "test_util.h"

using aji::train::AdamW;
using aji::train::DecayRange;
using aji::train::LrSchedule;

TEST(AdamW, TenStepsMatchPyTorchAdamWWithClipping) {
  const auto j = nlohmann::json::parse(aji::read_file(aji::test::source_path("tests/fixtures/train/adamw_reference.json")));
  std::vector<std::string> order = j["order"];
  std::vector<float> params;
  std::vector<DecayRange> ranges;
  for (const auto& name : order) {
    std::vector<float> init = j["init"][name];
    ranges.push_back({params.size(), init.size(), j["decay"][name].get<bool>()});
    params.insert(params.end(), init.begin(), init.end());
  }
  aji::train::AdamWConfig cfg;
  cfg.beta1 = j["beta1"];
  cfg.beta2 = j["beta2"];
  cfg.eps = j["eps"];
  cfg.weight_decay = j["weight_decay"];
  AdamW opt(params.size(), cfg);
  const float lr = j["lr"];
  const double max_norm = j["max_norm"];
  for (const auto& step : j["steps"]) {
    std::vector<float> grads;
    for (const auto& name : order) {
      std::vector<float> g = step["grads"][name];
      grads.insert(grads.end(), g.begin(), g.end());
    }
    const double norm = aji::train::clip_grad_norm(grads.data(), grads.size(), max_norm);
    EXPECT_NEAR(norm, step["grad_norm"].get<double>(), 1e-5 * norm);
    opt.step(params.data(), grads.data(), ranges, lr);
    size_t k = 0;
    double max_err = 0;
    for (const auto& name : order)
      for (float want : step["params_after"][name].get<std::vector<float>>())
        max_err = std::max(max_err, std::fabs(static_cast<double>(params[k++]) - want));
    // fp32, same operation order as torch: differences are a few ulps of O(1) values.
    EXPECT_LT(max_err, 2e-6) << "after step " << opt.step_count();
  }
  EXPECT_EQ(opt.step_count(), 10);
}

TEST(AdamW, NoDecayRangesAreNotShrunkWithZeroGradient) {
  std::vector<float> p = {1.0f, 1.0f}, g = {0.0f, 0.0f};
  AdamW opt(2, {});
  opt.step(p.data(), g.data(), {{0, 1, true}, {1, 1, false}}, 0.1f);
  EXPECT_FLOAT_EQ(p[0], 1.0f - 0.1f * 0.1f);  // decoupled decay only
  EXPECT_FLOAT_EQ(p[1], 1.0f);
}

// The bf16 copy written by the update: each updated weight's round_to_bf16 bits, the weights
// and moments exactly those of a step without it; elements outside the ranges left alone.
// Ranges below one 4096-value chunk, across chunks, and past the parallel threshold.
TEST(AdamW, Bf16CopyIsTheUpdatedWeightsRoundedAndChangesNothingElse) {
  const size_t n = 70000;
  const std::vector<DecayRange> ranges = {{0, 100, false}, {150, 5000, true}, {5150, n - 5150, true}};  // 100..149 frozen
  std::vector<float> p(n), g(n);
  for (size_t i = 0; i < n; ++i) {
    p[i] = std::sin(0.37 * (double)i) * 0.1f;
    g[i] = std::cos(0.11 * (double)i) * 0.01f;
  }
  for (int threads : {1, 2}) {
    aji::set_num_threads(threads);
    AdamW plain(n, {}), fused(n, {});
    std::vector<float> p1 = p, p2 = p;
    std::vector<uint16_t> copy(n, 0x1234);
    for (int s = 0; s < 3; ++s) {
      EXPECT_FALSE(plain.step(p1.data(), g.data(), ranges, 1e-3f));
      EXPECT_TRUE(fused.step(p2.data(), g.data(), ranges, 1e-3f, copy.data()));
    }
    std::vector<uint16_t> want(n);
    aji::kernels::cpu::round_to_bf16(want.data(), p1.data(), (int64_t)n);
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(p2[i], p1[i]) << i;
      ASSERT_EQ(fused.m()[i], plain.m()[i]) << i;
      ASSERT_EQ(fused.v()[i], plain.v()[i]) << i;
      if (i >= 100 && i < 150)
        ASSERT_EQ(copy[i], 0x1234) << i;
      else
        ASSERT_EQ(copy[i], want[i]) << i;
    }
  }
  aji::set_num_threads(1);
}

TEST(AdamW, SaveLoadRoundTripAndRejectsDamage) {
  aji::test::TempDir dir;
  std::vector<float> p(100, 0.5f), g(100);
  for (int i = 0; i < 100; ++i) g[i] = std::sin(i * 1.0f);
  AdamW a(100, {});
  a.step(p.data(), g.data(), {{0, 100, true}}, 1e-2f);
  a.step(p.data(), g.data(), {{0, 100, true}}, 1e-2f);
  a.save(dir.path() / "optimizer.bin");
  AdamW b(100, {});
  b.load(dir.path() / "optimizer.bin");
  EXPECT_EQ(b.step_count(), 2);
  EXPECT_EQ(a.m(), b.m());
  EXPECT_EQ(a.v(), b.v());
  AdamW wrong(99, {});
  EXPECT_THROW(wrong.load(dir.path() / "optimizer.bin"), aji::Error);
  std::string bytes = aji::read_file(dir.path() / "optimizer.bin");
  bytes.resize(bytes.size() - 7);
  std::FILE* f = std::fopen((dir.path() / "trunc.bin").c_str(), "wb");
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
  try {
    b.load(dir.path() / "trunc.bin");
    FAIL() << "truncated optimizer state accepted";
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
}

TEST(GradNorm, ClipMatchesDefinition) {
  std::vector<float> g = {3.0f, 4.0f};
  EXPECT_DOUBLE_EQ(aji::train::clip_grad_norm(g.data(), 2, 10.0), 5.0);
  EXPECT_FLOAT_EQ(g[0], 3.0f);  // under the limit: untouched
  EXPECT_DOUBLE_EQ(aji::train::clip_grad_norm(g.data(), 2, 1.0), 5.0);
  EXPECT_NEAR(std::hypot(g[0], g[1]), 1.0, 1e-6);
}

TEST(LrSchedule, WarmupThenCosineToFloor) {
  LrSchedule s;
  s.lr = 1.0f;
  s.warmup = 10;
  s.total = 110;
  s.min_lr_frac = 0.1f;
  EXPECT_FLOAT_EQ(s.at(0), 0.1f);
  EXPECT_FLOAT_EQ(s.at(9), 1.0f);
  EXPECT_FLOAT_EQ(s.at(10), 1.0f);
  EXPECT_NEAR(s.at(10 + 99 / 2.0), 0.55, 0.02);  // cosine midpoint
  EXPECT_FLOAT_EQ(s.at(109), 0.1f);
  s.decay = LrSchedule::Decay::kLinear;
  EXPECT_NEAR(s.at(10 + 33), 1.0 - 0.9 * 33 / 99.0, 1e-6);
  EXPECT_FLOAT_EQ(s.at(109), 0.1f);
  s.decay = LrSchedule::Decay::kConstant;
  EXPECT_FLOAT_EQ(s.at(100), 1.0f);
  EXPECT_THROW(LrSchedule::parse_decay("exp"), aji::Error);
}
