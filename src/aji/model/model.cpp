#include "aji/model/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "aji/base/error.h"
#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "aji/kernels/cpu/bf16_gemm.h"
#include "aji/kernels/cpu/ops.h"

namespace aji::model {

namespace ops = aji::kernels::cpu;
using ops::WeightLayout;

namespace {
constexpr size_t kNone = std::numeric_limits<size_t>::max();

// A float arena carved into aligned slices; sizes depend on N = B*T only.
struct Bump {
  size_t used = 0;
  float* base = nullptr;
  float* take(size_t n) {
    float* p = base ? base + used : nullptr;
    used += (n + 15) / 16 * 16;  // 64-byte alignment of every slice
    return p;
  }
  uint16_t* take_bf16(size_t n) { return reinterpret_cast<uint16_t*>(take((n + 1) / 2)); }
};

using kernels::DeviceMem;

// The inputs forward() keeps for a product (the norms' outputs, the FFN activation): fp32, or
// in bf16 precision the bf16 bits that product reads (Out = uint16_t).
template <class T>
constexpr bool kBf16Input = std::is_same_v<std::remove_cv_t<T>, uint16_t>;
// fp32 on the model's backend; bf16 bits (bf16 precision, the CPU only) through kernels/cpu.
template <class Out>
void ffn_activation(kernels::Backend& be, const ModelConfig& c, Out* dst, const float* fc, int64_t N) {
  if constexpr (kBf16Input<Out>) {
    if (c.is_gpt2())
      ops::gelu_forward(dst, fc, N * c.ff());
    else
      ops::swiglu_forward(dst, fc, N, c.ff());
  } else {
    if (c.is_gpt2())
      be.gelu_forward(dst, fc, N * c.ff());
    else
      be.swiglu_forward(dst, fc, N, c.ff());
  }
}

// One product of a forward_extend pass over `rows` rows. invariant: every row as it is alone
// (a converted matrix's row kernel in groups of kPackedRows, the rows it computes the same;
// fp32 through matmul_forward_rows); else one call over all rows (the GEMM library).
void pass_matmul(float* out, const float* inp, const ops::PackedWeight* pw, const float* w, const float* bias,
                 int64_t rows, int IC, int OC, WeightLayout layout, bool accumulate, bool invariant) {
  if (!pw) {
    if (invariant)
      ops::matmul_forward_rows(out, inp, w, bias, rows, IC, OC, layout, accumulate);
    else
      ops::matmul_forward(out, inp, w, bias, rows, IC, OC, layout, accumulate);
    return;
  }
  const int64_t group = invariant ? ops::kPackedRows : rows;
  for (int64_t g = 0; g < rows; g += group)
    ops::packed_matmul_forward(out + g * OC, inp + g * IC, *pw, bias, std::min(group, rows - g), accumulate);
}
}  // namespace

struct LayerOffsets {
  size_t ln1_w = kNone, ln1_b = kNone, qkv_w = kNone, qkv_b = kNone, q_norm = kNone, k_norm = kNone;
  size_t o_w = kNone, o_b = kNone, ln2_w = kNone, ln2_b = kNone, fc_w = kNone, fc_b = kNone;
  size_t proj_w = kNone, proj_b = kNone;
};

struct LayerActs {  // saved by forward for backward, (N = B*T)
  float* resid_in;   // (N,C) input of the layer
  // The norms' outputs, which only the next product reads: fp32, or in bf16 precision the
  // bf16 bits that product takes (ln1 / ln2 null then; half the memory, no second rounding
  // in backward).
  float* ln1;        // (N,C)
  uint16_t* ln1_16;  // (N,C) bf16 precision
  float* ln1_mean;   // (N) gpt2 only
  float* ln1_rstd;   // (N)
  float* qkv;        // (N,QKV) projection output (before QK-norm / RoPE)
  float* atty;       // (N,H*hd) attention output
  float* lse;        // (B,H,T) log-sum-exp of attention rows
  float* resid_mid;  // (N,C) after the attention residual
  float* ln2;        // (N,C)
  uint16_t* ln2_16;  // (N,C) bf16 precision
  float* ln2_mean;
  float* ln2_rstd;
  float* fc;         // (N,F) gpt2 pre-GELU, (N,2F) llama [gate|up]
};

struct Model::Impl {
  std::vector<LayerOffsets> layers;
  size_t wte = kNone, wpe = kNone, lnf_w = kNone, lnf_b = kNone, lm_head = kNone;
  std::vector<float> rope_cos, rope_sin;  // (max_seq_len, hd/2)

  // training arena
  AlignedFloats arena;
  int64_t cap_N = 0;
  std::vector<LayerActs> la;
  float *resid_final = nullptr, *hidden = nullptr, *lnf_mean = nullptr, *lnf_rstd = nullptr;
  // act: the FFN's activation output (N,F), the down projection's input, recomputed in
  // backward; in bf16 precision act16 instead (its bf16 bits, what that product reads).
  uint16_t* act16 = nullptr;
  float *qkv_work = nullptr, *act = nullptr, *d_resid = nullptr, *d_tmp = nullptr, *d_qkv = nullptr;
  float *d_fc = nullptr, *d_act = nullptr, *d_atty = nullptr, *d_hidden = nullptr, *logits = nullptr;
  int64_t logits_rows = 0;
  std::vector<int32_t> tokens;
  std::vector<int32_t> positions, key_start;  // (B,T) of a packed batch; empty otherwise
  bool have_forward = false;
  const int32_t* pos_ptr() const { return positions.empty() ? nullptr : positions.data(); }
  const int32_t* key_start_ptr() const { return key_start.empty() ? nullptr : key_start.data(); }

  // The q and k that attention sees for a (B,T) batch (k at column QW of the result; v is
  // read from the projection output itself): GPT-2's projection as is; Llama's with QK-norm
  // and RoPE applied to q and k in qkv_work (its v columns are not written). Forward and
  // backward (which recomputes it instead of storing it) share this.
  const float* attention_qkv(const ModelConfig& c, const float* P, const LayerOffsets& Lw, const float* qkv, int B,
                             int T);

  // ---- the training path on a device with memory of its own (Model::set_device) ----
  std::shared_ptr<kernels::Backend> device;  // null: the CPU over the host buffers
  kernels::Backend& be() const { return device ? *device : kernels::cpu_backend(); }
  DeviceMem d_params, d_grads, d_arena;
  DeviceMem d_infer;  // forward_infer_device's and extend_layers_device's activations, tokens and logits
  DeviceMem d_head;   // device_head_rows's rows, normed rows and logits
  DeviceMem d_rope;  // rope_cos then rope_sin, on the device
  // forward()'s int inputs on the device (carved from the arena)
  int32_t *d_tokens = nullptr, *d_positions = nullptr, *d_key_start = nullptr;
  int32_t* d_targets = nullptr;          // (N) the LM-head pass's targets
  float *d_weights = nullptr, *d_ce = nullptr;  // (N) its weights and per-token losses
  bool grads_on_device = false;   // the device's gradients are newer than the host's
  bool device_grads_stale = true; // the host's may be newer than the device's: upload before use
  bool d_hidden_on_device = false;  // d_hidden was written on the device, the host copy is stale
  bool h_hidden_valid = false;      // h_hidden holds this forward's hidden states
  AlignedFloats h_hidden, h_d_hidden, h_logits;  // host copies on a device
  const int32_t* rows_key_start() const { return device ? (key_start.empty() ? nullptr : d_key_start) : key_start_ptr(); }
  const int32_t* rows_positions() const { return device ? (positions.empty() ? nullptr : d_positions) : pos_ptr(); }
  const float* rope_c() const { return device ? d_rope.f() : rope_cos.data(); }
  const float* rope_s() const { return device ? d_rope.f() + rope_cos.size() : rope_sin.data(); }
  // Host scratch for rows of logits: the arena's on the CPU, a host buffer on a device.
  float* host_logits(int64_t V) {
    if (!device) return logits;
    if (h_logits.size() < (size_t)(logits_rows * V)) h_logits.resize((size_t)(logits_rows * V));
    return h_logits.data();
  }

  // bf16 copy of every parameter (same offsets as params()), for Precision::kBf16: on the
  // host, or (d_w16) in the device's memory, refreshed there by Backend::round_to_bf16
  AlignedVector<uint16_t> w16;
  DeviceMem d_w16;
  const uint16_t* w16p() const { return device ? static_cast<const uint16_t*>(d_w16.p) : w16.data(); }

  // inference arena
  std::vector<float> infer;
  int64_t infer_cap_N = 0;
  int infer_cap_batch = 0;
  std::vector<float> extend_rows, extend_logits;  // forward_extend's heads
  std::vector<int32_t> extend_targets;

