// One trainer step and one run directory for every trainer (pretrain, SFT, classification,
// and the preference / RL trainers): the pieces a training command needs around its own
// forward and backward, written once.
//
//   train_step()   one optimizer step over one or more parameter groups: zero the groups'
//                  gradients, the trainer's forward/backward callback, the global gradient
//                  norm over every group, the NaN/inf stop (an aji::Error naming the step and
//                  the last good checkpoint), clipping, and each group's AdamW step.
//   TrainerRun     the run directory (run_dir.h's fresh / refuse / --force / --resume rule),
//                  checkpoints (model weights + optimizer.bin + trainer_state.json with the
//                  trainer's named section + the tokenizer + any extra files such as a head or
//                  a second optimizer; every N steps, the last K kept, atomic, `latest`), the
//                  latest checkpoint loaded on resume, metrics.jsonl (one JSON line per step or
//                  evaluation; on resume the lines up to the checkpoint's step are kept), the
//                  loss plot (loss_curve.h; written at checkpoints and at the end), Ctrl-C and
//                  SIGTERM (save and stop), --stop-after, and the progress line with its ETA.
//
// A trainer needs nothing more than its state section, what to save, and a step callback:
//
//   train::TrainerRun::Options ro;
//   ro.dir = {.dir = out, .resume = o.resume, .force = o.force, .quiet = o.quiet,
//             .command = "aji dpo train", .fresh_command = "aji dpo train ... --out " + out.string(),
//             .state_key = "dpo", .outputs = {"run.json", "metrics.jsonl", "loss.svg"}};
//   ro.save_every = o.save_every; ro.keep = o.keep; ro.stop_after = o.stop_after;
//   ro.plot_title = "aji dpo: " + out.filename().string();
//   train::TrainerRun run(ro);                          // refuses / clears / finds the checkpoint
//   model::Model policy = train::load_model(run.resuming() ? *run.checkpoint() : o.model);
//   model::Model ref = train::load_model(o.model);       // frozen: saved nowhere
//   train::AdamW opt(policy.num_params(), {...});
//   int64_t step = 0;
//   if (run.resuming()) { opt.load(*run.checkpoint() / "optimizer.bin"); step = run.state()["step"]; }
//   run.ship_tokenizer(model_dir);                      // travels with every checkpoint
//   run.start_metrics(step);                            // truncates metrics.jsonl on resume
//   run.set_checkpoint([&](int64_t s) {                 // what a checkpoint holds
//     train::CheckpointParts p;
//     p.model = &policy; p.optimizer = &opt; p.section = {{"step", s}, {"beta", o.beta}};
//     return p;
//   });
//   std::vector<train::ParamGroup> groups = {train::ParamGroup::whole_model(policy, opt)};
//   train::TrainerRun::Steps loop = run.steps(step, total);  // Ctrl-C handled from here on
//   while (step < total) {
//     const train::StepStats s = train::train_step(groups, sched.at(step), o.grad_clip, "DPO", out,
//                                                  [&] { return dpo_forward_backward(...); }, step);
//     ++step;
//     run.log({{"step", step}, {"loss", s.loss}, {"lr", s.lr}, {"grad_norm", s.grad_norm}});
//     run.print_step(step, total, s.seconds, "loss " + ...);
//     if (run.after_step(step, total)) break;           // saves when due, at the end, or on stop
//   }
//   run.finish(step, total);                            // plot; the "continue with" line if stopped
// Under mpirun / srun (base/dist.h, docs/distributed.md) every rank runs this same code:
// train_step averages the gradients and the loss over the ranks, TrainerRun lets rank 0
// alone write, and after_step stops every rank at the same step. Each trainer gives each
// rank its own part of every batch (train/loader.h's shard for pretraining).
// An RM adds its scalar head as a second ParamGroup and writes it with CheckpointParts::write;
// PPO adds the value head the same way; frozen models (reference, RM) are not in any group.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/base/interrupt.h"
#include "aji/train/loss_curve.h"
#include "aji/train/optimizer.h"
#include "aji/train/run_dir.h"

namespace aji::kernels {
class Backend;
}
namespace aji::dist {
class Communicator;
}
namespace aji::model {
class Model;
enum class Precision;
}

