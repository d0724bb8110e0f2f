#include "aji/train/optimizer.h"

#include "aji/kernels/backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "aji/base/atomic_file.h"
#include "aji/base/dist.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/threads.h"
#include "aji/kernels/cpu/bf16_gemm.h"
#include "aji/model/model.h"
#include "aji/train/shards.h"

namespace aji::train {

AdamW::AdamW(size_t n_params, AdamWConfig config)
    : config_(config), m_(n_params, 0.0f), v_(n_params, 0.0f), n_(n_params) {}

AdamW::AdamW(const AdamW& o) { *this = o; }

AdamW& AdamW::operator=(const AdamW& o) {
  if (this == &o) return *this;
  o.sync_host();
  config_ = o.config_;
  m_ = o.m_;
  v_ = o.v_;
  t_ = o.t_;
  n_ = o.n_;
  lo_ = o.lo_;
  sharded_ = o.sharded_;
  device_.reset();
  d_mv_.reset();
  host_stale_ = false;
  device_stale_ = true;
  return *this;
}

void AdamW::sync_host() const {
  if (!host_stale_) return;
  device_->to_host(m_.data(), d_mv_->f(), m_.size() * sizeof(float));
  device_->to_host(v_.data(), d_mv_->f() + m_.size(), v_.size() * sizeof(float));
  host_stale_ = false;
}

AlignedFloats& AdamW::m() {
  sync_host();
  device_stale_ = true;  // the caller may write it
  return m_;
}

AlignedFloats& AdamW::v() {
  sync_host();
  device_stale_ = true;
  return v_;
}

void AdamW::place_on(std::shared_ptr<kernels::Backend> device) {
  if (device && device.get() == &kernels::cpu_backend()) device = nullptr;  // the host buffers
  if (device == device_) return;
  sync_host();  // the moments come along
  AJI_CHECK(!device || !sharded_, "AdamW::place_on: a sharded (ZeRO-1) optimizer on a device is not built");
  d_mv_.reset();
  device_ = std::move(device);
  device_stale_ = true;
  host_stale_ = false;
}

namespace {
// ZeRO-1's parts of a buffer of n elements: rank r holds [n*r/N, n*(r+1)/N).
std::vector<size_t> zero_counts(size_t n, int ranks) {
  std::vector<size_t> c(static_cast<size_t>(ranks));
  for (int r = 0; r < ranks; ++r)
    c[static_cast<size_t>(r)] = n * static_cast<size_t>(r + 1) / static_cast<size_t>(ranks) -
                                n * static_cast<size_t>(r) / static_cast<size_t>(ranks);
  return c;
}
}  // namespace

bool zero1_requested() {
  static const bool on = [] {
    const char* v = std::getenv("AJI_ZERO");
    if (v == nullptr || std::string(v).empty() || std::string(v) == "0") return false;
    if (std::string(v) != "1")
      throw Error(std::string("AJI_ZERO=") + v + " is not a ZeRO stage aji has")
          .fix("use AJI_ZERO=1 (AdamW's state sharded over the ranks) or leave it unset");
    return true;
  }();
  return on && dist::launch_size() > 1;
}

void AdamW::shard() {
  dist::Communicator& comm = dist::world();
  if (sharded_ || comm.size() <= 1) return;
  AJI_CHECK(!device_, "AdamW::shard: a sharded (ZeRO-1) optimizer on a device is not built");
  const size_t r = static_cast<size_t>(comm.rank()), N = static_cast<size_t>(comm.size());
  lo_ = n_ * r / N;
  const size_t hi = n_ * (r + 1) / N;
  AlignedFloats(m_.begin() + long(lo_), m_.begin() + long(hi)).swap(m_);
  AlignedFloats(v_.begin() + long(lo_), v_.begin() + long(hi)).swap(v_);
  sharded_ = true;
}

AdamW AdamW::gathered(int root) const {
  sync_host();
  AdamW full;
  full.config_ = config_;
  full.t_ = t_;
  full.n_ = n_;
  if (!sharded_) {
    full.m_ = m_;
    full.v_ = v_;
    return full;
  }
  dist::Communicator& comm = dist::world();
  const std::vector<size_t> counts = zero_counts(n_, comm.size());
  if (comm.rank() == root) {
    full.m_.assign(n_, 0.0f);
    full.v_.assign(n_, 0.0f);
  }
  comm.gather(m_.data(), full.m_.data(), counts, root);
  comm.gather(v_.data(), full.v_.data(), counts, root);
  return full;
}

bool AdamW::step(float* params, const float* grads, const std::vector<DecayRange>& ranges, float lr,
                 uint16_t* bf16_copy) {
  if (device_ && device_stale_) {  // the host's moments (fresh, loaded or handed out) up first
    if (!d_mv_) d_mv_ = std::make_unique<kernels::DeviceMem>();
    d_mv_->ensure(*device_, std::max<size_t>(1, 2 * n_) * sizeof(float));
    if (n_ > 0) {
      device_->to_device(d_mv_->f(), m_.data(), n_ * sizeof(float));
      device_->to_device(d_mv_->f() + n_, v_.data(), n_ * sizeof(float));
    }
    device_stale_ = false;
  }
  ++t_;
  const float b1 = config_.beta1, b2 = config_.beta2, eps = config_.eps;
  // The same scalar arithmetic as torch (bias corrections in double, then cast).
  const double bc1 = 1.0 - std::pow(static_cast<double>(b1), static_cast<double>(t_));
  const double bc2 = 1.0 - std::pow(static_cast<double>(b2), static_cast<double>(t_));
  kernels::AdamWScalars sc;
  sc.beta1 = b1;
  sc.beta2 = b2;
  sc.eps = eps;
  sc.one_minus_beta1 = 1.0f - b1;
  sc.one_minus_beta2 = 1.0f - b2;
  sc.step_size = static_cast<float>(lr / bc1);
  sc.bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  if (device_) {  // on the device: one update per run of adjacent ranges alike, the same scalars
    std::vector<DecayRange> runs;
    for (const DecayRange& r : ranges) {
      AJI_CHECK(r.offset + r.size <= n_, "AdamW range outside the parameter buffer");
      if (r.size == 0) continue;
      if (!runs.empty() && runs.back().decay == r.decay && runs.back().offset + runs.back().size == r.offset)
        runs.back().size += r.size;
      else
        runs.push_back(r);
    }
    for (const DecayRange& r : runs) {
      kernels::AdamWScalars s = sc;
      s.decay_mul = r.decay ? static_cast<float>(1.0 - static_cast<double>(lr) * config_.weight_decay) : 1.0f;
      device_->adamw_update(params + r.offset, grads + r.offset, d_mv_->f() + r.offset, d_mv_->f() + n_ + r.offset,
                            r.size, s);
    }
    host_stale_ = true;
    return false;
  }
  // m and v hold [lo_, lo_ + m_.size()) of the buffer (all of it unless sharded): index from lo_.
  float* m = m_.data() - lo_;
  float* v = v_.data() - lo_;
  const int threads = num_threads();
  const size_t lo = lo_, hi = lo_ + m_.size();
  if (sharded_) bf16_copy = nullptr;
  // Chunks of 4096 (16 KiB of each buffer): the bf16 rounding reads a chunk's new weights
  // from L1. The same per-element arithmetic with or without the copy.
  constexpr int64_t kChunk = 4096;
  for (const DecayRange& r : ranges) {
    AJI_CHECK(r.offset + r.size <= n_, "AdamW range outside the parameter buffer");
    kernels::AdamWScalars s = sc;
    s.decay_mul = r.decay ? static_cast<float>(1.0 - static_cast<double>(lr) * config_.weight_decay) : 1.0f;
    // ZeRO-1: only this rank's part of the range.
    const int64_t begin = static_cast<int64_t>(std::max(r.offset, lo)),
                  end = static_cast<int64_t>(std::min(r.offset + r.size, hi));
    if (end <= begin) continue;
    const int64_t chunks = (end - begin + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) num_threads(threads) if (r.size > 32768)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t c0 = begin + c * kChunk, c1 = std::min(end, c0 + kChunk);
#pragma omp simd
      for (int64_t i = c0; i < c1; ++i) {
        // the one per-element form (kernels/backend.h; CUDA's kernels/cuda/optim.cu matches it)
        kernels::adamw_element(params[i], grads[i], m[i], v[i], s);
      }
      if (bf16_copy) kernels::cpu::round_to_bf16_row(bf16_copy + c0, params + c0, c1 - c0);
    }
  }
  if (sharded_) {  // every rank's updated part to every rank
    dist::Communicator& comm = dist::world();
    comm.allgather(params, zero_counts(n_, comm.size()));
  }
  return bf16_copy != nullptr;
}

