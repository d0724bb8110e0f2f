#include "aji/kernels/backend.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <new>
#include <vector>

#include "aji/base/dist.h"
#include "aji/base/error.h"
#include "aji/base/threads.h"
#include "aji/kernels/cpu/bf16_gemm.h"
#include "aji/kernels/cpu/ops.h"

namespace aji::kernels {

std::string DeviceSpec::text() const {
  return kind == DeviceKind::kCpu ? (separate ? "cpu:separate" : "cpu") : "cuda:" + std::to_string(index);
}

DeviceSpec parse_device(const std::string& text, const std::string& source) {
  DeviceSpec s;
  if (text == "cpu") return s;
  if (text == "cpu:separate") {
    s.separate = true;
    return s;
  }
  if (text == "cuda") {
    s.kind = DeviceKind::kCuda;
    return s;
  }
  if (text.rfind("cuda:", 0) == 0) {
    const std::string n = text.substr(5);
    bool digits = !n.empty() && n.size() <= 4;
    for (char c : n) digits = digits && c >= '0' && c <= '9';
    if (digits) {
      s.kind = DeviceKind::kCuda;
      s.index = std::stoi(n);
      return s;
    }
  }
  throw Error("unknown device '" + text + "'")
      .at(source)
      .fix("use cpu, cuda (the first GPU) or cuda:N (or cpu:separate, the CPU as a device of its own, for tests)");
}

namespace {

namespace ops = kernels::cpu;

// The CPU backend: host memory (64-byte aligned from operator new), the ops of kernels/cpu.
class CpuBackend final : public Backend {
 public:
  DeviceKind kind() const override { return DeviceKind::kCpu; }
  explicit CpuBackend(bool separate = false) : separate_(separate) {}
  std::string describe() const override {
    return separate_ ? "cpu:separate (" + std::to_string(num_threads()) + " threads, memory of its own)"
                     : "cpu (" + std::to_string(num_threads()) + " threads)";
  }

