// `aji bench train-step` and `aji bench generate`: the engine's speed and memory on this
// machine, with the numbers bench/train_step_vs_torch.py compares against PyTorch.
//
// train-step: forward + LM-head loss + backward + an AdamW update (the same arithmetic as
// torch.optim.AdamW) per step; reports tokens/s, the GEMM floor (this step's linear-layer
// matrix products replayed alone through dnnl_sgemm in the same run), step/floor, MFU
// against the nominal fp32 peak, a time breakdown by op, and peak resident memory.
// generate: prompt processing and KV-cache generation tokens/s at a given batch size.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "aji/cli/command.h"
#include "aji/kernels/cpu/ops.h"
#include "aji/model/model.h"

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

// torch.optim.AdamW's arithmetic over the flat buffers (decay only where the table says).
void adamw_step(Model& m, std::vector<float>& mom, std::vector<float>& vel, int step, float lr) {
  const float b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f;
  const float bc1 = 1.0f - std::pow(b1, (float)step), bc2 = 1.0f - std::pow(b2, (float)step);
  for (const auto& t : m.tensors()) {
    float* p = m.params() + t.offset;
    const float* g = m.grads() + t.offset;
    float* mm = mom.data() + t.offset;
    float* vv = vel.data() + t.offset;
    const float decay = t.decay ? 1.0f - lr * wd : 1.0f;
    const int64_t n = (int64_t)t.numel;
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      mm[i] = b1 * mm[i] + (1.0f - b1) * g[i];
      vv[i] = b2 * vv[i] + (1.0f - b2) * g[i] * g[i];
      p[i] = p[i] * decay - lr * (mm[i] / bc1) / (std::sqrt(vv[i] / bc2) + eps);
    }
  }
}

// Replays the recorded GEMM shapes alone; returns the sum of the best of `reps` times.
double gemm_floor(const std::vector<ops::GemmShape>& shapes, int reps) {
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
  double total = 0.0;
  for (const auto& s : shapes) {
    const int64_t lda = s.trans_a == 'N' ? s.K : s.M;
    const int64_t ldb = s.trans_b == 'N' ? s.N : s.K;
    double best = 1e30;
    for (int r = 0; r < reps; ++r) {
      auto t0 = Clock::now();
      ops::sgemm(s.trans_a, s.trans_b, s.M, s.N, s.K, 1.0f, A.data(), lda, B.data(), ldb, s.beta, C.data(), s.N);
      best = std::min(best, seconds_since(t0));
    }
    total += best;
  }
  return total;
}

struct TrainOpts {
  std::string config = "tiny";
  int batch = 8, seq = 0, steps = 3;
  bool json = false, floor = true;
  double peak_gflops = 294.0;
};

