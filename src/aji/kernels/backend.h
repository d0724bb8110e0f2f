// The backend seam: one op interface, implemented by the CPU (kernels/cpu/) and by CUDA
// (kernels/cuda/, a plugin library loaded at run time), chosen by `--device cpu|cuda[:N]`.
//
// A Backend owns its memory (alloc/release, copies to and from the host) and runs the ops of
// the engine over that memory with the contracts of kernels/cpu/ops.h, names, shapes and
// accumulate/overwrite rules included; every pointer an op takes, AttnDims::key_start and
// the int32 token, target and position arrays included, is the backend's memory (host memory
// for the CPU). So one binary can run the same step on both devices and compare them
// (tests/kernels/backend_parity_test.cpp, scripts/device_check.sh).
//
// Ops are asynchronous on a device: they are queued in order on the backend's stream, and
// to_host() waits for everything queued before it. Reductions that return a number to the
// host (softmax_xent_backward_inplace's total, sum_squares) wait too, and are deterministic:
// a fixed order of partial sums, no atomics, so two runs give the same bits.
//
// The CUDA library is a plugin (libaji_cuda.so, built when the CUDA toolkit is found): the
// aji binary itself needs no CUDA library to start, and asking for a device where the plugin,
// a CUDA library, the driver or the GPU is missing is an aji::Error that names what is missing
// (make_backend below).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "aji/kernels/op_types.h"

namespace aji::kernels {

enum class DeviceKind { kCpu, kCuda };

struct DeviceSpec {
  DeviceKind kind = DeviceKind::kCpu;
  int index = 0;  // which GPU (cuda:N)
  // "cpu:separate": the CPU treated as a device with memory of its own
  // (make_separate_cpu_backend): every upload, download and device-side buffer of the device
  // path runs, with the CPU's kernels, so its results equal the host path's bit for bit.
  // For testing a device path end to end where there is no GPU.
  bool separate = false;
  bool host() const { return kind == DeviceKind::kCpu && !separate; }  // the plain host path
  std::string text() const;  // "cpu", "cpu:separate", "cuda:0"
};
// "cpu" | "cpu:separate" | "cuda" | "cuda:N" (N >= 0); anything else is an aji::Error naming
// `source` and the accepted forms.
DeviceSpec parse_device(const std::string& text, const std::string& source = "--device");

// One step of AdamW over one contiguous range (train/optimizer.h's arithmetic, per element,
// in the same order, with the same scalars): the caller computes the scalars on the host as
// AdamW::step does.
struct AdamWScalars {
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float one_minus_beta1 = 0.1f, one_minus_beta2 = 0.05f;
  float step_size = 0;  // lr / (1 - beta1^t)
  float bc2_sqrt = 1;   // sqrt(1 - beta2^t)
  float decay_mul = 1;  // 1 - lr * weight_decay on decayed ranges, else 1
};

// One element of that step, as every CPU loop runs it (train/optimizer.cpp, the CPU backend;
// kernels/cuda/optim.cu spells the same with CUDA intrinsics): the three fused multiply-adds are
// written out, so no compiler chooses a contraction and the devices agree bit for bit.
inline void adamw_element(float& p, float g, float& m, float& v, const AdamWScalars& s) {
  const float mi = std::fma(m, s.beta1, s.one_minus_beta1 * g);
  const float vi = std::fma(v, s.beta2, s.one_minus_beta2 * (g * g));
  m = mi;
  v = vi;
  const float denom = std::sqrt(vi) / s.bc2_sqrt + s.eps;
  p = std::fma(p, s.decay_mul, (-s.step_size) * mi / denom);  // torch's addcdiv order
}

// One sequence of a ragged batch over KV caches that live apart (serving's continuous
// batching: every request has a cache of its own). Layer l's keys of the sequence start at
// k + l * layer_stride and its values at v + l * layer_stride (floats; position p is the row
// of kv width at p * kvw). Its `count` new rows are rows row0 .. row0 + count - 1 of the
// batch's projection and attention output, at positions pos0 ..; `first` numbers them in the
// op's own row space: the sum of the counts of the entries before it (so entries are in that
// order, and `rows` = the last entry's first + count).
struct CachedSeq {
  float* k = nullptr;
  float* v = nullptr;
  int64_t layer_stride = 0;
  int64_t row0 = 0;
  int64_t first = 0;
  int32_t count = 0;
  int32_t pos0 = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual DeviceKind kind() const = 0;
  // One line for logs: "cpu (2 threads)", "cuda:0 NVIDIA H200, 139.8 GiB, sm_90, driver 13.0".
  virtual std::string describe() const = 0;