  void* alloc(size_t bytes) override {
    return ::operator new(bytes ? bytes : 1, std::align_val_t(256));
  }
  void release(void* p) noexcept override {
    if (p) ::operator delete(p, std::align_val_t(256));
  }
  void to_device(void* dst, const void* src, size_t bytes) override { copy(dst, src, bytes); }
  void to_host(void* dst, const void* src, size_t bytes) override { copy(dst, src, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memmove(dst, src, bytes);
  }
  void copy_rows(void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t width,
                 size_t rows) override {
    for (size_t r = 0; r < rows; ++r)
      std::memmove(static_cast<char*>(dst) + r * dst_pitch, static_cast<const char*>(src) + r * src_pitch, width);
  }
  void zero(void* p, size_t bytes) override {
    if (bytes) std::memset(p, 0, bytes);
  }
  void synchronize() override {}

  void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N, int IC, int OC,
                      WeightLayout layout, bool accumulate) override {
    ops::matmul_forward(out, inp, weight, bias, N, IC, OC, layout, accumulate);
  }
  void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                       const float* weight, int64_t N, int IC, int OC, WeightLayout layout) override {
    ops::matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, IC, OC, layout);
  }
  // cpu:separate's memory is host memory: the host communicator (MPI) averages it in place,
  // as NCCL does a GPU's. The plain CPU has no device buffers (its trainers reduce the host's).
  std::string collective_id(std::string* why_not) override {
    if (separate_) return "host communicator";
    if (why_not) *why_not = "the CPU reduces its host buffers itself";
    return {};
  }
  void join_collective(const std::string& id, int rank, int size) override {
    if (!separate_ || id != "host communicator" || size != dist::world().size() || rank != dist::world().rank())
      throw Error("join_collective: " + describe() + " joins only the host communicator's job, as itself (rank " +
                  std::to_string(rank) + " of " + std::to_string(size) + ", id '" + id + "')");
    joined_ = true;
  }
  bool in_collective() const override { return joined_; }
  void allreduce_mean(float* data, size_t n) override {
    AJI_CHECK(joined_, "allreduce_mean on a backend that joined no collective");
    dist::world().allreduce_mean(data, n);
  }
  bool bf16_products() const override { return ops::bf16_supported(); }
  void round_to_bf16(uint16_t* dst, const float* src, size_t n) override {
    ops::round_to_bf16(dst, src, static_cast<int64_t>(n));
  }
  void matmul_forward_bf16(float* out, const float* inp, const uint16_t* weight_bf16, const float* bias, int64_t N,
                           int IC, int OC, WeightLayout layout, bool accumulate) override {
    ops::matmul_forward_bf16(out, inp, weight_bf16, bias, N, IC, OC, layout, accumulate);
  }
  void matmul_backward_bf16(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                            const uint16_t* weight_bf16, int64_t N, int IC, int OC, WeightLayout layout) override {
    ops::matmul_backward_bf16(dinp, dweight, dbias, dout, inp, weight_bf16, N, IC, OC, layout);
  }
  void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B, int T, int C,
                         int pos0, const int32_t* positions) override {
    ops::embedding_forward(out, tokens, wte, wpe, B, T, C, pos0, positions);
  }
  void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B, int T, int C,
                          const int32_t* positions) override {
    ops::embedding_backward(dwte, dwpe, dout, tokens, B, T, C, positions);
  }
  void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                         const float* bias, int64_t N, int C, float eps) override {
    ops::layernorm_forward(out, mean, rstd, inp, weight, bias, N, C, eps);
  }
  void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                          const float* weight, const float* mean, const float* rstd, int64_t N, int C) override {
    ops::layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
  }
  void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t N, int C,
                       float eps) override {
    ops::rmsnorm_forward(out, rstd, inp, weight, N, C, eps);
  }
  void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                        const float* rstd, int64_t N, int C) override {
    ops::rmsnorm_backward(dinp, dweight, dout, inp, weight, rstd, N, C);
  }
  void head_rmsnorm_forward(float* x, const float* weight, int64_t N, int64_t stride, int col, int n_heads, int hd,
                            float eps) override {
    ops::head_rmsnorm_forward(x, weight, N, stride, col, n_heads, hd, eps);
  }
  void head_rmsnorm_backward(float* d, float* dweight, const float* x_in, const float* weight, int64_t N,
                             int64_t stride, int col, int n_heads, int hd, float eps) override {
    ops::head_rmsnorm_backward(d, dweight, x_in, weight, N, stride, col, n_heads, hd, eps);
  }
  void gelu_forward(float* out, const float* inp, int64_t n) override { ops::gelu_forward(out, inp, n); }
  void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) override {
    ops::gelu_backward(dinp, inp, dout, n);
  }
  void swiglu_forward(float* out, const float* gate_up, int64_t N, int F) override {
    ops::swiglu_forward(out, gate_up, N, F);
  }
  void swiglu_backward(float* dgate_up, const float* dout, const float* gate_up, int64_t N, int F) override {
    ops::swiglu_backward(dgate_up, dout, gate_up, N, F);
  }
  void rope_apply(float* x, const float* cos_t, const float* sin_t, int B, int T, int64_t stride, int col, int n_heads,
                  int hd, int pos0, bool inverse, const int32_t* positions, const float* src) override {
    ops::rope_apply(x, cos_t, sin_t, B, T, stride, col, n_heads, hd, pos0, inverse, positions, src);
  }
  void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                         const AttnDims& d) override {
    ops::attention_forward(out, lse, q, k, v, d);
  }
  void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                          const float* v, const float* out, const float* lse, const AttnDims& d) override {
    ops::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, d);
  }
  void set_matmul_tf32(bool on) override {
    if (on)
      throw Error("TF32 products are a CUDA feature: " + describe() + " has none")
          .fix("use --precision fp32 (or auto / bf16 on the CPU), or --precision tf32 with --device cuda");
  }
  void kv_append(const CachedSeq* seqs, int n, int64_t, int layer, const float* src, int64_t src_ts,
                 int kvw) override {
    for (int s = 0; s < n; ++s) {
      const CachedSeq& e = seqs[s];
      const int64_t at = layer * e.layer_stride + (int64_t)e.pos0 * kvw;
      const size_t width = sizeof(float) * static_cast<size_t>(kvw);
      copy_rows(e.k + at, width, src + e.row0 * src_ts, sizeof(float) * src_ts, width, e.count);
      copy_rows(e.v + at, width, src + e.row0 * src_ts + kvw, sizeof(float) * src_ts, width, e.count);
    }
  }
  void attention_cached(float* out, const float* q, const CachedSeq* seqs, int n, int64_t, int layer,
                        const AttnDims& d) override {
    for (int s = 0; s < n; ++s) {  // the host path's call for one sequence (model.cpp cache_dims)
      const CachedSeq& e = seqs[s];
      AttnDims one;
      one.B = 1, one.Tq = e.count, one.Tk = e.pos0 + e.count, one.H = d.H, one.KV = d.KV, one.hd = d.hd;
      one.q_pos0 = e.pos0;
      one.q_ts = d.q_ts, one.q_bs = e.count * d.q_ts;
      one.k_ts = one.v_ts = d.k_ts;
      one.o_ts = d.o_ts, one.o_bs = e.count * d.o_ts;
      ops::attention_forward(out + e.row0 * d.o_ts, nullptr, q + e.row0 * d.q_ts, e.k + layer * e.layer_stride,
                             e.v + layer * e.layer_stride, one);
    }
  }
  void add_inplace(float* a, const float* b, int64_t n) override { ops::add_inplace(a, b, n); }
  double softmax_xent_backward_inplace(float* logits, float* losses, const int32_t* targets, const float* weights,
                                       float grad_scale, int64_t n, int V, float inv_temperature) override {
    return ops::softmax_xent_backward_inplace(logits, losses, targets, weights, grad_scale, n, V, inv_temperature);
  }

  // The per-element arithmetic of train/optimizer.cpp AdamW::step (that loop stays the
  // trainers' one, fused with the bf16 copy and ZeRO-1; this is the backend-neutral form).
  void adamw_update(float* params, const float* grads, float* m, float* v, size_t n, const AdamWScalars& s) override {
    const int64_t len = static_cast<int64_t>(n);
#pragma omp parallel for simd schedule(static) num_threads(num_threads()) if (n > 32768)
    for (int64_t i = 0; i < len; ++i) {
      adamw_element(params[i], grads[i], m[i], v[i], s);
    }
  }
  double sum_squares(const float* x, size_t n) override {
    // Fixed chunks summed in order: the same bits for any thread count. Each chunk sums a
    // vector of partials (not one chain of dependent adds), in the same order on every run.
    // The host's one gradient norm (train/optimizer.h global_grad_norm calls this).
    constexpr size_t kChunk = 1 << 16;
    const size_t chunks = (n + kChunk - 1) / kChunk;
    std::vector<double> part(chunks, 0.0);
#pragma omp parallel for schedule(static) num_threads(num_threads()) if (chunks > 1)
    for (int64_t c = 0; c < static_cast<int64_t>(chunks); ++c) {
      const size_t b = static_cast<size_t>(c) * kChunk, e = std::min(n, b + kChunk);
      double s = 0;
#pragma omp simd reduction(+ : s)
      for (size_t i = b; i < e; ++i) s += static_cast<double>(x[i]) * x[i];
      part[static_cast<size_t>(c)] = s;
    }
    double total = 0;
    for (double p : part) total += p;
    return total;
  }
  void scale(float* x, float a, size_t n) override {
    const int64_t len = static_cast<int64_t>(n);
#pragma omp parallel for simd schedule(static) num_threads(num_threads()) if (n > 65536)
    for (int64_t i = 0; i < len; ++i) x[i] *= a;
  }

 private:
  bool separate_ = false;  // make_separate_cpu_backend's: a device with memory of its own
  bool joined_ = false;    // join_collective (the host communicator)
};