std::vector<DecayRange> all_parameter_ranges(const model::Model& model) {
  std::vector<DecayRange> ranges;
  for (const auto& t : model.tensors()) ranges.push_back({t.offset, t.numel, t.decay});
  return ranges;
}

namespace {
constexpr char kAdamMagic[8] = {'A', 'J', 'I', 'A', 'D', 'A', 'M', 'W'};
}

void AdamW::save(const std::filesystem::path& path) const {
  AJI_CHECK(!sharded_, "AdamW::save of a sharded (ZeRO-1) state: save gathered() instead");
  sync_host();
  std::string head(8, '\0');
  std::memcpy(head.data(), kAdamMagic, 8);
  auto put = [&head](const void* p, size_t n) { head.append(static_cast<const char*>(p), n); };
  const uint32_t version = 1;
  const uint64_t n = m_.size();
  put(&version, 4);
  put(&n, 8);
  put(&t_, 8);
  put(&config_.beta1, 4);
  put(&config_.beta2, 4);
  put(&config_.eps, 4);
  put(&config_.weight_decay, 4);
  const uint64_t sum = shard_checksum(m_.data(), n * 4) ^ (shard_checksum(v_.data(), n * 4) * 3);
  put(&sum, 8);
  AtomicFileWriter w(path);
  w.write(head);
  w.write(m_.data(), n * 4);
  w.write(v_.data(), n * 4);
  w.commit();
}

