#include "aji/train/pretrain.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <ctime>
#include <cstdio>
#include <fstream>
#include <optional>

#include <nlohmann/json.hpp>

#include "aji/base/atomic_file.h"
#include "aji/base/dist.h"
#include "aji/base/error.h"
#include "aji/base/interrupt.h"
#include "aji/base/io.h"
#include "aji/base/progress.h"
#include "aji/base/threads.h"
#include "aji/infer/generate.h"
#include "aji/kernels/backend.h"
#include "aji/kernels/cpu/fma_peak.h"
#include "aji/model/model.h"
#include "aji/tokenizer/tokenizer.h"
#include "aji/tokenizer/sha256.h"
#include "aji/tokenizer/tokenizer_files.h"
#include "aji/train/checkpoint.h"
#include "aji/train/loader.h"
#include "aji/train/loss_curve.h"
#include "aji/train/memory.h"
#include "aji/train/optimizer.h"
#include "aji/train/run_dir.h"
#include "aji/train/trainer_run.h"

namespace aji::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// CPU seconds of the whole process (all threads): on a shared machine wall time
// overstates the cost of a step, CPU time does not.
double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}


bool run_dir_has_run(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return false;
  if (fs::exists(dir / "run.json") || fs::exists(dir / "latest") || fs::exists(dir / "metrics.jsonl")) return true;
  return !list_checkpoints(dir).empty();
}

// Removes what a previous run wrote (only aji's own files: anything else is left alone).
void clear_run_dir(const fs::path& dir) {
  std::error_code ec;
  for (const auto& [step, path] : list_checkpoints(dir)) fs::remove_all(path, ec);
  for (const char* f : {"run.json", "latest", "metrics.jsonl", "loss.svg", kAjiTokenizerFile, "tokenizer.json"})
    fs::remove(dir / f, ec);
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

struct Evaluation {
  double loss = NAN;
  double bpb = NAN;
};

// Mean next-token loss over `batches` validation batches from the start of the val split,
// and bits per byte (the loss of tokens that stand for text, over their UTF-8 bytes).
// Uses only forward() and lm_logits(): the gradient buffer is not touched.
Evaluation evaluate(model::Model& model, DataLoader& val, int batches, const std::vector<uint32_t>& token_bytes) {
  const int B = val.batch(), T = val.seq_len(), V = model.config().vocab_size, C = model.config().d_model;
  std::vector<int32_t> in(static_cast<size_t>(B) * T), tgt(in.size());
  constexpr int kRows = 64;  // logits are computed 64 positions at a time: (64,V)
  std::vector<float> logits(static_cast<size_t>(kRows) * V);
  double nll = 0.0, text_nll = 0.0;
  uint64_t count = 0, bytes = 0;
  val.reset();
  for (int b = 0; b < batches; ++b) {
    val.next_batch(in.data(), tgt.data());
    model.forward(in.data(), B, T);
    const int N = B * T;
    for (int r0 = 0; r0 < N; r0 += kRows) {
      const int rows = std::min(kRows, N - r0);
      model.lm_logits(model.hidden() + static_cast<size_t>(r0) * C, rows, logits.data());
      for (int r = 0; r < rows; ++r) {
        const float* l = logits.data() + static_cast<size_t>(r) * V;
        float mx = l[0];
        for (int v = 1; v < V; ++v) mx = std::max(mx, l[v]);
        double z = 0.0;
        for (int v = 0; v < V; ++v) z += std::exp(static_cast<double>(l[v] - mx));
        const int32_t y = tgt[static_cast<size_t>(r0 + r)];
        const double ce = std::log(z) + mx - l[y];
        nll += ce;
        ++count;
        const uint32_t nb = static_cast<size_t>(y) < token_bytes.size() ? token_bytes[y] : 0;
        if (nb > 0) {
          text_nll += ce;
          bytes += nb;
        }
      }
    }
  }
  Evaluation e;
  e.loss = nll / static_cast<double>(std::max<uint64_t>(count, 1));
  if (bytes > 0) e.bpb = text_nll / std::log(2.0) / static_cast<double>(bytes);
  return e;
}

// The run's saved settings: every declared option (with the values in effect: T, the
// total batch, the step count, the warmup) and what the run derived.
json options_json(PretrainOptions o, int T, int64_t total_batch, int64_t accum, int64_t steps, int64_t warmup,
                  const std::string& tokenizer_hash) {
  o.seq_len = T;
  o.total_batch_tokens = total_batch;
  o.steps = steps;
  o.warmup = warmup;
  json j = options_to_json(o);
  j["data"] = fs::absolute(o.data_dir).string();
  j["grad_accum"] = accum;
  j["tokenizer_hash"] = tokenizer_hash;
  j["threads"] = num_threads();
  return j;
}

json read_json_file(const fs::path& path, const std::string& fix) {
  try {
    return json::parse(read_file(path));
  } catch (const json::exception& e) {
    throw Error(path.filename().string() + " is not valid JSON: " + e.what()).at(path.string()).fix(fix);
  }
}

// --resume-from: "ckpt-N" (in the run dir), "N", or a path to a checkpoint dir.
fs::path resume_from_dir(const fs::path& run, const fs::path& from) {
  std::vector<fs::path> tries;
  if (from.is_absolute() || from.has_parent_path()) tries.push_back(from);
  tries.push_back(run / from);
  const std::string s = from.string();
  if (!s.empty() && s.find_first_not_of("0123456789") == std::string::npos) tries.push_back(run / ("ckpt-" + s));
  for (const auto& t : tries)
    if (fs::exists(t / "trainer_state.json")) return t;
  std::string have;
  for (const auto& [step, path] : list_checkpoints(run)) have += (have.empty() ? "" : ", ") + path.filename().string();
  throw Error("--resume-from " + s + ": no training checkpoint there").at(run.string())
      .fix("name one of the run's checkpoints: " + (have.empty() ? std::string("(none)") : have));
}

}  // namespace