  // ---- memory ------------------------------------------------------------------------
  // `bytes` of the backend's memory, 256-byte aligned, contents undefined. Out of memory is
  // an aji::Error with the size asked for and the memory free.
  virtual void* alloc(size_t bytes) = 0;
  virtual void release(void* p) noexcept = 0;
  virtual void to_device(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void to_host(void* host_dst, const void* src, size_t bytes) = 0;  // waits for queued ops
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;          // within the backend
  // `rows` rows of `width` bytes, within the backend: row r from src + r * src_pitch to
  // dst + r * dst_pitch (a KV cache's rows out of a projection's wider ones).
  virtual void copy_rows(void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t width,
                         size_t rows) = 0;
  virtual void zero(void* p, size_t bytes) = 0;
  virtual void synchronize() = 0;  // waits for every queued op; reports an asynchronous fault
  // The free and total bytes of the backend's memory, for a check before a run allocates
  // (train/memory.h require_memory); false where unknown (the CPU: the host's limits apply).
  virtual bool memory_info(size_t& free_bytes, size_t& total_bytes) {
    free_bytes = total_bytes = 0;
    return false;
  }

  // Matrix products (matmul_forward, matmul_backward) with TF32 operands on a CUDA device's
  // tensor cores (fp32 accumulation and results; about 3 decimal digits per operand, several
  // times fp32's throughput): `--precision tf32`. Off by default (fp32 products). A backend
  // without TF32 (the CPU) refuses `on` with an aji::Error. (Pure, as every out-of-line
  // member would be: Backend must have no key function, or the plugin would need its
  // typeinfo from the aji binary; Backend.CudaPluginLoadsAndReportsAMissingDriver checks.)
  virtual void set_matmul_tf32(bool on) = 0;
  virtual bool matmul_tf32() const { return false; }

  // ---- bf16 products (--precision bf16: docs/bf16.md) --------------------------------------
  // Whether this backend runs bf16 products natively (the CPU: AVX512-BF16 or AMX through
  // oneDNN; CUDA: compute capability 8.0 or later, bf16 tensor cores). The ops below work
  // either way; this only decides `--precision auto`.
  virtual bool bf16_products() const = 0;
  // dst[i] = bf16(src[i]) rounded to nearest even (NaN stays NaN): the weights' bf16 copy.
  virtual void round_to_bf16(uint16_t* dst, const float* src, size_t n) = 0;
  // matmul_forward / matmul_backward with bf16 products (kernels/cpu/bf16_gemm.h's contracts):
  // inp and dout are rounded to bf16 (nearest even) as the product reads them, the weight is
  // its bf16 copy (round_to_bf16 of the fp32 weight), accumulation and results fp32; the bias
  // and its gradient fp32 (from the unrounded dout).
  virtual void matmul_forward_bf16(float* out, const float* inp, const uint16_t* weight_bf16, const float* bias,
                                   int64_t N, int IC, int OC, WeightLayout layout, bool accumulate) = 0;
  virtual void matmul_backward_bf16(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                                    const uint16_t* weight_bf16, int64_t N, int IC, int OC, WeightLayout layout) = 0;

  // ---- collectives over the job's devices (data parallelism, base/dist.h) -----------------
  // Gradients averaged where they are: NCCL between CUDA devices (one GPU per rank), the host
  // communicator itself on cpu:separate (its memory is host memory, so MPI reads it in place).
  // Rank 0 calls collective_id (NCCL's unique id as bytes; "" where the backend has none, with
  // the reason in *why_not), the host communicator broadcasts it, and every rank calls
  // join_collective(id, its rank, the number of ranks) (open_run_device does all of it).
  // Then allreduce_mean(data, n), in place over the ranks' buffers in the backend's memory:
  // the sum over the ranks times 1/size, dist.h's arithmetic, the same bits on every rank.
  // Without a collective the trainers average through the host (download, MPI, upload).
  virtual std::string collective_id(std::string* why_not) = 0;
  virtual void join_collective(const std::string& id, int rank, int size) = 0;
  virtual bool in_collective() const = 0;
  virtual void allreduce_mean(float* data, size_t n) = 0;

  // ---- ops: kernels/cpu/ops.h's contracts (fp32) ------------------------------------------
  virtual void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N,
                              int IC, int OC, WeightLayout layout, bool accumulate) = 0;
  virtual void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                               const float* weight, int64_t N, int IC, int OC, WeightLayout layout) = 0;
  virtual void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B, int T,
                                 int C, int pos0, const int32_t* positions) = 0;
  virtual void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B, int T,
                                  int C, const int32_t* positions) = 0;
  virtual void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                                 const float* bias, int64_t N, int C, float eps) = 0;
  virtual void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                                  const float* weight, const float* mean, const float* rstd, int64_t N, int C) = 0;
  virtual void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t N, int C,
                               float eps) = 0;
  virtual void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                                const float* rstd, int64_t N, int C) = 0;
  virtual void head_rmsnorm_forward(float* x, const float* weight, int64_t N, int64_t stride, int col, int n_heads,
                                    int hd, float eps) = 0;
  virtual void head_rmsnorm_backward(float* d, float* dweight, const float* x_in, const float* weight, int64_t N,
                                     int64_t stride, int col, int n_heads, int hd, float eps) = 0;
  virtual void gelu_forward(float* out, const float* inp, int64_t n) = 0;
  virtual void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) = 0;
  virtual void swiglu_forward(float* out, const float* gate_up, int64_t N, int F) = 0;
  virtual void swiglu_backward(float* dgate_up, const float* dout, const float* gate_up, int64_t N, int F) = 0;
  // cos_t, sin_t: the (max_pos, hd/2) tables of kernels/cpu/ops.h rope_table, in backend memory.
  virtual void rope_apply(float* x, const float* cos_t, const float* sin_t, int B, int T, int64_t stride, int col,
                          int n_heads, int hd, int pos0, bool inverse, const int32_t* positions,
                          const float* src) = 0;
  virtual void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                                 const AttnDims& d) = 0;
  virtual void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                                  const float* k, const float* v, const float* out, const float* lse,
                                  const AttnDims& d) = 0;
  // Over KV caches that live apart (CachedSeq; `seqs` is an array of n entries in the
  // backend's memory, `rows` new rows in all), one call for the whole batch:
  // kv_append: every entry's new keys and values of layer l (row r of src holds the key at
  //   src + r * src_ts and the value kvw floats later) into its cache's positions pos0 ...
  // attention_cached: every entry's new rows (q and out rows row0 .., strides d.q_ts and
  //   d.o_ts) attend causally over its cache's layer l: row i sees positions 0 .. pos0 + i.
  //   d gives H, KV, hd, k_ts = v_ts (the kv width) and Tk, the most keys a row sees (a
  //   device splits long caches over several blocks by it); its B, Tq, q_pos0, batch strides
  //   and key_start are not read. On the CPU, attention_forward per entry (the host path's
  //   call); on a device, one launch for all (decode: a block per query row and head).
  virtual void kv_append(const CachedSeq* seqs, int n, int64_t rows, int layer, const float* src, int64_t src_ts,
                         int kvw) = 0;
  virtual void attention_cached(float* out, const float* q, const CachedSeq* seqs, int n, int64_t rows, int layer,
                                const AttnDims& d) = 0;
  virtual void add_inplace(float* a, const float* b, int64_t n) = 0;
  virtual double softmax_xent_backward_inplace(float* logits, float* losses, const int32_t* targets,
                                               const float* weights, float grad_scale, int64_t n, int V,
                                               float inv_temperature) = 0;

  // ---- optimizer ------------------------------------------------------------------------
  // AdamW on [0, n) of params, grads, m, v (one decay range).
  virtual void adamw_update(float* params, const float* grads, float* m, float* v, size_t n,
                            const AdamWScalars& s) = 0;
  virtual double sum_squares(const float* x, size_t n) = 0;  // sum x^2 in double, deterministic
  virtual void scale(float* x, float a, size_t n) = 0;        // x *= a
};