  // low-precision copies for generation (use_weights); empty = the fp32 matrix in params
  struct LayerPacked {
    ops::PackedWeight qkv, o, fc, proj;
  };
  ops::WeightType wtype = ops::WeightType::kF32;
  std::vector<LayerPacked> packed;  // (n_layer) or empty
  ops::PackedWeight packed_lm_head;
  bool fp32_dropped = false;
  const ops::PackedWeight* pk(int l, ops::PackedWeight LayerPacked::*m) const {
    if (packed.empty()) return nullptr;
    const ops::PackedWeight& p = packed[static_cast<size_t>(l)].*m;
    return p.empty() ? nullptr : &p;
  }
};

const float* Model::Impl::attention_qkv(const ModelConfig& c, const float* P, const LayerOffsets& Lw,
                                        const float* qkv, int B, int T) {
  if (c.is_gpt2()) return qkv;
  const int64_t N = (int64_t)B * T, QKV = c.qkv_width(), QW = c.q_width();
  const float* src = qkv;  // RoPE out of place from the projection, unless QK-norm went first
  kernels::Backend& b = be();
  if (c.qk_norm) {
    b.copy(qkv_work, qkv, sizeof(float) * N * QKV);
    b.head_rmsnorm_forward(qkv_work, P + Lw.q_norm, N, QKV, 0, c.n_head, c.hd(), c.norm_eps);
    b.head_rmsnorm_forward(qkv_work, P + Lw.k_norm, N, QKV, (int)QW, c.n_kv_head, c.hd(), c.norm_eps);
    src = nullptr;
  }
  // q's heads and k's, which follow them (column QW = n_head * hd), in one pass
  b.rope_apply(qkv_work, rope_c(), rope_s(), B, T, QKV, 0, c.n_head + c.n_kv_head, c.hd(), 0, false,
               rows_positions(), src);
  return qkv_work;
}

// ---- construction -----------------------------------------------------------------------

Model::Model(const ModelConfig& config) : config_(config) {
  config_.validate();
  (void)aji::num_threads();  // settle the OpenMP thread count before the first parallel op
  impl_ = new Impl();
  const ModelConfig& c = config_;
  const int64_t C = c.d_model, V = c.vocab_size, F = c.ff(), hd = c.hd();
  size_t off = 0;
  auto add = [&](std::string name, std::vector<int64_t> shape, bool decay) {
    size_t n = 1;
    for (int64_t s : shape) n *= (size_t)s;
    tensors_.push_back(ParamTensor{std::move(name), std::move(shape), off, n, decay});
    size_t at = off;
    off += n;
    return at;
  };
  impl_->layers.resize(c.n_layer);
  if (c.is_gpt2()) {
    impl_->wte = add("transformer.wte.weight", {V, C}, false);
    impl_->wpe = add("transformer.wpe.weight", {c.max_seq_len, C}, false);
    for (int l = 0; l < c.n_layer; ++l) {
      LayerOffsets& L = impl_->layers[l];
      const std::string p = "transformer.h." + std::to_string(l) + ".";
      L.ln1_w = add(p + "ln_1.weight", {C}, false);
      L.ln1_b = add(p + "ln_1.bias", {C}, false);
      L.qkv_w = add(p + "attn.c_attn.weight", {C, 3 * C}, true);
      L.qkv_b = add(p + "attn.c_attn.bias", {3 * C}, false);
      L.o_w = add(p + "attn.c_proj.weight", {C, C}, true);
      L.o_b = add(p + "attn.c_proj.bias", {C}, false);
      L.ln2_w = add(p + "ln_2.weight", {C}, false);
      L.ln2_b = add(p + "ln_2.bias", {C}, false);
      L.fc_w = add(p + "mlp.c_fc.weight", {C, F}, true);
      L.fc_b = add(p + "mlp.c_fc.bias", {F}, false);
      L.proj_w = add(p + "mlp.c_proj.weight", {F, C}, true);
      L.proj_b = add(p + "mlp.c_proj.bias", {C}, false);
    }
    impl_->lnf_w = add("transformer.ln_f.weight", {C}, false);
    impl_->lnf_b = add("transformer.ln_f.bias", {C}, false);
    impl_->lm_head = impl_->wte;
  } else {
    impl_->wte = add("model.embed_tokens.weight", {V, C}, false);
    for (int l = 0; l < c.n_layer; ++l) {
      LayerOffsets& L = impl_->layers[l];
      const std::string p = "model.layers." + std::to_string(l) + ".";
      L.ln1_w = add(p + "input_layernorm.weight", {C}, false);
      // q, k, v adjacent: together one (H+2KV)*hd x C matrix, one GEMM.
      L.qkv_w = add(p + "self_attn.q_proj.weight", {(int64_t)c.q_width(), C}, true);
      add(p + "self_attn.k_proj.weight", {(int64_t)c.kv_width(), C}, true);
      add(p + "self_attn.v_proj.weight", {(int64_t)c.kv_width(), C}, true);
      if (c.qk_norm) {
        L.q_norm = add(p + "self_attn.q_norm.weight", {hd}, false);
        L.k_norm = add(p + "self_attn.k_norm.weight", {hd}, false);
      }
      L.o_w = add(p + "self_attn.o_proj.weight", {C, (int64_t)c.q_width()}, true);
      L.ln2_w = add(p + "post_attention_layernorm.weight", {C}, false);
      // gate, up adjacent: one (2F) x C matrix.
      L.fc_w = add(p + "mlp.gate_proj.weight", {F, C}, true);
      add(p + "mlp.up_proj.weight", {F, C}, true);
      L.proj_w = add(p + "mlp.down_proj.weight", {C, F}, true);
    }
    impl_->lnf_w = add("model.norm.weight", {C}, false);
    impl_->lm_head = c.tied_embeddings ? impl_->wte : add("lm_head.weight", {V, C}, true);
    impl_->rope_cos.resize((size_t)c.max_seq_len * (hd / 2));
    impl_->rope_sin.resize((size_t)c.max_seq_len * (hd / 2));
    ops::rope_table(impl_->rope_cos.data(), impl_->rope_sin.data(), c.max_seq_len, (int)hd, c.rope_theta);
  }
  params_.assign(off, 0.0f);
  // Norm gains default to 1 so a freshly built model is usable even before init_weights.
  for (const auto& t : tensors_)
    if (t.name.find("norm") != std::string::npos || t.name.find("ln_") != std::string::npos)
      if (t.name.find(".bias") == std::string::npos) std::fill_n(params_.data() + t.offset, t.numel, 1.0f);
}

Model::~Model() { delete impl_; }
Model::Model(Model&& o) noexcept
    : config_(o.config_), params_(std::move(o.params_)), grads_(std::move(o.grads_)),
      tensors_(std::move(o.tensors_)), impl_(o.impl_), B_(o.B_), T_(o.T_), precision_(o.precision_),
      kv_cache_(o.kv_cache_), params_changed_(o.params_changed_), device_params_stale_(o.device_params_stale_),
      host_params_stale_(o.host_params_stale_) {
  o.impl_ = nullptr;
}
Model& Model::operator=(Model&& o) noexcept {
  if (this != &o) {
    delete impl_;
    config_ = o.config_;
    params_ = std::move(o.params_);
    grads_ = std::move(o.grads_);
    tensors_ = std::move(o.tensors_);
    impl_ = o.impl_;
    B_ = o.B_;
    T_ = o.T_;
    precision_ = o.precision_;
    kv_cache_ = o.kv_cache_;
    params_changed_ = o.params_changed_;
    device_params_stale_ = o.device_params_stale_;
    host_params_stale_ = o.host_params_stale_;
    o.impl_ = nullptr;
  }
  return *this;
}

float* Model::grads() {
  if (grads_.empty()) grads_.assign(params_.size(), 0.0f);
  Impl& I = *impl_;
  if (I.device) {
    if (I.grads_on_device) I.device->to_host(grads_.data(), I.d_grads.p, grads_.size() * sizeof(float));
    I.grads_on_device = false;
    I.device_grads_stale = true;  // the caller may write them (clipping, zeroing, a head's +=)
  }
  return grads_.data();
}

const float* Model::grads() const {
  if (grads_.empty()) return nullptr;
  Impl& I = *impl_;
  if (I.device && I.grads_on_device) {  // a read: afterwards host and device agree
    I.device->to_host(const_cast<float*>(grads_.data()), I.d_grads.p, grads_.size() * sizeof(float));
    I.grads_on_device = false;
  }
  return grads_.data();
}

// ---- device ----------------------------------------------------------------------------------

void Model::set_device(std::shared_ptr<kernels::Backend> backend) {
  Impl& I = *impl_;
  if (backend && backend.get() == &kernels::cpu_backend()) backend = nullptr;  // the host buffers
  if (backend == I.device) return;
  if (I.device && I.grads_on_device) (void)grads();  // keep the gradients computed so far
  sync_host_params();                                 // and the weights a step there wrote
  I.d_params.reset();
  I.d_grads.reset();
  I.d_arena.reset();
  I.d_rope.reset();
  I.d_w16.reset();
  params_changed_ = true;  // the bf16 copy (bf16 precision) is made again where the model now runs
  I.device = std::move(backend);
  I.have_forward = false;  // activations live in the other device's memory
  I.cap_N = 0;
  I.grads_on_device = false;
  I.device_grads_stale = true;
  I.d_hidden_on_device = false;
  device_params_stale_ = true;
  if (I.device && !I.rope_cos.empty()) {
    const size_t n = I.rope_cos.size();
    I.d_rope.ensure(*I.device, 2 * n * sizeof(float));
    I.device->to_device(I.d_rope.f(), I.rope_cos.data(), n * sizeof(float));
    I.device->to_device(I.d_rope.f() + n, I.rope_sin.data(), n * sizeof(float));
  }
}

kernels::Backend& Model::device() const { return impl_->be(); }
bool Model::on_device() const { return impl_->device != nullptr; }
const std::shared_ptr<kernels::Backend>& Model::device_handle() const { return impl_->device; }

void Model::sync_host_params() const {
  if (!host_params_stale_) return;
  const Impl& I = *impl_;
  I.device->to_host(const_cast<float*>(params_.data()), I.d_params.p, params_.size() * sizeof(float));
  host_params_stale_ = false;
}

float* Model::device_grads_for_step() { return device_grads(); }

void Model::params_updated(bool copy_kept) {
  AJI_CHECK(!host_params_stale_,
            "params_updated: the host copy of the weights is stale (a step on the device wrote them); take "
            "params() before writing them");
  params_changed_ = !copy_kept;
  device_params_stale_ = true;
}

float* Model::device_params_for_step() {
  Impl& I = *impl_;
  if (!I.device) return params();
  float* p = const_cast<float*>(device_params());  // current there (uploaded if the host's was newer)
  host_params_stale_ = true;
  params_changed_ = true;
  return p;
}

const float* Model::device_params() {
  Impl& I = *impl_;
  if (!I.device) return params_.data();
  if (device_params_stale_ || !I.d_params.p) {
    I.d_params.ensure(*I.device, params_.size() * sizeof(float));
    I.device->to_device(I.d_params.p, params_.data(), params_.size() * sizeof(float));
    device_params_stale_ = false;
  }
  return I.d_params.f();
}

float* Model::device_grads() {
  Impl& I = *impl_;
  if (!I.device) return grads();
  if (grads_.empty()) grads_.assign(params_.size(), 0.0f);
  if (!I.d_grads.p) {
    I.d_grads.ensure(*I.device, grads_.size() * sizeof(float));
    I.device_grads_stale = true;
  }
  if (I.device_grads_stale && !I.grads_on_device) {
    I.device->to_device(I.d_grads.p, grads_.data(), grads_.size() * sizeof(float));
    I.device_grads_stale = false;
  }
  I.grads_on_device = true;  // the caller accumulates into them
  return I.d_grads.f();
}

const ParamTensor* Model::find_tensor(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

float* Model::param(const std::string& name) {
  const ParamTensor* t = find_tensor(name);
  if (!t) throw Error("model has no tensor \"" + name + "\"").fix("tensor names follow the Hugging Face layout of " + std::string(arch_name(config_.arch)));
  sync_host_params();
  params_changed_ = true;
  device_params_stale_ = true;
  return params_.data() + t->offset;
}

const char* precision_name(Precision p) { return p == Precision::kBf16 ? "bf16" : "fp32"; }

void Model::set_precision(Precision p) {
  if (p == precision_) return;
  precision_ = p;
  params_changed_ = true;
  impl_->have_forward = false;  // the saved activations are in the other precision's layout
  if (p == Precision::kFp32) {
    impl_->w16.clear();
    impl_->w16.shrink_to_fit();
    impl_->d_w16.reset();
  }
}

void Model::init_weights(uint64_t seed) {
  params_changed_ = true;
  device_params_stale_ = true;
  host_params_stale_ = false;  // every weight is written here
  const float std_dev = config_.init_std;
  const float resid_std = std_dev / std::sqrt(2.0f * config_.n_layer);
  for (size_t ti = 0; ti < tensors_.size(); ++ti) {
    const ParamTensor& t = tensors_[ti];
    float* p = params_.data() + t.offset;
    const bool is_bias = t.name.size() >= 5 && t.name.compare(t.name.size() - 5, 5, ".bias") == 0;
    const bool is_norm = !is_bias && t.shape.size() == 1;
    if (is_bias) {
      std::fill_n(p, t.numel, 0.0f);
      continue;
    }
    if (is_norm) {
      std::fill_n(p, t.numel, 1.0f);
      continue;
    }
    const bool resid_proj = t.name.find("c_proj.weight") != std::string::npos ||
                            t.name.find("o_proj.weight") != std::string::npos ||
                            t.name.find("down_proj.weight") != std::string::npos;
    const float s = resid_proj ? resid_std : std_dev;
    // Blocks of 64K values with their own stream: deterministic for any thread count.
    const int64_t block = 1 << 16;
    const int64_t n_blocks = ((int64_t)t.numel + block - 1) / block;
    parallel_for(n_blocks, [&](int64_t bi) {
      uint64_t mix = seed ^ (0x9E3779B97F4A7C15ULL * (ti + 1));
      mix = splitmix64(mix) ^ (uint64_t)bi;
      Rng rng(splitmix64(mix));
      const int64_t b0 = bi * block, b1 = std::min<int64_t>(t.numel, b0 + block);
      // Box-Muller, both outputs of each pair (half the log/cos work of Rng::normal)
      for (int64_t i = b0; i < b1; i += 2) {
        double u1 = rng.uniform();
        const double u2 = rng.uniform();
        if (u1 < 1e-300) u1 = 1e-300;
        const double r = std::sqrt(-2.0 * std::log(u1)) * s;
        const double a = 6.283185307179586 * u2;
        p[i] = static_cast<float>(r * std::cos(a));
        if (i + 1 < b1) p[i + 1] = static_cast<float>(r * std::sin(a));
      }
    });
  }
}

void Model::zero_grads() {
  if (grads_.empty()) grads_.assign(params_.size(), 0.0f);
  std::fill(grads_.begin(), grads_.end(), 0.0f);
  Impl& I = *impl_;
  if (I.device) {  // both copies zero: nothing to transfer
    I.d_grads.ensure(*I.device, grads_.size() * sizeof(float));
    I.device->zero(I.d_grads.p, grads_.size() * sizeof(float));
    I.grads_on_device = false;
    I.device_grads_stale = false;
  }
}

size_t Model::activation_bytes() const {
  if (!impl_) return 0;
  return (impl_->arena.capacity() + impl_->infer.capacity()) * sizeof(float);
}

// ---- training forward -----------------------------------------------------------------------

namespace {
void check_tokens(const int32_t* tokens, int64_t n, int V, const char* what) {
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= V)
      throw Error(std::string(what) + " id " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                  " is outside the vocabulary [0, " + std::to_string(V) + ")")
          .fix("the tokenizer and the model disagree: use a model whose vocab_size covers the tokenizer");
}
}  // namespace

void Model::forward(const int32_t* tokens, int B, int T, const int32_t* position_ids, const int32_t* key_start) {
  const ModelConfig& c = config_;
  if (B <= 0 || T <= 0) throw Error("forward: batch and sequence length must be positive");
  if (impl_->fp32_dropped)
    throw Error("the full-sequence forward needs the fp32 weights, which were dropped for low-precision generation")
        .fix("load the model with --weights fp32 (scoring, --no-cache and training use fp32 weights)");
  if (T > c.max_seq_len)
    throw Error("sequence length " + std::to_string(T) + " is longer than the model's context (" +
                std::to_string(c.max_seq_len) + ")")
        .fix("use --seq-len <= " + std::to_string(c.max_seq_len) + " or a config with a larger max_seq_len");
  const int64_t N = (int64_t)B * T;
  check_tokens(tokens, N, c.vocab_size, "token");
  if (position_ids)
    for (int64_t r = 0; r < N; ++r)
      if (position_ids[r] < 0 || position_ids[r] >= c.max_seq_len)
        throw Error("position id " + std::to_string(position_ids[r]) + " at index " + std::to_string(r) +
                    " is outside the model's context [0, " + std::to_string(c.max_seq_len) + ")");
  if (key_start)
    for (int64_t r = 0; r < N; ++r)
      if (key_start[r] < 0 || key_start[r] > r % T)
        throw Error("key_start[" + std::to_string(r / T) + "," + std::to_string(r % T) + "] = " +
                    std::to_string(key_start[r]) + " is outside [0, t]");
  Impl& I = *impl_;
  kernels::Backend& be = I.be();
  const int64_t C = c.d_model, QKV = c.qkv_width(), QW = c.q_width(), F = c.ff();
  const int64_t FF = c.is_gpt2() ? F : 2 * F;
  // (re)carve the arena when N grows; slices depend on N only
  I.logits_rows = std::max<int64_t>(16, std::min<int64_t>(N, (8 << 20) / c.vocab_size));
  const bool bf16 = precision_ == Precision::kBf16;
  // The products' inputs kept in bf16 (the norms' outputs, the FFN activation): on the CPU. A
  // device keeps them fp32 and rounds them as its bf16 product reads them (the same bits).
  const bool kept16 = bf16 && !I.device;
  auto carve = [&](Bump& a, const int64_t N) {  // slices for N rows
    I.la.resize(c.n_layer);
    for (int l = 0; l < c.n_layer; ++l) {
      LayerActs& L = I.la[l];
      L.resid_in = a.take(N * C);
      L.ln1 = kept16 ? nullptr : a.take(N * C);
      L.ln1_16 = kept16 ? a.take_bf16(N * C) : nullptr;
      L.ln1_mean = a.take(N);
      L.ln1_rstd = a.take(N);
      L.qkv = a.take(N * QKV);
      L.atty = a.take(N * QW);
      L.lse = a.take(N * c.n_head);
      L.resid_mid = a.take(N * C);
      L.ln2 = kept16 ? nullptr : a.take(N * C);
      L.ln2_16 = kept16 ? a.take_bf16(N * C) : nullptr;
      L.ln2_mean = a.take(N);
      L.ln2_rstd = a.take(N);
      L.fc = a.take(N * FF);
    }
    I.resid_final = a.take(N * C);
    I.hidden = a.take(N * C);
    I.lnf_mean = a.take(N);
    I.lnf_rstd = a.take(N);
    I.qkv_work = c.is_gpt2() ? nullptr : a.take(N * QKV);
    I.act = kept16 ? nullptr : a.take(N * F);
    I.act16 = kept16 ? a.take_bf16(N * F) : nullptr;
    I.d_resid = a.take(N * C);
    I.d_tmp = a.take(N * C);
    I.d_qkv = a.take(N * QKV);
    I.d_fc = a.take(N * FF);
    I.d_act = a.take(N * F);
    I.d_atty = a.take(N * QW);
    I.d_hidden = a.take(N * C);
    I.logits = a.take(I.logits_rows * c.vocab_size);
    if (I.device) {  // the int and per-token inputs, in the device's memory (int32 = float size)
      I.d_tokens = reinterpret_cast<int32_t*>(a.take(N));
      I.d_positions = reinterpret_cast<int32_t*>(a.take(N));
      I.d_key_start = reinterpret_cast<int32_t*>(a.take(N));
      I.d_targets = reinterpret_cast<int32_t*>(a.take(N));
      I.d_weights = a.take(N);
      I.d_ce = a.take(N);
    }
  };
  // Every slice grows with N, so a buffer carved for a larger N serves a smaller one. Growing
  // a second time means the shapes vary (RL rows, SFT padding): then room for 25% more rows,
  // so a run does not zero a fresh arena (page faults) every time its longest batch grows.
  Bump count;
  carve(count, N);
  const size_t have = I.device ? I.d_arena.bytes / sizeof(float) : I.arena.size();
  if (count.used > have) {
    const int64_t cap = I.cap_N > 0 ? std::max(N, I.cap_N + I.cap_N / 4) : N;
    Bump grown;
    carve(grown, cap);
    if (I.device) {
      I.d_arena.reset();
      I.d_arena.ensure(*I.device, grown.used * sizeof(float));
    } else {
      I.arena.clear();
      I.arena.shrink_to_fit();
      I.arena.resize(grown.used);
    }
    I.cap_N = cap;
  }
  Bump real{0, I.device ? I.d_arena.f() : I.arena.data()};
  carve(real, N);
  B_ = B;
  T_ = T;
  I.tokens.assign(tokens, tokens + N);
  I.positions.clear();
  I.key_start.clear();
  if (position_ids) I.positions.assign(position_ids, position_ids + N);
  if (key_start) I.key_start.assign(key_start, key_start + N);
  if (I.device) {
    be.to_device(I.d_tokens, tokens, sizeof(int32_t) * N);
    if (position_ids) be.to_device(I.d_positions, position_ids, sizeof(int32_t) * N);
    if (key_start) be.to_device(I.d_key_start, key_start, sizeof(int32_t) * N);
    I.h_hidden_valid = false;
    I.d_hidden_on_device = false;
  }

  const float* P = device_params();
  const WeightLayout lay = c.is_gpt2() ? WeightLayout::kInOut : WeightLayout::kOutIn;
  auto W = [&](size_t o) -> const float* { return o == kNone ? nullptr : P + o; };
  if (bf16 && params_changed_) {  // the bf16 copy of the weights, after every change
    if (I.device) {
      I.d_w16.ensure(*I.device, params_.size() * sizeof(uint16_t));
      be.round_to_bf16(static_cast<uint16_t*>(I.d_w16.p), P, params_.size());
    } else {
      I.w16.resize(params_.size());
      ops::round_to_bf16(I.w16.data(), params_.data(), (int64_t)params_.size());
    }
    params_changed_ = false;
  }
  const uint16_t* w16 = bf16 ? I.w16p() : nullptr;
  // out (N,OC) (+)= inp (N,IC) x the weight at offset w (+ bias), in this model's precision;
  // inp fp32, or an input kept in bf16 (bf16 precision on the CPU only)
  auto matmul = [&](float* out, const auto* inp, size_t w, const float* bias, int IC, int OC, bool acc) {
    if constexpr (kBf16Input<std::remove_pointer_t<decltype(inp)>>)
      ops::matmul_forward_bf16(out, inp, w16 + w, bias, N, IC, OC, lay, acc);
    else if (bf16)
      be.matmul_forward_bf16(out, inp, w16 + w, bias, N, IC, OC, lay, acc);
    else
      be.matmul_forward(out, inp, P + w, bias, N, IC, OC, lay, acc);
  };
  // A product input forward keeps: use(the fp32 buffer), or use(its bf16 one) (kept16).
  auto kept = [&](float* f32, uint16_t* b16, const auto& use) {
    if (kept16)
      use(b16);
    else
      use(f32);
  };
  auto norm = [&](auto* dst, float* mean, float* rstd, const float* x, size_t w, size_t b) {
    if constexpr (kBf16Input<std::remove_pointer_t<decltype(dst)>>) {  // bf16 precision (the CPU)
      if (c.is_gpt2())
        ops::layernorm_forward(dst, mean, rstd, x, P + w, P + b, N, (int)C, c.norm_eps);
      else
        ops::rmsnorm_forward(dst, rstd, x, P + w, N, (int)C, c.norm_eps);
    } else {
      if (c.is_gpt2())
        be.layernorm_forward(dst, mean, rstd, x, P + w, P + b, N, (int)C, c.norm_eps);
      else
        be.rmsnorm_forward(dst, rstd, x, P + w, N, (int)C, c.norm_eps);
    }
  };

  be.embedding_forward(I.la[0].resid_in, I.device ? I.d_tokens : tokens, P + I.wte,
                       c.is_gpt2() ? P + I.wpe : nullptr, B, T, (int)C, 0, I.rows_positions());
  ops::AttnDims dims;
  dims.B = B, dims.Tq = T, dims.Tk = T, dims.H = c.n_head, dims.KV = c.n_kv_head, dims.hd = c.hd(), dims.q_pos0 = 0;
  dims.key_start = I.rows_key_start();
  dims.bf16_products = bf16;
  dims.q_bs = dims.k_bs = dims.v_bs = T * QKV;
  dims.q_ts = dims.k_ts = dims.v_ts = QKV;
  dims.o_bs = T * QW;
  dims.o_ts = QW;

  for (int l = 0; l < c.n_layer; ++l) {
    const LayerOffsets& Lw = I.layers[l];
    LayerActs& A = I.la[l];
    float* out = (l + 1 < c.n_layer) ? I.la[l + 1].resid_in : I.resid_final;
    kept(A.ln1, A.ln1_16, [&](auto* x) {  // the norm writes the QKV product's input
      norm(x, A.ln1_mean, A.ln1_rstd, A.resid_in, Lw.ln1_w, Lw.ln1_b);
      matmul(A.qkv, x, Lw.qkv_w, W(Lw.qkv_b), (int)C, (int)QKV, false);
    });
    const float* qkv = I.attention_qkv(c, P, Lw, A.qkv, B, T);
    be.attention_forward(A.atty, A.lse, qkv, qkv + QW, A.qkv + QW + c.kv_width(), dims);
    be.copy(A.resid_mid, A.resid_in, sizeof(float) * N * C);
    matmul(A.resid_mid, A.atty, Lw.o_w, W(Lw.o_b), (int)QW, (int)C, true);
    kept(A.ln2, A.ln2_16, [&](auto* x) {
      norm(x, A.ln2_mean, A.ln2_rstd, A.resid_mid, Lw.ln2_w, Lw.ln2_b);
      matmul(A.fc, x, Lw.fc_w, W(Lw.fc_b), (int)C, (int)FF, false);
    });
    be.copy(out, A.resid_mid, sizeof(float) * N * C);
    kept(I.act, I.act16, [&](auto* x) {
      ffn_activation(be, c, x, A.fc, N);
      matmul(out, x, Lw.proj_w, W(Lw.proj_b), (int)F, (int)C, true);
    });
  }
  if (c.is_gpt2())
    be.layernorm_forward(I.hidden, I.lnf_mean, I.lnf_rstd, I.resid_final, P + I.lnf_w, P + I.lnf_b, N, (int)C,
                         c.norm_eps);
  else
    be.rmsnorm_forward(I.hidden, I.lnf_rstd, I.resid_final, P + I.lnf_w, N, (int)C, c.norm_eps);
  I.have_forward = true;
}

const float* Model::hidden() const {
  Impl& I = *impl_;
  if (!I.have_forward) return nullptr;
  if (!I.device) return I.hidden;
  const size_t n = (size_t)B_ * T_ * config_.d_model;
  if (!I.h_hidden_valid) {
    if (I.h_hidden.size() < n) I.h_hidden.resize(n);
    I.device->to_host(I.h_hidden.data(), I.hidden, n * sizeof(float));
    I.h_hidden_valid = true;
  }
  return I.h_hidden.data();
}

float* Model::d_hidden_buffer() {
  Impl& I = *impl_;
  if (!I.have_forward) throw Error("d_hidden_buffer() before forward()");
  if (!I.device) return I.d_hidden;
  const size_t n = (size_t)B_ * T_ * config_.d_model;
  if (I.h_d_hidden.size() < n) I.h_d_hidden.resize(n);
  if (I.d_hidden_on_device) {  // written by an LM-head pass on the device; the caller may add to it
    I.device->to_host(I.h_d_hidden.data(), I.d_hidden, n * sizeof(float));
    I.d_hidden_on_device = false;
  }
  return I.h_d_hidden.data();
}

void Model::backward_from_head(int first_layer) {
  Impl& I = *impl_;
  if (I.device && I.d_hidden_on_device) {
    // backward() takes the host copy's address with d_hidden_on_device as "the device's own"
    const size_t n = (size_t)B_ * T_ * config_.d_model;
    if (I.h_d_hidden.size() < n) I.h_d_hidden.resize(n);
    backward(I.h_d_hidden.data(), first_layer);
    return;
  }
  backward(d_hidden_buffer(), first_layer);
}

void Model::lm_logits(const float* hidden_rows, int n, float* logits_out) const {
  const ModelConfig& c = config_;
  if (impl_->fp32_dropped && !impl_->packed_lm_head.empty()) {  // else fp32, as forward()
    ops::packed_matmul_forward(logits_out, hidden_rows, impl_->packed_lm_head, nullptr, n);
    return;
  }
  sync_host_params();
  ops::matmul_forward(logits_out, hidden_rows, params_.data() + impl_->lm_head, nullptr, n, c.d_model, c.vocab_size,
                      WeightLayout::kOutIn);
}

// ---- LM head loss -----------------------------------------------------------------------------

void Model::check_targets(const int32_t* targets, const char* caller) const {
  if (!impl_->have_forward) throw Error(std::string(caller) + "() before forward()");
  const int64_t N = (int64_t)B_ * T_, V = config_.vocab_size;
  for (int64_t i = 0; i < N; ++i)
    if (targets[i] >= V)
      throw Error("target id " + std::to_string(targets[i]) + " at index " + std::to_string(i) +
                  " is outside the vocabulary [0, " + std::to_string(V) + ")")
          .fix("the tokenizer and the model disagree: use a model whose vocab_size covers the tokenizer");
}

namespace {
float inverse_temperature(float temperature) {
  if (!(temperature > 0.0f) || !std::isfinite(temperature))
    throw Error("temperature " + std::to_string(temperature) + " is not a positive finite number")
        .fix("use a temperature > 0 (1 = the model's own distribution)");
  return 1.0f / temperature;
}
}  // namespace

double Model::lm_head_pass(const int32_t* targets, const float* weights, float grad_scale, float inv_temp,
                           bool with_grad, float* ce_out, float* logprob_out, float* entropy_out) {
  Impl& I = *impl_;
  const ModelConfig& c = config_;
  const int64_t N = (int64_t)B_ * T_, C = c.d_model, V = c.vocab_size;
  kernels::Backend& be = I.be();
  float* dW = with_grad ? device_grads() + I.lm_head : nullptr;
  const float* Wlm = device_params() + I.lm_head;
  const uint16_t* Wlm16 = precision_ == Precision::kBf16 ? I.w16p() + I.lm_head : nullptr;  // set by forward()
  const bool host16 = Wlm16 && !I.device;  // the CPU's bf16 loss kernel (dlogits written as bf16)
  // On a device: the targets, weights and per-token losses in its memory; log-probs are picked
  // on the host from each chunk's logits.
  const int32_t* tg = targets;
  const float* wt = weights;
  float* ce = ce_out;
  if (I.device) {
    be.to_device(I.d_targets, targets, sizeof(int32_t) * N);
    tg = I.d_targets;
    if (weights) {
      be.to_device(I.d_weights, weights, sizeof(float) * N);
      wt = I.d_weights;
    }
    ce = ce_out ? I.d_ce : nullptr;
  }
  double total = 0.0;
  for (int64_t r0 = 0; r0 < N; r0 += I.logits_rows) {
    const int64_t R = std::min(I.logits_rows, N - r0);
    const float* h = I.hidden + r0 * C;
    if (Wlm16)
      be.matmul_forward_bf16(I.logits, h, Wlm16, nullptr, R, (int)C, (int)V, WeightLayout::kOutIn, false);
    else
      be.matmul_forward(I.logits, h, Wlm, nullptr, R, (int)C, (int)V, WeightLayout::kOutIn, false);
    if (with_grad && host16) {
      // dlogits rounded to bf16 by the loss kernel over the logits' own rows (2V apart): the
      // bits the product would round them to, without a second pass over them
      total += ops::softmax_xent_backward_inplace_bf16(I.logits, ce_out ? ce_out + r0 : nullptr, targets + r0,
                                                       weights ? weights + r0 : nullptr, grad_scale, R, (int)V,
                                                       inv_temp);
      ops::matmul_backward_bf16(I.d_hidden + r0 * C, dW, reinterpret_cast<const uint16_t*>(I.logits), h, Wlm16, R,
                                (int)C, (int)V, WeightLayout::kOutIn, 2 * V);
    } else if (with_grad) {
      total += be.softmax_xent_backward_inplace(I.logits, ce ? ce + r0 : nullptr, tg + r0, wt ? wt + r0 : nullptr,
                                                grad_scale, R, (int)V, inv_temp);
      if (Wlm16)  // a device in bf16: the fp32 dlogits rounded as the product reads them
        be.matmul_backward_bf16(I.d_hidden + r0 * C, dW, nullptr, I.logits, h, Wlm16, R, (int)C, (int)V,
                                WeightLayout::kOutIn);
      else
        be.matmul_backward(I.d_hidden + r0 * C, dW, nullptr, I.logits, h, Wlm, R, (int)C, (int)V,
                           WeightLayout::kOutIn);
    } else if (logprob_out || entropy_out) {
      const float* logits = I.logits;
      if (I.device) {
        float* hl = I.host_logits(V);
        be.to_host(hl, I.logits, sizeof(float) * R * V);
        logits = hl;
      }
      if (logprob_out) {
        ops::log_softmax_pick(logprob_out + r0, logits, targets + r0, R, (int)V, inv_temp,
                              entropy_out ? entropy_out + r0 : nullptr);
      } else {
        std::vector<float> scratch(R);
        ops::log_softmax_pick(scratch.data(), logits, targets + r0, R, (int)V, inv_temp, entropy_out + r0);
      }
    }
  }
  if (I.device && with_grad) {
    I.d_hidden_on_device = true;
    if (ce_out) be.to_host(ce_out, I.d_ce, sizeof(float) * N);
  }
  return total;
}

float Model::lm_head_loss(const int32_t* targets, const float* loss_weights, float grad_scale, float* per_token_loss) {
  check_targets(targets, "lm_head_loss");
  const int64_t N = (int64_t)B_ * T_;
  double sum_w = 0.0;
  for (int64_t i = 0; i < N; ++i)
    if (targets[i] >= 0) sum_w += loss_weights ? loss_weights[i] : 1.0;
  if (sum_w <= 0.0) {
    (void)device_grads();  // allocated as by a real step
    impl_->be().zero(impl_->d_hidden, sizeof(float) * N * config_.d_model);
    if (impl_->device) impl_->d_hidden_on_device = true;
    if (per_token_loss) std::fill_n(per_token_loss, N, 0.0f);
    return 0.0f;
  }
  const float dscale = static_cast<float>(grad_scale / sum_w);
  const double total = lm_head_pass(targets, loss_weights, dscale, 1.0f, true, per_token_loss, nullptr, nullptr);
  return static_cast<float>(total / sum_w);
}

void Model::lm_head_logprobs(const int32_t* targets, float* logprobs_out, float temperature, float* entropy_out) {
  check_targets(targets, "lm_head_logprobs");
  const float inv_temp = inverse_temperature(temperature);
  lm_head_pass(targets, nullptr, 0.0f, inv_temp, false, nullptr, logprobs_out, entropy_out);
}

void Model::lm_head_logprob_backward(const int32_t* targets, const float* d_logprobs, float temperature) {
  check_targets(targets, "lm_head_logprob_backward");
  const float inv_temp = inverse_temperature(temperature);
  const int64_t N = (int64_t)B_ * T_;
  for (int64_t i = 0; i < N; ++i)
    if (targets[i] >= 0 && !std::isfinite(d_logprobs[i]))
      throw Error("lm_head_logprob_backward: the coefficient of token " + std::to_string(i % T_) + " in row " +
                  std::to_string(i / T_) + " is " + std::to_string(d_logprobs[i]))
          .fix("a NaN or infinity in rewards, advantages or log-ratios upstream; check the reward and the loss");
  // d logp_i / dz = -(d CE_i / dz): the cross-entropy kernel with weights d_i and scale -1
  lm_head_pass(targets, d_logprobs, -1.0f, inv_temp, true, nullptr, nullptr, nullptr);
}

uint16_t* Model::bf16_copy_in_step() {
  Impl& I = *impl_;
  if (I.device || precision_ != Precision::kBf16 || params_changed_ || I.w16.size() != params_.size()) return nullptr;
  return I.w16.data();
}

// ---- backward ---------------------------------------------------------------------------------

void Model::backward(const float* d_hidden, int first_layer) {
  Impl& I = *impl_;
  if (!I.have_forward) throw Error("backward() before forward()");
  const ModelConfig& c = config_;
  AJI_CHECK(first_layer >= 0 && first_layer <= c.n_layer, "backward: first_layer outside [0, n_layer]");
  const int B = B_, T = T_;
  const int64_t N = (int64_t)B * T, C = c.d_model, QKV = c.qkv_width(), QW = c.q_width(), F = c.ff();
  const int64_t FF = c.is_gpt2() ? F : 2 * F;
  kernels::Backend& be = I.be();
  if (I.device) {
    if (on_layer_backward)
      throw Error("per-layer gradient hooks (data-parallel training) are not built for " + I.device->describe() +
                  " yet")
          .fix("train on one process on this device, or use --device cpu with mpirun (docs/cuda.md)");
    // d_hidden: the device's own when an LM-head pass wrote it there and nobody read it back;
    // else the host's (a head's, or the host copy d_hidden_buffer() handed out)
    if (!(d_hidden == I.h_d_hidden.data() && I.d_hidden_on_device))
      be.to_device(I.d_hidden, d_hidden, sizeof(float) * (size_t)B_ * T_ * c.d_model);
    d_hidden = I.d_hidden;
    I.d_hidden_on_device = true;
  }
  const float* P = device_params();
  float* G = device_grads();
  const WeightLayout lay = c.is_gpt2() ? WeightLayout::kInOut : WeightLayout::kOutIn;
  auto Gb = [&](size_t o) -> float* { return o == kNone ? nullptr : G + o; };
  // the weight products of forward(), backwards, in the same precision (the bf16 copy of
  // the weights is the one forward() used)
  const bool bf16 = precision_ == Precision::kBf16;
  const bool kept16 = bf16 && !I.device;  // forward() kept the products' inputs in bf16 (the CPU)
  const uint16_t* w16 = bf16 ? I.w16p() : nullptr;
  // inp fp32, or an input forward() kept in bf16 (bf16 precision on the CPU only)
  auto matmul_bwd = [&](float* dinp, size_t w, float* dbias, const float* dout, const auto* inp, int IC, int OC) {
    if constexpr (kBf16Input<std::remove_pointer_t<decltype(inp)>>)
      ops::matmul_backward_bf16(dinp, G + w, dbias, dout, inp, w16 + w, N, IC, OC, lay);
    else if (bf16)
      be.matmul_backward_bf16(dinp, G + w, dbias, dout, inp, w16 + w, N, IC, OC, lay);
    else
      be.matmul_backward(dinp, G + w, dbias, dout, inp, P + w, N, IC, OC, lay);
  };
  // forward()'s kept product input: its fp32 buffer, or its bf16 one (kept16)
  auto kept = [&](float* f32, uint16_t* b16, const auto& use) {
    if (kept16)
      use(b16);
    else
      use(f32);
  };

  be.zero(I.d_resid, sizeof(float) * N * C);
  if (c.is_gpt2())
    be.layernorm_backward(I.d_resid, G + I.lnf_w, G + I.lnf_b, d_hidden, I.resid_final, P + I.lnf_w, I.lnf_mean,
                          I.lnf_rstd, N, (int)C);
  else
    be.rmsnorm_backward(I.d_resid, G + I.lnf_w, d_hidden, I.resid_final, P + I.lnf_w, I.lnf_rstd, N, (int)C);

  ops::AttnDims dims;
  dims.B = B, dims.Tq = T, dims.Tk = T, dims.H = c.n_head, dims.KV = c.n_kv_head, dims.hd = c.hd(), dims.q_pos0 = 0;
  dims.key_start = I.rows_key_start();
  dims.bf16_products = bf16;
  dims.q_bs = dims.k_bs = dims.v_bs = T * QKV;
  dims.q_ts = dims.k_ts = dims.v_ts = QKV;
  dims.o_bs = T * QW;
  dims.o_ts = QW;

  for (int l = c.n_layer - 1; l >= first_layer; --l) {
    const LayerOffsets& Lw = I.layers[l];
    const LayerActs& A = I.la[l];
    // MLP: out = resid_mid + proj(act(fc(norm2(resid_mid))))
    kept(I.act, I.act16, [&](auto* x) {  // the activation, recomputed instead of stored per layer
      ffn_activation(be, c, x, A.fc, N);
      matmul_bwd(I.d_act, Lw.proj_w, Gb(Lw.proj_b), I.d_resid, x, (int)F, (int)C);
    });
    if (kept16 && !c.is_gpt2() && Lw.fc_b == kNone) {
      // SwiGLU's gradient written as the bf16 bits the product reads (in d_fc's memory)
      uint16_t* d_fc16 = reinterpret_cast<uint16_t*>(I.d_fc);
      ops::swiglu_backward(d_fc16, I.d_act, A.fc, N, (int)F);
      ops::matmul_backward_bf16(I.d_tmp, G + Lw.fc_w, d_fc16, A.ln2_16, w16 + Lw.fc_w, N, (int)C, (int)FF,
                                lay);
    } else {
      if (c.is_gpt2())
        be.gelu_backward(I.d_fc, A.fc, I.d_act, N * F);
      else
        be.swiglu_backward(I.d_fc, I.d_act, A.fc, N, (int)F);
      kept(A.ln2, A.ln2_16,
           [&](const auto* x) { matmul_bwd(I.d_tmp, Lw.fc_w, Gb(Lw.fc_b), I.d_fc, x, (int)C, (int)FF); });
    }
    if (c.is_gpt2())
      be.layernorm_backward(I.d_resid, G + Lw.ln2_w, G + Lw.ln2_b, I.d_tmp, A.resid_mid, P + Lw.ln2_w, A.ln2_mean,
                            A.ln2_rstd, N, (int)C);
    else
      be.rmsnorm_backward(I.d_resid, G + Lw.ln2_w, I.d_tmp, A.resid_mid, P + Lw.ln2_w, A.ln2_rstd, N, (int)C);
    // attention: resid_mid = resid_in + o_proj(attn(qkv(norm1(resid_in))))
    matmul_bwd(I.d_atty, Lw.o_w, Gb(Lw.o_b), I.d_resid, A.atty, (int)QW, (int)C);
    // recompute the normed + rotated q, k
    const float* qkv = I.attention_qkv(c, P, Lw, A.qkv, B, T);
    const int64_t KVW = c.kv_width();
    be.attention_backward(I.d_qkv, I.d_qkv + QW, I.d_qkv + QW + KVW, I.d_atty, qkv, qkv + QW, A.qkv + QW + KVW,
                          A.atty, A.lse, dims);
    if (!c.is_gpt2()) {
      be.rope_apply(I.d_qkv, I.rope_c(), I.rope_s(), B, T, QKV, 0, c.n_head + c.n_kv_head, c.hd(), 0, true,
                    I.rows_positions(), nullptr);  // q's heads and k's, which follow them
      if (c.qk_norm) {
        be.head_rmsnorm_backward(I.d_qkv, G + Lw.q_norm, A.qkv, P + Lw.q_norm, N, QKV, 0, c.n_head, c.hd(),
                                 c.norm_eps);
        be.head_rmsnorm_backward(I.d_qkv, G + Lw.k_norm, A.qkv, P + Lw.k_norm, N, QKV, (int)QW, c.n_kv_head, c.hd(),
                                 c.norm_eps);
      }
    }
    kept(A.ln1, A.ln1_16,
         [&](const auto* x) { matmul_bwd(I.d_tmp, Lw.qkv_w, Gb(Lw.qkv_b), I.d_qkv, x, (int)C, (int)QKV); });
    if (c.is_gpt2())
      be.layernorm_backward(I.d_resid, G + Lw.ln1_w, G + Lw.ln1_b, I.d_tmp, A.resid_in, P + Lw.ln1_w, A.ln1_mean,
                            A.ln1_rstd, N, (int)C);
    else
      be.rmsnorm_backward(I.d_resid, G + Lw.ln1_w, I.d_tmp, A.resid_in, P + Lw.ln1_w, A.ln1_rstd, N, (int)C);
    if (on_layer_backward) on_layer_backward(l);
  }
  if (first_layer == 0)
    be.embedding_backward(G + I.wte, c.is_gpt2() ? G + I.wpe : nullptr, I.d_resid,
                          I.device ? I.d_tokens : I.tokens.data(), B, T, (int)C, I.rows_positions());
}

// ---- inference ----------------------------------------------------------------------------------

ops::WeightType Model::weights() const { return impl_->wtype; }

Model::WeightsReport Model::use_weights(ops::WeightType type, bool drop_fp32) {
  Impl& I = *impl_;
  if (I.fp32_dropped)
    throw Error("use_weights: the fp32 weights were already dropped for " + std::string(ops::weight_type_name(I.wtype)))
        .fix("load the model again to choose another weight type");
  const ModelConfig& c = config_;
  const int C = c.d_model, QKV = c.qkv_width(), QW = c.q_width(), F = c.ff(), V = c.vocab_size;
  const int FF = c.is_gpt2() ? F : 2 * F;
  const WeightLayout lay = c.is_gpt2() ? WeightLayout::kInOut : WeightLayout::kOutIn;
  WeightsReport rep;
  rep.type = type;
  I.packed.clear();
  I.packed_lm_head = ops::PackedWeight();
  I.wtype = type;
  if (type == ops::WeightType::kF32) return rep;
  sync_host_params();  // a step on a device may have written the weights there
  const float* P = params_.data();
  std::vector<size_t> dropped;  // offsets of converted matrices
  auto pack = [&](size_t off, int OC, int IC, WeightLayout l) {
    if (type == ops::WeightType::kQ8_0 && IC % static_cast<int>(ops::kQ8BlockSize) != 0) {
      for (const auto& t : tensors_)
        if (t.offset == off) rep.kept_fp32.push_back(t.name + " (input width " + std::to_string(IC) + ")");
      return ops::PackedWeight();
    }
    ops::PackedWeight p = ops::PackedWeight::pack(P + off, OC, IC, l, type);
    ++rep.packed;
    rep.packed_bytes += p.bytes();
    if (off != I.wte) dropped.push_back(off);  // the embedding lookup keeps a tied LM head's fp32 copy
    return p;
  };
  I.packed.resize(static_cast<size_t>(c.n_layer));
  for (int l = 0; l < c.n_layer; ++l) {
    const LayerOffsets& Lw = I.layers[static_cast<size_t>(l)];
    Impl::LayerPacked& Q = I.packed[static_cast<size_t>(l)];
    Q.qkv = pack(Lw.qkv_w, QKV, C, lay);
    Q.o = pack(Lw.o_w, C, QW, lay);
    Q.fc = pack(Lw.fc_w, FF, C, lay);
    Q.proj = pack(Lw.proj_w, C, F, lay);
  }
  I.packed_lm_head = pack(I.lm_head, V, C, WeightLayout::kOutIn);
  if (!drop_fp32 || has_grads() || dropped.empty()) return rep;

  // Keep every tensor outside the converted matrices, packed anew; remap the offsets.
  const auto in_dropped = [&](const ParamTensor& t) {
    for (const auto& L : I.layers) {
      const std::pair<size_t, size_t> m[] = {{L.qkv_w, (size_t)QKV * C}, {L.o_w, (size_t)C * QW},
                                             {L.fc_w, (size_t)FF * C}, {L.proj_w, (size_t)C * F}};
      for (const auto& [o, n] : m)
        if (std::find(dropped.begin(), dropped.end(), o) != dropped.end() && t.offset >= o && t.offset < o + n)
          return true;
    }
    return I.lm_head != I.wte && t.offset == I.lm_head &&
           std::find(dropped.begin(), dropped.end(), I.lm_head) != dropped.end();
  };
  std::vector<ParamTensor> kept;
  std::vector<std::pair<size_t, size_t>> moved;  // old offset -> new offset
  size_t used = 0;
  for (const auto& t : tensors_) {
    if (in_dropped(t)) {
      rep.fp32_bytes_freed += t.numel * sizeof(float);
      continue;
    }
    moved.emplace_back(t.offset, used);
    kept.push_back(t);
    kept.back().offset = used;
    used += t.numel;
  }
  AlignedFloats fresh(used);
  for (size_t i = 0; i < kept.size(); ++i)
    std::memcpy(fresh.data() + kept[i].offset, params_.data() + moved[i].first, kept[i].numel * sizeof(float));
  const auto remap = [&](size_t& off) {
    if (off == kNone) return;
    for (const auto& [from, to] : moved)
      if (from == off) {
        off = to;
        return;
      }
    off = kNone;  // dropped: its packed copy serves
  };
  for (auto& L : I.layers)
    for (size_t* f : {&L.ln1_w, &L.ln1_b, &L.qkv_w, &L.qkv_b, &L.q_norm, &L.k_norm, &L.o_w, &L.o_b, &L.ln2_w, &L.ln2_b,
                      &L.fc_w, &L.fc_b, &L.proj_w, &L.proj_b})
      remap(*f);
  for (size_t* f : {&I.wte, &I.wpe, &I.lnf_w, &I.lnf_b, &I.lm_head}) remap(*f);
  params_ = std::move(fresh);
  tensors_ = std::move(kept);
  I.fp32_dropped = true;
  I.have_forward = false;
  return rep;
}

namespace {
// A cache's shape for `batch` sequences of max_len positions (0 or more than the context: the
// context), nothing allocated yet.
KVCache cache_shape(const ModelConfig& c, int batch, int max_len, KVCacheType type) {
  if (batch <= 0) throw Error("KV cache batch must be positive");
  KVCache kv;
  kv.batch = batch;
  kv.max_len = max_len <= 0 || max_len > c.max_seq_len ? c.max_seq_len : max_len;
  kv.n_layer = c.n_layer;
  kv.kv_width = c.kv_width();
  kv.type = type;
  return kv;
}
}  // namespace

KVCache Model::make_cache(int batch, int max_len) const {
  if (impl_->device) return make_device_cache(batch, max_len);  // the cache lives where the model runs
  KVCache kv = cache_shape(config_, batch, max_len, kv_cache_);
  const size_t n = (size_t)kv.n_layer * batch * kv.max_len * kv.kv_width;
  if (kv.bf16()) {
    kv.kh.assign(n, 0);
    kv.vh.assign(n, 0);
  } else {
    kv.k.assign(n, 0.0f);
    kv.v.assign(n, 0.0f);
  }
  return kv;
}

KVCache Model::make_device_cache(int batch, int max_len) const {
  const Impl& I = *impl_;
  if (!I.device) throw Error("make_device_cache: the model is not on a device").fix("call set_device first");
  if (kv_cache_ != KVCacheType::kF32)
    throw Error("a bf16 KV cache is not built for " + I.device->describe() + " yet")
        .fix("use --kv-cache fp32 with --device (docs/cuda.md)");
  KVCache kv = cache_shape(config_, batch, max_len, KVCacheType::kF32);
  const size_t bytes = 2 * (size_t)kv.n_layer * batch * kv.max_len * kv.kv_width * sizeof(float);
  size_t free_b = 0, total_b = 0;
  if (I.device->memory_info(free_b, total_b) && bytes > free_b) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "the KV cache of %d sequences x %d positions needs %.2f GiB on ", batch, kv.max_len,
                  bytes / double(1ull << 30));
    char tail[96];
    std::snprintf(tail, sizeof tail, ", but only %.2f GiB of its %.2f GiB is free", free_b / double(1ull << 30),
                  total_b / double(1ull << 30));
    throw Error(buf + I.device->describe() + tail).fix("generate fewer sequences at once or fewer tokens");
  }
  kv.dev = std::make_shared<DeviceMem>();
  kv.dev->ensure(*I.device, std::max<size_t>(bytes, 4));
  return kv;
}