std::filesystem::path executable_dir() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path() : exe.parent_path();
}

std::vector<std::filesystem::path> plugin_candidates() {
  std::vector<std::filesystem::path> c;
  if (const char* env = std::getenv("AJI_CUDA_PLUGIN"); env && *env) c.emplace_back(env);
  const auto dir = executable_dir();
  if (!dir.empty()) {
    c.push_back(dir / "libaji_cuda.so");
    c.push_back(dir.parent_path() / "lib" / "libaji_cuda.so");
  }
  return c;
}

// The plugin, opened once per process and never closed (backends made from it may live to
// the end of the process).
struct Plugin {
  void* handle = nullptr;
  CudaBackendCreateFn create = nullptr;
  std::string error;  // why it could not be opened
};

Plugin& plugin() {
  static Plugin p;
  static std::once_flag once;
  std::call_once(once, [] {
    std::string tried;
    for (const auto& path : plugin_candidates()) {
      std::error_code ec;
      if (!std::filesystem::exists(path, ec)) {
        tried += "\n  " + path.string() + ": not there";
        continue;
      }
      void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!h) {
        // Typically a CUDA library the plugin links (libcublasLt.so.13) is not on the loader's path.
        p.error = std::string("the CUDA plugin ") + path.string() + " could not be loaded: " + dlerror();
        return;
      }
      auto version = reinterpret_cast<BackendAbiVersionFn>(dlsym(h, "aji_backend_abi_version"));
      auto create = reinterpret_cast<CudaBackendCreateFn>(dlsym(h, "aji_cuda_backend_create"));
      if (!version || !create) {
        p.error = "the CUDA plugin " + path.string() + " lacks the aji entry points (not an aji plugin?)";
        return;
      }
      if (version() != kBackendAbiVersion) {
        p.error = "the CUDA plugin " + path.string() + " was built for backend interface version " +
                  std::to_string(version()) + ", this aji expects " + std::to_string(kBackendAbiVersion) +
                  " (a stale build)";
        return;
      }
      p.handle = h;
      p.create = create;
      return;
    }
    p.error = "no CUDA plugin (libaji_cuda.so) was found; looked for:" + tried;
  });
  return p;
}

}  // namespace