// A buffer in a backend's memory, released with it (RAII); grown by ensure(), which loses the
// contents. What every owner of device memory holds (the model's weights, gradients and
// activations; AdamW's moments).
struct DeviceMem {
  Backend* be = nullptr;
  void* p = nullptr;
  size_t bytes = 0;
  DeviceMem() = default;
  DeviceMem(const DeviceMem&) = delete;
  DeviceMem& operator=(const DeviceMem&) = delete;
  ~DeviceMem() { reset(); }
  void reset() {
    if (p) be->release(p);
    p = nullptr;
    bytes = 0;
  }
  void ensure(Backend& backend, size_t n_bytes) {
    if (p && be == &backend && bytes >= n_bytes) return;
    reset();
    be = &backend;
    p = backend.alloc(n_bytes);
    bytes = n_bytes;
  }
  float* f() const { return static_cast<float*>(p); }
};

// The CPU backend (kernels/cpu/), one per process.
Backend& cpu_backend();

// A CPU backend that is not cpu_backend(): a Model given it (Model::set_device) treats it as a
// device with memory of its own (its own copies of the weights, gradients and activations,
// every transfer explicit), so the device path is tested bit for bit without a GPU.
std::shared_ptr<Backend> make_separate_cpu_backend();

// The backend for `spec`: the CPU one (not owned: a non-deleting pointer), a separate CPU one
// (cpu:separate), or a CUDA backend
// from the plugin. Errors (aji::Error) name what is missing: a binary built without CUDA, the
// plugin file, a CUDA library it needs, the driver, or the GPU index (with the GPUs found).
// The plugin is looked for in $AJI_CUDA_PLUGIN, then beside the running executable, then in
// ../lib from it.
std::shared_ptr<Backend> make_backend(const DeviceSpec& spec);

// Where make_backend looks for the CUDA plugin, in order (for messages and tests).
std::string cuda_plugin_search_path();

// The plugin's entry point (extern "C", libaji_cuda.so) and the interface version it was
// built against: make_backend refuses a plugin whose version differs (a stale build).
constexpr int kBackendAbiVersion = 4;
extern "C" {
using CudaBackendCreateFn = Backend* (*)(int device_index, char* error, size_t error_size);
using BackendAbiVersionFn = int (*)();
}

}  // namespace aji::kernels
