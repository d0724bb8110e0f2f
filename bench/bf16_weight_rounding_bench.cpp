// Does stochastic rounding (llm.c's approach) help aji's training? An experiment, not a
// feature: the same model trained on the same tokens three ways, the only difference how the
// weights are kept between steps:
//   fp32   fp32 master weights (aji's training path, every precision)
//   bf16   the weights stored in bf16: after each AdamW step every weight is rounded to the
//          nearest bf16 (what a bf16-only model without a master copy does)
//   bf16sr the same, rounded stochastically: up with probability equal to the distance to the
//          lower bf16 neighbour over their gap (llm.c's stochastic_rounding), so an update
//          smaller than half a bf16 step survives in expectation
// AdamW's moments stay fp32 in all three; the products are the model's (bf16 mixed precision
// where the CPU has it, else fp32). Prints one JSON line per evaluation: variant, step,
// train loss (mean over the steps since the last evaluation), validation loss (fixed batches).
//
//   build/bench/bf16_weight_rounding_bench DATA_DIR CONFIG STEPS B T LR THREADS [fp32|bf16|bf16sr ...]
//   (SEED=n in the environment: the initial weights, the data order and the rounding noise; 1)
//
// (docs/bf16.md "Stochastic rounding" has a run and what it shows.)
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "aji/base/error.h"
#include "aji/base/half.h"
#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "aji/kernels/cpu/bf16_gemm.h"
#include "aji/model/config.h"
#include "aji/model/model.h"
#include "aji/train/loader.h"
#include "aji/train/optimizer.h"
#include "aji/train/trainer_run.h"

namespace {

// x rounded to bf16 stochastically: the 16 low bits of its fp32 pattern plus a random 16-bit
// number, truncated (the lower neighbour with probability 1 - frac, the upper with frac).
float stochastic_bf16(float x, aji::Rng& rng) {
  if (!std::isfinite(x)) return x;
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint32_t r = static_cast<uint32_t>(rng.next_u64() & 0xffffu);
  u = (u + r) & 0xffff0000u;
  float y;
  std::memcpy(&y, &u, 4);
  return y;
}

double val_loss(aji::model::Model& m, aji::train::DataLoader& val, int batches) {
  const int B = val.batch(), T = val.seq_len();
  std::vector<int32_t> in((size_t)B * T), tg(in.size());
  val.reset();
  double sum = 0;
  for (int i = 0; i < batches; ++i) {
    val.next_batch(in.data(), tg.data());
    m.forward(in.data(), B, T);
    sum += m.lm_head_loss(tg.data());
  }
  return sum / batches;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 8) {
    std::fprintf(stderr, "usage: %s DATA_DIR CONFIG STEPS B T LR THREADS [fp32|bf16|bf16sr ...]\n", argv[0]);
    return 2;
  }
  try {
    const std::string data = argv[1];
    const aji::model::ModelConfig cfg = aji::model::ModelConfig::load(argv[2]);
    const int steps = std::max(1, std::atoi(argv[3])), B = std::atoi(argv[4]), T = std::atoi(argv[5]);
    const float lr = std::strtof(argv[6], nullptr);
    aji::set_num_threads(std::atoi(argv[7]));
    std::vector<std::string> variants;
    for (int i = 8; i < argc; ++i) variants.push_back(argv[i]);
    if (variants.empty()) variants = {"fp32", "bf16", "bf16sr"};
    const bool bf16_products = aji::kernels::cpu::bf16_supported();
    const int every = std::max(1, steps / 10), val_batches = 8;
    const char* seed_env = std::getenv("SEED");
    const uint64_t seed = seed_env && *seed_env ? std::strtoull(seed_env, nullptr, 10) : 1;
    for (const std::string& v : variants) {
      if (v != "fp32" && v != "bf16" && v != "bf16sr") throw aji::Error("unknown variant " + v);
      aji::model::Model m(cfg);
      m.init_weights(seed);
      m.set_precision(bf16_products ? aji::model::Precision::kBf16 : aji::model::Precision::kFp32);
      if (v != "fp32") {  // the initial weights are bf16 too
        float* p0 = m.params();
        for (size_t i = 0; i < m.num_params(); ++i) p0[i] = aji::bf16_to_f32(aji::f32_to_bf16(p0[i]));
      }
      aji::train::AdamW opt(m.num_params(), {0.9f, 0.95f, 1e-8f, 0.1f});
      const std::vector<aji::train::ParamGroup> groups = {aji::train::ParamGroup::whole_model(m, opt)};
      aji::train::LrSchedule sched;
      sched.lr = lr;
      sched.warmup = steps / 20;
      sched.total = steps;
      aji::train::DataLoader train(data, "train", B, T, seed, /*shuffle=*/true);
      aji::train::DataLoader val(data, "val", B, T, 1, false);
      std::vector<int32_t> in((size_t)B * T), tg(in.size());
      aji::Rng rng(7 + seed);
      double train_sum = 0;
      int train_n = 0;
      for (int s = 0; s < steps; ++s) {
        train.next_batch(in.data(), tg.data());
        const aji::train::StepStats st = aji::train::train_step(groups, sched.at(s), 1.0, "experiment", "", [&] {
          m.forward(in.data(), B, T);
          const double l = m.lm_head_loss(tg.data());
          m.backward_from_head();
          return l;
        }, s);
        train_sum += st.loss;
        ++train_n;
        if (v != "fp32") {
          float* p = m.params();  // counts as a change: the bf16 product copy is refreshed
          const size_t n = m.num_params();
          if (v == "bf16")
            for (size_t i = 0; i < n; ++i) p[i] = aji::bf16_to_f32(aji::f32_to_bf16(p[i]));
          else
            for (size_t i = 0; i < n; ++i) p[i] = stochastic_bf16(p[i], rng);
        }
        if ((s + 1) % every == 0 || s + 1 == steps) {
          std::printf("{\"variant\": \"%s\", \"seed\": %llu, \"lr\": %g, \"step\": %d, \"train_loss\": %.5f, "
                      "\"val_loss\": %.5f}\n", v.c_str(), (unsigned long long)seed, lr, s + 1, train_sum / train_n,
                      val_loss(m, val, val_batches));
          std::fflush(stdout);
          train_sum = 0;
          train_n = 0;
        }
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