void AdamW::load(const std::filesystem::path& path) {
  const std::string data = read_file(path);
  const size_t head_bytes = 8 + 4 + 8 + 8 + 16 + 8;
  auto bad = [&](const std::string& what) {
    return Error("optimizer state " + what)
        .at(path.string())
        .fix("the checkpoint is damaged; resume from an earlier checkpoint (see the run dir's ckpt-* folders)");
  };
  if (data.size() < head_bytes || std::memcmp(data.data(), kAdamMagic, 8) != 0) throw bad("is not an aji AdamW file");
  const char* p = data.data() + 8;
  auto get = [&p](void* dst, size_t n) {
    std::memcpy(dst, p, n);
    p += n;
  };
  uint32_t version;
  uint64_t n, sum;
  get(&version, 4);
  get(&n, 8);
  if (version != 1) throw bad("has unsupported version " + std::to_string(version));
  if (n != n_)
    throw Error("optimizer state holds " + std::to_string(n) + " parameters but the model has " +
                std::to_string(n_))
        .at(path.string())
        .fix("resume with the same model config the run was started with");
  if (data.size() != head_bytes + 8 * n) throw bad("is truncated");
  get(&t_, 8);
  get(&config_.beta1, 4);
  get(&config_.beta2, 4);
  get(&config_.eps, 4);
  get(&config_.weight_decay, 4);
  get(&sum, 8);
  // The whole state is in the file; a sharded optimizer keeps its part.
  if ((shard_checksum(p, n * 4) ^ (shard_checksum(p + n * 4, n * 4) * 3)) != sum) throw bad("checksum mismatch");
  std::memcpy(m_.data(), p + lo_ * 4, m_.size() * 4);
  std::memcpy(v_.data(), p + n * 4 + lo_ * 4, v_.size() * 4);
  host_stale_ = false;
  device_stale_ = true;  // a device gets the loaded moments before its next step
}

double global_grad_norm(const float* grads, size_t n) {
  return std::sqrt(kernels::cpu_backend().sum_squares(grads, n));  // the one host sum of squares
}

double clip_grad_norm(float* grads, size_t n, double max_norm) {
  const double norm = global_grad_norm(grads, n);
  if (max_norm > 0 && norm > max_norm && std::isfinite(norm))
    kernels::cpu_backend().scale(grads, clip_scale(max_norm, norm), n);
  return norm;
}

float LrSchedule::at(int64_t step) const {
  if (warmup > 0 && step < warmup) return lr * static_cast<float>(step + 1) / static_cast<float>(warmup);
  const float floor = lr * min_lr_frac;
  const int64_t span = total - warmup;
  if (decay == Decay::kConstant || span <= 1) return lr;
  const double frac = std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(span - 1));
  if (decay == Decay::kLinear) return static_cast<float>(lr + (floor - lr) * frac);
  return static_cast<float>(floor + 0.5 * (lr - floor) * (1.0 + std::cos(3.14159265358979323846 * frac)));
}

nlohmann::json LrSchedule::to_json() const {
  return {{"lr", lr}, {"warmup", warmup}, {"total", total}, {"min_lr_frac", min_lr_frac}, {"decay", decay_name(decay)}};
}

LrSchedule::Decay LrSchedule::parse_decay(const std::string& name) {
  if (name == "cosine") return Decay::kCosine;
  if (name == "linear") return Decay::kLinear;
  if (name == "constant") return Decay::kConstant;
  throw Error("unknown learning-rate decay '" + name + "'").fix("use cosine, linear or constant");
}

std::string LrSchedule::decay_name(Decay d) {
  switch (d) {
    case Decay::kCosine: return "cosine";
    case Decay::kLinear: return "linear";
    case Decay::kConstant: return "constant";
  }
  return "cosine";
}

}  // namespace aji::train