const char* kv_cache_type_name(KVCacheType t) { return t == KVCacheType::kBF16 ? "bf16" : "fp32"; }

KVCacheType parse_kv_cache_type(const std::string& text, const std::string& source) {
  if (text == "fp32" || text == "f32") return KVCacheType::kF32;
  if (text == "bf16") return KVCacheType::kBF16;
  throw Error("unknown KV cache type \"" + text + "\" in " + source).fix("use fp32 or bf16");
}

namespace {
// Position pos of sequence b's layer-l block: the key and value rows (kv_width floats each)
// stored in the cache's element type (bf16: rounded to nearest even, as the weights are).
void store_kv(KVCache& kv, int l, int b, int pos, const float* krow, const float* vrow) {
  const size_t at = kv.at(l, b) + (size_t)pos * kv.kv_width;
  if (kv.bf16()) {
    kernels::cpu::round_to_bf16(kv.kh.data() + at, krow, kv.kv_width);
    kernels::cpu::round_to_bf16(kv.vh.data() + at, vrow, kv.kv_width);
  } else {
    std::memcpy(kv.k.data() + at, krow, sizeof(float) * kv.kv_width);
    std::memcpy(kv.v.data() + at, vrow, sizeof(float) * kv.kv_width);
  }
}
// A sequence with this many new rows or fewer (decoding) is attended over its cache by
// Backend::attention_cached, all such sequences in one call; one with more (a prompt) by the
// tiled attention_forward on its own.
constexpr int kCachedAttentionRows = 4;

// The dims of attention over a cache: batch sequences of nq new queries at positions p0..
// (q from the projection rows, QKV wide; out QW wide) against a cache of max_len positions.
ops::AttnDims cache_dims(const ModelConfig& c, int batch, int nq, int p0, int max_len) {
  const int64_t QKV = c.qkv_width(), QW = c.q_width(), KVW = c.kv_width();
  ops::AttnDims dims;
  dims.B = batch, dims.Tq = nq, dims.Tk = p0 + nq, dims.H = c.n_head, dims.KV = c.n_kv_head, dims.hd = c.hd();
  dims.q_pos0 = p0;
  dims.q_bs = nq * QKV;
  dims.q_ts = QKV;
  dims.k_bs = dims.v_bs = (int64_t)max_len * KVW;
  dims.k_ts = dims.v_ts = KVW;
  dims.o_bs = nq * QW;
  dims.o_ts = QW;
  return dims;
}
// attention_forward over the cache's layer l (sequence b onwards, dims' batch strides)
void cache_attention(float* out, const float* q, KVCache& kv, int l, const ops::AttnDims& dims) {
  const size_t at = kv.at(l, 0);
  if (kv.bf16())
    ops::attention_forward(out, nullptr, q, kv.kh.data() + at, kv.vh.data() + at, dims);
  else
    ops::attention_forward(out, nullptr, q, kv.k.data() + at, kv.v.data() + at, dims);
}
}  // namespace

