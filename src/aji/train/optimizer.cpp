#include "aji/train/optimizer.h"

#include <cmath>
#include <cstring>

#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/threads.h"
#include "aji/model/model.h"
#include "aji/train/shards.h"

namespace aji::train {

AdamW::AdamW(size_t n_params, AdamWConfig config) : config_(config), m_(n_params, 0.0f), v_(n_params, 0.0f) {}

void AdamW::step(float* params, const float* grads, const std::vector<DecayRange>& ranges, float lr) {
  ++t_;
  const float b1 = config_.beta1, b2 = config_.beta2, eps = config_.eps;
  // The same scalar arithmetic as torch (bias corrections in double, then cast).
  const double bc1 = 1.0 - std::pow(static_cast<double>(b1), static_cast<double>(t_));
  const double bc2 = 1.0 - std::pow(static_cast<double>(b2), static_cast<double>(t_));
  const float step_size = static_cast<float>(lr / bc1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const float one_minus_b1 = 1.0f - b1, one_minus_b2 = 1.0f - b2;
  float* m = m_.data();
  float* v = v_.data();
  const int threads = num_threads();
  for (const DecayRange& r : ranges) {
    AJI_CHECK(r.offset + r.size <= m_.size(), "AdamW range outside the parameter buffer");
    const float decay_mul =
        r.decay ? static_cast<float>(1.0 - static_cast<double>(lr) * config_.weight_decay) : 1.0f;
    const int64_t begin = static_cast<int64_t>(r.offset), end = static_cast<int64_t>(r.offset + r.size);
#pragma omp parallel for simd schedule(static) num_threads(threads) if (r.size > 32768)
    for (int64_t i = begin; i < end; ++i) {
      const float g = grads[i];
      float p = params[i] * decay_mul;
      const float mi = m[i] * b1 + one_minus_b1 * g;
      const float vi = v[i] * b2 + one_minus_b2 * (g * g);
      m[i] = mi;
      v[i] = vi;
      const float denom = std::sqrt(vi) / bc2_sqrt + eps;
      p = p + (-step_size) * mi / denom;  // torch's addcdiv order
      params[i] = p;
    }
  }
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
  if (n != m_.size())
    throw Error("optimizer state holds " + std::to_string(n) + " parameters but the model has " +
                std::to_string(m_.size()))
        .at(path.string())
        .fix("resume with the same model config the run was started with");
  if (data.size() != head_bytes + 8 * n) throw bad("is truncated");
  get(&t_, 8);
  get(&config_.beta1, 4);
  get(&config_.beta2, 4);
  get(&config_.eps, 4);
  get(&config_.weight_decay, 4);
  get(&sum, 8);
  get(m_.data(), n * 4);
  get(v_.data(), n * 4);
  if ((shard_checksum(m_.data(), n * 4) ^ (shard_checksum(v_.data(), n * 4) * 3)) != sum) throw bad("checksum mismatch");
}

double global_grad_norm(const float* grads, size_t n) {
  // Fixed chunking so the sum's rounding does not depend on the thread count.
  constexpr size_t kChunk = 1 << 16;
  const size_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(chunks, 0.0);
  const int threads = num_threads();
#pragma omp parallel for schedule(static) num_threads(threads) if (chunks > 1)
  for (int64_t c = 0; c < static_cast<int64_t>(chunks); ++c) {
    const size_t b = static_cast<size_t>(c) * kChunk, e = std::min(n, b + kChunk);
    double s = 0.0;
    for (size_t i = b; i < e; ++i) s += static_cast<double>(grads[i]) * grads[i];
    partial[c] = s;
  }
  double total = 0.0;
  for (double s : partial) total += s;
  return std::sqrt(total);
}

double clip_grad_norm(float* grads, size_t n, double max_norm) {
  const double norm = global_grad_norm(grads, n);
  if (max_norm > 0 && norm > max_norm && std::isfinite(norm)) {
    const float scale = static_cast<float>(max_norm / (norm + 1e-6));
    const int threads = num_threads();
#pragma omp parallel for simd schedule(static) num_threads(threads) if (n > 65536)
    for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) grads[i] *= scale;
  }
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