namespace aji::train {

// ---- one optimizer step --------------------------------------------------------------------

// A parameter buffer, its gradients, and the AdamW that updates it over `ranges` (offsets into
// params and grads). Only the ranges are zeroed, measured, clipped and updated: a trainable
// subset of a model is a group whose ranges cover that subset.
struct ParamGroup {
  float* params = nullptr;
  float* grads = nullptr;
  AdamW* optimizer = nullptr;
  std::vector<DecayRange> ranges;
  // The model whose weights these are, if any: told after each update (and after the
  // ranks' first broadcast) that its weights changed, so its bf16 copy is refreshed.
  model::Model* model = nullptr;
  // All of a model's parameters (all_parameter_ranges) with opt.
  static ParamGroup whole_model(model::Model& model, AdamW& opt);
};

// AdamW::step on a model's weights, and the model told: when `params` are the model's own and
// its bf16 copy is in step with them (Model::bf16_copy_in_step), the update rounds each weight
// into the copy as it writes it; otherwise the model refreshes the copy at its next forward.
// What every trainer's step (train_step) and `aji bench train-step` call.
void step_model_weights(AdamW& opt, model::Model& model, float* params, const float* grads,
                        const std::vector<DecayRange>& ranges, float lr);

struct StepStats {
  double loss = 0;       // what the callback returned
  double grad_norm = 0;  // before clipping, over every group
  float lr = 0;
  double seconds = 0;    // wall time of the whole step
  double comm_seconds = 0;  // of which in the gradient all-reduce (0 in a single process)
};

// One optimizer step (step_index: the 0-based index of this step, for messages):
//   1. zero every group's gradients over its ranges;
//   2. loss = forward_backward() (accumulates gradients; any micro-batching is its own);
//   3. the global L2 norm over every group's ranges (one contiguous span: global_grad_norm of
//      it; several: the square root of the sum of their squares);
//   4. loss or norm not finite -> aji::Error "<what> diverged at step N: loss .., gradient
//      norm .. (learning rate ..). Nothing was saved after the last good checkpoint (..)",
//      naming run_dir's newest checkpoint (run_dir may be empty); the fix says what to lower;
//   5. clip (torch.nn.utils.clip_grad_norm_: scale by max_norm/(norm+1e-6) when norm >
//      max_norm; max_norm <= 0: off);
//   6. each group's optimizer->step(params, grads, ranges, lr).
// Data parallelism (several ranks, base/dist.h): the first train_step after
// TrainerRun::steps() broadcasts each group's parameters (its ranges) from rank 0; after
// forward_backward the gradients over the groups' ranges are all-reduced to their mean
// over the ranks (before 3., so clipping and AdamW see the same numbers everywhere) and
// the returned loss is averaged too. So forward_backward on each rank computes its part
// of the batch such that the MEAN over ranks is the whole batch's loss and gradient (a
// trainer weighting by a global count scales its part by the number of ranks).
StepStats train_step(const std::vector<ParamGroup>& groups, float lr, double max_norm, const std::string& what,
                     const std::filesystem::path& run_dir, const std::function<double()>& forward_backward,
                     int64_t step_index);

// ---- precision (model.h's Precision, --precision) ----------------------------------------

// The training-path precision for a requested "auto", "fp32", "bf16" or "tf32" (anything else
// is an aji::Error naming the choices): "auto" is bf16 where the training path runs bf16
// products natively — the CPU with AVX512-BF16 or AMX (kernels/cpu/bf16_gemm.h), or `device`
// when given (Backend::bf16_products: a CUDA GPU of compute capability 8.0 or later) — else
// fp32; "bf16" where they are not native falls back to fp32; "tf32" is fp32 for the models
// (apply_run_device then turns on a CUDA device's TF32 products, and refuses anything else).
// *note (if not null) gets one line saying which and why, for the start of a run.
model::Precision resolve_precision(const std::string& requested, std::string* note = nullptr,
                                   const kernels::Backend* device = nullptr);
// A trainer's --precision on a fresh or resumed run: saved_options are the run's saved
// settings (not an object on a fresh run), given whether --precision was passed this session.
// A run saved before --precision existed trained in fp32 and continues so unless asked. The
// checkpoints hold fp32 master weights either way, so a run switches precision on resume with
// a note (unless quiet). Writes the resolved name ("fp32"/"bf16", or "tf32" as asked) back
// into `requested`.
model::Precision run_precision(std::string& requested, const nlohmann::json& saved_options, bool given, bool quiet,
                               std::string* note = nullptr, const kernels::Backend* device = nullptr);
// A trainer's session precision (run_precision: the run's saved options, the flags given this
// session) set on every model it trains or runs forward on (policy, frozen reference, value
// and reward trunks), so their forward passes agree; prints "<stage>: precision: ..." unless
// quiet. saved_options: the run's saved options on resume, else null. device: the run's
// device (open_run_device; null = the CPU), which decides what "auto" and "bf16" give.
model::Precision apply_run_precision(std::string& requested, const nlohmann::json& saved_options,
                                     const std::vector<std::string>& given_flags, bool quiet, const char* stage,
                                     std::initializer_list<model::Model*> models,
                                     const kernels::Backend* device = nullptr);
// ---- device (kernels/backend.h, --device) ----------------------------------------------------

// The backend a trainer's --device names: null for "cpu" (the host path), else the device
// (an aji::Error naming what is missing: the plugin, a library, the driver, the GPU). With
// several ranks (mpirun), "cuda" is each rank's own GPU, cuda:<its rank on its machine>; an
// explicit cuda:N is taken as given. With several ranks the devices join one collective
// (join_device_collective: NCCL between the GPUs) and train_step averages the gradients on
// them; where they cannot (no NCCL, an explicit cuda:N), through the host (MPI), said once.
std::shared_ptr<kernels::Backend> open_run_device(const std::string& device);
// Every rank of `comm` joins its device `be` to the job's collective (backend.h: rank 0 makes
// the id, comm broadcasts it); gpus_named: the ranks' GPUs were named (cuda:N), which NCCL
// cannot be trusted with (two ranks on one GPU). Returns "" when joined, else why not (the
// same on every rank; rank 0 prints it as a note).
std::string join_device_collective(kernels::Backend& be, dist::Communicator& comm, bool gpus_named);
// --precision tf32 anywhere but on a CUDA device (be null: the CPU) is an aji::Error with the
// fix; every other precision fits every device (resolve_precision adapts bf16 to it).
void require_precision_fits_device(const std::string& precision, const kernels::Backend* be);
// A trainer's device (open_run_device; null = the CPU: nothing changes) set on every model it
// trains or runs forward on, after apply_run_precision resolved the precision for that device
// (the models keep it: fp32, or bf16 mixed precision, Backend::matmul_forward_bf16); "tf32"
// turns on the device's TF32 matrix products (Backend::set_matmul_tf32) and is an error
// anywhere but on a CUDA device. Prints "<stage>: device: ..." unless quiet.
void apply_run_device(const std::shared_ptr<kernels::Backend>& device, const std::string& precision, bool quiet,
                      const char* stage, std::initializer_list<model::Model*> models);

// For its lifetime the model's training forward runs in fp32 (then the precision it had): an
// evaluation whose numbers must be what the saved model gives, e.g. a classifier's test report.
class Fp32Scope {
 public:
  explicit Fp32Scope(model::Model& m);
  ~Fp32Scope();
  Fp32Scope(const Fp32Scope&) = delete;
  Fp32Scope& operator=(const Fp32Scope&) = delete;

