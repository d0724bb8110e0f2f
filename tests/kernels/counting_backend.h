// A test device: a backend that forwards every call to another (usually
// kernels::make_separate_cpu_backend(), a CPU with memory of its own), counts the bytes moved
// to and from it, and can report a memory size of its choosing.
#pragma once

#include <memory>
#include <string>
#include <utility>

#include "aji/kernels/backend.h"

namespace aji::test {

class CountingBackend : public kernels::Backend {
 public:
  explicit CountingBackend(std::shared_ptr<kernels::Backend> inner) : in_(std::move(inner)) {}
  size_t up = 0, down = 0;  // bytes to the device, to the host

  kernels::DeviceKind kind() const override { return in_->kind(); }
  std::string describe() const override { return "test device (" + in_->describe() + ")"; }
  void* alloc(size_t bytes) override { return in_->alloc(bytes); }
  void release(void* p) noexcept override { in_->release(p); }
  void to_device(void* dst, const void* src, size_t bytes) override {
    up += bytes;
    in_->to_device(dst, src, bytes);
  }
  void to_host(void* dst, const void* src, size_t bytes) override {
    down += bytes;
    in_->to_host(dst, src, bytes);
  }
  void copy(void* dst, const void* src, size_t bytes) override { in_->copy(dst, src, bytes); }
  void copy_rows(void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t width,
                 size_t rows) override {
    ++append_calls;
    in_->copy_rows(dst, dst_pitch, src, src_pitch, width, rows);
  }
  void zero(void* p, size_t bytes) override { in_->zero(p, bytes); }
  void set_matmul_tf32(bool on) override { in_->set_matmul_tf32(on); }
  bool matmul_tf32() const override { return in_->matmul_tf32(); }
  std::string collective_id(std::string* why_not) override { return in_->collective_id(why_not); }
  void join_collective(const std::string& id, int rank, int size) override { in_->join_collective(id, rank, size); }
  bool in_collective() const override { return in_->in_collective(); }
  void allreduce_mean(float* data, size_t n) override { in_->allreduce_mean(data, n); }
  bool bf16_products() const override { return in_->bf16_products(); }
  void round_to_bf16(uint16_t* dst, const float* src, size_t n) override { in_->round_to_bf16(dst, src, n); }
  void matmul_forward_bf16(float* out, const float* inp, const uint16_t* w, const float* bias, int64_t N, int IC,
                           int OC, kernels::WeightLayout l, bool acc) override {
    in_->matmul_forward_bf16(out, inp, w, bias, N, IC, OC, l, acc);
  }
  void matmul_backward_bf16(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                            const uint16_t* w, int64_t N, int IC, int OC, kernels::WeightLayout l) override {
    in_->matmul_backward_bf16(dinp, dw, db, dout, inp, w, N, IC, OC, l);
  }
  void synchronize() override { in_->synchronize(); }
  // What the device reports as its memory: the inner backend's, or fake_free/fake_total when set.
  size_t fake_free = 0, fake_total = 0;
  bool memory_info(size_t& free_bytes, size_t& total_bytes) override {
    if (fake_total == 0) return in_->memory_info(free_bytes, total_bytes);
    free_bytes = fake_free;
    total_bytes = fake_total;
    return true;
  }
  void matmul_forward(float* out, const float* inp, const float* w, const float* b, int64_t N, int IC, int OC,
                      kernels::WeightLayout l, bool acc) override {
    in_->matmul_forward(out, inp, w, b, N, IC, OC, l, acc);
  }
  void matmul_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                       int64_t N, int IC, int OC, kernels::WeightLayout l) override {
    in_->matmul_backward(dinp, dw, db, dout, inp, w, N, IC, OC, l);
  }
  void embedding_forward(float* out, const int32_t* tok, const float* wte, const float* wpe, int B, int T, int C,
                         int pos0, const int32_t* pos) override {
    in_->embedding_forward(out, tok, wte, wpe, B, T, C, pos0, pos);
  }
  void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tok, int B, int T, int C,
                          const int32_t* pos) override {
    in_->embedding_backward(dwte, dwpe, dout, tok, B, T, C, pos);
  }
  void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b,
                         int64_t N, int C, float eps) override {
    in_->layernorm_forward(out, mean, rstd, inp, w, b, N, C, eps);
  }
  void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                          const float* mean, const float* rstd, int64_t N, int C) override {
    in_->layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, N, C);
  }
  void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* w, int64_t N, int C,
                       float eps) override {
    in_->rmsnorm_forward(out, rstd, inp, w, N, C, eps);
  }
  void rmsnorm_backward(float* dinp, float* dw, const float* dout, const float* inp, const float* w,
                        const float* rstd, int64_t N, int C) override {
    in_->rmsnorm_backward(dinp, dw, dout, inp, w, rstd, N, C);
  }
  void head_rmsnorm_forward(float* x, const float* w, int64_t N, int64_t stride, int col, int nh, int hd,
                            float eps) override {
    in_->head_rmsnorm_forward(x, w, N, stride, col, nh, hd, eps);
  }
  void head_rmsnorm_backward(float* d, float* dw, const float* x, const float* w, int64_t N, int64_t stride, int col,
                             int nh, int hd, float eps) override {
    in_->head_rmsnorm_backward(d, dw, x, w, N, stride, col, nh, hd, eps);
  }
  void gelu_forward(float* out, const float* inp, int64_t n) override { in_->gelu_forward(out, inp, n); }
  void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) override {
    in_->gelu_backward(dinp, inp, dout, n);
  }
  void swiglu_forward(float* out, const float* gu, int64_t N, int F) override { in_->swiglu_forward(out, gu, N, F); }
  void swiglu_backward(float* dgu, const float* dout, const float* gu, int64_t N, int F) override {
    in_->swiglu_backward(dgu, dout, gu, N, F);
  }
  void rope_apply(float* x, const float* c, const float* s, int B, int T, int64_t stride, int col, int nh, int hd,
                  int pos0, bool inverse, const int32_t* pos, const float* src) override {
    in_->rope_apply(x, c, s, B, T, stride, col, nh, hd, pos0, inverse, pos, src);
  }
  // Calls of the attention and KV-append ops (attention_forward, attention_cached, kv_append,
  // copy_rows): what a decode step launches per layer.
  int64_t attention_calls = 0, append_calls = 0;
  void kv_append(const kernels::CachedSeq* seqs, int n, int64_t rows, int layer, const float* src, int64_t src_ts,
                 int kvw) override {
    ++append_calls;
    in_->kv_append(seqs, n, rows, layer, src, src_ts, kvw);
  }
  void attention_cached(float* out, const float* q, const kernels::CachedSeq* seqs, int n, int64_t rows, int layer,
                        const kernels::AttnDims& d) override {
    ++attention_calls;
    in_->attention_cached(out, q, seqs, n, rows, layer, d);
  }
  void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                         const kernels::AttnDims& d) override {
    ++attention_calls;
    in_->attention_forward(out, lse, q, k, v, d);
  }
  void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                          const float* v, const float* out, const float* lse, const kernels::AttnDims& d) override {
    in_->attention_backward(dq, dk, dv, dout, q, k, v, out, lse, d);
  }
  void add_inplace(float* a, const float* b, int64_t n) override { in_->add_inplace(a, b, n); }
  double softmax_xent_backward_inplace(float* logits, float* losses, const int32_t* targets, const float* weights,
                                       float grad_scale, int64_t n, int V, float inv_temperature) override {
    return in_->softmax_xent_backward_inplace(logits, losses, targets, weights, grad_scale, n, V, inv_temperature);
  }
  void adamw_update(float* p, const float* g, float* m, float* v, size_t n,
                    const kernels::AdamWScalars& s) override {
    in_->adamw_update(p, g, m, v, n, s);
  }
  double sum_squares(const float* x, size_t n) override { return in_->sum_squares(x, n); }
  void scale(float* x, float a, size_t n) override { in_->scale(x, a, n); }

 private:
  std::shared_ptr<kernels::Backend> in_;
};

}  // namespace aji::test
