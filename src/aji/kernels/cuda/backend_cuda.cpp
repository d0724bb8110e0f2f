// The CUDA backend (libaji_cuda.so): device memory, one stream, a cuBLASLt handle, and the
// kernels of launch.h behind the Backend interface of kernels/backend.h. Loaded by
// kernels::make_backend (backend.cpp) through the two extern "C" entry points at the end.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "aji/base/error.h"
#include "aji/kernels/backend.h"
#include "aji/kernels/cuda/check.h"
#include "aji/kernels/cuda/launch.h"

namespace aji::kernels::cuda {

void* Context::workspace(size_t bytes) {
  bytes = std::max<size_t>(bytes, 256);
  if (bytes > workspace_bytes_) {
    // The old buffer may still be read by queued kernels: wait for them before freeing it.
    AJI_CUDA_CHECK(cudaStreamSynchronize(stream));
    if (workspace_) AJI_CUDA_CHECK(cudaFree(workspace_));
    workspace_ = nullptr;
    const size_t grown = std::max(bytes, 2 * workspace_bytes_);
    AJI_CUDA_CHECK(cudaMalloc(&workspace_, grown));
    workspace_bytes_ = grown;
  }
  return workspace_;
}

void Context::launched(const char* op) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw_cuda(e, (std::string("the launch of ") + op).c_str(), __FILE__, __LINE__);
  if (sync_each_op) {
    e = cudaStreamSynchronize(stream);
    if (e != cudaSuccess) throw_cuda(e, (std::string("op ") + op + " (AJI_CUDA_SYNC=1)").c_str(), __FILE__, __LINE__);
  }
}