 private:
  model::Model& m_;
  model::Precision saved_;
};

// The error train_step throws (also for a trainer that checks a loss of its own).
[[noreturn]] void throw_diverged(const std::string& what, int64_t step_index, double loss, double norm, float lr,
                                 const std::filesystem::path& run_dir);

// ---- data parallelism: each rank's part of a step ------------------------------------------

// The one way a trainer splits the items of a step (examples, preference pairs, RM groups,
// GRPO groups, PPO prompts; SFT's micro-batches) over the ranks of a data-parallel job
// (base/dist.h): rank r of N takes items r, r+N, r+2N, ... of the step's list, in order.
// The union over the ranks is the step of one process, whatever N is.
//
// require_rank_split(n, flag): n (the step's item count, e.g. --batch-size) must be a
// multiple of N; otherwise an aji::Error on every rank naming n, N and the sizes that work.
void require_rank_split(int64_t n, const std::string& flag);
// Does this rank take item i of a step (i % N == r)? True for every item in one process.
bool rank_takes(int64_t i);
// The items 0..n-1 this rank takes (rank_takes), in order; unlike rank_share no weight is
// remembered: for a trainer that normalises its part by the whole step's counts (GRPO, PPO).
std::vector<int> rank_items(int64_t n);
// This rank's items of `items`. A trainer whose forward_backward returns the MEAN over the
// items it is given (loss and gradients) gets the whole step's mean from train_step, also for
// a short step (the end of an epoch) that N does not divide: rank_share remembers this rank's
// weight N * mine / all, and the following train_step calls scale this rank's loss and
// gradients by it before averaging over the ranks (a rank with no item skips its
// forward_backward). One process: the same items, weight 1.
std::vector<int64_t> rank_share(const std::vector<int64_t>& items);
// Step statistics that are means over this rank's `count` items (accuracy, margin, ...):
// replaced in place by the means over every rank's items; returns the total count. One
// process: unchanged.
double rank_means(std::initializer_list<double*> means, double count);
// Per-item results that each rank computed for its own items (rank_takes / rank_items) and left
// at 0 for the others': summed over the ranks in place, so every rank holds every item's value.
// Exact (each entry has one nonzero term; floats travel as doubles). One process: unchanged.
void rank_gather(std::initializer_list<std::vector<float>*> arrays);
// Every rank must run the same settings on the same data: `settings` (the run's saved options
// and files) against rank 0's; on a rank that differs an aji::Error naming each differing key
// with both values (the job then ends: cli/main.cpp aborts every rank). One process: nothing.
void require_same_settings(const nlohmann::json& settings);

// Overlapping the gradient all-reduce with the backward pass (pretraining; docs/distributed.md):
// called just before the LAST backward of a step's forward_backward (after it, nothing adds
// to the gradients), it starts a non-blocking sum over the ranks of an untied LM head's
// gradient at once, and makes that backward start one for each block's gradients as soon as
// the block is done, while the blocks below compute;
// train_step then reduces what is left (embeddings, final norm, a separate head), waits for
// all, and scales by 1/N: the same sums as the blocking path. No-op in one process, with
// AJI_OVERLAP=0 (the blocking path, for comparison), or after a rank_share weight != 1.
void overlap_next_backward(model::Model& model);

// ---- the run --------------------------------------------------------------------------------

// What one checkpoint holds besides the step.
struct CheckpointParts {
  const model::Model* model = nullptr;
  const AdamW* optimizer = nullptr;  // optimizer.bin (nullptr: none, e.g. a frozen trunk)
  nlohmann::json section = nlohmann::json::object();  // trainer_state.json[state_key]
  nlohmann::json top = nlohmann::json::object();      // more keys at trainer_state.json's top level
  // Files written into the checkpoint under a name (a class head, a second optimizer, the
  // best weights so far): each writer is called with the path to write.
  std::vector<std::pair<std::string, std::function<void(const std::filesystem::path&)>>> write;
};

class TrainerRun {
 public:
  struct Options {
    RunDirRequest dir;     // the run-dir rule (run_dir.h)
    int save_every = 0;    // a checkpoint every N steps (0: only at the end and on a stop)
    int keep = 0;          // keep the newest K checkpoints (<= 0: all)
    int64_t stop_after = 0;  // stop (with a checkpoint) after this many steps of this session
    std::string plot_title;
    CurveLabels plot_labels;  // its accuracy series is filled from "val_accuracy" lines
    int progress_lines = 0;   // print_step prints every step (0) or about this many lines a run
    // The trainer gives each rank its own part of every batch (pretrain, SFT). Under mpirun /
    // srun with N > 1 a trainer that does not is refused with a clear error (N ranks would
    // each compute the same batch and write the same files).
    bool splits_data = false;
  };

