// `aji bench train-step` and `aji bench generate`: the engine's speed and memory on this
// machine, with the numbers bench/train_step_vs_torch.py compares against PyTorch.
//
// train-step: forward + LM-head loss + backward + the trainer's AdamW update (the same
// arithmetic as torch.optim.AdamW) per step; reports tokens/s, the GEMM floor (this step's
// linear-layer matrix products replayed alone through dnnl_sgemm in the same run),
// step/floor, each product's time in the step against alone (--gemm-detail), MFU against
// the nominal fp32 peak, a time breakdown by op, and peak resident memory.
// generate: prompt processing and KV-cache generation tokens/s at a given batch size.
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "aji/cli/command.h"
#include "aji/cli/model_loader.h"
#include "aji/kernels/backend.h"
#include "aji/kernels/cpu/fma_peak.h"
#include "aji/kernels/cpu/ops.h"
#include "aji/model/model.h"
#include "aji/train/optimizer.h"
#include "aji/train/trainer_run.h"

namespace {

namespace ops = aji::kernels::cpu;
using aji::model::Model;
using aji::model::ModelConfig;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double peak_rss_mib() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;  // ru_maxrss is in KiB on Linux
}

double process_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}
double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct Floor {
  double wall = 0, cpu = 0;
  std::vector<double> per_shape;  // best wall time of each shape alone
};

// Replays the recorded GEMM shapes alone; sums each shape's best of `reps` (wall and
// process CPU time separately).
Floor gemm_floor(const std::vector<ops::GemmShape>& shapes, int reps) {
  size_t max_a = 0, max_b = 0, max_c = 0;
  for (const auto& s : shapes) {
    max_a = std::max(max_a, (size_t)(s.M * s.K));
    max_b = std::max(max_b, (size_t)(s.K * s.N));
    max_c = std::max(max_c, (size_t)(s.M * s.N));
  }
  std::vector<float> A(max_a), B(max_b), C(max_c, 0.0f);
  aji::Rng rng(1);
  for (auto& x : A) x = rng.uniform_float() - 0.5f;
  for (auto& x : B) x = rng.uniform_float() - 0.5f;
  Floor total;
  for (const auto& s : shapes) {
    const int64_t lda = s.trans_a == 'N' ? s.K : s.M;
    const int64_t ldb = s.trans_b == 'N' ? s.N : s.K;
    double best = 1e30, best_cpu = 1e30;
    for (int r = 0; r < reps; ++r) {
      auto t0 = Clock::now();
      const double c0 = process_cpu_seconds();
      ops::sgemm(s.trans_a, s.trans_b, s.M, s.N, s.K, 1.0f, A.data(), lda, B.data(), ldb, s.beta, C.data(), s.N);
      best = std::min(best, seconds_since(t0));
      best_cpu = std::min(best_cpu, process_cpu_seconds() - c0);
    }
    total.wall += best;
    total.cpu += best_cpu;
    total.per_shape.push_back(best);
  }
  return total;
}

struct TrainOpts {
  std::string config = "tiny";
  int batch = 8, seq = 0, steps = 3;
  bool json = false, floor = true, gemm_detail = false;
  double peak_gflops = 294.0;
  double device_peak_tflops = 0;  // --device-peak-tflops: a device's nominal peak, for a second MFU
  std::string precision = "fp32";
  std::string device = "cpu";
};