Backend& cpu_backend() {
  static CpuBackend backend;
  return backend;
}

std::shared_ptr<Backend> make_separate_cpu_backend() { return std::make_shared<CpuBackend>(/*separate=*/true); }

std::string cuda_plugin_search_path() {
  std::string s;
  for (const auto& p : plugin_candidates()) s += (s.empty() ? "" : ", ") + p.string();
  return s;
}

std::shared_ptr<Backend> make_backend(const DeviceSpec& spec) {
  if (spec.kind == DeviceKind::kCpu && spec.separate) return make_separate_cpu_backend();
  if (spec.kind == DeviceKind::kCpu) return std::shared_ptr<Backend>(&cpu_backend(), [](Backend*) {});
  Plugin& p = plugin();
  if (!p.create)
    throw Error("device " + spec.text() + " is not available: " + p.error)
        .fix("build aji where the CUDA toolkit (nvcc) is installed, so that libaji_cuda.so is built beside the "
             "aji binary, or point AJI_CUDA_PLUGIN at it; with the plugin present, make its CUDA libraries "
             "(libcublasLt.so.13) findable through LD_LIBRARY_PATH; or use --device cpu");
  char error[1024] = {0};
  Backend* b = p.create(spec.index, error, sizeof error);
  if (!b)
    throw Error("device " + spec.text() + " is not available: " + error)
        .fix("check the NVIDIA driver (nvidia-smi) and the GPU index, or use --device cpu");
  return std::shared_ptr<Backend>(b);
}

}  // namespace aji::kernels