void Model::forward_infer(const int32_t* tokens, int batch, int n_new, KVCache& cache, float* logits_out) {
  const ModelConfig& c = config_;
  if (batch != cache.batch || cache.n_layer != c.n_layer || cache.kv_width != c.kv_width())
    throw Error("forward_infer: the KV cache was made for another batch size or model").fix("make the cache with make_cache(batch)");
  if (n_new <= 0) throw Error("forward_infer: no new tokens");
  if (cache.length + n_new > cache.max_len)
    throw Error("the context is full: " + std::to_string(cache.length) + " + " + std::to_string(n_new) +
                " tokens > " + std::to_string(cache.max_len))
        .fix("shorten the prompt or --max-tokens (the model's context is " + std::to_string(c.max_seq_len) + ")");
  const int64_t N = (int64_t)batch * n_new;
  check_tokens(tokens, N, c.vocab_size, "token");
  if (cache.on_device()) {
    forward_infer_device(tokens, batch, n_new, cache, logits_out);
    return;
  }
  Impl& I = *impl_;
  const int64_t C = c.d_model, QKV = c.qkv_width(), QW = c.q_width(), KVW = c.kv_width(), F = c.ff();
  const int64_t FF = c.is_gpt2() ? F : 2 * F;
  auto carve = [&](Bump& a, float** x, float** ln, float** qkv, float** atty, float** fc, float** act, float** last,
                   float** lastn) {
    *x = a.take(N * C);
    *ln = a.take(N * C);
    *qkv = a.take(N * QKV);
    *atty = a.take(N * QW);
    *fc = a.take(N * FF);
    *act = a.take(N * F);
    *last = a.take((int64_t)batch * C);
    *lastn = a.take((int64_t)batch * C);
  };
  float *x, *ln, *qkv, *atty, *fc, *act, *last, *lastn;
  Bump count;
  carve(count, &x, &ln, &qkv, &atty, &fc, &act, &last, &lastn);
  if (I.infer.size() < count.used) I.infer.resize(count.used);
  Bump real{0, I.infer.data()};
  carve(real, &x, &ln, &qkv, &atty, &fc, &act, &last, &lastn);

  sync_host_params();  // a step on a device may have written the weights there
  const float* P = params_.data();
  const WeightLayout lay = c.is_gpt2() ? WeightLayout::kInOut : WeightLayout::kOutIn;
  auto W = [&](size_t o) -> const float* { return o == kNone ? nullptr : P + o; };
  // a converted matrix (use_weights) or the fp32 one. A decode step (one new token per
  // sequence: batched generation, rollouts) takes the small-row kernels at any batch (each
  // row computed as alone, as forward_decode computes it; measured 1.7x sgemm's speed at 16
  // rows); a prompt takes the GEMM library.
  const bool decode = n_new == 1;
  auto matmul = [&](float* out, const float* inp, const ops::PackedWeight* pw, size_t w, size_t b, int IC, int OC,
                    bool accumulate) {
    if (pw)
      ops::packed_matmul_forward(out, inp, *pw, W(b), N, accumulate);
    else if (decode)
      ops::matmul_forward_rows(out, inp, P + w, W(b), N, IC, OC, lay, accumulate);
    else
      ops::matmul_forward(out, inp, P + w, W(b), N, IC, OC, lay, accumulate);
  };
  using LP = Impl::LayerPacked;
  const int pos0 = cache.length;
  ops::embedding_forward(x, tokens, P + I.wte, c.is_gpt2() ? P + I.wpe : nullptr, batch, n_new, (int)C, pos0);

  const ops::AttnDims dims = cache_dims(c, batch, n_new, pos0, cache.max_len);

  for (int l = 0; l < c.n_layer; ++l) {
    const LayerOffsets& Lw = I.layers[l];
    if (c.is_gpt2())
      ops::layernorm_forward(ln, nullptr, nullptr, x, P + Lw.ln1_w, P + Lw.ln1_b, N, (int)C, c.norm_eps);
    else
      ops::rmsnorm_forward(ln, nullptr, x, P + Lw.ln1_w, N, (int)C, c.norm_eps);
    matmul(qkv, ln, I.pk(l, &LP::qkv), Lw.qkv_w, Lw.qkv_b, (int)C, (int)QKV, false);
    if (!c.is_gpt2()) {
      if (c.qk_norm) {
        ops::head_rmsnorm_forward(qkv, P + Lw.q_norm, N, QKV, 0, c.n_head, c.hd(), c.norm_eps);
        ops::head_rmsnorm_forward(qkv, P + Lw.k_norm, N, QKV, (int)QW, c.n_kv_head, c.hd(), c.norm_eps);
      }
      ops::rope_apply(qkv, I.rope_cos.data(), I.rope_sin.data(), batch, n_new, QKV, 0, c.n_head, c.hd(), pos0, false);
      ops::rope_apply(qkv, I.rope_cos.data(), I.rope_sin.data(), batch, n_new, QKV, (int)QW, c.n_kv_head, c.hd(), pos0,
                      false);
    }
    for (int b = 0; b < batch; ++b)
      for (int t = 0; t < n_new; ++t) {
        const float* row = qkv + ((int64_t)b * n_new + t) * QKV;
        store_kv(cache, l, b, pos0 + t, row + QW, row + QW + KVW);
      }
    cache_attention(atty, qkv, cache, l, dims);
    matmul(x, atty, I.pk(l, &LP::o), Lw.o_w, Lw.o_b, (int)QW, (int)C, true);
    if (c.is_gpt2())
      ops::layernorm_forward(ln, nullptr, nullptr, x, P + Lw.ln2_w, P + Lw.ln2_b, N, (int)C, c.norm_eps);
    else
      ops::rmsnorm_forward(ln, nullptr, x, P + Lw.ln2_w, N, (int)C, c.norm_eps);
    matmul(fc, ln, I.pk(l, &LP::fc), Lw.fc_w, Lw.fc_b, (int)C, (int)FF, false);
    if (c.is_gpt2())
      ops::gelu_forward(act, fc, N * F);
    else
      ops::swiglu_forward(act, fc, N, (int)F);
    matmul(x, act, I.pk(l, &LP::proj), Lw.proj_w, Lw.proj_b, (int)F, (int)C, true);
  }
  for (int b = 0; b < batch; ++b)
    std::memcpy(last + (int64_t)b * C, x + ((int64_t)b * n_new + n_new - 1) * C, sizeof(float) * C);
  if (c.is_gpt2())
    ops::layernorm_forward(lastn, nullptr, nullptr, last, P + I.lnf_w, P + I.lnf_b, batch, (int)C, c.norm_eps);
  else
    ops::rmsnorm_forward(lastn, nullptr, last, P + I.lnf_w, batch, (int)C, c.norm_eps);
  if (!I.packed_lm_head.empty())
    ops::packed_matmul_forward(logits_out, lastn, I.packed_lm_head, nullptr, batch);
  else if (decode)
    ops::matmul_forward_rows(logits_out, lastn, P + I.lm_head, nullptr, batch, (int)C, c.vocab_size,
                             WeightLayout::kOutIn);
  else
    lm_logits(lastn, batch, logits_out);
  cache.length += n_new;
}