// The device's GEMM ceiling for a step's products: GFLOP/s of the step's widest product, out
// (N,OC) = inp (N,IC) x W, in the step's precision (fp32, TF32 or bf16 products as the backend
// is set), on random data, timed over repetitions after a warm-up (at least 0.25 s or 200).
double device_gemm_ceiling_gflops(aji::kernels::Backend& be, bool bf16, int64_t N, int IC, int OC) {
  aji::Rng rng(7);
  std::vector<float> host((size_t)std::max<int64_t>(N * IC, (int64_t)IC * OC));
  for (auto& x : host) x = rng.uniform_float() - 0.5f;
  aji::kernels::DeviceMem inp, w, w16, out;
  inp.ensure(be, sizeof(float) * (size_t)(N * IC));
  w.ensure(be, sizeof(float) * (size_t)IC * OC);
  out.ensure(be, sizeof(float) * (size_t)(N * OC));
  be.to_device(inp.p, host.data(), sizeof(float) * (size_t)(N * IC));
  be.to_device(w.p, host.data(), sizeof(float) * (size_t)IC * OC);
  if (bf16) {
    w16.ensure(be, sizeof(uint16_t) * (size_t)IC * OC);
    be.round_to_bf16(static_cast<uint16_t*>(w16.p), w.f(), (size_t)IC * OC);
  }
  auto product = [&] {
    if (bf16)
      be.matmul_forward_bf16(out.f(), inp.f(), static_cast<const uint16_t*>(w16.p), nullptr, N, IC, OC,
                             aji::kernels::WeightLayout::kOutIn, false);
    else
      be.matmul_forward(out.f(), inp.f(), w.f(), nullptr, N, IC, OC, aji::kernels::WeightLayout::kOutIn, false);
  };
  product();  // warm-up: the algorithm's choice, the workspace
  be.synchronize();
  int reps = 0;
  const auto t0 = Clock::now();
  double t = 0;
  while (reps < 200 && (reps < 3 || t < 0.25)) {
    product();
    ++reps;
    if (reps % 4 == 0 || reps < 4) {
      be.synchronize();
      t = seconds_since(t0);
    }
  }
  be.synchronize();
  t = seconds_since(t0);
  return 2.0 * (double)N * IC * OC * reps / t / 1e9;
}

