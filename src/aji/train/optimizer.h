// AdamW over the model's one flat parameter buffer, global-norm gradient clipping and
// the learning-rate schedule.
//
// AdamW follows PyTorch's torch.optim.AdamW (decoupled weight decay, bias-corrected
// moments) operation for operation, so the fp32 results agree with it to rounding:
//   p *= 1 - lr*wd          (only on ranges flagged for decay: matrices, not norms,
//                            biases or embeddings)
//   m  = b1*m + (1-b1)*g
//   v  = b2*v + (1-b2)*g*g
//   p -= (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps)
// One fused pass over the buffers, parallel over chunks with OpenMP.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/base/aligned.h"
#include "aji/kernels/backend.h"

namespace aji::model {
class Model;
}

namespace aji::train {

// A contiguous slice of the parameter buffer and whether weight decay applies to it.
struct DecayRange {
  size_t offset = 0;
  size_t size = 0;
  bool decay = true;
};

struct AdamWConfig {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
};

class AdamW {
 public:
  AdamW() = default;
  AdamW(size_t n_params, AdamWConfig config);
  // A copy holds the state on the host (a device's moments are downloaded first).
  AdamW(const AdamW& o);
  AdamW& operator=(const AdamW& o);
  AdamW(AdamW&&) noexcept = default;
  AdamW& operator=(AdamW&&) noexcept = default;
  // One update of params from grads at learning rate lr. ranges must cover [0, n) (each
  // element exactly once); elements outside every range are not updated. bf16_copy (n, may
  // be null): each updated weight is also rounded into it (round_to_bf16's bits) while still
  // in cache, which saves the model a pass over all its weights; returns whether it did
  // (not when sharded: the all-gathered parts are written by other ranks).
  // On a device (place_on): params and grads are the device's memory, and the update runs
  // there (Backend::adamw_update, the same per-element arithmetic and scalars).
  bool step(float* params, const float* grads, const std::vector<DecayRange>& ranges, float lr,
            uint16_t* bf16_copy = nullptr);

  // Where m and v live and step() runs: a device with memory of its own (Model::on_device's
  // backend: the moments are uploaded once and stay there) or, for null or the CPU backend,
  // the host. Moving back to the host brings the moments along. m(), v(), save() and
  // gathered() read the host copies, downloaded when the device's are newer.
  void place_on(std::shared_ptr<kernels::Backend> device);
  kernels::Backend* device() const { return device_.get(); }  // null on the host

  int64_t step_count() const { return t_; }
  const AdamWConfig& config() const { return config_; }
  AlignedFloats& m();  // host copies (downloaded first on a device; written back before its next step)
  AlignedFloats& v();

  // ZeRO-1 (data parallelism, docs/distributed.md): shard() keeps m and v only for this
  // rank's part of the buffer, [shard_begin(), shard_end()) (the ranks' parts are consecutive,
  // n / ranks each); step() then updates only those elements and all-gathers the parameters
  // from every rank (a collective: every rank calls step). Optimizer memory per rank falls
  // as 1/N; the results are the unsharded ones (the same per-element arithmetic).
  // One process: nothing changes. gathered() is the whole state (a collective; the full
  // m and v on `root`, empty elsewhere), which is what checkpoints hold, so a sharded run
  // resumes with any number of ranks; load() of a sharded optimizer keeps its part.
  void shard();
  bool sharded() const { return sharded_; }
  size_t size() const { return n_; }  // parameters covered (m().size() when not sharded)
  size_t shard_begin() const { return lo_; }
  size_t shard_end() const { return lo_ + m_.size(); }
  AdamW gathered(int root = 0) const;

  // optimizer.bin: magic "AJIADAMW", version, n, step, config, m, v, checksum.
  void save(const std::filesystem::path& path) const;  // not sharded (save gathered())
  void load(const std::filesystem::path& path);  // n must match; errors name the file

 private:
  AdamWConfig config_;
  mutable AlignedFloats m_, v_;  // 2 MiB pages when large (base/aligned.h)
  int64_t t_ = 0;
  // On a device: the moments there (m then v, 2n floats); which copy is newer.
  std::shared_ptr<kernels::Backend> device_;
  std::unique_ptr<kernels::DeviceMem> d_mv_;
  mutable bool host_stale_ = false;  // the device's moments are newer than m_, v_
  bool device_stale_ = true;   // m_, v_ may be newer than the device's (loaded, or handed out)
  void sync_host() const;
  size_t n_ = 0, lo_ = 0;
  bool sharded_ = false;
};

// ZeRO-1 asked for (AJI_ZERO=1 in the environment, the one place it is declared) in a job of
// more than one rank: train_step shards each group's optimizer at its first step.
bool zero1_requested();

// The decay ranges of every tensor of a model (all parameters trained; decay as the
// model's tensor table says: matrices yes, norms, biases and embeddings no).
std::vector<DecayRange> all_parameter_ranges(const model::Model& model);

// sqrt(sum g^2) over the buffer, accumulated in double (deterministic for a fixed
// thread count and order: fixed chunks, summed in order).
double global_grad_norm(const float* grads, size_t n);
// torch.nn.utils.clip_grad_norm_'s factor for a gradient of norm `norm`: max_norm/(norm+1e-6),
// as a float (what every clipping multiplies by, on any device).
inline float clip_scale(double max_norm, double norm) { return static_cast<float>(max_norm / (norm + 1e-6)); }
// torch.nn.utils.clip_grad_norm_: if norm > max_norm, scale by max_norm/(norm+1e-6).
// Returns the norm before clipping. max_norm <= 0 disables clipping.
double clip_grad_norm(float* grads, size_t n, double max_norm);

// Learning-rate schedule: linear warmup from lr/warmup to lr over `warmup` steps, then
// decay to lr*min_lr_frac at the last step (cosine or linear), or constant.
struct LrSchedule {
  enum class Decay { kCosine, kLinear, kConstant };
  float lr = 1e-3f;
  int64_t warmup = 0;
  int64_t total = 1;  // total optimizer steps
  float min_lr_frac = 0.1f;
  Decay decay = Decay::kCosine;

  float at(int64_t step) const;  // step is 0-based
  nlohmann::json to_json() const;
  static Decay parse_decay(const std::string& name);  // "cosine" | "linear" | "constant"
  static std::string decay_name(Decay d);
};

}  // namespace aji::train