void Model::forward_infer_device(const int32_t* tokens, int batch, int n_new, KVCache& cache, float* logits_out) {
  // batch sequences of one cache, n_new tokens each at positions length.. : the extend pass
  std::vector<KVCache*> caches(static_cast<size_t>(batch), &cache);
  std::vector<int> rows(static_cast<size_t>(batch));
  std::vector<int64_t> r0(static_cast<size_t>(batch) + 1), last(static_cast<size_t>(batch));
  std::vector<int32_t> pos(static_cast<size_t>(batch) * n_new);
  for (int b = 0; b < batch; ++b) {
    rows[static_cast<size_t>(b)] = b;
    r0[static_cast<size_t>(b) + 1] = (int64_t)(b + 1) * n_new;
    last[static_cast<size_t>(b)] = (int64_t)(b + 1) * n_new - 1;
    for (int t = 0; t < n_new; ++t) pos[static_cast<size_t>(b) * n_new + t] = cache.length + t;
  }
  const float* x = extend_layers_device(tokens, batch, caches.data(), rows.data(), r0, pos);
  cache.length += n_new;
  device_head_rows(x, last.data(), batch, logits_out);
}

const float* Model::extend_layers_device(const int32_t* tokens, int n, KVCache* const* caches, const int* seq_rows,
                                         const std::vector<int64_t>& r0, const std::vector<int32_t>& pos) {
  const ModelConfig& c = config_;
  Impl& I = *impl_;
  for (int i = 0; i < n; ++i)
    if (!I.device || caches[i]->dev->be != I.device.get())
      throw Error("the KV cache of sequence " + std::to_string(i) + " is not in this model's device memory")
          .fix("make the caches with this model's make_cache");
  if (!I.packed.empty())
    throw Error("converted weights (--weights bf16 or q8_0) are not built for " + I.device->describe() + " yet")
        .fix("use --weights fp32 with --device (docs/cuda.md)");
  kernels::Backend& be = *I.device;
  auto cnt = [&](int i) { return (int)(r0[static_cast<size_t>(i) + 1] - r0[static_cast<size_t>(i)]); };
  const int64_t N = r0[static_cast<size_t>(n)];
  // forward_infer's case (every row of one cache, the same count and position): attention for
  // all of them in one call; else one call per sequence
  bool one_cache = true;
  for (int i = 0; i < n; ++i)
    one_cache = one_cache && caches[i] == caches[0] && seq_rows[i] == i && cnt(i) == cnt(0);
  one_cache = one_cache && caches[0]->batch == n;
  const int64_t C = c.d_model, QKV = c.qkv_width(), QW = c.q_width(), KVW = c.kv_width(), F = c.ff();
  const int64_t FF = c.is_gpt2() ? F : 2 * F;
  // The caches' table (kernels::CachedSeq): every sequence (for kv_append), then those of a
  // few new rows (decoding), which attention_cached takes in one launch; a sequence of more
  // rows (a prompt) gets the tiled kernel on its own, or forward_infer's batch of equal
  // prompts in one cache one tiled call.
  std::vector<kernels::CachedSeq> table(static_cast<size_t>(n));
  int n_few = 0;
  for (int i = 0; i < n; ++i) {
    KVCache& kv = *caches[i];
    kernels::CachedSeq& e = table[static_cast<size_t>(i)];
    e.k = kv.dev->f() + kv.at(0, seq_rows[i]);
    e.v = kv.dev->f() + kv.at(kv.n_layer, 0) + kv.at(0, seq_rows[i]);
    e.layer_stride = static_cast<int64_t>(kv.at(1, 0));
    e.row0 = e.first = r0[static_cast<size_t>(i)];
    e.count = cnt(i);
    e.pos0 = pos[static_cast<size_t>(r0[static_cast<size_t>(i)])];
  }
  int64_t few_rows = 0;
  int few_keys = 0;  // the most keys a row of them sees
  for (int i = 0; i < n; ++i)
    if (cnt(i) <= kCachedAttentionRows) {
      kernels::CachedSeq e = table[static_cast<size_t>(i)];
      e.first = few_rows;
      few_rows += e.count;
      few_keys = std::max(few_keys, e.pos0 + e.count);
      table.push_back(e);
      ++n_few;
    }
  const size_t table_floats = table.size() * sizeof(kernels::CachedSeq) / sizeof(float);
  // (n + n_few) table; (N,C) x, ln; (N,QKV) qkv; (N,QW) atty; (N,FF) fc; (N,F) act; (N) tokens, positions
  kernels::CachedSeq* seqs = nullptr;
  auto carve = [&](Bump& a, float** x, float** ln, float** qkv, float** atty, float** fc, float** act, int32_t** tok,
                   int32_t** ps) {
    seqs = reinterpret_cast<kernels::CachedSeq*>(a.take(table_floats));
    *x = a.take(N * C);
    *ln = a.take(N * C);
    *qkv = a.take(N * QKV);
    *atty = a.take(N * QW);
    *fc = a.take(N * FF);
    *act = a.take(N * F);
    *tok = reinterpret_cast<int32_t*>(a.take(N));
    *ps = reinterpret_cast<int32_t*>(a.take(N));
  };
  float *x, *ln, *qkv, *atty, *fc, *act;
  int32_t *tok, *ps;
  Bump count;
  carve(count, &x, &ln, &qkv, &atty, &fc, &act, &tok, &ps);
  if (I.d_infer.bytes < count.used * sizeof(float)) I.d_infer.ensure(be, count.used * sizeof(float));
  Bump real{0, I.d_infer.f()};
  carve(real, &x, &ln, &qkv, &atty, &fc, &act, &tok, &ps);
  be.to_device(tok, tokens, sizeof(int32_t) * N);
  be.to_device(ps, pos.data(), sizeof(int32_t) * N);
  be.to_device(seqs, table.data(), sizeof(kernels::CachedSeq) * table.size());

  const float* P = device_params();
  const WeightLayout lay = c.is_gpt2() ? WeightLayout::kInOut : WeightLayout::kOutIn;
  auto W = [&](size_t o) -> const float* { return o == kNone ? nullptr : P + o; };
  auto norm = [&](float* out, const float* in, size_t w, size_t b) {
    if (c.is_gpt2())
      be.layernorm_forward(out, nullptr, nullptr, in, P + w, W(b), N, (int)C, c.norm_eps);
    else
      be.rmsnorm_forward(out, nullptr, in, P + w, N, (int)C, c.norm_eps);
  };
  be.embedding_forward(x, tok, P + I.wte, c.is_gpt2() ? P + I.wpe : nullptr, (int)N, 1, (int)C, 0, ps);
  for (int l = 0; l < c.n_layer; ++l) {
    const LayerOffsets& Lw = I.layers[l];
    norm(ln, x, Lw.ln1_w, Lw.ln1_b);
    be.matmul_forward(qkv, ln, P + Lw.qkv_w, W(Lw.qkv_b), N, (int)C, (int)QKV, lay, false);
    if (!c.is_gpt2()) {
      if (c.qk_norm) {
        be.head_rmsnorm_forward(qkv, P + Lw.q_norm, N, QKV, 0, c.n_head, c.hd(), c.norm_eps);
        be.head_rmsnorm_forward(qkv, P + Lw.k_norm, N, QKV, (int)QW, c.n_kv_head, c.hd(), c.norm_eps);
      }
      be.rope_apply(qkv, I.rope_c(), I.rope_s(), (int)N, 1, QKV, 0, c.n_head, c.hd(), 0, false, ps, nullptr);
      be.rope_apply(qkv, I.rope_c(), I.rope_s(), (int)N, 1, QKV, (int)QW, c.n_kv_head, c.hd(), 0, false, ps, nullptr);
    }
    // every sequence's new keys and values into its cache row, one call
    be.kv_append(seqs, n, N, l, qkv + QW, QKV, (int)KVW);
    // attention: sequence i's queries (positions p0..) against its cache row's keys
    if (n_few > 0) {
      ops::AttnDims dims = cache_dims(c, 1, 1, 0, 0);  // heads and strides
      dims.Tk = few_keys;
      be.attention_cached(atty, qkv, seqs + n, n_few, few_rows, l, dims);
    }
    for (int i = 0; i < (one_cache ? 1 : n) && n_few < n; ++i) {
      if (cnt(i) <= kCachedAttentionRows) continue;  // done above
      KVCache& kv = *caches[i];
      const int64_t rs = r0[static_cast<size_t>(i)];
      const int nq = cnt(i), p0 = pos[static_cast<size_t>(rs)];
      const ops::AttnDims dims = cache_dims(c, one_cache ? n : 1, nq, p0, kv.max_len);
      be.attention_forward(atty + rs * QW, nullptr, qkv + rs * QKV, kv.dev->f() + kv.at(l, seq_rows[i]),
                           kv.dev->f() + kv.at(kv.n_layer, 0) + kv.at(l, seq_rows[i]), dims);
    }
    be.matmul_forward(x, atty, P + Lw.o_w, W(Lw.o_b), N, (int)QW, (int)C, lay, true);
    norm(ln, x, Lw.ln2_w, Lw.ln2_b);
    be.matmul_forward(fc, ln, P + Lw.fc_w, W(Lw.fc_b), N, (int)C, (int)FF, lay, false);
    if (c.is_gpt2())
      be.gelu_forward(act, fc, N * F);
    else
      be.swiglu_forward(act, fc, N, (int)F);
    be.matmul_forward(x, act, P + Lw.proj_w, W(Lw.proj_b), N, (int)F, (int)C, lay, true);
  }
  return x;  // the callers advance the caches' lengths
}

