#include "aji/train/memory.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "aji/base/error.h"
#include "aji/kernels/backend.h"

namespace aji::train {

namespace {
std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", bytes / double(1ull << 30));
  return buf;
}
}  // namespace

std::string MemoryEstimate::describe() const {
  std::string s = gib(total()) + " GiB (weights " + gib(weights) + ", gradients " + gib(grads) + ", AdamW " +
                  gib(optimizer) + ", activations " + gib(activations);
  if (extra > 0) s += ", other " + gib(extra);
  return s + ")";
}

MemoryEstimate training_memory(const model::ModelConfig& c, int64_t trained, int64_t tokens, bool bf16,
                               bool on_device) {
  MemoryEstimate m;
  const double P = double(c.num_params()), N = double(std::max<int64_t>(tokens, 1));
  m.weights = 4.0 * P;
  m.grads = 4.0 * P;  // Model::grads() is the size of the whole parameter buffer
  m.optimizer = 8.0 * double(trained);
  // The floats Model::forward carves for N positions (model.cpp, the training arena).
  const double C = c.d_model, QKV = c.qkv_width(), QW = c.q_width(), F = c.ff(), FF = c.is_gpt2() ? F : 2 * F;
  // In bf16 the norms' outputs (2C a layer) and the activation (F) are kept as bf16 (half) on
  // the CPU; a device keeps them fp32 and rounds them into a scratch as its product reads them.
  const double kept = bf16 && !on_device ? 0.5 : 1.0;
  const double per_layer = 2 * C + kept * 2 * C + 4 + QKV + QW + c.n_head + FF;
  const double rest = 2 * C + 2 + (c.is_gpt2() ? 0 : QKV) + kept * F + 2 * C + QKV + FF + F + QW + C;
  const double logits_rows = std::max(16.0, std::min(N, double(8 << 20) / c.vocab_size));
  m.activations = 4.0 * (N * (c.n_layer * per_layer + rest) + logits_rows * c.vocab_size);
  if (bf16) {
    m.weights += 2.0 * P;
    // one product's bf16 input (widest: the FFN's down projection; the LM head's C rows are
    // no wider) and output gradient (widest: QKV or the FFN's up/gate; the LM head's logit
    // gradient is rounded over the logits' own rows, no scratch)
    const double in = std::max({C, F, QW}), out = std::max({QKV, FF, C});
    m.activations += 2.0 * N * (in + out);
  }
  return m;
}

double available_memory_bytes() {
  double avail = 0;
  auto take = [&](double v) {
    if (v > 0) avail = avail > 0 ? std::min(avail, v) : v;
  };
  {
    std::ifstream in("/proc/meminfo");
    std::string key;
    double kb = 0;
    std::string unit;
    while (in >> key >> kb >> unit)
      if (key == "MemAvailable:") take(kb * 1024.0);
  }
  {
    std::ifstream max("/sys/fs/cgroup/memory.max"), cur("/sys/fs/cgroup/memory.current");
    std::string m;
    double used = 0;
    if (max >> m && m != "max" && cur >> used) take(std::strtod(m.c_str(), nullptr) - used);
  }
  if (const char* cap = std::getenv("AJI_MEMORY_LIMIT_MB"); cap && *cap) take(std::strtod(cap, nullptr) * 1048576.0);
  return avail;
}

void require_memory(const MemoryEstimate& need, const std::string& what, const std::string& fix,
                    kernels::Backend* device) {
  MemoryEstimate host = need;
  size_t free_b = 0, total_b = 0;
  if (device && device->memory_info(free_b, total_b)) {
    if (need.total() > double(free_b))
      throw Error(what + " needs about " + need.describe() + " on " + device->describe() + ", but only " +
                  gib(double(free_b)) + " GiB of its " + gib(double(total_b)) + " GiB is free")
          .fix(fix);
  }
  if (device) host.activations = 0;  // the host keeps copies of the weights, gradients and moments
  const double avail = available_memory_bytes();
  if (avail <= 0 || host.total() <= avail) return;
  throw Error(what + " needs about " + host.describe() + (device ? " on the host" : "") + " but only " + gib(avail) +
              " GiB is available")
      .fix(fix);
}

}  // namespace aji::train
