#include "aji/train/trainer_run.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <set>

#include "aji/base/atomic_file.h"
#include "aji/base/dist.h"
#include "aji/base/error.h"
#include "aji/base/progress.h"
#include "aji/base/threads.h"
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

model::Precision resolve_precision(const std::string& requested, std::string* note) {
  const bool native = kernels::cpu::bf16_supported();
  std::string why;
  model::Precision p = model::Precision::kFp32;
  if (requested == "auto") {
    p = native ? model::Precision::kBf16 : model::Precision::kFp32;
    why = native ? std::string("bf16 mixed precision (the default on this CPU: ") + kernels::cpu::bf16_isa_name() + ")"
                 : std::string("fp32 (the default: this CPU has no native bf16 products, oneDNN ISA ") +
                       kernels::cpu::bf16_isa_name() + ")";
  } else if (requested == "bf16") {
    if (native) {
      p = model::Precision::kBf16;
      why = std::string("bf16 mixed precision (") + kernels::cpu::bf16_isa_name() + ")";
    } else {
      why = std::string("fp32: --precision bf16 asked, but this CPU has no native bf16 products (oneDNN ISA ") +
            kernels::cpu::bf16_isa_name() + "; bf16 needs AVX512-BF16 or AMX), so the run falls back to fp32";
    }
  } else if (requested == "fp32") {
    why = "fp32";
  } else {
    throw Error("--precision " + requested + " is not a precision").fix("use auto, fp32 or bf16");
  }
  if (note) *note = "precision: " + why;
  return p;
}

namespace {

struct Span {
  float* grads;
  float* params;
  size_t size;
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
      if (end > begin) spans.push_back({g.grads + begin, g.params ? g.params + begin : nullptr, end - begin});
    }
  }
  return spans;
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
      if (g.params && synced_params().insert(g.params).second)
        for (const Span& s : spans_of({g})) {
          comm.broadcast(s.params, s.size, 0);
          if (g.model) g.model->params_updated();
        }
  }
  for (const Span& s : spans) std::fill_n(s.grads, s.size, 0.0f);
  StepStats st;
  st.lr = lr;
  st.loss = forward_backward();
  if (comm.size() > 1) {
    // Data parallelism: each rank computed the gradient of its part of the batch; their
    // mean is the gradient of the whole batch (dist.h). Before the norm, so clipping,
    // the divergence stop and AdamW see the same numbers on every rank.
    for (const Span& s : spans) comm.allreduce_mean(s.grads, s.size);
    double loss = st.loss;
    comm.allreduce_sum(&loss, 1);
    st.loss = loss / comm.size();
  }
  st.comm_seconds = comm.comm_seconds() - comm0;
  if (spans.size() == 1) {
    st.grad_norm = global_grad_norm(spans[0].grads, spans[0].size);
  } else {
    double sq = 0;
    for (const Span& s : spans) {
      const double n = global_grad_norm(s.grads, s.size);
      sq += n * n;
    }
    st.grad_norm = std::sqrt(sq);
  }
  if (!std::isfinite(st.loss) || !std::isfinite(st.grad_norm))
    throw_diverged(what, step_index, st.loss, st.grad_norm, lr, run_dir);
  if (max_norm > 0 && st.grad_norm > max_norm) {
    // The same float scale and product as clip_grad_norm (optimizer.h).
    const float scale = static_cast<float>(max_norm / (st.grad_norm + 1e-6));
    const int threads = num_threads();
    for (const Span& s : spans) {
      float* g = s.grads;
#pragma omp parallel for simd schedule(static) num_threads(threads) if (s.size > 65536)
      for (int64_t i = 0; i < static_cast<int64_t>(s.size); ++i) g[i] *= scale;
    }
  }
  for (const ParamGroup& g : groups)
    if (g.optimizer) {
      g.optimizer->step(g.params, g.grads, g.ranges, lr);
      if (g.model) g.model->params_updated();
    }
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return st;
}

// ---- the run --------------------------------------------------------------------------------

namespace {
void require_data_split(const TrainerRun::Options& o) {
  if (dist::launch_size() <= 1 || o.splits_data) return;
  const std::string who = o.dir.command.empty() ? std::string("this trainer") : o.dir.command;
  throw Error(who + " does not split its batches over ranks yet: started as one of " +
              std::to_string(dist::launch_size()) + " processes, every rank would train on the same data")
      .fix("run it as one process (without mpirun / srun, or -np 1); `aji pretrain` and `aji sft train` run "
           "data-parallel (docs/distributed.md)");
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
