// One training step (forward, LM-head loss, backward, AdamW through train::train_step) of a
// model config at B x T, in fp32 or bf16 mixed precision: the aji side of
// bench/bf16_train_vs_torch.py.
//
//   build/bench/bf16_train_bench CONFIG B T STEPS THREADS fp32|bf16
//   build/bench/bf16_train_bench --plot OUT.svg FP32_RUN BF16_RUN   (bench/bf16_convergence.sh)
//
// Prints one JSON line: median and best wall seconds per step, CPU seconds per step, tokens/s,
// the measured peak (fp32 FMA or bf16 vdpbf16ps, kernels/cpu/fma_peak.h) and the MFU against
// it, peak RSS. Random weights (init_weights) and random tokens; one warm-up step.
// --plot draws the validation losses of two `aji pretrain` runs (their metrics.jsonl) on one
// picture (train/loss_curve.h) and prints the last of each and their relative difference.
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <fstream>

#include <nlohmann/json.hpp>

#include "aji/base/atomic_file.h"
#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "aji/kernels/cpu/bf16_gemm.h"
#include "aji/kernels/cpu/fma_peak.h"
#include "aji/model/config.h"
#include "aji/model/model.h"
#include "aji/train/loss_curve.h"
#include "aji/train/optimizer.h"
#include "aji/train/trainer_run.h"

namespace {
double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}
std::vector<aji::train::CurvePoint> val_losses(const std::string& run) {
  std::ifstream in(run + "/metrics.jsonl");
  if (!in) throw aji::Error("no metrics.jsonl in " + run);
  std::vector<aji::train::CurvePoint> v;
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.contains("val_loss")) v.push_back({j.at("step").get<double>(), j.at("val_loss").get<double>()});
  }
  if (v.empty()) throw aji::Error("no validation loss in " + run + "/metrics.jsonl");
  return v;
}

int plot(const std::string& out, const std::string& fp32_run, const std::string& bf16_run) {
  const auto a = val_losses(fp32_run), b = val_losses(bf16_run);
  aji::train::CurveLabels labels;
  labels.y_axis = "validation loss (nats/token)";
  labels.train = "fp32";
  labels.val = "bf16 mixed precision";
  aji::write_file_atomic(out, aji::train::loss_curve_svg(a, b, "validation loss: fp32 vs bf16, same tokens", labels));
  const double la = a.back().value, lb = b.back().value;
  std::printf("{\"fp32_step\": %.0f, \"fp32_val_loss\": %.5f, \"bf16_step\": %.0f, \"bf16_val_loss\": %.5f, "
              "\"relative_difference\": %.5f}\n", a.back().step, la, b.back().step, lb, (lb - la) / la);
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc == 5 && std::string(argv[1]) == "--plot") {
    try {
      return plot(argv[2], argv[3], argv[4]);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      return 1;
    }
  }
  if (argc != 7) {
    std::fprintf(stderr, "usage: %s CONFIG B T STEPS THREADS fp32|bf16\n", argv[0]);
    return 2;
  }
  try {
    const aji::model::ModelConfig cfg = aji::model::ModelConfig::load(argv[1]);
    const int B = std::atoi(argv[2]), T = std::atoi(argv[3]), steps = std::max(1, std::atoi(argv[4]));
    aji::set_num_threads(std::atoi(argv[5]));
    const std::string prec = argv[6];
    if (prec != "fp32" && prec != "bf16") throw aji::Error("precision must be fp32 or bf16, not " + prec);
    const bool bf16 = prec == "bf16";
    if (bf16 && !aji::kernels::cpu::bf16_supported())
      std::fprintf(stderr, "note: this CPU has no native bf16 products (%s): bf16 runs on oneDNN's slow path\n",
                   aji::kernels::cpu::bf16_isa_name());
    aji::model::Model m(cfg);
    m.init_weights(1);
    m.set_precision(bf16 ? aji::model::Precision::kBf16 : aji::model::Precision::kFp32);
    aji::train::AdamW opt(m.num_params(), {0.9f, 0.95f, 1e-8f, 0.1f});
    const std::vector<aji::train::ParamGroup> groups = {aji::train::ParamGroup::whole_model(m, opt)};
    std::vector<int32_t> tok((size_t)B * T), tgt(tok.size());
    aji::Rng rng(2);
    for (auto& t : tok) t = (int32_t)rng.below(cfg.vocab_size);
    for (auto& t : tgt) t = (int32_t)rng.below(cfg.vocab_size);
    auto fb = [&] {
      m.forward(tok.data(), B, T);
      const float l = m.lm_head_loss(tgt.data());
      m.backward(m.d_hidden_buffer());
      return (double)l;
    };
    aji::train::train_step(groups, 1e-4f, 1.0, "bench", "", fb, 0);  // warm-up (primitives, arena)
    std::vector<double> times;
    const double cpu0 = process_cpu_seconds();
    for (int s = 0; s < steps; ++s) {
      const auto t0 = std::chrono::steady_clock::now();
      aji::train::train_step(groups, 1e-4f, 1.0, "bench", "", fb, s + 1);
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    const double cpu = (process_cpu_seconds() - cpu0) / steps;
    std::sort(times.begin(), times.end());
    const double med = times[times.size() / 2];
    const int th = aji::num_threads();
    const double peak = bf16 ? aji::kernels::cpu::measured_bf16_peak_gflops(th) : aji::kernels::cpu::measured_peak_gflops(th);
    const double flops = cfg.train_flops_per_token(T) * (double)B * T;
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    std::printf("{\"precision\": \"%s\", \"threads\": %d, \"step_seconds_median\": %.6f, \"step_seconds_min\": %.6f, "
                "\"cpu_seconds_per_step\": %.6f, \"tokens_per_second\": %.1f, \"peak_gflops_measured\": %.1f, "
                "\"gflops\": %.2f, \"mfu_measured\": %.4f, \"peak_rss_mib\": %.1f, \"isa\": \"%s\"}\n",
                prec.c_str(), th, med, times[0], cpu, (double)B * T / med, peak, flops / med / 1e9,
                peak > 0 ? flops / med / 1e9 / peak : 0.0, ru.ru_maxrss / 1024.0, aji::kernels::cpu::bf16_isa_name());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
