#include "aji/align/sft_run.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "aji/align/conversation.h"
#include "aji/base/atomic_file.h"
#include "aji/base/dist.h"
#include "aji/base/error.h"
#include "aji/base/interrupt.h"
#include "aji/base/io.h"
#include "aji/base/progress.h"
#include "aji/base/threads.h"
#include "aji/tokenizer/chat_template.h"
#include "aji/tokenizer/tokenizer.h"
#include "aji/train/checkpoint.h"
#include "aji/train/loss_curve.h"
#include "aji/train/run_dir.h"
#include "aji/train/trainer_run.h"

namespace aji::align {

namespace fs = std::filesystem;
using nlohmann::json;
using train::ResumeSetting;

namespace {

// The settings outside the declared options (SftRunOptions::for_each_option) that a resumed
// run compares: paths, plain flags and the batch layout. None may change.
const std::vector<ResumeSetting> kOtherSettings = {
    {"--model", "base_model"},       {"--data", "train_file"},
    {"--val", "val_file"},           {"--all-tokens", "loss_on"},
    {"--skip-invalid", "skip_invalid"}, {"--batching", "layout"},
};

std::string abs_or_empty(const fs::path& p) { return p.empty() ? std::string() : fs::absolute(p).string(); }

// The run's settings outside the declared options (keys of kOtherSettings).
json other_settings_json(const SftRunOptions& o) {
  return {{"base_model", abs_or_empty(o.model)},
          {"train_file", abs_or_empty(o.train_file)},
          {"val_file", abs_or_empty(o.val_file)},
          {"loss_on", o.loss_on == LossOn::kAll ? "all" : "assistant"},
          {"skip_invalid", o.skip_invalid},
          {"layout", o.train.layout == BatchLayout::kPack ? "pack" : "pad"}};
}

// The declared options as saved (options_to_json) plus the batch layout.
json saved_options_json(const SftRunOptions& o) {
  json j = options_to_json(o);
  j["layout"] = o.train.layout == BatchLayout::kPack ? "pack" : "pad";
  return j;
}

// The saved options of a checkpoint in today's keys. Checkpoints written before the options
// were declared (base/options.h) saved "batch" for --batch-size and kept val_fraction,
// save_every and keep beside "options": those are read under their new keys.
json saved_options_of(const json& sft) {
  json j = sft.value("options", json::object());
  if (!j.is_object()) j = json::object();
  if (j.contains("batch") && !j.contains("batch_size")) j["batch_size"] = j["batch"];
  for (const char* key : {"val_fraction", "save_every", "keep"})
    if (!j.contains(key) && sft.contains(key)) j[key] = sft[key];
  return j;
}

}  // namespace

const std::vector<std::string>& sft_setting_flags() {
  static const std::vector<std::string> flags = train::resume_setting_flags<SftRunOptions>(kOtherSettings);
  return flags;
}

SftRunResult run_sft(const SftRunOptions& in) {
  SftRunOptions o = in;
  SftRunResult result;
  const fs::path run = o.out_dir;
  const bool root = dist::is_root();  // under mpirun / srun: rank 0 alone writes and prints
  if (!root) o.quiet = true;

  // Every declared option against its range, before any work (the CLI checked them at
  // parse time already; this is the same check for callers of the library).
  validate_options(o);
  train::LrSchedule::parse_decay(o.train.decay);
  (void)train::resolve_precision(o.precision);  // an unknown --precision: refused before any work

  train::TrainerRun::Options ro;
  ro.dir.dir = run;
  ro.dir.resume = o.resume;
  ro.dir.force = o.force;
  ro.dir.quiet = o.quiet;
  ro.dir.command = "aji sft train";
  ro.dir.fresh_command = "aji sft train --model MODEL --data FILE --out " + run.string();
  ro.dir.state_key = "sft";
  ro.dir.outputs = {"run.json", "metrics.jsonl", "loss.svg"};
  ro.plot_title = "aji sft: " + run.filename().string();
  ro.splits_data = true;  // sft_train deals the micro-batches over the ranks
  train::TrainerRun trun(ro);
  const std::optional<fs::path> resume_ckpt = trun.checkpoint();
  if (resume_ckpt) {
    const json& s = trun.section();
    const std::string where = trun.state_file();
    // The plain flags and paths: the run's own; given again, they must be the same.
    try {
      o.model = s.value("base_model", std::string());
      o.train_file = s.at("train_file").get<std::string>();
      o.val_file = s.value("val_file", std::string());
      o.loss_on = s.at("loss_on") == "all" ? LossOn::kAll : LossOn::kAssistant;
      o.skip_invalid = s.at("skip_invalid");
      o.train.layout = saved_options_of(s).value("layout", std::string("pad")) == "pack" ? BatchLayout::kPack
                                                                                         : BatchLayout::kPad;
    } catch (const json::exception& e) {
      throw Error(std::string("the run's saved settings are not readable: ") + e.what())
          .at(where)
          .fix("resume from a checkpoint written by `aji sft train`, or start a new run");
    }
    json saved_other = other_settings_json(o);
    if (o.model.empty()) saved_other.erase("base_model");  // a checkpoint from before it was saved
    const train::GivenFlags given = train::split_given_flags(in.given, kOtherSettings);
    train::check_resume_settings(kOtherSettings, given.other, other_settings_json(in), saved_other, run);
    // The declared options: apply_saved_options keeps the run's values; a safe one given
    // anew (--eval-every, --save-every, --keep) changes with a note, any other is refused.
    const SavedOptionsReport rep = apply_saved_options(o, saved_options_of(s), given.declared, where);
    train::report_resumed_options(rep, run, o.quiet);
    if (s.contains("first_loss") && s["first_loss"].is_number()) result.first_loss = s["first_loss"];
    if (s.contains("first_val_loss") && s["first_val_loss"].is_number()) result.first_val_loss = s["first_val_loss"];
  }

  // --- model and tokenizer -----------------------------------------------------------
  const fs::path model_src = resume_ckpt ? *resume_ckpt : o.model;
  const model::ModelConfig cfg = train::load_model_config(train::resolve_model_dir(model_src));
  const int64_t T_max = std::min(o.train.T(cfg.max_seq_len), cfg.max_seq_len);
  const std::shared_ptr<kernels::Backend> run_device = train::open_run_device(o.device);  // (null: the CPU)
  require_memory(training_memory(cfg, cfg.num_params(), T_max,
                                    train::resolve_precision(o.precision, nullptr, run_device.get()) ==
                                        model::Precision::kBf16,
                                    run_device != nullptr),
                    "fine-tuning this model (" + std::to_string(cfg.num_params()) + " parameters)",
                    "use a smaller model, or free memory (AdamW keeps two more copies of every parameter)",
                    run_device.get());
  fs::path model_dir;
  model::Model model = train::load_model(model_src, &model_dir);
  std::string precision_note;
  const bool precision_given = std::find(in.given.begin(), in.given.end(), "--precision") != in.given.end();
  model.set_precision(train::run_precision(o.precision, resume_ckpt ? saved_options_of(trun.section()) : json(),
                                           precision_given, o.quiet, &precision_note, run_device.get()));
  train::apply_run_device(run_device, o.precision, o.quiet, "sft", {&model});
  const fs::path tok_path = train::require_tokenizer_file(model_dir);
  tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(tok_path);
  require_chat_tokens(tok);
  if (tok.vocab_size() > (size_t)model.config().vocab_size)
    throw Error("the tokenizer has " + std::to_string(tok.vocab_size()) + " ids but the model only " +
                std::to_string(model.config().vocab_size))
        .at(tok_path.string())
        .fix("use the tokenizer the model was pretrained with");
  trun.ship_tokenizer(model_dir);  // both tokenizer files travel with every checkpoint
  o.train.pad_id = (uint32_t)*tok.special_id(tokenizer::kImEnd);  // never a target at padding

  // --- data ------------------------------------------------------------------------------
  const OnInvalid policy = o.skip_invalid ? OnInvalid::kSkip : OnInvalid::kError;
  InputReport report;
  std::vector<Conversation> train_convs = read_conversations(o.train_file, policy, &report), val_convs;
  if (!o.val_file.empty()) {
    val_convs = read_conversations(o.val_file, policy, &report);
  } else if (o.val_fraction > 0) {
    auto split = split_conversations(std::move(train_convs), o.val_fraction, o.train.seed);
    train_convs = std::move(split.first);
    val_convs = std::move(split.second);
  }
  if (train_convs.empty())
    throw Error("no training conversations").at(o.train_file.string()).fix("check the file with `aji sft check`");
  const std::vector<RenderedSequence> train_seqs = render_conversations(tok, train_convs, o.loss_on, !o.quiet);
  const std::vector<RenderedSequence> val_seqs = render_conversations(tok, val_convs, LossOn::kAssistant, false);
  const int T = o.train.T(model.config().max_seq_len);
  o.train.seq_len = T;

  // --- optimizer and state --------------------------------------------------------------
  train::AdamW optimizer(model.num_params(), {o.train.beta1, o.train.beta2, o.train.eps, o.train.weight_decay});
  SftState st;
  if (resume_ckpt) {
    optimizer.load(*resume_ckpt / "optimizer.bin");
    st = SftState::from_json(trun.section().at("state"));
  }
  PackOptions po;
  po.T = T;
  po.layout = o.train.layout;
  PackReport pack;
  const int64_t n_rows = (int64_t)plan_rows(train_seqs, po, &pack).size();
  const int64_t steps = sft_total_steps(n_rows, o.train);
  {
    const int64_t rows_per_batch = std::min<int64_t>(o.train.batch, std::max<int64_t>(n_rows, 1));
    require_memory(training_memory(model.config(), (int64_t)model.num_params(), rows_per_batch * T,
                                      model.precision() == model::Precision::kBf16, run_device != nullptr),
                      "a micro-batch of " + std::to_string(rows_per_batch) + " rows x " + std::to_string(T) +
                          " tokens",
                      "lower --batch-size (and raise --grad-accum to keep the step's size) or --seq-len",
                      run_device.get());
  }
  {  // every rank the same settings on the same data (a rank that differs: a clear error)
    json same = saved_options_json(o);
    same.update(other_settings_json(o));
    train::require_same_settings(same);
  }
  if (!resume_ckpt && root) {
    json info = {{"stage", "sft"},
                 {"base_model", abs_or_empty(o.model)},
                 {"train_file", fs::absolute(o.train_file).string()},
                 {"options", saved_options_json(o)},
                 {"steps", steps},
                 {"aji_version", AJI_VERSION}};
    write_file_atomic(run / "run.json", info.dump(2) + "\n");
  }
  if (!o.quiet) {
    std::printf("sft: %s | %zu train / %zu val conversations (%s)\n", model_dir.c_str(), train_convs.size(),
                val_convs.size(), report.summary(3).c_str());
    std::printf("sft: %s\n", pack.describe().c_str());
    std::printf("sft: %lld steps of %d x %d %s, lr %.2e (%s), threads %d\n", (long long)steps, o.train.batch,
                o.train.grad_accum,
                o.train.layout == BatchLayout::kPack ? "packed rows" : "conversations (one per row)", o.train.lr,
                o.train.decay.c_str(), num_threads());
    std::printf("sft: %s\n", precision_note.c_str());
    std::fflush(stdout);
  }

  // --- metrics, checkpoints -------------------------------------------------------------
  // Settings and changes of --save-every/--keep on resume are the run's options now.
  trun.options().save_every = o.save_every;
  trun.options().keep = o.keep;
  trun.options().stop_after = o.stop_after;
  o.train.run_dir = run;
  trun.start_metrics(resume_ckpt ? st.step : -1);
  trun.set_checkpoint([&](int64_t) {
    train::CheckpointParts p;
    p.model = &model;
    p.optimizer = &optimizer;
    p.section = {{"options", saved_options_json(o)},
                 {"state", st.to_json()},
                 {"train_file", fs::absolute(o.train_file).string()},
                 {"val_file", o.val_file.empty() ? std::string() : fs::absolute(o.val_file).string()},
                 {"loss_on", o.loss_on == LossOn::kAll ? "all" : "assistant"},
                 {"skip_invalid", o.skip_invalid},
                 {"base_model", abs_or_empty(o.model)},
                 {"first_loss", std::isnan(result.first_loss) ? json(nullptr) : json(result.first_loss)},
                 {"first_val_loss", std::isnan(result.first_val_loss) ? json(nullptr) : json(result.first_val_loss)}};
    return p;
  });

  if (!val_seqs.empty() && st.step == 0 && root) {
    const LossSum v = sft_validation_loss(model, val_seqs, o.train.batch, T, o.train.pad_id);
    result.first_val_loss = v.mean();
    trun.log({{"step", 0}, {"val_loss", v.mean()}});
    if (!o.quiet) std::printf("step 0 | val loss %.4f (before SFT)\n", v.mean());
  }

  SftHooks hooks;
  hooks.on_step = [&](const SftStepInfo& i) {
    if (std::isnan(result.first_loss)) result.first_loss = i.loss;
    result.last_loss = i.loss;
    trun.log({{"step", i.step}, {"loss", i.loss}, {"lr", i.lr}, {"grad_norm", i.grad_norm}, {"targets", i.targets},
              {"tokens", i.tokens}, {"step_s", i.seconds}});
    char mid[160];
    std::snprintf(mid, sizeof mid, "loss %.4f | lr %.2e | norm %.3f | %.0f tok/s", i.loss, i.lr, i.grad_norm,
                  i.tokens / std::max(i.seconds, 1e-9));
    trun.print_step(i.step, i.steps, i.seconds, mid);
  };
  hooks.on_eval = [&](int64_t step, const LossSum& v) {
    result.last_val_loss = v.mean();
    trun.log({{"step", step}, {"val_loss", v.mean()}});
    if (!o.quiet) std::printf("step %lld | val loss %.4f\n", (long long)step, v.mean());
    trun.write_plot();
  };
  hooks.after_step = [&](const SftState& s) {
    st = s;
    return trun.after_step(s.step, steps);
  };

  SftResult r;
  {
    const train::TrainerRun::Steps stepping = trun.steps(st.step, steps);
    r = sft_train(model, optimizer, train_seqs, val_seqs, o.train, st, hooks);
  }
  trun.finish(r.state.step, steps);
  result.checkpoint = trun.last_checkpoint();
  result.step = r.state.step;
  result.step_losses = r.step_losses;
  result.interrupted = r.stopped_early;
  return result;
}

}  // namespace aji::align