PretrainResult pretrain(const PretrainOptions& opt_in) {
  PretrainOptions o = opt_in;
  PretrainResult result;
  const fs::path run = o.out_dir;
  // Data parallelism (base/dist.h): rank 0 alone writes (run dir, checkpoints, metrics,
  // samples, progress); every rank reads its own part of each batch.
  dist::Communicator& comm = dist::world();
  const int ranks = comm.size();
  const bool root = comm.rank() == 0;
  if (!root) o.quiet = true;
  auto warn = [&](const std::string& w) {  // always printed: something the user should act on
    result.warnings.push_back(w);
    if (root) std::fprintf(stderr, "warning: %s\n", w.c_str());
  };
  if (!o.resume_from.empty()) o.resume = true;
  if (o.resume && o.force) throw Error("--resume and --force contradict each other").fix("pass one of them");
  if (o.resume && !o.init.empty())
    throw Error("--init starts a new run from a model; --resume continues a run").fix("pass one of them");
  if (!o.init.empty() && !o.config.empty())
    throw Error("--init takes the model and its config from " + o.init.string() + "; --config contradicts it")
        .fix("drop --config (or drop --init to train a new model from scratch)");
  // Every declared option against its range, before any work (the CLI checked them
  // already; this covers callers of the API).
  validate_options(o);
  LrSchedule::parse_decay(o.decay);
  (void)resolve_precision(o.precision);  // an unknown --precision: refused before any work
  // --device: refused (an unknown name, no plugin, driver or GPU) before any work
  const std::shared_ptr<kernels::Backend> device = open_run_device(o.device);

  // --- the run directory ----------------------------------------------------------
  std::optional<fs::path> resume_ckpt;
  json state;       // trainer_state.json of the checkpoint resumed
  json saved_opts;  // the run's saved settings when resuming (null for a new run)
  std::optional<model::ModelConfig> saved_cfg;
  std::string where;  // the file the saved settings come from
  // A session killed mid-write (SIGKILL, power loss) leaves temp files; what they were to
  // replace is complete (every write is atomic), so the leftovers just go.
  const int torn = root ? remove_torn_checkpoint_files(run) : 0;
  if (torn > 0 && !o.quiet)
    std::fprintf(stderr, "note: removed %d unfinished write(s) of an interrupted session\n", torn);
  if (o.resume) {
    auto cks = list_checkpoints(run);
    if (cks.empty()) {
      if (!fs::exists(run / "run.json"))
        throw Error("nothing to resume: " + run.string() + " holds no run (no checkpoint, no run.json)")
            .at(run.string())
            .fix("start a new run without --resume (or point --out at the run to continue)");
      if (!o.resume_from.empty())
        throw Error("--resume-from " + o.resume_from.string() + ": the run has no checkpoint yet")
            .at(run.string())
            .fix("use --resume: it starts the run again from step 0 with its saved settings");
      // Stopped before its first checkpoint: the same run, started again from step 0.
      where = (run / "run.json").string();
      const json info = read_json_file(run / "run.json", "start a new run with --force");
      saved_opts = info.at("options");
      saved_cfg = model::ModelConfig::from_json(info.at("model"), where);
      if (!o.quiet)
        std::fprintf(stderr, "note: %s has no checkpoint yet: starting the run again from step 0 with its saved "
                     "settings\n", run.c_str());
    } else {
      resume_ckpt = o.resume_from.empty() ? resolve_model_dir(run) : resume_from_dir(run, o.resume_from);
      if (!fs::exists(*resume_ckpt / "trainer_state.json") || !fs::exists(*resume_ckpt / "optimizer.bin"))
        throw Error("the latest checkpoint has no trainer state (a weights-only export?)")
            .at(resume_ckpt->string())
            .fix("resume from a training run directory written by `aji pretrain`");
      where = (*resume_ckpt / "trainer_state.json").string();
      state = read_json_file(*resume_ckpt / "trainer_state.json",
                             "resume from an earlier checkpoint (--resume-from ckpt-N, or remove the damaged one)");
      // Every field read on resume, checked here so a damaged file is named (not a bare
      // json exception later).
      try {
        saved_opts = state.at("options");
        if (!saved_opts.is_object()) throw Error("\"options\" is not an object");
        if (!state.at("step").is_number_integer() || state.at("step").get<int64_t>() < 0)
          throw Error("\"step\" is not a whole number >= 0");
        (void)LoaderCursor::from_json(state.at("loader"));
        if (!saved_opts.contains("warmup")) (void)state.at("schedule").at("warmup").get<int64_t>();
      } catch (const std::exception& e) {
        throw Error(std::string("damaged trainer state: ") + e.what())
            .at(where)
            .fix("resume from an earlier checkpoint (--resume-from ckpt-N), or start afresh with --force");
      }
    }
  } else if (run_dir_has_run(run)) {
    if (!o.force) {
      const bool has_ckpt = !list_checkpoints(run).empty();
      throw Error(std::string("the run directory already holds a run") + (has_ckpt ? "" : " (stopped before its first checkpoint)"))
          .at(run.string())
          .fix(std::string("continue it with --resume") +
               (has_ckpt ? "" : " (it starts again from step 0 with its saved settings)") +
               ", overwrite it with --force, or choose another --out");
    }
    if (root) clear_run_dir(run);
  }
  if (ranks > 1) comm.barrier();  // the others read the run directory after rank 0 cleaned it

  // --- the run's settings -----------------------------------------------------------
  if (!saved_opts.is_null()) {
    // Runs saved by earlier versions: "batch", and 2^40 steps for a run stopped while its
    // time budget was being calibrated (it calibrates again now).
    if (saved_opts.contains("batch") && !saved_opts.contains("batch_size")) saved_opts["batch_size"] = saved_opts["batch"];
    if (saved_opts.value("steps", int64_t(0)) == (int64_t(1) << 40)) saved_opts["steps"] = 0;
    const SavedOptionsReport rep = apply_saved_options(o, saved_opts, o.given, where);
    if (!rep.refused.empty()) {
      std::string list;
      for (const auto& r : rep.refused) list += (list.empty() ? "" : "; ") + r;
      throw Error("--resume continues the run with its own settings; these would change it: " + list)
          .at(where)
          .fix("drop those options (the run's values are kept), or start a new run (--force or another --out)");
    }
    if (!o.quiet)
      for (const auto& c : rep.changed) std::fprintf(stderr, "note: changed on resume: %s\n", c.c_str());
    if (o.data_dir.empty()) o.data_dir = saved_opts.at("data").get<std::string>();
    const int saved_threads = saved_opts.value("threads", 0);
    if (saved_threads != num_threads() && !o.quiet)
      std::fprintf(stderr, "note: the run used %d threads, now %d: the losses will not match a straight run bit for bit\n",
                   saved_threads, num_threads());
  }

  // --- model config and data: checked before anything heavy is allocated -------------
  std::optional<fs::path> init_dir;
  if (!o.init.empty()) init_dir = resolve_model_dir(o.init);
  model::ModelConfig cfg = resume_ckpt ? load_model_config(*resume_ckpt)
                           : saved_cfg  ? *saved_cfg
                           : init_dir   ? load_model_config(*init_dir)
                                        : model::ModelConfig::load(o.config);
  if ((resume_ckpt || saved_cfg) && !o.config.empty()) {
    model::ModelConfig asked = model::ModelConfig::load(o.config);
    if (asked.to_json() != cfg.to_json())
      throw Error("--config differs from the model being resumed (" + std::string(model::arch_name(asked.arch)) +
                  " L" + std::to_string(asked.n_layer) + " d" + std::to_string(asked.d_model) + " vs " +
                  model::arch_name(cfg.arch) + " L" + std::to_string(cfg.n_layer) + " d" +
                  std::to_string(cfg.d_model) + ")")
          .at(where)
          .fix("drop --config when resuming (the checkpoint has its own), or start a new run with --force");
  }
  const int B = o.batch;
  const int T = o.seq_len > 0 ? o.seq_len : cfg.max_seq_len;
  if (T > cfg.max_seq_len)
    throw Error("--seq-len " + std::to_string(T) + " is longer than the model's context (" +
                std::to_string(cfg.max_seq_len) + ")")
        .fix("use --seq-len <= " + std::to_string(cfg.max_seq_len) + " or raise max_seq_len in the config");
  const int64_t micro_tokens = static_cast<int64_t>(B) * T;
  // With N ranks every rank runs micro-batches of B x T; the total batch is the job's.
  const int64_t total_batch = o.total_batch_tokens > 0 ? o.total_batch_tokens : micro_tokens * ranks;
  if (total_batch % (micro_tokens * ranks) != 0) {
    if (ranks == 1)
      throw Error("--total-batch-tokens " + std::to_string(total_batch) + " is not a multiple of batch*seq_len = " +
                  std::to_string(micro_tokens))
          .fix("use a multiple of " + std::to_string(micro_tokens) + " (e.g. " + std::to_string(micro_tokens * 4) +
               ")");
    throw Error("--total-batch-tokens " + std::to_string(total_batch) + " is not a multiple of batch*seq_len*ranks = " +
                std::to_string(B) + "*" + std::to_string(T) + "*" + std::to_string(ranks) + " = " +
                std::to_string(micro_tokens * ranks))
        .fix("use a multiple of " + std::to_string(micro_tokens * ranks) + " (e.g. " +
             std::to_string(micro_tokens * ranks * 2) + "), or a --batch-size or number of ranks that divides it");
  }
  const int64_t accum = total_batch / micro_tokens;        // micro-batches per step, all ranks together
  const int64_t rank_accum = accum / ranks;                // of which this rank runs

  // How long: --steps, else --tokens, else --time-budget (on --resume: the run's length
  // unless one of them is given again).
  int64_t steps = 0;
  bool calibrating = false;
  constexpr int64_t kCalibrationSteps = 4;
  const bool length_given_otherwise =
      !saved_opts.is_null() && !o.given.count("steps") && (o.given.count("tokens") || o.given.count("time-budget"));
  if (o.steps > 0 && !length_given_otherwise) {
    steps = o.steps;
  } else if (o.tokens > 0) {
    steps = (o.tokens + total_batch - 1) / total_batch;
  } else if (o.time_budget > 0) {
    calibrating = true;  // the real length is set after kCalibrationSteps steps
    steps = int64_t(1) << 40;
  } else {
    throw Error("say how long to train").fix("pass --steps N, --tokens N or --time-budget MINUTES");
  }

  const DataManifest manifest = DataManifest::load(o.data_dir);
  const std::string model_from = resume_ckpt || saved_cfg ? "the run's model" : init_dir ? "the --init model" : "the model";
  if (static_cast<uint64_t>(cfg.vocab_size) != manifest.vocab_size) {
    const bool larger = static_cast<uint64_t>(cfg.vocab_size) > manifest.vocab_size;
    throw Error(model_from + " has vocab_size " + std::to_string(cfg.vocab_size) + ", the data's tokenizer " +
                std::to_string(manifest.vocab_size) + " tokens" +
                (larger ? ": ids the tokenizer does not have would never be trained, and samples could not be decoded"
                        : ": the data's ids do not fit the model"))
        .at((o.data_dir / "manifest.json").string())
        .fix(resume_ckpt || saved_cfg || init_dir
                 ? "use data tokenized with the model's tokenizer (`aji data tokenize --tokenizer` its tokenizer)"
                 : "set \"vocab_size\": " + std::to_string(manifest.vocab_size) + " in the model config");
  }
  const std::string saved_hash = saved_opts.is_null() ? "" : saved_opts.value("tokenizer_hash", "");
  if (!saved_hash.empty() && !manifest.tokenizer_hash.empty() && saved_hash != manifest.tokenizer_hash)
    throw Error("the data in " + o.data_dir.string() + " was tokenized with another tokenizer than the run's "
                "(manifest tokenizer_hash " + manifest.tokenizer_hash.substr(0, 12) + "..., the run's " +
                saved_hash.substr(0, 12) + "...)")
        .at((o.data_dir / "manifest.json").string())
        .fix("resume with --data pointing at shards made with the run's tokenizer, or start a new run");
  const fs::path tok_file = o.data_dir / manifest.tokenizer_file;
  if (init_dir) {
    const auto init_tok = find_tokenizer_file(*init_dir);
    if (init_tok && init_tok->filename() == kAjiTokenizerFile && fs::exists(tok_file) &&
        tokenizer::sha256_hex(read_file(*init_tok)) != tokenizer::sha256_hex(read_file(tok_file)))
      throw Error("the --init model's tokenizer (" + init_tok->string() + ") is not the data's (" + tok_file.string() +
                  ")")
          .at(tok_file.string())
          .fix("tokenize the data with the model's tokenizer: aji data tokenize --tokenizer " + init_tok->string());
  }
  {
    std::string p = o.precision;  // resolved again (with its note) below
    const bool bf16 = run_precision(p, saved_opts, o.given.count("precision") > 0, /*quiet=*/true, nullptr,
                                    device.get()) == model::Precision::kBf16;
    require_precision_fits_device(p, device.get());  // tf32 off a CUDA device: before any work
    MemoryEstimate need =
        training_memory(cfg, cfg.num_params(), static_cast<int64_t>(B) * T, bf16, /*on_device=*/device != nullptr);
    need.extra = 4.0 * 64.0 * cfg.vocab_size;  // the logits of an evaluation batch
    require_memory(need,
                   "training this model (" + fmt("%.0fM", static_cast<double>(cfg.num_params()) / 1e6) +
                       " parameters, a " + std::to_string(B) + "x" + std::to_string(T) + " micro-batch)",
                   "lower --batch-size (keep the batch with --total-batch-tokens: gradient accumulation) or "
                   "--seq-len, or train a smaller model", device.get());
  }

  DataLoader train_loader(o.data_dir, "train", B, T, o.seed, /*shuffle=*/true);
  train_loader.set_shard(comm.rank(), ranks);
  std::optional<DataLoader> val_loader;
  if (manifest.val.empty()) {
    warn("no validation data in " + o.data_dir.string() +
         " (the val split is empty: too few documents for its --val-fraction); no validation loss will be "
         "reported. Re-tokenize with more documents or a larger --val-fraction");
  } else {
    try {
      // Shuffled with a fixed seed: each evaluation reads the same windows, drawn from the
      // whole val split rather than its first files.
      val_loader.emplace(o.data_dir, "val", B, T, o.seed, /*shuffle=*/true);
    } catch (const Error& e) {
      warn(std::string("no validation: ") + e.what() + " (" + e.location() +
           "); no validation loss will be reported. Re-run `aji data tokenize` to restore the val split");
    }
  }
  const int eval_batches =
      val_loader ? static_cast<int>(std::max<uint64_t>(
                       1, std::min<uint64_t>(o.eval_batches, val_loader->windows_per_epoch() / std::max(1, B))))
                 : 0;

  // The tokenizer: for samples, bits per byte, and to ship with every checkpoint.
  std::optional<tokenizer::Tokenizer> tok;
  std::vector<fs::path> ship;
  std::vector<uint32_t> token_bytes;
  if (root) fs::create_directories(run);
  if (fs::exists(tok_file)) {
    tok = tokenizer::Tokenizer::load(tok_file);
    if (root) copy_file_atomic(tok_file, run / kAjiTokenizerFile);
    ship.push_back(run / kAjiTokenizerFile);
    try {
      if (root) tokenizer::save_hf_tokenizer_json(*tok, run / "tokenizer.json");
      ship.push_back(run / "tokenizer.json");
    } catch (const Error& e) {
      if (!o.quiet) std::fprintf(stderr, "note: no tokenizer.json for Hugging Face (%s)\n", e.what());
    }
    token_bytes.assign(static_cast<size_t>(cfg.vocab_size), 0);
    // By ordinary index, through its id: specials may sit inside the ordinary id range
    // (Hugging Face files), so ordinary ids are not always 0..n_ranks-1.
    for (size_t i = 0; i < tok->n_ranks(); ++i) {
      const size_t id = tok->ordinary_id(i);
      if (id < token_bytes.size()) token_bytes[id] = static_cast<uint32_t>(tok->ordinary_bytes(i).size());
    }
    for (const auto& s : tok->specials())
      if (s.id < token_bytes.size()) token_bytes[s.id] = 0;  // specials stand for no text
  } else if (!o.quiet) {
    std::fprintf(stderr, "note: %s not found: no samples, no bits per byte\n", tok_file.c_str());
  }
  if (cfg.eos_token_id < 0) cfg.eos_token_id = static_cast<int>(manifest.bos_id);

  // Precision, resolved once: the saved settings record what the run trains in. The
  // checkpoints hold fp32 master weights either way, so a run trained in bf16 resumes in
  // fp32 and the reverse.
  std::string precision_note;
  model::Precision precision =
      run_precision(o.precision, saved_opts, o.given.count("precision") > 0, o.quiet, &precision_note, device.get());

  model::Model model(cfg);
  model.set_precision(precision);
  // A device (--device): the forward, backward and optimizer step run there (printed below).
  apply_run_device(device, o.precision, /*quiet=*/true, "pretrain", {&model});
  AdamW optimizer(model.num_params(), {o.beta1, o.beta2, o.eps, o.weight_decay});
  const std::vector<ParamGroup> groups = {ParamGroup::whole_model(model, optimizer)};

  // --- schedule and state -----------------------------------------------------------
  LrSchedule sched;
  sched.lr = o.lr;
  sched.total = steps;
  sched.min_lr_frac = o.min_lr_frac;
  sched.decay = LrSchedule::parse_decay(o.decay);
  sched.warmup = o.warmup ? *o.warmup : calibrating ? 20 : std::min<int64_t>(200, steps / 20);
  if (resume_ckpt && !saved_opts.contains("warmup")) sched.warmup = state.at("schedule").at("warmup");

  int64_t step = 0;
  int64_t tokens_seen = 0;
  double elapsed_before = 0.0;
  json run_info = {{"model", cfg.to_json()},
                   {"params", model.num_params()},
                   {"aji_version", AJI_VERSION}};
  if (init_dir) run_info["init"] = fs::absolute(*init_dir).string();
  if (resume_ckpt) {
    load_weights(model, *resume_ckpt / "model.safetensors");
    optimizer.load(*resume_ckpt / "optimizer.bin");
    train_loader.set_cursor(LoaderCursor::from_json(state.at("loader")));
    step = state.at("step");
    tokens_seen = state.value("tokens_seen", int64_t(0));
    elapsed_before = state.value("elapsed_s", 0.0);
    if (!o.resume_from.empty() && root) {
      // Resuming an earlier checkpoint abandons the later ones: keep-last-K would
      // otherwise count them as the newest and delete the ones this session writes.
      std::error_code ec;
      for (const auto& [s, path] : list_checkpoints(run))
        if (s > step) {
          if (!o.quiet) std::fprintf(stderr, "note: removing %s (later than the checkpoint resumed)\n", path.c_str());
          fs::remove_all(path, ec);
        }
      write_file_atomic(run / "latest", resume_ckpt->filename().string() + "\n");
    }
    if (!o.quiet) std::fprintf(stderr, "resuming %s at step %lld\n", resume_ckpt->c_str(), (long long)step);
  } else {
    if (init_dir) {
      load_weights(model, *init_dir / "model.safetensors");
      if (!o.quiet) std::fprintf(stderr, "continuing pretraining from %s (new optimizer state)\n", init_dir->c_str());
    } else {
      model.init_weights(o.seed);
    }
  }
  json opts_json =
      options_json(o, T, total_batch, accum, calibrating ? 0 : steps, sched.warmup, manifest.tokenizer_hash);
  auto write_run_info = [&]() {
    run_info["options"] = opts_json;
    if (root) write_file_atomic(run / "run.json", run_info.dump(2) + "\n");
  };
  require_same_settings(opts_json);  // every rank the same settings on the same data
  if (!resume_ckpt) write_run_info();

  // The session: metrics.jsonl, the plot, checkpoints, Ctrl-C, --stop-after. The run-dir
  // rule above is pretrain's own (--resume-from, resume from run.json before the first
  // checkpoint), so the session adopts what it found.
  TrainerRun::Options ro;
  ro.dir.dir = run;
  ro.dir.resume = o.resume;
  ro.dir.quiet = o.quiet;
  ro.dir.command = "aji pretrain";
  ro.save_every = o.save_every;
  ro.keep = o.keep;
  ro.stop_after = o.stop_after;
  ro.plot_title = "aji pretrain: " + run.filename().string();
  ro.splits_data = true;  // DataLoader::set_shard
  RunDirStart opened;
  opened.checkpoint = resume_ckpt;
  opened.state = state;
  TrainerRun trun(ro, opened);
  for (const fs::path& f : ship) trun.ship_file(f);
  // A resumed run keeps the lines up to its checkpoint; one restarted from run.json (no
  // checkpoint) redoes the first session's steps; a new run starts an empty file.
  trun.start_metrics(resume_ckpt ? step : saved_cfg ? 0 : -1);
  auto log_metrics = [&](const json& j) { trun.log(j); };
  float last_train_loss = NAN;
  trun.set_checkpoint([&](int64_t) {
    CheckpointParts p;
    p.model = &model;
    p.optimizer = &optimizer;
    p.top = {{"tokens_seen", tokens_seen},
             {"loader", train_loader.cursor().to_json()},
             {"schedule", sched.to_json()},
             {"options", opts_json},
             {"elapsed_s", elapsed_before},
             {"metrics",
              {{"train_loss", last_train_loss},
               {"val_loss", result.last_val_loss},
               {"val_bpb", result.last_val_bpb}}}};
    return p;
  });
  auto run_eval = [&]() {
    if (!val_loader || !root) return;  // rank 0 evaluates; the others wait at the next all-reduce
    Evaluation e = evaluate(model, *val_loader, eval_batches, token_bytes);
    result.last_val_loss = static_cast<float>(e.loss);
    result.last_val_bpb = static_cast<float>(e.bpb);
    log_metrics({{"step", step}, {"val_loss", e.loss}, {"val_bpb", std::isfinite(e.bpb) ? json(e.bpb) : json()}});
    if (!o.quiet)
      std::printf("step %lld | val loss %.4f | val bpb %s\n", (long long)step, e.loss,
                  std::isfinite(e.bpb) ? fmt("%.4f", e.bpb).c_str() : "n/a");
    trun.write_plot();
  };
  auto run_sample = [&]() {
    if (!tok || !root) return;
    std::vector<int32_t> prompt = {static_cast<int32_t>(manifest.bos_id)};
    if (!o.sample_prompt.empty())
      for (auto id : tok->encode(o.sample_prompt, tokenizer::SpecialPolicy::kAsText))
        prompt.push_back(static_cast<int32_t>(id));
    infer::GenerateOptions g;
    g.max_tokens = std::min(o.sample_tokens, cfg.max_seq_len - static_cast<int>(prompt.size()));
    if (g.max_tokens <= 0) return;
    g.sampling = {0.8f, 40, 0.95f};
    g.seed = o.seed + static_cast<uint64_t>(step);
    g.stop_tokens = {static_cast<int32_t>(manifest.bos_id)};
    std::vector<int32_t> out = infer::generate(model, prompt, g);
    if (!out.empty() && out.back() == static_cast<int32_t>(manifest.bos_id)) out.pop_back();
    std::vector<tokenizer::TokenId> ids(out.begin(), out.end());
    infer::Utf8Streamer u;
    std::string text = u.push(tok->decode(ids)) + u.flush();
    if (!o.quiet) std::printf("step %lld | sample: %s%s\n", (long long)step, o.sample_prompt.c_str(), text.c_str());
    log_metrics({{"step", step}, {"sample", o.sample_prompt + text}});
  };

  const double flops_per_step = cfg.train_flops_per_token(T) * static_cast<double>(total_batch);
  const bool peak_measured = o.peak_gflops_per_core <= 0;
  // The job's peak: every rank's threads (rank 0 measures its cores; the others print no MFU).
  double peak = 1e9 * ranks * (!peak_measured ? o.peak_gflops_per_core * num_threads()
                               : !root        ? 1.0
                               : precision == model::Precision::kBf16
                                   ? kernels::cpu::measured_bf16_peak_gflops(num_threads())
                                   : kernels::cpu::measured_peak_gflops(num_threads()));
  if (!o.quiet) {
    std::printf("model: %s L%d d%d heads %d/%d vocab %d context %d | %.2fM parameters\n", model::arch_name(cfg.arch),
                cfg.n_layer, cfg.d_model, cfg.n_head, cfg.n_kv_head, cfg.vocab_size, cfg.max_seq_len,
                model.num_params() / 1e6);
    std::printf("data: %llu train tokens | batch %d x %d x %lld accum = %lld tokens/step | %s steps | threads %d\n",
                (unsigned long long)train_loader.total_tokens(), B, T, (long long)accum, (long long)total_batch,
                calibrating ? "time-budgeted" : std::to_string(steps).c_str(), num_threads());
    if (ranks > 1)
      std::printf("data parallel: %d ranks (%s) x %d threads | %lld micro-batches of %d x %d per rank and step\n",
                  ranks, comm.name().c_str(), num_threads(), (long long)rank_accum, B, T);
    std::printf("%s\n", precision_note.c_str());
    if (device)
      std::printf("device: %s (forward, backward and the optimizer step; no MFU: the device's peak is "
                  "not measured)\n",
                  device->describe().c_str());
    else
      std::printf("MFU is against %.0f GFLOP/s (%s)\n", peak / 1e9,
                !peak_measured ? "--peak-gflops"
                : precision == model::Precision::kBf16 ? "bf16 vdpbf16ps peak of these cores, measured now"
                                                       : "fp32 FMA peak of these cores, measured now");
    std::fflush(stdout);
  }

  // --- the loop -------------------------------------------------------------------
  const TrainerRun::Steps stepping = trun.steps(step, steps);
  std::vector<int32_t> inputs(static_cast<size_t>(micro_tokens)), targets(inputs.size());
  std::vector<float> token_loss(inputs.size());
  const int64_t session_start = step;
  double first_step_s = 0.0;
  while (step < steps) {
    auto t0 = std::chrono::steady_clock::now();
    const double cpu0 = process_cpu_seconds();
    const StepStats ss = train_step(groups, sched.at(step), o.grad_clip, "Training", run, [&] {
      double loss = 0.0;
      // This rank's micro-batches; train_step averages gradients and loss over the ranks.
      for (int64_t a = 0; a < rank_accum; ++a) {
        train_loader.next_batch(inputs.data(), targets.data());
        model.forward(inputs.data(), B, T);
        model.lm_head_loss(targets.data(), nullptr, 1.0f / static_cast<float>(rank_accum), token_loss.data());
        if (a == rank_accum - 1) overlap_next_backward(model);  // the all-reduce starts during this backward
        model.backward_from_head();
        // The mean is summed here, in order: an OpenMP reduction's combining order varies
        // from run to run, and the logged loss must not (bit-identical resume).
        double sum = 0.0;
        for (float x : token_loss) sum += x;
        loss += sum / static_cast<double>(token_loss.size()) / static_cast<double>(rank_accum);
      }
      return loss;
    }, step);
    const double loss = ss.loss, norm = ss.grad_norm;
    const float lr = ss.lr;
    ++step;
    tokens_seen += total_batch;
    last_train_loss = static_cast<float>(loss);
    result.step_losses.push_back(static_cast<float>(loss));
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    elapsed_before += dt;
    const double tok_s = static_cast<double>(total_batch) / dt;
    // On a device the CPU's peak means nothing: no MFU (0 in the log, n/a on screen).
    double mfu = device ? 0.0 : flops_per_step / dt / peak;
    if (mfu > 1.0) {
      // An MFU above 100% is never true: the peak it divides by was estimated too low (on
      // a machine busy at start, or a --peak-gflops below the truth). Raise it to what this
      // step did, say so once, and never print more than 100%.
      if (!o.quiet)
        std::printf("note: this step ran at %.0f GFLOP/s, above the peak estimate of %.0f GFLOP/s: the peak estimate "
                    "was too low; MFU is now against %.0f GFLOP/s\n",
                    flops_per_step / dt / 1e9, peak / 1e9, flops_per_step / dt / 1e9);
      peak = flops_per_step / dt;
      mfu = 1.0;
    }
    json line = {{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm}, {"tokens", tokens_seen},
                 {"tok_per_s", tok_s}, {"mfu", mfu}, {"step_s", dt}, {"cpu_s", process_cpu_seconds() - cpu0}};
    if (ranks > 1) line["comm_s"] = ss.comm_seconds;  // rank 0's time in the gradient all-reduce
    log_metrics(line);
    trun.print_step(step, calibrating ? 0 : steps, dt,
                    "loss " + fmt("%.4f", loss) + " | lr " + fmt("%.2e", lr) + " | norm " + fmt("%.3f", norm) + " | " +
                        fmt("%.0f", tok_s) + " tok/s | MFU " + (device ? std::string("n/a") : fmt("%.1f", 100.0 * mfu) + "%"));
    if (calibrating && step - session_start == kCalibrationSteps) {
      // Steps 2..4 give the speed (step 1 pays for first-touch allocation); evaluation
      // and samples get ~10% of the budget.
      const double per_step = (elapsed_before - first_step_s) / static_cast<double>(kCalibrationSteps - 1);
      const double left = 0.9 * o.time_budget * 60.0 - elapsed_before;
      steps = std::max<int64_t>(step + 1, step + static_cast<int64_t>(left / per_step));
      if (ranks > 1) {  // rank 0's count for every rank: the ranks must stop at the same step
        double s0 = root ? static_cast<double>(steps) : 0.0;
        comm.allreduce_sum(&s0, 1);
        steps = static_cast<int64_t>(s0);
      }
      sched.total = steps;
      opts_json["steps"] = steps;
      calibrating = false;
      write_run_info();  // run.json records the real length
      if (!o.quiet)
        std::printf("time budget %s: %.2fs/step -> %lld steps\n", Progress::format_duration(o.time_budget * 60.0).c_str(),
                    per_step, (long long)steps);
    }
    if (step - session_start == 1) first_step_s = dt;
    if (o.on_step) o.on_step(step, static_cast<float>(loss));
    if (val_loader && ((o.eval_every > 0 && step % o.eval_every == 0) || step == steps)) run_eval();
    if (o.sample_every > 0 && (step % o.sample_every == 0 || step == steps)) run_sample();
    const fs::path before = trun.last_checkpoint();
    const bool stop = trun.after_step(step, steps);  // saves when due, at the end, or on a stop
    if (trun.last_checkpoint() != before) {
      result.checkpoint = trun.last_checkpoint();
      if (!o.quiet) std::fprintf(stderr, "saved %s\n", result.checkpoint.c_str());
    }
    if (stop) {
      result.interrupted = true;
      break;
    }
  }
  if (step > session_start || resume_ckpt) trun.finish(step, steps);
  result.step = step;
  return result;
}

}  // namespace aji::train