void Model::device_head_rows(const float* x, const int64_t* rows, int64_t m, float* logits_out) {
  const ModelConfig& c = config_;
  Impl& I = *impl_;
  kernels::Backend& be = *I.device;
  const int64_t C = c.d_model, V = c.vocab_size;
  // (m,C) raw, normed; (m,V) logits; (m) the rows' indices
  const size_t need = sizeof(float) * (size_t)m * (2 * C + V + 1);
  if (I.d_head.bytes < need) I.d_head.ensure(be, need);
  float* raw = I.d_head.f();
  float* normed = raw + m * C;
  float* logits = normed + m * C;
  int32_t* idx = reinterpret_cast<int32_t*>(logits + m * V);
  // the rows of x, gathered in one call: an embedding lookup with x as the table
  std::vector<int32_t> host_idx(static_cast<size_t>(m));
  for (int64_t r = 0; r < m; ++r) host_idx[static_cast<size_t>(r)] = static_cast<int32_t>(rows[r]);
  be.to_device(idx, host_idx.data(), sizeof(int32_t) * (size_t)m);
  be.embedding_forward(raw, idx, x, nullptr, (int)m, 1, (int)C, 0, nullptr);
  const float* P = device_params();
  if (c.is_gpt2())
    be.layernorm_forward(normed, nullptr, nullptr, raw, P + I.lnf_w, I.lnf_b == kNone ? nullptr : P + I.lnf_b, m,
                         (int)C, c.norm_eps);
  else
    be.rmsnorm_forward(normed, nullptr, raw, P + I.lnf_w, m, (int)C, c.norm_eps);
  be.matmul_forward(logits, normed, P + I.lm_head, nullptr, m, (int)C, (int)V, WeightLayout::kOutIn, false);
  be.to_host(logits_out, logits, sizeof(float) * m * V);
}

