#include "aji/align/classify_run.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "aji/base/json_number.h"
#include "aji/train/memory.h"
#include "aji/base/dist.h"
#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/interrupt.h"
#include "aji/base/io.h"
#include "aji/base/progress.h"
#include "aji/base/threads.h"
#include "aji/train/checkpoint.h"
#include "aji/train/loss_curve.h"
#include "aji/train/run_dir.h"
#include "aji/train/safetensors.h"
#include "aji/train/trainer_run.h"

namespace aji::align {

namespace fs = std::filesystem;
using nlohmann::json;
using train::ResumeSetting;

namespace {

constexpr const char* kClassifierJson = "classifier.json";
constexpr const char* kClassHeadFile = "class_head.safetensors";
constexpr const char* kLabelsFile = "labels.json";

// BOS and pad of a tokenizer/model pair: aji pretrains documents as [<|endoftext|>] + ids,
// so that token starts every input and pads it (LLMs-from-scratch pads GPT-2 with it too).
ClassifierInput input_for(const tokenizer::Tokenizer& tok, const model::ModelConfig& cfg, int max_len) {
  ClassifierInput in;
  if (auto eot = tok.special_id("<|endoftext|>")) {
    in.bos_id = int32_t(*eot);
  } else if (cfg.bos_token_id >= 0) {
    in.bos_id = cfg.bos_token_id;
  }
  in.pad_id = in.bos_id >= 0 ? in.bos_id : (cfg.eos_token_id >= 0 ? cfg.eos_token_id : 0);
  in.max_len = max_len > 0 ? std::min(max_len, cfg.max_seq_len) : cfg.max_seq_len;
  return in;
}

std::vector<LabeledExample> pick(const std::vector<LabeledExample>& all, const std::vector<int64_t>& idx) {
  std::vector<LabeledExample> out;
  out.reserve(idx.size());
  for (int64_t i : idx) out.push_back(all[size_t(i)]);
  return out;
}

// The classes of the training data: two or more.
LabelSet label_set_of(const std::vector<LabeledExample>& examples, const fs::path& file) {
  if (examples.empty()) throw Error("no labeled examples").at(file.string());
  LabelSet labels = LabelSet::from_examples(examples);
  if (labels.size() < 2)
    throw Error("the training data has one label ('" + labels.joined() + "'); a classifier needs two or more")
        .at(file.string())
        .fix("check --label-col");
  return labels;
}

}  // namespace

LabeledIds encode_for_classifier(const tokenizer::Tokenizer& tok, const std::vector<LabeledExample>& examples,
                                 const LabelSet* labels, const ClassifierInput& input, const std::string& file,
                                 OnInvalid policy, InputReport* report, int64_t* truncated,
                                 std::vector<size_t>* kept) {
  LabeledIds out;
  if (kept) kept->clear();
  std::vector<int> ids = labels ? encode_labels(examples, *labels, file, policy, report)
                                : std::vector<int>(examples.size(), -1);
  std::vector<tokenizer::TokenId> toks;
  for (size_t i = 0; i < examples.size(); ++i) {
    if (labels && ids[i] < 0) continue;  // a counted skip (kSkip); kError has thrown
    toks.clear();
    if (input.bos_id >= 0) toks.push_back(tokenizer::TokenId(input.bos_id));
    tok.encode_ordinary(examples[i].text, toks);
    if (toks.empty()) {
      if (report)
        report->reject(policy, file, examples[i].line, "empty_text", "the text encodes to no tokens",
                       "give every example some text");
      else
        throw Error("the text encodes to no tokens").at(file, examples[i].line);
      continue;
    }
    if (input.max_len > 0 && toks.size() > size_t(input.max_len)) {
      toks.resize(size_t(input.max_len));
      if (truncated) ++*truncated;
    }
    out.ids.emplace_back(toks.begin(), toks.end());
    out.labels.push_back(ids[i]);
    if (kept) kept->push_back(i);
  }
  return out;
}

// ---- train ----------------------------------------------------------------------------------

namespace {

constexpr const char* kHeadOptimizerFile = "head_optimizer.bin";
constexpr const char* kBestFile = "best_weights.safetensors";

std::string abs_or_empty(const fs::path& p) { return p.empty() ? std::string() : fs::absolute(p).string(); }

const char* format_name(LabeledFormat f) {
  return f == LabeledFormat::kJsonl ? "jsonl" : f == LabeledFormat::kCsv ? "csv" : f == LabeledFormat::kTsv ? "tsv" : "auto";
}

// The settings of a classification run outside the declared options
// (ClassifyRunOptions::for_each_option): paths, reading rules, flags, what the model trains.
json classify_other_settings_json(const ClassifyRunOptions& o) {
  const ClassifyOptions& t = o.train;
  return {{"base_model", abs_or_empty(o.model)},
          {"data", abs_or_empty(o.data)},
          {"train_file", abs_or_empty(o.train_file)},
          {"val_file", abs_or_empty(o.val_file)},
          {"test_file", abs_or_empty(o.test_file)},
          {"balance", o.balance},
          {"format", format_name(o.read.format)},
          {"header", o.read.header},
          {"text_column", o.read.text_column},
          {"label_column", o.read.label_column},
          {"label_map", o.read.label_map},
          {"skip_unmapped", o.read.skip_unmapped},
          {"skip_invalid", o.read.on_invalid == OnInvalid::kSkip},
          {"beta1", t.beta1},
          {"beta2", t.beta2},
          {"eps", t.eps},
          {"min_lr_frac", t.min_lr_frac},
          {"pooling", pooling_name(t.pooling)},
          {"trainable", t.trainable.name()},
          {"group_by_length", t.group_by_length},
          {"keep_best", t.keep_best}};
}

// Every setting of a classification run in one flat object (saved in its checkpoints): the
// others above plus the declared options under their keys (options_to_json).
json classify_settings_json(const ClassifyRunOptions& o) {
  json j = classify_other_settings_json(o);
  j.update(options_to_json(o));
  return j;
}

// Restores the settings outside the declared options (apply_saved_options does those).
// Checkpoints written before the options were declared saved --batch-size as "batch": it is
// read as "batch_size".
void apply_classify_settings(json& j, ClassifyRunOptions* o) {
  if (j.contains("batch") && !j.contains("batch_size")) j["batch_size"] = j["batch"];
  ClassifyOptions& t = o->train;
  o->model = j.at("base_model").get<std::string>();
  o->data = j.at("data").get<std::string>();
  o->train_file = j.at("train_file").get<std::string>();
  o->val_file = j.at("val_file").get<std::string>();
  o->test_file = j.at("test_file").get<std::string>();
  o->balance = j.at("balance");
  const std::string f = j.at("format");
  o->read.format = f == "jsonl" ? LabeledFormat::kJsonl : f == "csv" ? LabeledFormat::kCsv
                   : f == "tsv" ? LabeledFormat::kTsv : LabeledFormat::kAuto;
  o->read.header = j.at("header");
  o->read.text_column = j.at("text_column");
  o->read.label_column = j.at("label_column");
  o->read.label_map = j.at("label_map").get<std::map<std::string, std::string>>();
  o->read.skip_unmapped = j.at("skip_unmapped");
  o->read.on_invalid = j.at("skip_invalid").get<bool>() ? OnInvalid::kSkip : OnInvalid::kError;
  t.beta1 = j.at("beta1");
  t.beta2 = j.at("beta2");
  t.eps = j.at("eps");
  t.min_lr_frac = j.at("min_lr_frac");
  t.pooling = parse_pooling(j.at("pooling"));
  t.trainable = TrainableBlocks::parse(j.at("trainable"));
  t.group_by_length = j.at("group_by_length");
  t.keep_best = j.at("keep_best");
}

// The settings outside the declared options that a resumed run compares: none may change.
const std::vector<ResumeSetting> kOtherSettings = {
    {"--model", "base_model"},
    {"--data", "data"},
    {"--train", "train_file"},
    {"--val", "val_file"},
    {"--test", "test_file"},
    {"--balance", "balance"},
    {"--format", "format"},
    {"--no-header", "header"},
    {"--text-col", "text_column"},
    {"--label-col", "label_column"},
    {"--label-map", "label_map"},
    {"--skip-unmapped", "skip_unmapped"},
    {"--skip-invalid", "skip_invalid"},
    {"--pooling", "pooling"},
    {"--trainable", "trainable"},
    {"--no-group-by-length", "group_by_length"},
    {"--keep-best", "keep_best"},
};

}  // namespace

const std::vector<std::string>& classify_setting_flags() {
  static const std::vector<std::string> flags = train::resume_setting_flags<ClassifyRunOptions>(kOtherSettings);
  return flags;
}

ClassifyRunResult run_classify_train(const ClassifyRunOptions& in) {
  using clock = std::chrono::steady_clock;
  ClassifyRunOptions o = in;
  const fs::path out = o.out_dir;
  const fs::path cdir = out / "classifier";
  train::TrainerRun::Options ro;
  train::RunDirRequest& rq = ro.dir;
  rq.dir = out;
  rq.resume = o.resume;
  rq.force = o.force;
  rq.quiet = o.quiet;
  rq.command = "aji classify train";
  rq.fresh_command = "aji classify train --model MODEL --data FILE --out " + out.string();
  rq.state_key = "classify";
  rq.outputs = {"run.json", "metrics.jsonl", "loss.svg", "report.txt", "report.json", "split", "classifier",
                ".classifier-files", ".checkpoint-files", train::kAjiTokenizerFile, "tokenizer.json"};
  rq.finished = "classifier";
  if (!o.resume) {
    const bool from_one_file = !o.data.empty();
    if (from_one_file == !o.train_file.empty())
      throw Error("give either --data (one labeled file, split here) or --train [--val] [--test]");
  }
  // Every declared option against its range, before any work (the CLI checked them at
  // parse time already; this is the same check for callers of the library).
  validate_options(o);
  train::LrSchedule::parse_decay(o.train.decay);
  (void)train::resolve_precision(o.precision);  // an unknown --precision: refused before any work
  ro.plot_title = "aji classify: " + out.filename().string();
  ro.plot_labels.y_axis = "loss (nats/example)";
  ro.plot_labels.train = "train loss (batch mean)";
  ro.plot_labels.val = "validation loss";
  ro.progress_lines = 20;
  ro.splits_data = true;  // each rank takes its share of every batch (train::rank_share)
  train::TrainerRun trun(ro);
  const std::optional<fs::path>& resume_ckpt = trun.checkpoint();
  ClassifyProgress progress;
  if (resume_ckpt) {
    const json& s = trun.section();
    const std::string where = trun.state_file();
    json settings = s.at("settings");
    try {
      apply_classify_settings(settings, &o);
    } catch (const json::exception& e) {
      throw Error(std::string("the run's saved settings are not readable: ") + e.what())
          .at(where)
          .fix("resume from a checkpoint written by `aji classify train`, or start a new run");
    }
    const train::GivenFlags given = train::split_given_flags(in.given, kOtherSettings);
    train::check_resume_settings(kOtherSettings, given.other, classify_other_settings_json(in),
                          classify_other_settings_json(o), out);
    train::report_resumed_options(apply_saved_options(o, settings, given.declared, where), out, o.quiet);
    progress.scalars_from_json(s.at("progress"));
  }
  const bool from_one_file = !o.data.empty();

  // --- model and tokenizer ---
  const fs::path model_src = resume_ckpt ? *resume_ckpt : o.model;
  const fs::path model_dir = train::resolve_model_dir(model_src);
  const model::ModelConfig cfg = train::load_model_config(model_dir);
  const bool head_only = o.train.trainable.kind == TrainableBlocks::Kind::kHead;
  const int len = o.max_len > 0 ? std::min(o.max_len, cfg.max_seq_len) : cfg.max_seq_len;
  const std::shared_ptr<kernels::Backend> run_device = train::open_run_device(o.device);  // (null: the CPU)
  {
    train::MemoryEstimate need =
        train::training_memory(cfg, head_only ? 0 : cfg.num_params(), int64_t(std::max(o.train.batch, 16)) * len,
                               train::resolve_precision(o.precision, nullptr, run_device.get()) ==
                                   model::Precision::kBf16,
                               run_device != nullptr);
    if (head_only) need.grads = 0;  // the frozen trunk only runs forward
    train::require_memory(need,
                             "training a classifier on this model (" + std::to_string(cfg.num_params()) +
                                 " parameters) with batches of " + std::to_string(std::max(o.train.batch, 16)) +
                                 " x " + std::to_string(len) + " tokens",
                             "lower --batch-size or --max-len, train fewer blocks (--trainable last:1 or head), or "
                             "use a smaller model",
                             run_device.get());
  }
  model::Model model = train::load_model(model_dir);
  // Training (and validation) in the run's precision; the test report below in fp32.
  train::apply_run_precision(o.precision, resume_ckpt ? trun.section().at("settings") : json(), in.given, o.quiet,
                             "classify", {&model}, run_device.get());
  train::apply_run_device(run_device, o.precision, o.quiet, "classify", {&model});
  const fs::path tok_path = train::require_tokenizer_file(model_dir);
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(tok_path);
  const ClassifierInput input = input_for(tok, model.config(), o.max_len);

  // --- data ---
  ClassifyRunResult result;
  const OnInvalid policy = o.read.on_invalid;
  InputReport report;
  std::vector<LabeledExample> train_ex, val_ex, test_ex;
  std::string train_name, val_name, test_name;
  if (from_one_file) {
    std::vector<LabeledExample> all = read_labeled(o.data, o.read, &report);
    result.labels = label_set_of(all, o.data);
    const std::vector<int> ids = encode_labels(all, result.labels, o.data.string(), OnInvalid::kError, nullptr);
    DataSplit split =
        stratified_split(ids, int(result.labels.size()), o.val_fraction, o.test_fraction, o.train.seed);
    if (o.balance) {
      std::vector<int> train_ids;
      for (int64_t i : split.train) train_ids.push_back(ids[size_t(i)]);
      std::vector<int64_t> kept;
      for (int64_t j : balance_classes(train_ids, int(result.labels.size()), o.train.seed))
        kept.push_back(split.train[size_t(j)]);
      split.train = kept;
    }
    train_ex = pick(all, split.train);
    val_ex = pick(all, split.val);
    test_ex = pick(all, split.test);
    if (trun.root()) {  // under mpirun every rank splits the same way; rank 0 writes
      fs::create_directories(out / "split");
      write_labeled_jsonl(out / "split" / "train.jsonl", all, split.train);
      write_labeled_jsonl(out / "split" / "val.jsonl", all, split.val);
      write_labeled_jsonl(out / "split" / "test.jsonl", all, split.test);
    }
    train_name = val_name = test_name = o.data.string();
  } else {
    train_ex = read_labeled(o.train_file, o.read, &report);
    result.labels = label_set_of(train_ex, o.train_file);
    if (!o.val_file.empty()) val_ex = read_labeled(o.val_file, o.read, &report);
    if (!o.test_file.empty()) test_ex = read_labeled(o.test_file, o.read, &report);
    train_name = o.train_file.string();
    val_name = o.val_file.string();
    test_name = o.test_file.string();
  }
  int64_t truncated = 0;
  const LabeledIds train = encode_for_classifier(tok, train_ex, &result.labels, input, train_name, policy, &report, &truncated);
  const LabeledIds val = encode_for_classifier(tok, val_ex, &result.labels, input, val_name, policy, &report, &truncated);
  const LabeledIds test = encode_for_classifier(tok, test_ex, &result.labels, input, test_name, policy, &report, &truncated);
  if (train.size() == 0) throw Error("no training examples left after reading").at(train_name);
  result.n_train = int64_t(train.size());
  result.n_val = int64_t(val.size());
  result.n_test = int64_t(test.size());
  result.truncated = truncated;
  const int n = int(result.labels.size());
  if (!o.quiet) {
    std::fprintf(stderr, "data: %s\n", report.summary(20).c_str());
    std::vector<int64_t> per(size_t(n), 0);
    for (int y : train.labels) ++per[size_t(y)];
    std::string counts;
    for (int k = 0; k < n; ++k) counts += (k ? ", " : "") + result.labels.names[size_t(k)] + " " + std::to_string(per[size_t(k)]);
    std::fprintf(stderr, "classes: %s | train %zu (%s), val %zu, test %zu | inputs cut to %d tokens: %lld\n",
                 result.labels.joined().c_str(), train.size(), counts.c_str(), val.size(), test.size(), input.max_len,
                 (long long)truncated);
  }

  // --- head, optimizers: fresh, or the checkpoint's ---
  ClassHead head(n, model.config().d_model);
  ClassifyOptions to = o.train;
  to.pad_id = input.pad_id;
  if (resume_ckpt) {
    const fs::path ck = *resume_ckpt;
    head = ClassHead::load((ck / kClassHeadFile).string());
    if (head.n_classes != n || head.d_model != model.config().d_model)
      throw Error("the checkpoint's class head (" + std::to_string(head.n_classes) + " classes) does not fit the data (" +
                  std::to_string(n) + " classes: " + result.labels.joined() + ")")
          .at(ck.string())
          .fix("resume with the data the run started with");
    progress.head_opt = train::AdamW(head.num_params(), {to.beta1, to.beta2, to.eps, to.weight_decay});
    progress.head_opt.load(ck / kHeadOptimizerFile);
    progress.trunk_opt = train::AdamW(head_only ? 0 : model.num_params(), {to.beta1, to.beta2, to.eps, to.weight_decay});
    if (!head_only) progress.trunk_opt.load(ck / "optimizer.bin");
    if (fs::exists(ck / kBestFile)) {
      const train::SafeTensorsFile best = train::SafeTensorsFile::load(ck / kBestFile);
      if (best.has("head")) progress.best_head = best.tensors.at("head").data;
      if (best.has("trunk")) progress.best_trunk = best.tensors.at("trunk").data;
    }
    if (!o.quiet) std::fprintf(stderr, "resuming %s at step %lld\n", ck.c_str(), (long long)progress.step);
  } else {
    head.init(o.head_seed);
  }
  const int64_t steps = classify_total_steps(train.size(), to);
  train::require_rank_split(to.batch, "--batch-size");
  train::require_same_settings(classify_settings_json(o));  // every rank the same settings on the same data
  if (!resume_ckpt && trun.root()) {
    json info = {{"stage", "classify"},
                 {"base_model", fs::absolute(o.model).string()},
                 {"labels", result.labels.names},
                 {"trainable", to.trainable.name()},
                 {"pooling", pooling_name(to.pooling)},
                 {"steps", steps},
                 {"batch", to.batch},
                 {"lr", to.lr},
                 {"weight_decay", to.weight_decay},
                 {"max_len", input.max_len},
                 {"group_by_length", to.group_by_length},
                 {"keep_best", to.keep_best},
                 {"n_train", train.size()},
                 {"n_val", val.size()},
                 {"n_test", test.size()},
                 {"threads", num_threads()},
                 {"aji_version", AJI_VERSION}};
    write_file_atomic(out / "run.json", info.dump(2) + "\n");
  }
  trun.options().save_every = o.save_every;
  trun.options().keep = o.keep;
  trun.options().stop_after = o.stop_after;
  to.run_dir = out;
  trun.start_metrics(resume_ckpt ? progress.step : -1);
  int64_t real_tokens = 0, padded_tokens = 0;
  ClassifyHooks hooks;
  hooks.on_step = [&](const ClassifyStepInfo& mine) {
    ClassifyStepInfo i = mine;  // this rank's part; the loss is the step's already (train_step)
    if (dist::world().size() > 1) {
      i.examples = int64_t(train::rank_means({&i.batch_accuracy}, double(i.examples)));
      double sums[2] = {double(i.tokens), double(i.padded_tokens)};
      dist::world().allreduce_sum(sums, 2);
      i.tokens = int64_t(sums[0]);
      i.padded_tokens = int64_t(sums[1]);
    }
    real_tokens += i.tokens;
    padded_tokens += i.padded_tokens;
    trun.log({{"step", i.step}, {"epoch", i.epoch}, {"loss", i.loss}, {"batch_accuracy", i.batch_accuracy},
              {"lr", i.lr}, {"grad_norm", i.grad_norm}, {"tokens", i.tokens}, {"padded_tokens", i.padded_tokens},
              {"step_s", i.seconds}});
    char mid[200];
    std::snprintf(mid, sizeof mid, "epoch %lld | loss %.4f | batch acc %.2f | lr %.2e | %.0f ex/s",
                  (long long)i.epoch + 1, i.loss, i.batch_accuracy, i.lr, double(i.examples) / std::max(i.seconds, 1e-9));
    trun.print_step(i.step, i.steps, i.seconds, mid);
  };
  hooks.on_eval = [&](int64_t step, const ClassifyEval& v) {
    trun.log({{"step", step}, {"val_loss", v.loss}, {"val_accuracy", v.accuracy}});
    if (!o.quiet) std::printf("step %lld | val loss %.4f | val accuracy %.4f\n", (long long)step, v.loss, v.accuracy);
  };
  const std::vector<fs::path> tokenizer_files = trun.ship_tokenizer(model_dir);  // a resumed run's source checkpoint may be pruned
  const ClassifyProgress* at = &progress;  // what after_step saw last
  trun.set_checkpoint([&](int64_t) {
    const ClassifyProgress& p = *at;  // the writers below run later: they read *at, not p
    train::CheckpointParts c;
    c.model = &model;
    c.optimizer = head_only ? nullptr : &p.trunk_opt;
    c.write.push_back({kClassHeadFile, [&](const fs::path& f) { head.save(f.string()); }});
    c.write.push_back({kHeadOptimizerFile, [&](const fs::path& f) { at->head_opt.save(f); }});
    if (!p.best_head.empty())
      c.write.push_back({kBestFile, [&](const fs::path& f) {
                           std::vector<train::SafeTensorView> views = {
                               {"head", {int64_t(at->best_head.size())}, at->best_head.data()}};
                           if (!at->best_trunk.empty())
                             views.push_back({"trunk", {int64_t(at->best_trunk.size())}, at->best_trunk.data()});
                           train::save_safetensors(f, views);
                         }});
    c.section = {{"settings", classify_settings_json(o)}, {"progress", p.to_json()}, {"labels", result.labels.names}};
    return c;
  });
  hooks.after_step = [&](const ClassifyProgress& p) {
    at = &p;
    return trun.after_step(p.step, steps);
  };
  std::unique_ptr<Progress> feature_progress;
  hooks.on_features = [&](size_t done, size_t total) {
    if (o.quiet) return;
    if (!feature_progress) feature_progress = std::make_unique<Progress>("trunk features", int64_t(total), "ex");
    feature_progress->set(int64_t(done));
    if (done == total) feature_progress->finish();
  };
  if (!o.quiet)
    std::printf("training %s (pooling: %s) for %lld steps of %d, lr %.2e%s\n", to.trainable.name().c_str(),
                pooling_name(to.pooling).c_str(), (long long)steps, to.batch, to.lr,
                to.trainable.kind == TrainableBlocks::Kind::kHead ? " (frozen trunk: features computed once)" : "");
  std::fflush(stdout);
  const auto t0 = clock::now();
  ClassifyTrainResult r;
  {
    const train::TrainerRun::Steps stepping = trun.steps(progress.step, steps);
    r = classify_train(model, head, train, val, to, hooks, &progress);
  }
  result.seconds = std::chrono::duration<double>(clock::now() - t0).count();
  if (!o.quiet && padded_tokens > 0)
    std::printf("trunk positions run: %lld for %lld input tokens (%.0f%% padding%s)\n", (long long)padded_tokens,
                (long long)real_tokens, 100.0 * double(padded_tokens - real_tokens) / double(padded_tokens),
                to.group_by_length ? ", batches grouped by length" : "");
  result.steps = r.steps_done;
  result.step_losses = r.step_losses;
  result.interrupted = r.stopped_early;
  result.val_accuracy = r.last_val.accuracy;
  if (to.keep_best && r.best_step >= 0 && !o.quiet)
    std::printf("kept the weights of step %lld (best val accuracy %.4f)\n", (long long)r.best_step,
                r.best_val_accuracy);
  trun.finish(result.steps, steps);
  if (!trun.root()) return result;  // rank 0 writes the classifier and the report

  // --- save: weights, tokenizer, head, labels, settings — one atomic directory ---
  const fs::path staging = out / ".classifier-files";
  fs::remove_all(staging);
  fs::create_directories(staging);
  head.save((staging / kClassHeadFile).string());
  result.labels.save(staging / kLabelsFile);
  json cj = {{"format", "aji-classifier"},
             {"version", 1},
             {"pooling", pooling_name(to.pooling)},
             {"max_len", input.max_len},
             {"bos_id", input.bos_id},
             {"pad_id", input.pad_id},
             {"trainable", to.trainable.name()},
             {"steps", result.steps},
             {"kept_step", to.keep_best && r.best_step >= 0 ? r.best_step : result.steps},
             {"interrupted", result.interrupted},
             {"val_accuracy", std::isfinite(result.val_accuracy) ? json(result.val_accuracy) : json(nullptr)},
             {"base_model", fs::absolute(o.model).string()}};
  write_file_atomic(staging / kClassifierJson, cj.dump(2) + "\n");
  std::vector<fs::path> files = {staging / kClassHeadFile, staging / kLabelsFile, staging / kClassifierJson};
  for (const fs::path& f : tokenizer_files) files.push_back(f);
  fs::remove_all(cdir);
  train::save_model_dir(cdir, model, files);
  fs::remove_all(staging);
  result.classifier_dir = cdir;

  // --- test ---
  if (test.size() > 0) {
    // fp32, as the saved classifier predicts (`aji classify predict` loads it in fp32).
    const train::Fp32Scope fp32(model);
    ClassifyEval ev = classify_evaluate(model, head, test, to.pooling, input.pad_id, std::max(16, to.batch));
    result.has_test = true;
    result.test = classification_report(test.labels, ev.predictions, n);
    write_file_atomic(out / "report.txt", format_report(result.test, result.labels.names));
    json rj = report_to_json(result.test, result.labels.names);
    rj["train_seconds"] = result.seconds;
    rj["steps"] = result.steps;
    write_file_atomic(out / "report.json", rj.dump(2) + "\n");
  }
  return result;
}

// ---- load -----------------------------------------------------------------------------------

LoadedClassifier load_classifier(const fs::path& path) {
  fs::path dir = path;
  if (!fs::exists(dir / kClassifierJson) && fs::exists(dir / "classifier" / kClassifierJson)) dir = dir / "classifier";
  if (!fs::exists(dir / kClassifierJson))
    throw Error("not a classifier: no " + std::string(kClassifierJson)).at(path.string())
        .fix("point --model at the --out directory of `aji classify train` (or its classifier/ folder)");
  json cj;
  try {
    cj = json::parse(read_file(dir / kClassifierJson));
  } catch (const json::exception& e) {
    throw Error(std::string("malformed classifier settings: ") + e.what()).at((dir / kClassifierJson).string());
  }
  if (cj.value("format", nlohmann::json()) != "aji-classifier")
    throw Error("not an aji classifier file").at((dir / kClassifierJson).string());
  model::Model m = train::load_model(dir);
  ClassHead head = ClassHead::load((dir / kClassHeadFile).string());
  LabelSet labels = LabelSet::load(dir / kLabelsFile);
  if (int(labels.size()) != head.n_classes || head.d_model != m.config().d_model)
    throw Error("the class head (" + std::to_string(head.n_classes) + " classes, width " + std::to_string(head.d_model) +
                ") does not fit the labels (" + std::to_string(labels.size()) + ") or the model (width " +
                std::to_string(m.config().d_model) + ")")
        .at(dir.string());
  ClassifierInput in;
  const std::string settings_file = (dir / kClassifierJson).string();
  in.bos_id = json_int_or<int>(cj, "bos_id", -1, "\"bos_id\"", settings_file);
  in.pad_id = json_int_or<int>(cj, "pad_id", 0, "\"pad_id\"", settings_file);
  in.max_len = cj.value("max_len", m.config().max_seq_len);
  const Pooling pooling = parse_pooling(cj.value("pooling", "last"));
  tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(train::require_tokenizer_file(dir));
  return LoadedClassifier{std::move(m), std::move(head), std::move(labels), std::move(tok), in, pooling, dir};
}

}  // namespace aji::align