namespace {

std::string gib(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice || e == cudaErrorStubLibrary) {
      throw Error(std::string("no usable NVIDIA driver or GPU (") + cudaGetErrorName(e) + ": " +
                  cudaGetErrorString(e) + ")");
    }
    if (e != cudaSuccess) throw_cuda(e, "cudaGetDeviceCount", __FILE__, __LINE__);
    if (count == 0) throw Error("the NVIDIA driver sees no GPU");
    if (device < 0 || device >= count)
      throw Error("there is no GPU cuda:" + std::to_string(device) + " (this machine has " + std::to_string(count) +
                  ": cuda:0 .. cuda:" + std::to_string(count - 1) + ")");
    ctx_.device = device;
    AJI_CUDA_CHECK(cudaSetDevice(device));
    AJI_CUDA_CHECK(cudaGetDeviceProperties(&prop_, device));
    ctx_.sm_count = prop_.multiProcessorCount;
    AJI_CUDA_CHECK(cudaStreamCreateWithFlags(&ctx_.stream, cudaStreamNonBlocking));
    AJI_CUBLAS_CHECK(cublasLtCreate(&ctx_.lt));
    ctx_.lt_workspace_bytes = 32u << 20;
    AJI_CUDA_CHECK(cudaMalloc(&ctx_.lt_workspace, ctx_.lt_workspace_bytes));
    AJI_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&totals_), 2 * sizeof(double)));
    const char* sync = std::getenv("AJI_CUDA_SYNC");
    ctx_.sync_each_op = sync && *sync && std::string(sync) != "0";
    int driver = 0, runtime = 0;
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    describe_ = "cuda:" + std::to_string(device) + " " + prop_.name + ", " + gib(prop_.totalGlobalMem) + ", sm_" +
                std::to_string(prop_.major) + std::to_string(prop_.minor) + ", " +
                std::to_string(prop_.multiProcessorCount) + " SMs, driver " + std::to_string(driver / 1000) + "." +
                std::to_string(driver % 1000 / 10) + ", runtime " + std::to_string(runtime / 1000) + "." +
                std::to_string(runtime % 1000 / 10) + (ctx_.sync_each_op ? ", AJI_CUDA_SYNC" : "");
  }
  ~CudaBackend() override {
    cudaSetDevice(ctx_.device);
    if (ctx_.stream) cudaStreamSynchronize(ctx_.stream);
    cuda::nccl_leave(nccl_);
    if (totals_) cudaFree(totals_);
    if (ctx_.workspace_) cudaFree(ctx_.workspace_);
    if (ctx_.lt_workspace) cudaFree(ctx_.lt_workspace);
    if (ctx_.lt) cublasLtDestroy(ctx_.lt);
    if (ctx_.stream) cudaStreamDestroy(ctx_.stream);
  }

  DeviceKind kind() const override { return DeviceKind::kCuda; }
  std::string describe() const override { return describe_; }

  // ---- memory ----------------------------------------------------------------------------
  void* alloc(size_t bytes) override {
    bind();
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 1));
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // clear it
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      throw Error("out of GPU memory on " + describe_ + ": asked for " + gib(bytes) + ", " + gib(free_b) +
                  " free of " + gib(total_b))
          .fix("use a smaller batch (-B) or sequence length, or a GPU with more memory");
    }
    if (e != cudaSuccess) throw_cuda(e, "cudaMalloc", __FILE__, __LINE__);
    return p;
  }
  bool memory_info(size_t& free_bytes, size_t& total_bytes) override {
    bind();
    AJI_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    return true;
  }
  void release(void* p) noexcept override {
    if (!p) return;
    cudaSetDevice(ctx_.device);
    cudaStreamSynchronize(ctx_.stream);  // queued ops may still read it
    cudaFree(p);
  }
  void to_device(void* dst, const void* src, size_t bytes) override {
    if (!bytes) return;
    bind();
    // From pageable memory the call returns once the source is staged, so the caller may
    // reuse it at once; the copy is ordered with the ops on the stream.
    AJI_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ctx_.stream));
  }
  void to_host(void* dst, const void* src, size_t bytes) override {
    if (!bytes) return;
    bind();
    AJI_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ctx_.stream));
    AJI_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (!bytes) return;
    bind();
    AJI_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ctx_.stream));
  }
  void copy_rows(void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t width,
                 size_t rows) override {
    if (!width || !rows) return;
    bind();
    AJI_CUDA_CHECK(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width, rows, cudaMemcpyDeviceToDevice,
                                     ctx_.stream));
  }
  void zero(void* p, size_t bytes) override {
    if (!bytes) return;
    bind();
    AJI_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, ctx_.stream));
  }
  void synchronize() override {
    bind();
    AJI_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
  }

  // ---- ops -------------------------------------------------------------------------------
  void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N, int IC, int OC,
                      WeightLayout layout, bool accumulate) override {
    bind();
    cuda::matmul_forward(ctx_, out, inp, weight, bias, N, IC, OC, layout, accumulate);
  }
  void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                       const float* weight, int64_t N, int IC, int OC, WeightLayout layout) override {
    bind();
    cuda::matmul_backward(ctx_, dinp, dweight, dbias, dout, inp, weight, N, IC, OC, layout);
  }
  void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B, int T, int C,
                         int pos0, const int32_t* positions) override {
    bind();
    cuda::embedding_forward(ctx_, out, tokens, wte, wpe, B, T, C, pos0, positions);
  }
  void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B, int T, int C,
                          const int32_t* positions) override {
    bind();
    cuda::embedding_backward(ctx_, dwte, dwpe, dout, tokens, B, T, C, positions);
  }
  void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                         const float* bias, int64_t N, int C, float eps) override {
    bind();
    cuda::layernorm_forward(ctx_, out, mean, rstd, inp, weight, bias, N, C, eps);
  }
  void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                          const float* weight, const float* mean, const float* rstd, int64_t N, int C) override {
    bind();
    cuda::layernorm_backward(ctx_, dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
  }
  void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t N, int C,
                       float eps) override {
    bind();
    cuda::rmsnorm_forward(ctx_, out, rstd, inp, weight, N, C, eps);
  }
  void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                        const float* rstd, int64_t N, int C) override {
    bind();
    cuda::rmsnorm_backward(ctx_, dinp, dweight, dout, inp, weight, rstd, N, C);
  }
  void head_rmsnorm_forward(float* x, const float* weight, int64_t N, int64_t stride, int col, int n_heads, int hd,
                            float eps) override {
    bind();
    cuda::head_rmsnorm_forward(ctx_, x, weight, N, stride, col, n_heads, hd, eps);
  }
  void head_rmsnorm_backward(float* d, float* dweight, const float* x_in, const float* weight, int64_t N,
                             int64_t stride, int col, int n_heads, int hd, float eps) override {
    bind();
    cuda::head_rmsnorm_backward(ctx_, d, dweight, x_in, weight, N, stride, col, n_heads, hd, eps);
  }
  void gelu_forward(float* out, const float* inp, int64_t n) override {
    bind();
    cuda::gelu_forward(ctx_, out, inp, n);
  }
  void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) override {
    bind();
    cuda::gelu_backward(ctx_, dinp, inp, dout, n);
  }
  void swiglu_forward(float* out, const float* gate_up, int64_t N, int F) override {
    bind();
    cuda::swiglu_forward(ctx_, out, gate_up, N, F);
  }
  void swiglu_backward(float* dgate_up, const float* dout, const float* gate_up, int64_t N, int F) override {
    bind();
    cuda::swiglu_backward(ctx_, dgate_up, dout, gate_up, N, F);
  }
  void rope_apply(float* x, const float* cos_t, const float* sin_t, int B, int T, int64_t stride, int col, int n_heads,
                  int hd, int pos0, bool inverse, const int32_t* positions, const float* src) override {
    bind();
    cuda::rope_apply(ctx_, x, cos_t, sin_t, B, T, stride, col, n_heads, hd, pos0, inverse, positions, src);
  }
  void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                         const AttnDims& d) override {
    bind();
    cuda::attention_forward(ctx_, out, lse, q, k, v, d);
  }
  void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                          const float* v, const float* out, const float* lse, const AttnDims& d) override {
    bind();
    cuda::attention_backward(ctx_, dq, dk, dv, dout, q, k, v, out, lse, d);
  }
  // NCCL between the ranks' GPUs (nccl.cpp).
  std::string collective_id(std::string* why_not) override { return cuda::nccl_unique_id(why_not); }
  void join_collective(const std::string& id, int rank, int size) override {
    bind();
    if (nccl_) throw Error("join_collective: " + describe_ + " is in a collective already");
    nccl_ = cuda::nccl_join(ctx_, id, rank, size);
  }
  bool in_collective() const override { return nccl_ != nullptr; }
  void allreduce_mean(float* data, size_t n) override {
    bind();
    cuda::nccl_allreduce_mean(ctx_, nccl_, data, n);
  }
  bool bf16_products() const override { return prop_.major >= 8; }  // Ampere and later: bf16 tensor cores
  void round_to_bf16(uint16_t* dst, const float* src, size_t n) override {
    cuda::round_to_bf16(ctx_, dst, src, n);
  }
  void matmul_forward_bf16(float* out, const float* inp, const uint16_t* weight_bf16, const float* bias, int64_t N,
                           int IC, int OC, WeightLayout layout, bool accumulate) override {
    cuda::matmul_forward_bf16(ctx_, out, inp, weight_bf16, bias, N, IC, OC, layout, accumulate);
  }
  void matmul_backward_bf16(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                            const uint16_t* weight_bf16, int64_t N, int IC, int OC, WeightLayout layout) override {
    cuda::matmul_backward_bf16(ctx_, dinp, dweight, dbias, dout, inp, weight_bf16, N, IC, OC, layout);
  }
  void set_matmul_tf32(bool on) override { ctx_.tf32 = on; }
  bool matmul_tf32() const override { return ctx_.tf32; }
  void kv_append(const CachedSeq* seqs, int n, int64_t rows, int layer, const float* src, int64_t src_ts,
                 int kvw) override {
    bind();
    cuda::kv_append(ctx_, seqs, n, rows, layer, src, src_ts, kvw);
  }
  void attention_cached(float* out, const float* q, const CachedSeq* seqs, int n, int64_t rows, int layer,
                        const AttnDims& d) override {
    bind();
    cuda::attention_cached(ctx_, out, q, seqs, n, rows, layer, d);
  }
  void add_inplace(float* a, const float* b, int64_t n) override {
    bind();
    cuda::add_inplace(ctx_, a, b, n);
  }
  double softmax_xent_backward_inplace(float* logits, float* losses, const int32_t* targets, const float* weights,
                                       float grad_scale, int64_t n, int V, float inv_temperature) override {
    bind();
    if (n <= 0) return 0.0;
    cuda::softmax_xent_backward_inplace(ctx_, totals_, logits, losses, targets, weights, grad_scale, n, V,
                                        inv_temperature);
    return read_total();
  }
  void adamw_update(float* params, const float* grads, float* m, float* v, size_t n, const AdamWScalars& s) override {
    bind();
    cuda::adamw_update(ctx_, params, grads, m, v, n, s);
  }
  double sum_squares(const float* x, size_t n) override {
    bind();
    if (n == 0) return 0.0;
    cuda::sum_squares(ctx_, totals_, x, n);
    return read_total();
  }
  void scale(float* x, float a, size_t n) override {
    bind();
    cuda::scale(ctx_, x, a, n);
  }

 private:
  // The calling thread's current device is this backend's (cheap when it already is).
  void bind() { AJI_CUDA_CHECK(cudaSetDevice(ctx_.device)); }
  double read_total() {
    double total = 0;
    AJI_CUDA_CHECK(cudaMemcpyAsync(&total, totals_, sizeof(double), cudaMemcpyDeviceToHost, ctx_.stream));
    AJI_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    return total;
  }

  Context ctx_;
  cudaDeviceProp prop_{};
  double* totals_ = nullptr;  // device: a reduction's result on its way to the host
  cuda::NcclComm* nccl_ = nullptr;  // join_collective's communicator (nccl.cpp)
  std::string describe_;
};

}  // namespace
}  // namespace aji::kernels::cuda

extern "C" __attribute__((visibility("default"))) int aji_backend_abi_version() {
  return aji::kernels::kBackendAbiVersion;
}

extern "C" __attribute__((visibility("default"))) aji::kernels::Backend* aji_cuda_backend_create(int device,
                                                                                                 char* error,
                                                                                                 size_t error_size) {
  try {
    return new aji::kernels::cuda::CudaBackend(device);
  } catch (const std::exception& e) {
    if (error && error_size) std::snprintf(error, error_size, "%s", e.what());
  } catch (...) {
    if (error && error_size) std::snprintf(error, error_size, "unknown error while starting CUDA");
  }
  return nullptr;
}
