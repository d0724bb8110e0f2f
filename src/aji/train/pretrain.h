// `aji pretrain`: next-token-prediction training of a model from token shards.
//
// One optimizer step = grad_accum micro-batches of (B,T) tokens, where grad_accum =
// total_batch_tokens / (B*T); the loss of each micro-batch is scaled by 1/grad_accum so
// the accumulated gradient is the mean over the whole batch. Then global-norm clipping,
// the LR schedule, AdamW. Everything that decides the next step (weights, AdamW moments,
// loader cursor, schedule, step) is in the checkpoint, so --resume continues the run bit
// for bit (with the same thread count: OpenMP reductions fix their order per count).
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace aji::train {

struct PretrainOptions {
  std::filesystem::path config;  // model config file or preset name (ignored on resume)
  std::filesystem::path data_dir;
  std::filesystem::path out_dir;
  int64_t steps = 0;   // optimizer steps; 0 = from tokens
  int64_t tokens = 0;  // or a token budget
  double time_budget_s = 0;  // or a wall-clock budget: steps are set from the speed of the first steps
  bool resume = false;
  bool force = false;
  int batch = 8;                   // B (micro-batch rows)
  int seq_len = 0;                 // T; 0 = the model's context
  int64_t total_batch_tokens = 0;  // tokens per optimizer step; 0 = B*T (no accumulation)
  float lr = 2e-3f;
  float min_lr_frac = 0.1f;
  int64_t warmup = -1;  // -1 = 5% of the steps, at most 200
  std::string decay = "cosine";
  float weight_decay = 0.1f;
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float grad_clip = 1.0f;
  int eval_every = 100;   // 0 = only at the end
  int eval_batches = 20;
  int sample_every = 200;  // 0 = never
  int sample_tokens = 64;
  std::string sample_prompt;  // after BOS
  int save_every = 500;       // 0 = only at the end
  int keep = 3;
  uint64_t seed = 1337;
  double peak_gflops_per_core = 0.0;  // fp32 peak of one core for MFU; 0 = measure it (FMA probe)
  int64_t stop_after = 0;  // end this session after N steps (checkpoint saved); 0 = off
  bool quiet = false;
  // Called after every optimizer step with (step, train loss); for tests and front ends.
  std::function<void(int64_t, float)> on_step;
};

struct PretrainResult {
  int64_t step = 0;                 // optimizer steps completed (total, across sessions)
  std::vector<float> step_losses;   // train loss of each step run in this session
  float last_val_loss = NAN;
  float last_val_bpb = NAN;
  bool interrupted = false;         // Ctrl-C or --stop-after
  std::filesystem::path checkpoint; // the last checkpoint written
};

PretrainResult pretrain(const PretrainOptions& options);

}  // namespace aji::train