  // Applies the run-dir rule (open_run_dir); on resume reads the checkpoint's trainer state and
  // notes (unless quiet) when the thread count differs from the run's.
  explicit TrainerRun(Options options);
  // For a trainer whose run directory follows rules of its own (aji pretrain: --resume-from,
  // a run resumed from its run.json before the first checkpoint): `opened` is what its own
  // rule found; open_run_dir is not applied. An empty state_key writes no section (the
  // trainer's state is CheckpointParts::top).
  TrainerRun(Options options, RunDirStart opened);
  ~TrainerRun();
  TrainerRun(const TrainerRun&) = delete;
  TrainerRun& operator=(const TrainerRun&) = delete;

  const std::filesystem::path& dir() const { return o_.dir.dir; }
  // Quiet as asked, and on every rank but 0 (base/dist.h): one progress line per job.
  bool quiet() const { return o_.dir.quiet || !root_; }
  // Rank 0 of a data-parallel job (or a single process): the rank that writes the run
  // directory, the metrics, the plot, the checkpoints and the progress. The others read
  // (a resumed checkpoint) but write nothing; save() waits for rank 0's checkpoint.
  bool root() const { return root_; }
  bool resuming() const { return start_.checkpoint.has_value(); }
  const std::optional<std::filesystem::path>& checkpoint() const { return start_.checkpoint; }
  const nlohmann::json& state() const { return start_.state; }  // trainer_state.json (null: fresh)
  const nlohmann::json& section() const;                       // state()[state_key]
  // "trainer_state.json" of the checkpoint resumed (for error locations).
  std::string state_file() const;
  Options& options() { return o_; }  // e.g. save_every/keep changed by a resumed run's notes