// train-step on a device (--device cuda): the trainers' step (train/trainer_run.h train_step:
// zero, forward, loss, backward, the gradient norm and clipping, AdamW, all on the device) timed
// as a whole, tokens/s and the achieved GFLOP/s; MFU against the device's GEMM ceiling measured
// in the same run (device_gemm_ceiling_gflops: the step's widest product, in its precision), and
// against --device-peak-tflops when given (e.g. 989 for an H100/H200's dense bf16); no GEMM
// floor or op breakdown.
void run_train_step_device(const TrainOpts& o, Model& m, const std::shared_ptr<aji::kernels::Backend>& device, int B,
                           int T) {
  const ModelConfig& cfg = m.config();
  m.set_device(device);
  aji::train::AdamW adamw(m.num_params(), aji::train::AdamWConfig{});
  const std::vector<aji::train::ParamGroup> groups = {aji::train::ParamGroup::whole_model(m, adamw)};
  aji::Rng rng(2);
  std::vector<int32_t> tokens((size_t)B * T), targets((size_t)B * T);
  for (auto& t : tokens) t = (int32_t)rng.below(cfg.vocab_size);
  for (auto& t : targets) t = (int32_t)rng.below(cfg.vocab_size);
  int64_t step_index = 0;
  auto step = [&]() {
    const aji::train::StepStats st = aji::train::train_step(groups, 1e-4f, 1.0, "Benchmark", {}, [&] {
      m.forward(tokens.data(), B, T);
      const float loss = m.lm_head_loss(targets.data());
      m.backward_from_head();
      return static_cast<double>(loss);
    }, step_index++);
    device->synchronize();
    return static_cast<float>(st.loss);
  };
  step();  // warm-up: device buffers, cuBLASLt's choices
  std::vector<double> times;
  float loss = 0;
  for (int i = 0; i < o.steps; ++i) {
    auto t0 = Clock::now();
    loss = step();
    times.push_back(seconds_since(t0));
  }
  std::sort(times.begin(), times.end());
  const double t_step = times[times.size() / 2];
  const double tokens_per_step = (double)B * T, flops = cfg.train_flops_per_token(T) * tokens_per_step;
  // the ceiling: the FFN's up (or gate/up) product of this step, the widest of the layers'
  const bool bf16 = m.precision() == aji::model::Precision::kBf16;
  const int FF = cfg.is_gpt2() ? cfg.ff() : 2 * cfg.ff();
  const double ceiling = device_gemm_ceiling_gflops(*device, bf16, (int64_t)B * T, cfg.d_model, FF);
  const double achieved = flops / 1e9 / t_step;
  const double mfu_ceiling = achieved / ceiling;
  const double mfu_nominal = o.device_peak_tflops > 0 ? achieved / (o.device_peak_tflops * 1e3) : 0.0;
  nlohmann::json j = {{"config", o.config}, {"arch", aji::model::arch_name(cfg.arch)}, {"params", m.num_params()},
                      {"batch", B}, {"seq", T}, {"device", device->describe()},
                      {"precision", device->matmul_tf32() ? "tf32" : aji::model::precision_name(m.precision())},
                      {"steps", o.steps}, {"step_seconds_median", t_step}, {"step_seconds_min", times.front()},
                      {"tokens_per_second", tokens_per_step / t_step}, {"gflops_per_step", flops / 1e9},
                      {"peak_rss_mib", peak_rss_mib()}, {"loss", loss},
                      {"gemm_ceiling_gflops", ceiling}, {"mfu_vs_gemm_ceiling", mfu_ceiling}};
  if (o.device_peak_tflops > 0) {
    j["device_peak_tflops"] = o.device_peak_tflops;
    j["mfu_vs_device_peak"] = mfu_nominal;
  }
  if (o.json) {
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("train step: %s (%s, %.1fM params), B=%d T=%d on %s, %s, %d timed steps\n", o.config.c_str(),
              aji::model::arch_name(cfg.arch), m.num_params() / 1e6, B, T, device->describe().c_str(),
              device->matmul_tf32()                          ? "fp32 with TF32 products"
              : m.precision() == aji::model::Precision::kBf16 ? "bf16 mixed precision"
                                                              : "fp32",
              o.steps);
  std::printf("  step %.4f s wall (median; min %.4f)  ->  %.0f tokens/s, %.1f GFLOP/s achieved (forward, backward "
              "and AdamW on the device)\n",
              t_step, times.front(), tokens_per_step / t_step, achieved);
  std::printf("  MFU %.1f%% of this device's GEMM ceiling, %.1f GFLOP/s measured now (a %lld x %d x %d product in "
              "the step's precision)",
              100 * mfu_ceiling, ceiling, (long long)B * T, cfg.d_model, FF);
  if (o.device_peak_tflops > 0)
    std::printf("; %.1f%% of the %g TFLOP/s given by --device-peak-tflops", 100 * mfu_nominal,
                o.device_peak_tflops);
  std::printf("\n");
  std::printf("  peak host RSS %.0f MiB, loss %.4f\n", peak_rss_mib(), loss);
}

void run_train_step(const TrainOpts& o) {
  ModelConfig cfg = ModelConfig::load(o.config);
  const int B = o.batch, T = o.seq > 0 ? o.seq : cfg.max_seq_len;
  if (T > cfg.max_seq_len) throw aji::Error("--seq " + std::to_string(T) + " exceeds the config's max_seq_len").fix("lower --seq");
  if (o.steps < 1) throw aji::Error("--steps must be at least 1");
  const std::shared_ptr<aji::kernels::Backend> device = aji::train::open_run_device(o.device);
  aji::train::require_precision_fits_device(o.precision, device.get());
  if (device) device->set_matmul_tf32(o.precision == "tf32");
  Model m(cfg);
  if (device) {
    m.init_weights(1);
    std::string note;  // bf16 where the device has bf16 products (Backend::bf16_products)
    m.set_precision(aji::train::resolve_precision(o.precision, &note, device.get()));
    run_train_step_device(o, m, device, B, T);
    return;
  }
  m.init_weights(1);
  std::string precision_note;
  const bool bf16 = aji::train::resolve_precision(o.precision, &precision_note) == aji::model::Precision::kBf16;
  m.set_precision(bf16 ? aji::model::Precision::kBf16 : aji::model::Precision::kFp32);
  // The GEMM floor replays the step's fp32 products through dnnl_sgemm: not a floor of bf16 ones.
  const bool with_floor = o.floor && !bf16;
  aji::train::AdamW adamw(m.num_params(), aji::train::AdamWConfig{});  // the trainer's optimizer
  const std::vector<aji::train::DecayRange> ranges = aji::train::all_parameter_ranges(m);
  aji::Rng rng(2);
  std::vector<int32_t> tokens((size_t)B * T), targets((size_t)B * T);
  for (auto& t : tokens) t = (int32_t)rng.below(cfg.vocab_size);
  for (auto& t : targets) t = (int32_t)rng.below(cfg.vocab_size);

  float* params = m.params();
  auto step = [&]() {
    m.zero_grads();
    m.forward(tokens.data(), B, T);
    float loss = m.lm_head_loss(targets.data());
    m.backward_from_head();
    aji::train::step_model_weights(adamw, m, params, m.grads(), ranges, 1e-4f);  // as train_step does
    return loss;
  };
  // warm-up step (allocates the arena, first-touches the buffers) with the GEMM shapes recorded
  std::vector<ops::GemmShape> shapes;
  ops::record_gemm_shapes(&shapes);
  step();
  ops::record_gemm_shapes(nullptr);

  ops::profile_reset();
  ops::profile_enable(true);
  std::vector<double> times, cpu_times, main_cpu;
  std::vector<ops::GemmShape> timed_gemms;  // every product of the timed steps, with its time
  ops::record_gemm_shapes(&timed_gemms);
  float loss = 0;
  for (int i = 0; i < o.steps; ++i) {
    auto t0 = Clock::now();
    const double c0 = process_cpu_seconds(), m0 = thread_cpu_seconds();
    loss = step();
    times.push_back(seconds_since(t0));
    cpu_times.push_back(process_cpu_seconds() - c0);
    main_cpu.push_back(thread_cpu_seconds() - m0);
  }
  ops::profile_enable(false);
  ops::record_gemm_shapes(nullptr);
  ops::OpStats st = ops::profile_stats();
  double main_cpu_mean = 0;
  for (double t : main_cpu) main_cpu_mean += t / main_cpu.size();
  std::sort(times.begin(), times.end());
  std::sort(cpu_times.begin(), cpu_times.end());
  const double t_step = times[times.size() / 2];  // medians
  const double c_step = cpu_times[cpu_times.size() / 2];
  Floor floor;
  if (with_floor) floor = gemm_floor(shapes, 2);
  // Each product's best time inside the timed steps, to set against its time alone.
  std::vector<double> in_step(shapes.size(), 1e30);
  const bool comparable = timed_gemms.size() == shapes.size() * (size_t)o.steps;
  double in_step_total = 0;
  if (comparable) {
    for (size_t i = 0; i < timed_gemms.size(); ++i)
      in_step[i % shapes.size()] = std::min(in_step[i % shapes.size()], timed_gemms[i].seconds);
    for (double t : in_step) in_step_total += t;
  }
  const double tokens_per_step = (double)B * T;
  const double flops = cfg.train_flops_per_token(T) * tokens_per_step;
  const double mfu = flops / t_step / (o.peak_gflops * 1e9);
  // against what these cores run, measured now (the nominal figure above is a spec-sheet number)
  // (bf16: against the measured vdpbf16ps peak, as `aji pretrain --precision bf16` reports it)
  const double measured_peak =
      bf16 ? ops::measured_bf16_peak_gflops(aji::num_threads()) : ops::measured_peak_gflops(aji::num_threads());
  const double mfu_measured = flops / t_step / (measured_peak * 1e9);

  nlohmann::json j;
  j["config"] = o.config;
  j["arch"] = aji::model::arch_name(cfg.arch);
  j["params"] = m.num_params();
  j["batch"] = B;
  j["seq"] = T;
  j["threads"] = aji::num_threads();
  j["precision"] = bf16 ? "bf16" : "fp32";
  j["steps"] = o.steps;
  j["step_seconds_median"] = t_step;
  j["step_seconds_min"] = times.front();
  j["step_cpu_seconds_median"] = c_step;
  j["tokens_per_second"] = tokens_per_step / t_step;
  j["tokens_per_cpu_second"] = tokens_per_step / c_step;
  j["gemm_floor_seconds"] = floor.wall;
  j["gemm_floor_cpu_seconds"] = floor.cpu;
  j["step_over_floor"] = floor.wall > 0 ? t_step / floor.wall : 0.0;
  j["step_over_floor_cpu"] = floor.cpu > 0 ? c_step / floor.cpu : 0.0;
  j["gemm_count"] = shapes.size();
  if (comparable) j["gemm_in_step_seconds"] = in_step_total;
  j["gflops_per_step"] = flops / 1e9;
  j["mfu"] = mfu;
  j["gflops_per_cpu_second"] = flops / 1e9 / c_step;
  j["peak_gflops"] = o.peak_gflops;
  j["mfu_measured"] = mfu_measured;
  j["peak_gflops_measured"] = measured_peak;
  j["peak_rss_mib"] = peak_rss_mib();
  j["activation_mib"] = m.activation_bytes() / 1048576.0;
  j["loss"] = loss;
  // CPU time of the calling thread per op kind (exact with 1 thread); the rest is AdamW,
  // zero_grads and the residual copies.
  nlohmann::json br = nlohmann::json::object();
  double accounted = 0;
  for (int k = 0; k < (int)ops::OpKind::kCount; ++k) {
    const double s = st.cpu_seconds[k] / o.steps;
    accounted += s;
    br[ops::op_kind_name((ops::OpKind)k)] = s;
  }
  // bf16 products are not in the op profile (kernels/cpu/bf16_gemm.cpp): in the remainder
  br[bf16 ? "bf16 gemm+adamw+zero+copies" : "adamw+zero+copies"] = std::max(0.0, main_cpu_mean - accounted);
  j["breakdown_cpu_seconds"] = br;
  j["main_thread_cpu_seconds"] = main_cpu_mean;
  if (o.json) {
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("train step: %s (%s, %.1fM params), B=%d T=%d, %d thread(s), %d timed steps, %s\n", o.config.c_str(),
              aji::model::arch_name(cfg.arch), m.num_params() / 1e6, B, T, aji::num_threads(), o.steps,
              precision_note.c_str());
  std::printf("  step %.3f s wall (median; min %.3f), %.3f CPU-s  ->  %.0f tokens/s, %.0f tokens per CPU-s\n", t_step,
              times.front(), c_step, tokens_per_step / t_step, tokens_per_step / c_step);
  if (o.floor && bf16) std::printf("  GEMM floor: not measured in bf16 (the replay runs fp32 sgemm)\n");
  if (with_floor)
    std::printf("  GEMM floor %.3f s wall, %.3f CPU-s (%zu matmuls alone through dnnl_sgemm)  ->  step/floor %.2fx wall, "
                "%.2fx CPU\n",
                floor.wall, floor.cpu, shapes.size(), t_step / floor.wall, c_step / floor.cpu);
  if (with_floor && comparable) {
    std::printf("  the same matmuls inside the step: %.3f s (best of each call)  ->  %.2fx their time alone\n",
                in_step_total, in_step_total / floor.wall);
    if (o.gemm_detail) {
      std::vector<size_t> order(shapes.size());
      for (size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
        return in_step[a] - floor.per_shape[a] > in_step[b] - floor.per_shape[b];
      });
      std::printf("  matmuls slowest in the step against alone (call #, op(A) op(B), M x N x K):\n");
      for (size_t r = 0; r < std::min<size_t>(12, order.size()); ++r) {
        const size_t i = order[r];
        const auto& s = shapes[i];
        std::printf("    #%-3zu %c%c %5lld x %5lld x %5lld%s  in step %7.2f ms  alone %7.2f ms  %.2fx\n", i, s.trans_a,
                    s.trans_b, (long long)s.M, (long long)s.N, (long long)s.K, s.beta != 0.0f ? " (+=)" : "     ",
                    in_step[i] * 1e3, floor.per_shape[i] * 1e3, in_step[i] / floor.per_shape[i]);
      }
    }
  }
  std::printf("  %.1f GFLOP/step, %.1f GFLOP/s (%.1f per CPU-s), MFU %.1f%% of %.0f GFLOP/s nominal (fp32), %.1f%% of "
              "the %.0f GFLOP/s %s peak these %d core(s) measure\n",
              flops / 1e9, flops / 1e9 / t_step, flops / 1e9 / c_step, 100 * mfu, o.peak_gflops, 100 * mfu_measured,
              measured_peak, bf16 ? "bf16" : "fp32", aji::num_threads());
  std::printf("  peak RSS %.0f MiB (activations %.0f MiB)\n", peak_rss_mib(), m.activation_bytes() / 1048576.0);
  std::printf("  CPU time of the main thread by op (per step, %.3f s in all):\n", main_cpu_mean);
  for (auto it = br.begin(); it != br.end(); ++it)
    std::printf("    %-18s %8.3f s  %5.1f%%\n", it.key().c_str(), it.value().get<double>(),
                100 * it.value().get<double>() / main_cpu_mean);
}

struct GenOpts {
  std::string config = "tiny";
  int batch = 1, prompt = 128, gen = 64;
  bool json = false;
  std::string weights = "fp32";
  std::string kv_cache = "fp32";
  std::string device = "cpu";
};

void run_generate(const GenOpts& o) {
  ModelConfig cfg = ModelConfig::load(o.config);
  if (o.prompt < 1 || o.gen < 1) throw aji::Error("--prompt-len and --gen must be at least 1");
  if (o.prompt + o.gen > cfg.max_seq_len)
    throw aji::Error("--prompt-len + --gen exceeds the context (" + std::to_string(cfg.max_seq_len) + ")").fix("lower them");
  const std::shared_ptr<aji::kernels::Backend> device = aji::cli::open_inference_device(o.device, o.weights, o.kv_cache);
  Model m(cfg);
  m.init_weights(1);
  aji::cli::apply_weights(m, o.weights, false);
  aji::cli::apply_kv_cache(m, o.kv_cache);
  if (device) m.set_device(device);  // the caches are made there too; a step brings back only the logits
  const int V = cfg.vocab_size, B = o.batch;
  aji::Rng rng(3);
  std::vector<int32_t> prompt((size_t)B * o.prompt);
  for (auto& t : prompt) t = (int32_t)rng.below(V);
  std::vector<float> logits((size_t)B * V);
  {  // warm-up (allocates, first-touches)
    aji::model::KVCache warm = m.make_cache(B, o.prompt + o.gen);
    m.forward_infer(prompt.data(), B, std::min(o.prompt, 8), warm, logits.data());
  }
  aji::model::KVCache cache = m.make_cache(B, o.prompt + o.gen);
  auto t0 = Clock::now();
  double c0 = process_cpu_seconds();
  m.forward_infer(prompt.data(), B, o.prompt, cache, logits.data());
  const double t_prompt = seconds_since(t0), c_prompt = process_cpu_seconds() - c0;
  std::vector<int32_t> next(B);
  t0 = Clock::now();
  c0 = process_cpu_seconds();
  for (int i = 0; i < o.gen; ++i) {
    for (int b = 0; b < B; ++b) {
      const float* row = logits.data() + (size_t)b * V;
      next[b] = (int32_t)(std::max_element(row, row + V) - row);
    }
    m.forward_infer(next.data(), B, 1, cache, logits.data());
  }
  const double t_gen = seconds_since(t0), c_gen = process_cpu_seconds() - c0;
  nlohmann::json j;
  j["config"] = o.config;
  j["params"] = m.num_params();
  j["batch"] = B;
  j["prompt_len"] = o.prompt;
  j["gen"] = o.gen;
  j["threads"] = aji::num_threads();
  j["weights"] = o.weights;
  j["kv_cache"] = o.kv_cache;
  j["device"] = device ? device->describe() : "cpu";
  j["prompt_tokens_per_second"] = (double)B * o.prompt / t_prompt;
  j["gen_tokens_per_second"] = (double)B * o.gen / t_gen;
  j["prompt_tokens_per_cpu_second"] = (double)B * o.prompt / c_prompt;
  j["gen_tokens_per_cpu_second"] = (double)B * o.gen / c_gen;
  j["peak_rss_mib"] = peak_rss_mib();
  if (o.json) {
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("generate: %s (%.1fM params), batch %d, %s\n", o.config.c_str(), m.num_params() / 1e6, B,
              device ? device->describe().c_str() : (std::to_string(aji::num_threads()) + " thread(s)").c_str());
  std::printf("  prompt processing: %d tokens/seq in %.3f s (%.3f CPU-s) -> %.0f tokens/s, %.0f per CPU-s\n", o.prompt,
              t_prompt, c_prompt, (double)B * o.prompt / t_prompt, (double)B * o.prompt / c_prompt);
  std::printf("  generation: %d tokens/seq in %.3f s (%.3f CPU-s) -> %.1f tokens/s, %.1f per CPU-s\n", o.gen, t_gen,
              c_gen, (double)B * o.gen / t_gen, (double)B * o.gen / c_gen);
  std::printf("  peak RSS %.0f MiB\n", peak_rss_mib());
}

aji::cli::CommandRegistrar reg(900, [](CLI::App& app) {
  auto* group = aji::cli::subcommand_group(app, "bench", "Measure the engine's speed on this machine");
  {
    static TrainOpts opts;
    auto* cmd = group->add_subcommand("train-step", "Training step speed, GEMM floor, op breakdown and peak memory");
    cmd->add_option("--config", opts.config, "Model config: a preset (tiny, tiny-gpt2, gpt2-124m, llama-small) or a JSON file")
        ->capture_default_str();
    cmd->add_option("--batch", opts.batch, "Sequences per step")->capture_default_str()->check(CLI::PositiveNumber);
    cmd->add_option("--seq", opts.seq, "Sequence length (default: the config's max_seq_len)");
    cmd->add_option("--steps", opts.steps, "Timed steps (after one warm-up step)")->capture_default_str();
    cmd->add_flag("--json", opts.json, "Print one JSON object");
    cmd->add_flag("!--no-floor", opts.floor, "Skip the GEMM-floor replay");
    cmd->add_flag("--gemm-detail", opts.gemm_detail,
                  "List the matmuls that run slowest inside the step against their time alone");
    cmd->add_option("--peak-gflops", opts.peak_gflops, "fp32 peak for MFU (default: 2 cores nominal)")->capture_default_str();
    cmd->add_option("--device-peak-tflops", opts.device_peak_tflops,
                    "with --device: the device's nominal peak in the step's precision (e.g. 989 for an H100/H200's "
                    "dense bf16), for an MFU beside the one against the GEMM ceiling measured in the run")
        ->check(CLI::Range(0.0, 1e6));
    cmd->add_option("--precision", opts.precision,
                    "fp32, bf16, auto or tf32: the training path's products (bf16: fp32 where the CPU has no bf16 "
                    "products; tf32: TF32 products on a CUDA device)")
        ->capture_default_str()
        ->check(CLI::IsMember({"fp32", "bf16", "auto", "tf32"}));
    cmd->add_option("--device", opts.device, "cpu, cuda or cuda:N: where the step's forward and backward run "
                                             "(docs/cuda.md)")
        ->capture_default_str();
    cmd->callback([] { run_train_step(opts); });
  }
  {
    static GenOpts opts;
    auto* cmd = group->add_subcommand("generate", "Prompt processing and KV-cache generation speed (random weights)");
    cmd->add_option("--config", opts.config, "Model config: a preset or a JSON file")->capture_default_str();
    cmd->add_option("--batch", opts.batch, "Sequences generated together")->capture_default_str()->check(CLI::PositiveNumber);
    cmd->add_option("--prompt-len", opts.prompt, "Prompt tokens per sequence")->capture_default_str();
    cmd->add_option("--gen", opts.gen, "Generated tokens per sequence")->capture_default_str();
    aji::cli::add_weights_option(cmd, opts.weights);
    aji::cli::add_kv_cache_option(cmd, opts.kv_cache);
    aji::cli::add_device_option(cmd, opts.device);
    cmd->add_flag("--json", opts.json, "Print one JSON object");
    cmd->callback([] { run_generate(opts); });
  }
});

}  // namespace
