// The one memory estimate of the trainers (`aji pretrain`, `aji sft train`, `aji classify
// train`): what a training run needs, from the model config alone (nothing allocated), and
// what this process may still allocate. Used to refuse a model or batch that does not fit,
// with the numbers and the fix, instead of a bare std::bad_alloc (or the OOM killer) halfway.
#pragma once

#include <cstdint>
#include <string>

#include "aji/kernels/backend.h"
#include "aji/model/model.h"

namespace aji::train {

// Bytes, by part: weights, gradients and AdamW moments (m, v) of the trained parameters,
// plus the activation arena of one micro-batch (the slices Model::forward carves:
// model.cpp) and anything else the caller adds (e.g. evaluation logits).
struct MemoryEstimate {
  double weights = 0, grads = 0, optimizer = 0, activations = 0, extra = 0;  // bytes
  double total() const { return weights + grads + optimizer + activations + extra; }
  std::string describe() const;  // "3.20 GiB (weights 1.00, gradients 1.00, AdamW 2.00, activations ...)"
};

// `trained_params` parameters get AdamW moments (all of them, or e.g. 0 for a frozen body
// whose head is trained separately); `tokens` = rows x T positions of one micro-batch.
// bf16 (--precision bf16): plus the bf16 copy of the weights (2 bytes per parameter) and the
// bf16 copies of the largest product's input and output gradient (kernels/cpu/bf16_gemm.cpp).
// on_device: the training path runs on a device (Model::set_device), which keeps the bf16
// products' inputs in fp32 (rounded as the product reads them).
MemoryEstimate training_memory(const model::ModelConfig& config, int64_t trained_params, int64_t tokens,
                               bool bf16 = false, bool on_device = false);

// Bytes this process may still allocate: the smallest of /proc/meminfo's MemAvailable, the
// cgroup (v2) limit minus usage, and AJI_MEMORY_LIMIT_MB when set (a cap; tests use it).
// 0 when none of them can be read (no check is made then).
double available_memory_bytes();

// Throws aji::Error "<what> needs about <estimate> but only <n> GiB is available" with `fix`
// (e.g. "lower --batch-size") when `need` does not fit in available_memory_bytes().
// On a device (the trainer's open device, open_run_device; null = the host alone): the whole
// estimate must fit in the device's free memory ("... on cuda:0 NVIDIA H200 ..., only <n> GiB
// of its <total> is free"), checked before the run allocates anything there, and the host,
// which keeps copies of the weights, gradients and AdamW moments but not the activations,
// must hold those.
void require_memory(const MemoryEstimate& need, const std::string& what, const std::string& fix,
                    kernels::Backend* device = nullptr);

}  // namespace aji::train
