#include "aji/train/trainer_run.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <utility>

#include "aji/base/atomic_file.h"
#include "aji/base/dist.h"
#include "aji/base/error.h"
#include "aji/base/progress.h"
#include "aji/base/threads.h"
#include "aji/kernels/backend.h"
#include "aji/kernels/cpu/bf16_gemm.h"
#include "aji/model/model.h"
#include "aji/train/checkpoint.h"

namespace aji::train {

namespace fs = std::filesystem;
using nlohmann::json;

// ---- one optimizer step --------------------------------------------------------------------

ParamGroup ParamGroup::whole_model(model::Model& model, AdamW& opt) {
  return {model.params(), model.grads(), &opt, all_parameter_ranges(model), &model};
}

model::Precision resolve_precision(const std::string& requested, std::string* note, const kernels::Backend* device) {
  // Where the training path runs decides: the CPU (oneDNN's ISA) or the device (Backend::bf16_products).
  const bool native = device ? device->bf16_products() : kernels::cpu::bf16_supported();
  const std::string where = device ? device->describe() : std::string("this CPU");
  const std::string what = device ? std::string("bf16 tensor cores (compute capability 8.0 or later)")
                                  : std::string("AVX512-BF16 or AMX");
  const std::string isa = device ? std::string() : std::string(", oneDNN ISA ") + kernels::cpu::bf16_isa_name();
  std::string why;
  model::Precision p = model::Precision::kFp32;
  if (requested == "auto") {
    p = native ? model::Precision::kBf16 : model::Precision::kFp32;
    const std::string cpu_isa = device ? std::string() : ": " + std::string(kernels::cpu::bf16_isa_name());
    why = native ? "bf16 mixed precision (the default on " + where + cpu_isa + ")"
                 : "fp32 (the default: " + where + " has no native bf16 products" + isa + ")";
  } else if (requested == "bf16") {
    if (native) {
      p = model::Precision::kBf16;
      why = "bf16 mixed precision (" + (device ? where : std::string(kernels::cpu::bf16_isa_name())) + ")";
    } else {
      const std::string detail = isa.empty() ? std::string() : isa.substr(2) + "; ";  // "oneDNN ISA ...; "
      why = "fp32: --precision bf16 asked, but " + where + " has no native bf16 products (" + detail + "bf16 needs " +
            what + "), so the run falls back to fp32";
    }
  } else if (requested == "fp32") {
    why = "fp32";
  } else if (requested == "tf32") {  // the models in fp32; apply_run_device turns the device's TF32 on
    why = "fp32 with TF32 matrix products (a CUDA device's tensor cores)";
  } else {
    throw Error("--precision " + requested + " is not a precision").fix("use auto, fp32, bf16 or tf32 (CUDA)");
  }
  if (note) *note = "precision: " + why;
  return p;
}

model::Precision run_precision(std::string& requested, const nlohmann::json& saved_options, bool given, bool quiet,
                               std::string* note, const kernels::Backend* device) {
  const bool resumed = saved_options.is_object();
  std::string saved;  // what the run trained in until now (a run from before the option: fp32)
  if (resumed) {
    auto it = saved_options.find("precision");
    if (it == saved_options.end()) {
      saved = "fp32";
      if (!given) requested = "fp32";
    } else {
      saved = it->is_string() ? it->get<std::string>() : it->dump();
    }
  }
  const model::Precision p = resolve_precision(requested, note, device);
  if (requested != "tf32") requested = model::precision_name(p);
  if (resumed && saved != requested && !quiet)
    std::fprintf(stderr, "note: the run trained in %s until now, this session trains in %s (checkpoints hold fp32 "
                 "master weights, so both read them)\n", saved.c_str(), requested.c_str());
  return p;
}

model::Precision apply_run_precision(std::string& requested, const json& saved_options,
                                     const std::vector<std::string>& given_flags, bool quiet, const char* stage,
                                     std::initializer_list<model::Model*> models, const kernels::Backend* device) {
  const bool given = std::find(given_flags.begin(), given_flags.end(), "--precision") != given_flags.end();
  std::string note;
  const model::Precision p = run_precision(requested, saved_options, given, quiet, &note, device);
  for (model::Model* m : models)
    if (m) m->set_precision(p);
  if (!quiet) {
    std::printf("%s: %s\n", stage, note.c_str());
    std::fflush(stdout);
  }
  return p;
}

namespace {
// This process's rank among the ranks on its machine: the launcher's variable (Open MPI,
// MPICH's Hydra, Slurm), else the global rank.
int local_rank() {
  for (const char* v : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"})
    if (const char* s = std::getenv(v); s && *s) {
      char* end = nullptr;
      const long r = std::strtol(s, &end, 10);
      if (end && *end == '\0' && r >= 0 && r < 1 << 20) return static_cast<int>(r);
    }
  return dist::world().rank();
}
}  // namespace

std::shared_ptr<kernels::Backend> open_run_device(const std::string& device) {
  const kernels::DeviceSpec spec = kernels::parse_device(device);
  if (spec.host()) return nullptr;
  kernels::DeviceSpec use = spec;
  dist::Communicator& comm = dist::world();
  if (comm.size() > 1 && spec.kind == kernels::DeviceKind::kCuda && device == "cuda")
    use.index = local_rank();  // one GPU per rank on each machine: cuda:<local rank>
  std::shared_ptr<kernels::Backend> be = kernels::make_backend(use);
  if (comm.size() > 1) join_device_collective(*be, comm, spec.kind == kernels::DeviceKind::kCuda && device != "cuda");
  return be;
}

std::string join_device_collective(kernels::Backend& be, dist::Communicator& comm, bool gpus_named) {
  // Every rank takes the same branch: rank 0 decides and broadcasts (an id, or "" and why).
  std::string id, why;
  if (comm.rank() == 0) {
    const char* env = std::getenv("AJI_DEVICE_COLLECTIVE");
    if (env && std::string(env) == "0")
      why = "AJI_DEVICE_COLLECTIVE=0";
    else if (gpus_named)
      why = "NCCL needs a GPU of its own for each rank: with an explicit cuda:N, use --device cuda (each rank "
            "then takes cuda:<its rank on its machine>)";
    else
      id = be.collective_id(&why);
  }
  std::string message = id.empty() ? "\x01" + why : id;  // one broadcast: the id, or a mark and the reason
  comm.broadcast(message);
  if (!message.empty() && message[0] == '\x01') {
    why = message.substr(1);
    if (comm.rank() == 0)
      std::fprintf(stderr, "note: data parallel on %s: the gradients are averaged through the host (MPI): %s\n",
                   be.describe().c_str(), why.c_str());
    return why;
  }
  be.join_collective(message, comm.rank(), comm.size());
  return {};
}

void require_precision_fits_device(const std::string& precision, const kernels::Backend* be) {
  if (precision == "tf32" && (!be || be->kind() != kernels::DeviceKind::kCuda))
    throw Error(std::string("--precision tf32 is for CUDA devices (TF32 tensor-core products); this run is on ") +
                (be ? be->describe() : std::string("the CPU")))
        .fix("add --device cuda, or use --precision fp32, bf16 or auto on the CPU (a resumed run keeps its "
             "saved precision unless --precision is given)");
}

void apply_run_device(const std::shared_ptr<kernels::Backend>& be, const std::string& precision, bool quiet,
                      const char* stage, std::initializer_list<model::Model*> models) {
  require_precision_fits_device(precision, be.get());
  const bool tf32 = precision == "tf32";
  if (!be) return;
  be->set_matmul_tf32(tf32);
  bool bf16 = false;
  for (model::Model* m : models)
    if (m) {
      bf16 = bf16 || m->precision() == model::Precision::kBf16;
      m->set_device(be);
    }
  if (!quiet) {
    std::printf("%s: device: %s (forward, backward and the optimizer step; %s)\n", stage, be->describe().c_str(),
                tf32 ? "fp32 with TF32 matrix products" : bf16 ? "bf16 mixed precision" : "fp32");
    std::fflush(stdout);
  }
}

Fp32Scope::Fp32Scope(model::Model& m) : m_(m), saved_(m.precision()) { m_.set_precision(model::Precision::kFp32); }
Fp32Scope::~Fp32Scope() { m_.set_precision(saved_); }

namespace {

struct Span {
  float* grads;  // host memory
  float* params;
  size_t size;
  // The group's model when it trains on a device with memory of its own (Model::on_device):
  // the span is [offset, offset + size) of its device buffers, and the step runs there.
  model::Model* device_model = nullptr;
  size_t offset = 0;
  kernels::Backend& backend() const { return device_model ? device_model->device() : kernels::cpu_backend(); }
  float* backend_grads() const { return device_model ? device_model->device_grads_for_step() + offset : grads; }
};

// Parameter buffers already made equal on every rank (broadcast from rank 0) in this
// stepping phase: TrainerRun::steps() clears it, so each phase starts from rank 0's weights.
std::set<const float*>& synced_params() {
  static std::set<const float*> s;
  return s;
}

// The groups' ranges as contiguous spans of gradient (and parameter) memory (adjacent ranges merged).
std::vector<Span> spans_of(const std::vector<ParamGroup>& groups) {
  std::vector<Span> spans;
  for (const ParamGroup& g : groups) {
    std::vector<DecayRange> r = g.ranges;
    std::sort(r.begin(), r.end(), [](const DecayRange& a, const DecayRange& b) { return a.offset < b.offset; });
    size_t i = 0;
    while (i < r.size()) {
      const size_t begin = r[i].offset;
      size_t end = begin + r[i].size;
      for (++i; i < r.size() && r[i].offset == end; ++i) end += r[i].size;
      if (end <= begin) continue;
      Span sp{g.grads + begin, g.params ? g.params + begin : nullptr, end - begin};
      if (g.model && g.model->on_device()) {
        AJI_CHECK(g.model->is_params_buffer(g.params),
                  "train_step: a group on a device must cover its model's own parameter buffer");
        sp.device_model = g.model;
        sp.offset = begin;
      }
      spans.push_back(sp);
    }
  }
  return spans;
}

// The overlapped all-reduce armed by overlap_next_backward: the model whose next backward
// starts reducing its blocks, and the gradient pieces started so far.
struct Overlap {
  model::Model* model = nullptr;
  std::vector<std::pair<float*, size_t>> started;
};
Overlap& overlap() {
  static Overlap o;
  return o;
}

bool overlap_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("AJI_OVERLAP");
    return v == nullptr || std::string(v) != "0";
  }();
  return on;
}

// Each block's [offset, size) in the parameter buffer, from the tensor names ("model.layers.L."
// or "transformer.h.L."); {0, 0} for a block whose tensors are not contiguous.
std::vector<std::pair<size_t, size_t>> block_spans(const model::Model& model) {
  const int L = model.config().n_layer;
  std::vector<size_t> lo(size_t(L), SIZE_MAX), hi(size_t(L), 0), total(size_t(L), 0);
  for (const model::ParamTensor& t : model.tensors()) {
    size_t at = t.name.find("layers.");
    size_t len = 7;
    if (at == std::string::npos) {
      at = t.name.find(".h.");
      len = 3;
    }
    if (at == std::string::npos) continue;
    const size_t digits = at + len, end = t.name.find('.', digits);
    if (end == std::string::npos || end == digits ||
        t.name.find_first_not_of("0123456789", digits) != end)
      continue;
    const int l = std::stoi(t.name.substr(digits, end - digits));
    if (l < 0 || l >= L) continue;
    lo[size_t(l)] = std::min(lo[size_t(l)], t.offset);
    hi[size_t(l)] = std::max(hi[size_t(l)], t.offset + t.numel);
    total[size_t(l)] += t.numel;
  }
  std::vector<std::pair<size_t, size_t>> spans(size_t(L), {0, 0});
  for (size_t l = 0; l < size_t(L); ++l)
    if (total[l] > 0 && hi[l] - lo[l] == total[l]) spans[l] = {lo[l], total[l]};
  return spans;
}

// The optimizers train_step sharded (ZeRO-1) in this stepping phase, in the groups' order (the
// same on every rank: save() gathers them one after the other).
std::vector<AdamW*>& sharded_optimizers() {
  static std::vector<AdamW*> s;
  return s;
}

// This rank's weight in the steps that follow a rank_share (1 until one is called).
double& share_weight() {
  static double w = 1.0;
  return w;
}

std::string num(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace

void throw_diverged(const std::string& what, int64_t step_index, double loss, double norm, float lr,
                    const fs::path& run_dir) {
  std::string saved;
  if (!run_dir.empty()) {
    const auto cks = list_checkpoints(run_dir);
    saved = ". Nothing was saved after the last good checkpoint" +
            (cks.empty() ? std::string(" (there is none yet)") : " (" + cks.back().second.string() + ")");
  }
  Error e(what + " diverged at step " + std::to_string(step_index + 1) + ": the loss is " + num("%g", loss) +
          " and the gradient norm " + num("%g", norm) + " (learning rate " + num("%.3g", lr) + ")" + saved);
  if (!run_dir.empty()) e.at(run_dir.string());
  throw e.fix("lower --lr, lengthen the warmup, or keep --grad-clip on; then continue from the last checkpoint "
              "with --resume, or start again with --force");
}

void step_model_weights(AdamW& opt, model::Model& model, float* params, const float* grads,
                        const std::vector<DecayRange>& ranges, float lr) {
  uint16_t* copy = params == static_cast<const model::Model&>(model).params() ? model.bf16_copy_in_step() : nullptr;
  model.params_updated(opt.step(params, grads, ranges, lr, copy));
}

StepStats train_step(const std::vector<ParamGroup>& groups, float lr, double max_norm, const std::string& what,
                     const fs::path& run_dir, const std::function<double()>& forward_backward, int64_t step_index) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<Span> spans = spans_of(groups);
  dist::Communicator& comm = dist::world();
  const double comm0 = comm.comm_seconds();
  if (comm.size() > 1) {
    // The first step of a stepping phase starts every rank from rank 0's parameters (equal
    // anyway when every rank initialised from the same seed or loaded the same checkpoint).
    for (const ParamGroup& g : groups)
      if (g.params && synced_params().insert(g.params).second) {
        if (g.model && g.model->on_device()) g.model->params();  // the device's weights to the host first
        for (const Span& s : spans_of({g})) {
          comm.broadcast(s.params, s.size, 0);
          if (g.model) g.model->params_updated();  // uploaded again before the next forward
        }
      }
  }
  for (const Span& s : spans) {
    if (s.device_model && comm.size() > 1 && zero1_requested())
      throw Error("ZeRO-1 (AJI_ZERO1) with a device is not built: AdamW's moments stay whole on each device")
          .fix("unset AJI_ZERO1, or train on the CPU");
    s.backend().zero(s.backend_grads(), s.size * sizeof(float));
  }
  StepStats st;
  st.lr = lr;
  // rank_share's weight of this rank's part (0: it has no item in this step).
  const double weight = comm.size() > 1 ? share_weight() : 1.0;
  if (comm.size() > 1 && zero1_requested())  // ZeRO-1: each optimizer keeps its rank's part
    for (const ParamGroup& g : groups)
      if (g.optimizer) {
        g.optimizer->shard();  // once; kept on later steps
        std::vector<AdamW*>& all = sharded_optimizers();
        if (std::find(all.begin(), all.end(), g.optimizer) == all.end()) all.push_back(g.optimizer);
      }
  overlap().started.clear();
  st.loss = weight != 0 ? forward_backward() : 0.0;
  Overlap& ov = overlap();
  if (ov.model) ov.model->on_layer_backward = nullptr;
  ov.model = nullptr;
  if (!ov.started.empty()) {
    // The blocks the backward started; the rest of every span now, then all of it at once.
    for (const Span& s : spans) {
      AJI_CHECK(!s.device_model, "train_step: overlapped reductions are for host gradients only");
      std::vector<std::pair<float*, size_t>> in;
      for (const auto& p : ov.started)
        if (p.first >= s.grads && p.first + p.second <= s.grads + s.size) in.push_back(p);
      std::sort(in.begin(), in.end());
      float* at = s.grads;
      for (const auto& p : in) {
        if (p.first > at) comm.start_allreduce_sum(at, size_t(p.first - at));
        at = p.first + p.second;
      }
      if (at < s.grads + s.size) comm.start_allreduce_sum(at, size_t(s.grads + s.size - at));
    }
    comm.wait_all();
    const float scale = 1.0f / static_cast<float>(comm.size());  // allreduce_mean's scale
    for (const Span& s : spans)
      for (size_t i = 0; i < s.size; ++i) s.grads[i] *= scale;
    double loss = st.loss;
    comm.allreduce_sum(&loss, 1);
    st.loss = loss / comm.size();
  } else if (comm.size() > 1) {
    if (weight != 1 && weight != 0) {
      const float w = static_cast<float>(weight);
      for (const Span& s : spans) s.backend().scale(s.backend_grads(), w, s.size);
      st.loss *= weight;
    }
    // Data parallelism: each rank computed the gradient of its part of the batch; their
    // mean is the gradient of the whole batch (dist.h). Before the norm, so clipping,
    // the divergence stop and AdamW see the same numbers on every rank. A device's gradients
    // are averaged where they are when the devices share a collective (NCCL between GPUs:
    // open_run_device), else through the host (download, MPI, upload).
    for (const Span& s : spans) {
      if (s.device_model && s.backend().in_collective()) {
        s.backend().allreduce_mean(s.backend_grads(), s.size);
        continue;
      }
      if (s.device_model) s.backend().to_host(s.grads, s.backend_grads(), s.size * sizeof(float));
      comm.allreduce_mean(s.grads, s.size);
      if (s.device_model) s.backend().to_device(s.backend_grads(), s.grads, s.size * sizeof(float));
    }
    double loss = st.loss;
    comm.allreduce_sum(&loss, 1);
    st.loss = loss / comm.size();
  }
  st.comm_seconds = comm.comm_seconds() - comm0;
  // Each span's sum of squares where its gradients are (global_grad_norm's on the host).
  if (spans.size() == 1) {
    st.grad_norm = std::sqrt(spans[0].backend().sum_squares(spans[0].backend_grads(), spans[0].size));
  } else {
    double sq = 0;
    for (const Span& s : spans) {
      const double n = std::sqrt(s.backend().sum_squares(s.backend_grads(), s.size));
      sq += n * n;
    }
    st.grad_norm = std::sqrt(sq);
  }
  if (!std::isfinite(st.loss) || !std::isfinite(st.grad_norm))
    throw_diverged(what, step_index, st.loss, st.grad_norm, lr, run_dir);
  if (max_norm > 0 && st.grad_norm > max_norm) {
    // The same float scale and product as clip_grad_norm (optimizer.h).
    const float scale = clip_scale(max_norm, st.grad_norm);
    for (const Span& s : spans) s.backend().scale(s.backend_grads(), scale, s.size);
  }
  for (const ParamGroup& g : groups)
    if (g.optimizer) {
      if (g.model && g.model->on_device()) {
        // On the device: AdamW's moments live there (uploaded at the first step), the update
        // writes the device's weights, and the host copy is downloaded when next read.
        g.optimizer->place_on(g.model->device_handle());
        float* grads = g.model->device_grads_for_step();
        g.optimizer->step(g.model->device_params_for_step(), grads, g.ranges, lr);
      } else {
        g.optimizer->place_on(nullptr);  // the moments come back if the model left the device
        if (g.model)
          step_model_weights(*g.optimizer, *g.model, g.params, g.grads, g.ranges, lr);
        else
          g.optimizer->step(g.params, g.grads, g.ranges, lr);
      }
    }
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return st;
}

// ---- data parallelism: each rank's part of a step ------------------------------------------

void require_rank_split(int64_t n, const std::string& flag) {
  const int ranks = dist::world().size();
  if (ranks <= 1 || (n > 0 && n % ranks == 0)) return;
  throw Error(flag + " " + std::to_string(n) + " does not split over " + std::to_string(ranks) +
              " ranks (each rank takes " + flag.substr(flag.find_first_not_of('-')) + " / ranks items of a step)")
      .fix("use " + flag + " " + std::to_string(ranks) + ", " + std::to_string(2 * ranks) + " or another multiple of " +
           std::to_string(ranks) + " (the step's size does not depend on the number of ranks), or start " +
           "a number of ranks that divides " + std::to_string(n));
}

bool rank_takes(int64_t i) {
  dist::Communicator& comm = dist::world();
  return comm.size() <= 1 || i % comm.size() == comm.rank();
}

void require_same_settings(const json& settings) {
  dist::Communicator& comm = dist::world();
  if (comm.size() <= 1) return;
  std::string rank0 = settings.dump();
  comm.broadcast(rank0, 0);
  if (rank0 == settings.dump()) return;
  std::string diff;
  const json j0 = json::parse(rank0);
  for (const auto& [k, v] : settings.items())
    if (!j0.contains(k) || j0[k] != v)
      diff += (diff.empty() ? "" : ", ") + k + " " + v.dump() + " (rank 0: " + (j0.contains(k) ? j0[k].dump() : "-") + ")";
  for (const auto& [k, v] : j0.items())
    if (!settings.contains(k)) diff += (diff.empty() ? "" : ", ") + k + " - (rank 0: " + v.dump() + ")";
  throw Error("rank " + std::to_string(comm.rank()) + " was started with other settings than rank 0: " + diff)
      .fix("start every rank with the same command line, --threads and data (mpirun/srun do this for one command)");
}

std::vector<int> rank_items(int64_t n) {
  std::vector<int> mine;
  for (int64_t i = 0; i < n; ++i)
    if (rank_takes(i)) mine.push_back(static_cast<int>(i));
  return mine;
}

std::vector<int64_t> rank_share(const std::vector<int64_t>& items) {
  dist::Communicator& comm = dist::world();
  if (comm.size() <= 1) return items;
  std::vector<int64_t> mine;
  for (size_t i = static_cast<size_t>(comm.rank()); i < items.size(); i += static_cast<size_t>(comm.size()))
    mine.push_back(items[i]);
  share_weight() = items.empty() ? 0.0 : double(comm.size()) * double(mine.size()) / double(items.size());
  return mine;
}

void overlap_next_backward(model::Model& model) {
  dist::Communicator& comm = dist::world();
  if (comm.size() <= 1 || !overlap_enabled() || share_weight() != 1.0 || model.on_device()) return;
  overlap().model = &model;
  // An untied LM head's gradient is final already (the loss ran before this backward).
  if (const model::ParamTensor* head = model.find_tensor("lm_head.weight")) {
    comm.start_allreduce_sum(model.grads() + head->offset, head->numel);
    overlap().started.push_back({model.grads() + head->offset, head->numel});
  }
  model.on_layer_backward = [&model, spans = block_spans(model)](int l) {
    const auto [offset, size] = spans[size_t(l)];
    dist::Communicator& c = dist::world();
    if (size > 0) {
      c.start_allreduce_sum(model.grads() + offset, size);
      overlap().started.push_back({model.grads() + offset, size});
    }
    c.poll();  // lets the reductions started for the blocks above move on
  };
}

double rank_means(std::initializer_list<double*> means, double count) {
  dist::Communicator& comm = dist::world();
  if (comm.size() <= 1) return count;
  std::vector<double> v;
  for (double* m : means) v.push_back(count > 0 ? *m * count : 0.0);
  v.push_back(count);
  comm.allreduce_sum(v.data(), v.size());
  const double total = v.back();
  size_t k = 0;
  for (double* m : means) *m = total > 0 ? v[k++] / total : 0.0;
  return total;
}

void rank_gather(std::initializer_list<std::vector<float>*> arrays) {
  dist::Communicator& comm = dist::world();
  if (comm.size() <= 1) return;
  std::vector<double> v;
  for (const std::vector<float>* a : arrays) v.insert(v.end(), a->begin(), a->end());
  comm.allreduce_sum(v.data(), v.size());
  size_t k = 0;
  for (std::vector<float>* a : arrays)
    for (float& x : *a) x = float(v[k++]);
}

// ---- the run --------------------------------------------------------------------------------

namespace {
void require_data_split(const TrainerRun::Options& o) {
  if (dist::launch_size() <= 1 || o.splits_data) return;
  const std::string who = o.dir.command.empty() ? std::string("this trainer") : o.dir.command;
  throw Error(who + " does not split its batches over ranks yet: started as one of " +
              std::to_string(dist::launch_size()) + " processes, every rank would train on the same data")
      .fix("run it as one process (without mpirun / srun, or -np 1); `aji pretrain`, `aji sft train`, "
           "`aji classify train`, `aji rm train`, `aji dpo`, `aji grpo` and `aji ppo` run data-parallel "
           "(docs/distributed.md)");
}
}  // namespace

TrainerRun::TrainerRun(Options options) : o_(std::move(options)), root_(dist::is_root()) {
  require_data_split(o_);
  dist::Communicator& comm = dist::world();
  if (comm.size() <= 1) {
    start_ = open_run_dir(o_.dir);
  } else {
    // Rank 0 applies the run-dir rule (it alone creates, clears or refuses); the others take
    // what it found. An error on rank 0 ends every rank (dist::abort_all_if_distributed).
    std::string found;
    if (root_) {
      start_ = open_run_dir(o_.dir);
      found = json{{"checkpoint", start_.checkpoint ? start_.checkpoint->string() : std::string()},
                   {"state", start_.state}}.dump();
    }
    comm.broadcast(found, 0);
    if (!root_) {
      const json j = json::parse(found);
      const std::string ck = j.at("checkpoint").get<std::string>();
      if (!ck.empty()) start_.checkpoint = fs::path(ck);
      start_.state = j.at("state");
    }
  }
  if (resuming()) {
    const int threads = section().value("threads", 0);
    if (threads != num_threads() && !quiet())
      std::fprintf(stderr, "note: the run used %d threads, now %d: results will not match a straight run bit for bit\n",
                   threads, num_threads());
  }
}

TrainerRun::TrainerRun(Options options, RunDirStart opened)
    : o_(std::move(options)), start_(std::move(opened)), root_(dist::is_root()) {
  require_data_split(o_);
}

TrainerRun::~TrainerRun() = default;

const json& TrainerRun::section() const {
  static const json kNull;
  if (!start_.state.is_object() || !start_.state.contains(o_.dir.state_key)) return kNull;
  return start_.state[o_.dir.state_key];
}

std::string TrainerRun::state_file() const {
  return start_.checkpoint ? (*start_.checkpoint / "trainer_state.json").string() : std::string();
}

const std::vector<fs::path>& TrainerRun::ship_tokenizer(const fs::path& model_dir) {
  for (const char* name : {kAjiTokenizerFile, "tokenizer.json"})
    if (fs::exists(model_dir / name)) {
      if (root_) copy_file_atomic(model_dir / name, dir() / name);
      ship_.push_back(dir() / name);
    }
  return ship_;
}

void TrainerRun::add_to_plot(const json& j) {
  if (!j.contains("step") || !j["step"].is_number()) return;
  const double step = j["step"].get<double>();
  auto take = [&](const char* key, std::vector<CurvePoint>& series) {
    if (j.contains(key) && j[key].is_number()) series.push_back({step, j[key].get<double>()});
  };
  take("loss", train_);
  take("val_loss", val_);
  take("val_accuracy", acc_);
}

void TrainerRun::start_metrics(int64_t step, const std::function<void(const json&)>& each) {
  if (!root_) return;  // rank 0 writes the metrics
  train_.clear();
  val_.clear();
  acc_.clear();
  keep_metrics_up_to(dir(), step, [&](const json& j) {
    add_to_plot(j);
    if (each) each(j);
  });
  metrics_.close();
  metrics_.open(dir() / "metrics.jsonl", std::ios::app);
}

void TrainerRun::log(const json& line) {
  if (!root_) return;
  if (!metrics_.is_open()) metrics_.open(dir() / "metrics.jsonl", std::ios::app);  // start_metrics not called: append
  metrics_ << line.dump() << "\n";
  metrics_.flush();
  add_to_plot(line);
}

void TrainerRun::write_plot() const {
  if (!root_) return;
  CurveLabels labels = o_.plot_labels;
  if (!acc_.empty()) labels.accuracy = acc_;
  write_file_atomic(dir() / "loss.svg", loss_curve_svg(train_, val_, o_.plot_title, labels));
}

fs::path TrainerRun::save(int64_t step) {
  if (!parts_) throw Error("internal: TrainerRun::save without set_checkpoint");
  dist::Communicator& comm = dist::world();
  // ZeRO-1: checkpoints hold the whole optimizer state (resumable with any number of ranks):
  // every rank sends its part, rank 0 writes the gathered state and then takes its part back.
  std::vector<std::pair<AdamW*, AdamW>> unsharded;
  for (AdamW* o : sharded_optimizers()) {
    AdamW full = o->gathered(0);
    if (root_) {
      std::swap(*o, full);
      unsharded.emplace_back(o, std::move(full));
    }
  }
  struct Reshard {
    std::vector<std::pair<AdamW*, AdamW>>& list;
    ~Reshard() {
      for (auto& [o, part] : list) std::swap(*o, part);
    }
  } reshard{unsharded};
  if (!root_) {
    // Rank 0 writes the checkpoint; the others wait for it, so nothing after a save (an
    // evaluation of the saved model, the next session) reads a checkpoint half-written.
    last_checkpoint_ = dir() / ("ckpt-" + std::to_string(step));
    comm.barrier();
    return last_checkpoint_;
  }
  CheckpointParts p = parts_(step);
  json ts = p.top.is_object() ? p.top : json::object();
  ts["step"] = step;
  if (!o_.dir.state_key.empty()) {
    if (!p.section.contains("threads")) p.section["threads"] = num_threads();
    ts[o_.dir.state_key] = p.section;
  }
  std::vector<fs::path> copy = ship_;
  const fs::path staging = dir() / ".checkpoint-files";  // written here, copied into ckpt-N by name
  if (!p.write.empty()) {
    fs::remove_all(staging);
    fs::create_directories(staging);
    for (const auto& [name, writer] : p.write) {
      writer(staging / name);
      copy.push_back(staging / name);
    }
  }
  CheckpointContents c{p.model, p.optimizer, ts, copy};
  last_checkpoint_ = save_checkpoint(dir(), step, c, o_.keep);
  if (!p.write.empty()) fs::remove_all(staging);
  write_plot();
  if (comm.size() > 1) comm.barrier();
  return last_checkpoint_;
}

TrainerRun::Steps TrainerRun::steps(int64_t session_start, int64_t total) {
  session_start_ = session_start;
  total_ = total;
  stopped_ = false;
  synced_params().clear();  // the first train_step of this phase broadcasts the parameters
  sharded_optimizers().clear();
  share_weight() = 1.0;     // until the trainer's first rank_share
  Steps s;
  s.guard_ = std::make_unique<InterruptGuard>();
  return s;
}

bool TrainerRun::after_step(int64_t step, int64_t total) {
  const bool last = step == total;
  bool stop = interrupt_requested() || (o_.stop_after > 0 && step - session_start_ >= o_.stop_after);
  dist::Communicator& comm = dist::world();
  if (comm.size() > 1) {  // a Ctrl-C seen by one rank stops all of them at the same step
    double any = stop ? 1.0 : 0.0;
    comm.allreduce_sum(&any, 1);
    stop = any > 0;
  }
  if (last || stop || (o_.save_every > 0 && step % o_.save_every == 0)) save(step);
  stopped_ = stop && !last;
  return stopped_;
}

std::string TrainerRun::eta(int64_t step, int64_t total) const {
  return Progress::format_duration(ema_ * static_cast<double>(total - step));
}

void TrainerRun::print_step(int64_t step, int64_t total, double seconds, const std::string& middle) {
  ema_ = step - session_start_ <= 1 ? seconds : 0.9 * ema_ + 0.1 * seconds;
  if (quiet()) return;
  if (o_.progress_lines > 0 && !(step == 1 || step == total ||
                                 step % std::max<int64_t>(1, total / o_.progress_lines) == 0))
    return;
  std::printf("step %5lld/%s | %s | ETA %s\n", (long long)step, total > 0 ? std::to_string(total).c_str() : "?",
              middle.c_str(), total > 0 ? eta(step, total).c_str() : "?");
  std::fflush(stdout);
}

void TrainerRun::finish(int64_t step, int64_t total) {
  if (!root_) return;
  metrics_.flush();
  write_plot();
  if (stopped_ && !quiet())
    std::fprintf(stderr, "%s at step %lld of %lld; checkpoint %s. Continue with: %s --out %s --resume\n",
                 interrupt_signal() == SIGTERM ? "terminated (SIGTERM)"
                 : interrupt_requested()      ? "interrupted"
                                              : "stopped",
                 (long long)step, (long long)total, last_checkpoint_.c_str(), o_.dir.command.c_str(), dir().c_str());
}

}  // namespace aji::train