void run_train_step(const TrainOpts& o) {
  ModelConfig cfg = ModelConfig::load(o.config);
  const int B = o.batch, T = o.seq > 0 ? o.seq : cfg.max_seq_len;
  if (T > cfg.max_seq_len) throw aji::Error("--seq " + std::to_string(T) + " exceeds the config's max_seq_len").fix("lower --seq");
  if (o.steps < 1) throw aji::Error("--steps must be at least 1");
  Model m(cfg);
  m.init_weights(1);
  std::vector<float> mom, vel;  // AdamW moments
  mom.assign(m.num_params(), 0.0f);
  vel.assign(m.num_params(), 0.0f);
  aji::Rng rng(2);
  std::vector<int32_t> tokens((size_t)B * T), targets((size_t)B * T);
  for (auto& t : tokens) t = (int32_t)rng.below(cfg.vocab_size);
  for (auto& t : targets) t = (int32_t)rng.below(cfg.vocab_size);

  auto step = [&](int i) {
    m.zero_grads();
    m.forward(tokens.data(), B, T);
    float loss = m.lm_head_loss(targets.data());
    m.backward(m.d_hidden_buffer());
    adamw_step(m, mom, vel, i, 1e-4f);
    return loss;
  };
  // warm-up step (allocates the arena, first-touches the buffers) with the GEMM shapes recorded
  std::vector<ops::GemmShape> shapes;
  ops::record_gemm_shapes(&shapes);
  step(1);
  ops::record_gemm_shapes(nullptr);

  ops::profile_reset();
  ops::profile_enable(true);
  std::vector<double> times;
  float loss = 0;
  for (int i = 0; i < o.steps; ++i) {
    auto t0 = Clock::now();
    loss = step(i + 2);
    times.push_back(seconds_since(t0));
  }
  ops::profile_enable(false);
  ops::OpStats st = ops::profile_stats();
  std::sort(times.begin(), times.end());
  const double t_step = times[times.size() / 2];  // median
  const double floor = o.floor ? gemm_floor(shapes, 2) : 0.0;
  const double tokens_per_step = (double)B * T;
  const double flops = cfg.train_flops_per_token(T) * tokens_per_step;
  const double mfu = flops / t_step / (o.peak_gflops * 1e9);

  nlohmann::json j;
  j["config"] = o.config;
  j["arch"] = aji::model::arch_name(cfg.arch);
  j["params"] = m.num_params();
  j["batch"] = B;
  j["seq"] = T;
  j["threads"] = aji::num_threads();
  j["steps"] = o.steps;
  j["step_seconds_median"] = t_step;
  j["step_seconds_min"] = times.front();
  j["tokens_per_second"] = tokens_per_step / t_step;
  j["gemm_floor_seconds"] = floor;
  j["step_over_floor"] = floor > 0 ? t_step / floor : 0.0;
  j["gemm_count"] = shapes.size();
  j["gflops_per_step"] = flops / 1e9;
  j["mfu"] = mfu;
  j["peak_gflops"] = o.peak_gflops;
  j["peak_rss_mib"] = peak_rss_mib();
  j["activation_mib"] = m.activation_bytes() / 1048576.0;
  j["loss"] = loss;
  nlohmann::json br = nlohmann::json::object();
  double accounted = 0;
  for (int k = 0; k < (int)ops::OpKind::kCount; ++k) {
    const double s = st.seconds[k] / o.steps;
    accounted += s;
    br[ops::op_kind_name((ops::OpKind)k)] = s;
  }
  // the rest (mean step minus the ops): AdamW, zero_grads, residual copies
  double t_mean = 0;
  for (double t : times) t_mean += t / times.size();
  br["adamw+zero+copies"] = std::max(0.0, t_mean - accounted);
  j["breakdown_seconds"] = br;
  if (o.json) {
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("train step: %s (%s, %.1fM params), B=%d T=%d, %d thread(s), %d timed steps\n", o.config.c_str(),
              aji::model::arch_name(cfg.arch), m.num_params() / 1e6, B, T, aji::num_threads(), o.steps);
  std::printf("  step %.3f s (median; min %.3f)  ->  %.0f tokens/s\n", t_step, times.front(), tokens_per_step / t_step);
  if (o.floor)
    std::printf("  GEMM floor %.3f s (%zu matmuls alone through dnnl_sgemm)  ->  step/floor %.2fx\n", floor, shapes.size(),
                t_step / floor);
  std::printf("  %.1f GFLOP/step, %.1f GFLOP/s, MFU %.1f%% of %.0f GFLOP/s\n", flops / 1e9, flops / 1e9 / t_step,
              100 * mfu, o.peak_gflops);
  std::printf("  peak RSS %.0f MiB (activations %.0f MiB)\n", peak_rss_mib(), m.activation_bytes() / 1048576.0);
  std::printf("  time by op (per step):\n");
  for (auto it = br.begin(); it != br.end(); ++it)
    std::printf("    %-18s %8.3f s  %5.1f%%\n", it.key().c_str(), it.value().get<double>(),
                100 * it.value().get<double>() / t_step);
}

struct GenOpts {
  std::string config = "tiny";
  int batch = 1, prompt = 128, gen = 64;
  bool json = false;
};

void run_generate(const GenOpts& o) {
  ModelConfig cfg = ModelConfig::load(o.config);
  if (o.prompt < 1 || o.gen < 1) throw aji::Error("--prompt-len and --gen must be at least 1");
  if (o.prompt + o.gen > cfg.max_seq_len)
    throw aji::Error("--prompt-len + --gen exceeds the context (" + std::to_string(cfg.max_seq_len) + ")").fix("lower them");
  Model m(cfg);
  m.init_weights(1);
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
  m.forward_infer(prompt.data(), B, o.prompt, cache, logits.data());
  const double t_prompt = seconds_since(t0);
  std::vector<int32_t> next(B);
  t0 = Clock::now();
  for (int i = 0; i < o.gen; ++i) {
    for (int b = 0; b < B; ++b) {
      const float* row = logits.data() + (size_t)b * V;
      next[b] = (int32_t)(std::max_element(row, row + V) - row);
    }
    m.forward_infer(next.data(), B, 1, cache, logits.data());
  }
  const double t_gen = seconds_since(t0);
  nlohmann::json j;
  j["config"] = o.config;
  j["params"] = m.num_params();
  j["batch"] = B;
  j["prompt_len"] = o.prompt;
  j["gen"] = o.gen;
  j["threads"] = aji::num_threads();
  j["prompt_tokens_per_second"] = (double)B * o.prompt / t_prompt;
  j["gen_tokens_per_second"] = (double)B * o.gen / t_gen;
  j["peak_rss_mib"] = peak_rss_mib();
  if (o.json) {
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  std::printf("generate: %s (%.1fM params), batch %d, %d thread(s)\n", o.config.c_str(), m.num_params() / 1e6, B,
              aji::num_threads());
  std::printf("  prompt processing: %d tokens/seq in %.3f s -> %.0f tokens/s\n", o.prompt, t_prompt,
              (double)B * o.prompt / t_prompt);
  std::printf("  generation: %d tokens/seq in %.3f s -> %.1f tokens/s (%.1f per sequence)\n", o.gen, t_gen,
              (double)B * o.gen / t_gen, o.gen / t_gen);
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
    cmd->add_option("--peak-gflops", opts.peak_gflops, "fp32 peak for MFU (default: 2 cores nominal)")->capture_default_str();
    cmd->callback([] { run_train_step(opts); });
  }
  {
    static GenOpts opts;
    auto* cmd = group->add_subcommand("generate", "Prompt processing and KV-cache generation speed (random weights)");
    cmd->add_option("--config", opts.config, "Model config: a preset or a JSON file")->capture_default_str();
    cmd->add_option("--batch", opts.batch, "Sequences generated together")->capture_default_str()->check(CLI::PositiveNumber);
    cmd->add_option("--prompt-len", opts.prompt, "Prompt tokens per sequence")->capture_default_str();
    cmd->add_option("--gen", opts.gen, "Generated tokens per sequence")->capture_default_str();
    cmd->add_flag("--json", opts.json, "Print one JSON object");
    cmd->callback([] { run_generate(opts); });
  }
});

}  // namespace