  // Copies model_dir's tokenizer files (aji_tokenizer.json, tokenizer.json) into the run dir;
  // they travel with every checkpoint. Returns the copies.
  const std::vector<std::filesystem::path>& ship_tokenizer(const std::filesystem::path& model_dir);
  void ship_file(const std::filesystem::path& file) { ship_.push_back(file); }

  // metrics.jsonl: keeps the lines up to `step` (a fresh run: none; pass -1) and rebuilds the
  // plot's series from them ("loss", "val_loss", "val_accuracy"); each(line) sees every kept line.
  void start_metrics(int64_t step, const std::function<void(const nlohmann::json&)>& each = {});
  // Appends one line (flushed) and adds its "loss" / "val_loss" / "val_accuracy" to the plot.
  void log(const nlohmann::json& line);
  void write_plot() const;

  // What a checkpoint of a given step holds (called at every save).
  void set_checkpoint(std::function<CheckpointParts(int64_t step)> parts) { parts_ = std::move(parts); }
  std::filesystem::path save(int64_t step);
  const std::filesystem::path& last_checkpoint() const { return last_checkpoint_; }

  // The stepping phase: Ctrl-C and SIGTERM set a flag instead of ending the process while the
  // returned object lives (a second signal ends it). session_start: the step this session began at.
  class Steps {
   public:
    Steps() = default;

   private:
    friend class TrainerRun;
    std::unique_ptr<InterruptGuard> guard_;
  };
  [[nodiscard]] Steps steps(int64_t session_start, int64_t total);

  // After step `step` (1-based, done) of `total`: saves a checkpoint when due (every
  // save_every), at the last step, or when stopping (Ctrl-C, SIGTERM, --stop-after); returns
  // true when the loop should stop (never at the last step).
  bool after_step(int64_t step, int64_t total);
  bool stopped() const { return stopped_; }
  int64_t total_steps() const { return total_; }
  void set_total_steps(int64_t total) { total_ = total; }

  // "step   12/300 | <middle> | ETA 1m05s" on stdout (unless quiet or thinned out by
  // progress_lines); the ETA from an average of the step times. total <= 0: not known yet
  // ("step 3/? | ... | ETA ?").
  void print_step(int64_t step, int64_t total, double seconds, const std::string& middle);
  std::string eta(int64_t step, int64_t total) const;

  // Writes the plot; when the loop stopped early, says (unless quiet) where and how to continue.
  void finish(int64_t step, int64_t total);

 private:
  void add_to_plot(const nlohmann::json& line);
  Options o_;
  RunDirStart start_;
  std::vector<std::filesystem::path> ship_;
  std::function<CheckpointParts(int64_t)> parts_;
  std::filesystem::path last_checkpoint_;
  std::vector<CurvePoint> train_, val_, acc_;
  std::ofstream metrics_;
  int64_t session_start_ = 0, total_ = 0;
  double ema_ = 0;
  bool stopped_ = false;
  bool root_ = true;
};

}  // namespace aji::train