void Model::forward_decode(const int32_t* tokens, int n, KVCache* const* caches, float* logits_out,
                           bool batch_invariant) {
  forward_extend(tokens, nullptr, n, caches, logits_out, batch_invariant);
}

const float* Model::extend_layers(const int32_t* tokens, const int* counts, int n, KVCache* const* caches,
                                  bool batch_invariant, std::vector<int64_t>& r0) {
  const ModelConfig& c = config_;
  if (n <= 0) throw Error("forward_decode: no rows");
  // row r0[i] .. r0[i] + cnt(i) - 1 of the pass is sequence i's new tokens
  auto cnt = [&](int i) { return counts ? counts[i] : 1; };
  r0.assign(static_cast<size_t>(n) + 1, 0);
  for (int i = 0; i < n; ++i) {
    if (cnt(i) < 1)
      throw Error("forward_extend: sequence " + std::to_string(i) + " has " + std::to_string(cnt(i)) + " new tokens")
          .fix("give every sequence at least one new token");
    r0[static_cast<size_t>(i) + 1] = r0[static_cast<size_t>(i)] + cnt(i);
  }
  const int64_t N = r0[static_cast<size_t>(n)];
  check_tokens(tokens, N, c.vocab_size, "token");
  std::vector<int32_t> pos(static_cast<size_t>(N));  // each row's position in its sequence
  for (int i = 0; i < n; ++i) {
    const KVCache* kv = caches[i];
    if (!kv || kv->batch != 1 || kv->n_layer != c.n_layer || kv->kv_width != c.kv_width())
      throw Error("forward_decode: the KV cache of row " + std::to_string(i) + " was not made for this model with batch 1")
          .fix("make each row's cache with make_cache(1)");
    if (kv->length + cnt(i) > kv->max_len)
      throw Error("the context of row " + std::to_string(i) + " is full: " + std::to_string(kv->length) + " + " +
                  std::to_string(cnt(i)) + " tokens > " + std::to_string(kv->max_len))
          .fix("stop decoding a sequence when it reaches its cache's max_len");
    for (int t = 0; t < cnt(i); ++t) pos[static_cast<size_t>(r0[static_cast<size_t>(i)] + t)] = kv->length + t;
    if (kv->on_device() != caches[0]->on_device())
      throw Error("forward_extend: the caches are partly on the device, partly on the host")
          .fix("make every cache of a pass with this model's make_cache");
  }
  if (caches[0]->on_device()) {
    const std::vector<int> rows(static_cast<size_t>(n), 0);  // batch-1 caches
    const float* x = extend_layers_device(tokens, n, caches, rows.data(), r0, pos);
    for (int i = 0; i < n; ++i) caches[i]->length += cnt(i);
    return x;
  }
  Impl& I = *impl_;
  const int64_t C = c.d_model, QKV = c.qkv_width(), QW = c.q_width(), KVW = c.kv_width(), F = c.ff();
  const int64_t FF = c.is_gpt2() ? F : 2 * F;
  auto carve = [&](Bump& a, float** x, float** ln, float** qkv, float** atty, float** fc, float** act) {
    *x = a.take(N * C);
    *ln = a.take(N * C);
    *qkv = a.take(N * QKV);
    *atty = a.take(N * QW);
    *fc = a.take(N * FF);
    *act = a.take(N * F);
  };
  float *x, *ln, *qkv, *atty, *fc, *act;
  Bump count;
  carve(count, &x, &ln, &qkv, &atty, &fc, &act);
  if (I.infer.size() < count.used) I.infer.resize(count.used);
  Bump real{0, I.infer.data()};
  carve(real, &x, &ln, &qkv, &atty, &fc, &act);

  sync_host_params();  // a step on a device may have written the weights there
  const float* P = params_.data();
  const WeightLayout lay = c.is_gpt2() ? WeightLayout::kInOut : WeightLayout::kOutIn;
  auto W = [&](size_t o) -> const float* { return o == kNone ? nullptr : P + o; };
  auto matmul = [&](float* out, const float* inp, const ops::PackedWeight* pw, const float* w, const float* bias,
                    int64_t rows, int IC, int OC, WeightLayout l, bool accumulate) {
    pass_matmul(out, inp, pw, w, bias, rows, IC, OC, l, accumulate, batch_invariant);
  };
  using LP = Impl::LayerPacked;

  ops::embedding_forward(x, tokens, P + I.wte, c.is_gpt2() ? P + I.wpe : nullptr, (int)N, 1, (int)C, 0, pos.data());
  for (int l = 0; l < c.n_layer; ++l) {
    const LayerOffsets& Lw = I.layers[l];
    if (c.is_gpt2())
      ops::layernorm_forward(ln, nullptr, nullptr, x, P + Lw.ln1_w, P + Lw.ln1_b, N, (int)C, c.norm_eps);
    else
      ops::rmsnorm_forward(ln, nullptr, x, P + Lw.ln1_w, N, (int)C, c.norm_eps);
    matmul(qkv, ln, I.pk(l, &LP::qkv), W(Lw.qkv_w), W(Lw.qkv_b), N, (int)C, (int)QKV, lay, false);
    if (!c.is_gpt2()) {
      if (c.qk_norm) {
        ops::head_rmsnorm_forward(qkv, P + Lw.q_norm, N, QKV, 0, c.n_head, c.hd(), c.norm_eps);
        ops::head_rmsnorm_forward(qkv, P + Lw.k_norm, N, QKV, (int)QW, c.n_kv_head, c.hd(), c.norm_eps);
      }
      ops::rope_apply(qkv, I.rope_cos.data(), I.rope_sin.data(), (int)N, 1, QKV, 0, c.n_head, c.hd(), 0, false,
                      pos.data());
      ops::rope_apply(qkv, I.rope_cos.data(), I.rope_sin.data(), (int)N, 1, QKV, (int)QW, c.n_kv_head, c.hd(), 0, false,
                      pos.data());
    }
    for (int i = 0; i < n; ++i) {
      KVCache& kv = *caches[i];
      const int64_t rs = r0[static_cast<size_t>(i)];
      const int nq = cnt(i), p0 = kv.length;
      for (int t = 0; t < nq; ++t) {
        const float* row = qkv + (rs + t) * QKV;
        store_kv(kv, l, 0, p0 + t, row + QW, row + QW + KVW);
      }
      // the sequence's own attention: its nq queries at positions p0.. against its keys
      const ops::AttnDims dims = cache_dims(c, 1, nq, p0, kv.max_len);
      cache_attention(atty + rs * QW, qkv + rs * QKV, kv, l, dims);
    }
    matmul(x, atty, I.pk(l, &LP::o), W(Lw.o_w), W(Lw.o_b), N, (int)QW, (int)C, lay, true);
    if (c.is_gpt2())
      ops::layernorm_forward(ln, nullptr, nullptr, x, P + Lw.ln2_w, P + Lw.ln2_b, N, (int)C, c.norm_eps);
    else
      ops::rmsnorm_forward(ln, nullptr, x, P + Lw.ln2_w, N, (int)C, c.norm_eps);
    matmul(fc, ln, I.pk(l, &LP::fc), W(Lw.fc_w), W(Lw.fc_b), N, (int)C, (int)FF, lay, false);
    if (c.is_gpt2()) {
      // row by row: the vector/scalar split of the element-wise kernel then falls where it
      // does for one row alone (F need not be a multiple of the vector width)
      if (batch_invariant)
        for (int64_t r = 0; r < N; ++r) ops::gelu_forward(act + r * F, fc + r * F, F);
      else
        ops::gelu_forward(act, fc, N * F);
    } else
      ops::swiglu_forward(act, fc, N, (int)F);
    matmul(x, act, I.pk(l, &LP::proj), W(Lw.proj_w), W(Lw.proj_b), N, (int)F, (int)C, lay, true);
  }
  for (int i = 0; i < n; ++i) caches[i]->length += cnt(i);
  return x;
}

void Model::forward_extend(const int32_t* tokens, const int* counts, int n, KVCache* const* caches, float* logits_out,
                           bool batch_invariant) {
  const ModelConfig& c = config_;
  Impl& I = *impl_;
  std::vector<int64_t> r0;
  const float* x = extend_layers(tokens, counts, n, caches, batch_invariant, r0);
  if (caches[0]->on_device()) {  // x is the device's: the head there, the logits back
    std::vector<int64_t> rows(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) rows[static_cast<size_t>(i)] = r0[static_cast<size_t>(i) + 1] - 1;
    device_head_rows(x, rows.data(), n, logits_out);
    return;
  }
  // the final norm and the LM head on each sequence's last new row only
  const int64_t C = c.d_model;
  I.extend_rows.resize(static_cast<size_t>(2 * n * C));
  float* last = I.extend_rows.data();
  float* normed = last + n * C;
  for (int i = 0; i < n; ++i)
    std::memcpy(last + (int64_t)i * C, x + (r0[static_cast<size_t>(i) + 1] - 1) * C, sizeof(float) * C);
  sync_host_params();  // a step on a device may have written the weights there
  const float* P = params_.data();
  if (c.is_gpt2())
    ops::layernorm_forward(normed, nullptr, nullptr, last, P + I.lnf_w, P + I.lnf_b, n, (int)C, c.norm_eps);
  else
    ops::rmsnorm_forward(normed, nullptr, last, P + I.lnf_w, n, (int)C, c.norm_eps);
  const bool packed = !I.packed_lm_head.empty();  // else fp32 (the fp32 head may be dropped when packed)
  pass_matmul(logits_out, normed, packed ? &I.packed_lm_head : nullptr, packed ? nullptr : P + I.lm_head, nullptr, n,
              (int)C, c.vocab_size, WeightLayout::kOutIn, false, batch_invariant);
}

std::vector<float> Model::token_logprobs(const int32_t* tokens, int T) {
  if (T < 2) return {};
  forward(tokens, 1, T);
  Impl& I = *impl_;
  const int64_t C = config_.d_model;
  const int64_t n = T - 1;
  std::vector<float> out(n);
  const float* hid = hidden();  // on a device, its host copy; the head runs on the CPU
  float* logits = I.host_logits(config_.vocab_size);
  for (int64_t r0 = 0; r0 < n; r0 += I.logits_rows) {
    const int64_t R = std::min(I.logits_rows, n - r0);
    lm_logits(hid + r0 * C, (int)R, logits);
    ops::log_softmax_pick(out.data() + r0, logits, tokens + 1 + r0, R, config_.vocab_size);
  }
  return out;
}

void Model::token_logits(const int32_t* tokens, int T, const std::function<void(int, int, const float*)>& fn) {
  if (T < 2) return;
  forward(tokens, 1, T);  // the same pass as token_logprobs
  Impl& I = *impl_;
  const int64_t C = config_.d_model;
  const int64_t n = T - 1;
  const float* hid = hidden();
  float* logits = I.host_logits(config_.vocab_size);
  for (int64_t r0 = 0; r0 < n; r0 += I.logits_rows) {
    const int64_t R = std::min(I.logits_rows, n - r0);
    lm_logits(hid + r0 * C, (int)R, logits);
    fn((int)r0, (int)R, logits);
  }
}

// ---- extend: every new position scored (forward_infer's layers, eval's shared prefixes) -----------

KVCache Model::repeat_cache(const KVCache& prefix, int batch, int max_len) const {
  if (prefix.batch != 1 || prefix.n_layer != config_.n_layer || prefix.kv_width != config_.kv_width())
    throw Error("repeat_cache: the prefix cache was not made for this model with batch 1");
  KVCache kv = make_cache(batch, max_len);
  if (prefix.on_device() != kv.on_device())
    throw Error("repeat_cache: the prefix cache is not where this model runs").fix("make it with this model's make_cache");
  if (prefix.type != kv.type)
    throw Error(std::string("repeat_cache: the prefix cache is ") + kv_cache_type_name(prefix.type) +
                ", this model makes " + kv_cache_type_name(kv.type) + " caches");
  if (prefix.length > kv.max_len)
    throw Error("repeat_cache: a prefix of " + std::to_string(prefix.length) + " positions does not fit " +
                std::to_string(kv.max_len));
  const size_t bytes = (size_t)prefix.length * prefix.kv_width * prefix.elem_bytes();
  if (kv.on_device()) {  // k blocks of every layer, then v blocks: the same copies on the device
    kernels::Backend& be = *impl_->device;
    const float *pk = prefix.dev->f(), *pv = pk + prefix.at(prefix.n_layer, 0);
    float *k = kv.dev->f(), *v = k + kv.at(kv.n_layer, 0);
    for (int l = 0; l < kv.n_layer; ++l)
      for (int b = 0; b < batch; ++b) {
        be.copy(k + kv.at(l, b), pk + prefix.at(l, 0), bytes);
        be.copy(v + kv.at(l, b), pv + prefix.at(l, 0), bytes);
      }
    kv.length = prefix.length;
    return kv;
  }
  for (int l = 0; l < kv.n_layer; ++l)
    for (int b = 0; b < batch; ++b) {
      std::memcpy(kv.k_bytes(l, b), prefix.k_bytes(l, 0), bytes);
      std::memcpy(kv.v_bytes(l, b), prefix.v_bytes(l, 0), bytes);
    }
  kv.length = prefix.length;
  return kv;
}

void Model::forward_extend(const int32_t* tokens, const int* counts, int n, KVCache* const* caches,
                           const int32_t* targets, float* logprobs_out, uint8_t* argmax_out, bool batch_invariant) {
  const ModelConfig& c = config_;
  const int64_t C = c.d_model, V = c.vocab_size;
  if (n <= 0) throw Error("forward_extend: no sequences");
  int64_t N = 0;
  for (int i = 0; i < n; ++i) N += counts[i] > 0 ? counts[i] : 0;
  for (int64_t i = 0; i < N; ++i)
    if (targets[i] >= V)
      throw Error("target id " + std::to_string(targets[i]) + " at index " + std::to_string(i) +
                  " is outside the vocabulary [0, " + std::to_string(V) + ")")
          .fix("the tokenizer and the model disagree: use a model whose vocab_size covers the tokenizer");
  Impl& I = *impl_;
  std::vector<int64_t> r0;
  const float* x = extend_layers(tokens, counts, n, caches, batch_invariant, r0);
  // the positions with a target, gathered, through the final norm and the LM head in chunks
  std::vector<int64_t> used;
  for (int64_t i = 0; i < N; ++i) {
    logprobs_out[i] = 0.0f;
    if (argmax_out) argmax_out[i] = 0;
    if (targets[i] >= 0) used.push_back(i);
  }
  const int64_t nu = (int64_t)used.size();
  if (nu == 0) return;
  const int64_t R = std::max<int64_t>(16, std::min<int64_t>(nu, (8 << 20) / V));
  I.extend_rows.resize((size_t)(2 * R * C));
  I.extend_logits.resize((size_t)(R * V));
  I.extend_targets.resize((size_t)R);
  std::vector<float> lp((size_t)R);
  const bool on_device = caches[0]->on_device();  // then x is the device's: the head runs there
  if (!on_device) sync_host_params();  // (only the host's head reads the host weights)
  const float* P = params_.data();
  for (int64_t q0 = 0; q0 < nu; q0 += R) {
    const int64_t rows = std::min(R, nu - q0);
    float* raw = I.extend_rows.data();
    float* normed = raw + R * C;
    for (int64_t r = 0; r < rows; ++r) {
      if (!on_device) std::memcpy(raw + r * C, x + used[(size_t)(q0 + r)] * C, sizeof(float) * C);
      I.extend_targets[(size_t)r] = targets[used[(size_t)(q0 + r)]];
    }
    if (on_device) {
      device_head_rows(x, used.data() + q0, rows, I.extend_logits.data());
    } else {
      if (c.is_gpt2())
        ops::layernorm_forward(normed, nullptr, nullptr, raw, P + I.lnf_w, P + I.lnf_b, rows, (int)C, c.norm_eps);
      else
        ops::rmsnorm_forward(normed, nullptr, raw, P + I.lnf_w, rows, (int)C, c.norm_eps);
      lm_logits(normed, (int)rows, I.extend_logits.data());
    }
    ops::log_softmax_pick(lp.data(), I.extend_logits.data(), I.extend_targets.data(), rows, (int)V);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = used[(size_t)(q0 + r)];
      logprobs_out[i] = lp[(size_t)r];
      if (argmax_out) {
        const float* l = I.extend_logits.data() + r * V;
        argmax_out[i] = (int32_t)(std::max_element(l, l + V) - l) == targets[i];
      }
    }
  }
}

}  // namespace aji::model
