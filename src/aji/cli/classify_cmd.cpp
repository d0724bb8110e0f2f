// `aji classify train | predict | eval`: a class head fine-tuned on a pretrained model
// (src/aji/align/classify_run.h), then used and scored.
#include <cstdio>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "aji/align/classify_run.h"
#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/cli/classify_args.h"
#include "aji/cli/options.h"
#include "aji/cli/command.h"

namespace {

using namespace aji::align;
namespace fs = std::filesystem;

struct TrainArgs {
  aji::cli::ReadArgs read;
  ClassifyRunOptions run;
  std::string model, out, data, train, val, test, trainable = "last:1", pooling = "last";
  CLI::App* cmd = nullptr;  // to ask which flags were given (a resumed run compares them)
};

struct UseArgs {
  aji::cli::ReadArgs read;
  std::string model, input, out, json_out;
  int batch = 32;
};

void run_train(TrainArgs& a) {
  ClassifyRunOptions& o = a.run;
  o.model = a.model;
  o.out_dir = a.out;
  o.data = a.data;
  o.train_file = a.train;
  o.val_file = a.val;
  o.test_file = a.test;
  o.read = a.read.options();
  o.train.trainable = TrainableBlocks::parse(a.trainable);
  o.train.pooling = parse_pooling(a.pooling);
  o.given.clear();
  for (const std::string& flag : classify_setting_flags())
    if (a.cmd->count(flag) > 0) o.given.push_back(flag);
  o.quiet = aji::cli::global_options().quiet;
  if (!o.resume && a.model.empty())
    throw aji::Error("--model is required for a new run")
        .fix("e.g. aji classify train --model runs/tiny --data data/classify/sms_spam.tsv --out runs/spam");
  const ClassifyRunResult r = run_classify_train(o);
  if (r.has_test) {
    std::printf("\ntest split (%lld examples):\n%s", (long long)r.n_test,
                aji::align::format_report(r.test, r.labels.names).c_str());
    std::printf("classifier: test accuracy %.4f (majority baseline %.4f), macro F1 %.4f; %lld steps in %.0f s; %s\n",
                r.test.accuracy, r.test.majority_baseline, r.test.macro_f1, (long long)r.steps, r.seconds,
                r.classifier_dir.c_str());
  } else {
    std::printf("classifier: val accuracy %.4f; %lld steps in %.0f s; %s\n", r.val_accuracy, (long long)r.steps,
                r.seconds, r.classifier_dir.c_str());
  }
}

// Reads a file for predict/eval, encodes it for the classifier.
LabeledIds read_for(const LoadedClassifier& c, const UseArgs& a, bool labeled, std::vector<LabeledExample>* examples,
                    InputReport* report, std::vector<size_t>* kept = nullptr) {
  auto opts = a.read.options(labeled);
  *examples = read_labeled(a.input, opts, report);
  if (examples->empty()) throw aji::Error("no examples").at(a.input);
  bool has_labels = labeled;
  if (!labeled) {  // labels present in a predict input must be ones the model knows
    has_labels = true;
    for (const auto& e : *examples) has_labels = has_labels && !e.label.empty();
    if (has_labels) check_label_sets(c.labels, LabelSet::from_examples(*examples), a.input, /*allow_subset=*/true);
  }
  int64_t truncated = 0;
  LabeledIds ids = encode_for_classifier(c.tokenizer, *examples, has_labels ? &c.labels : nullptr, c.input, a.input,
                                         opts.on_invalid, report, &truncated, kept);
  if (!aji::cli::global_options().quiet) {
    std::fprintf(stderr, "%s: %s\n", a.input.c_str(), report->summary(20).c_str());
    if (truncated) std::fprintf(stderr, "%lld inputs cut to %d tokens\n", (long long)truncated, c.input.max_len);
  }
  return ids;
}

void run_predict(const UseArgs& a) {
  LoadedClassifier c = load_classifier(a.model);
  std::vector<LabeledExample> examples;
  InputReport report;
  std::vector<size_t> kept;  // the example behind each encoded sequence (skipped ones have none)
  const LabeledIds data = read_for(c, a, /*labeled=*/false, &examples, &report, &kept);
  if (report.skipped_count() > 0 && !a.out.empty())
    std::fprintf(stderr, "note: %lld skipped rows have no prediction line; match rows by \"line\"\n",
                 (long long)report.skipped_count());
  const ClassifyEval ev = classify_evaluate(c.model, c.head, data, c.pooling, c.input.pad_id, a.batch);
  std::string out;
  const int n = c.head.n_classes;
  for (size_t k = 0; k < data.size(); ++k) {
    const LabeledExample& e = examples[kept[k]];
    nlohmann::ordered_json j;
    j["line"] = e.line;
    j["text"] = e.text;
    j["label"] = c.labels.names[size_t(ev.predictions[k])];
    j["confidence"] = ev.probabilities[k * size_t(n) + size_t(ev.predictions[k])];
    nlohmann::ordered_json probs;
    for (int cl = 0; cl < n; ++cl) probs[c.labels.names[size_t(cl)]] = ev.probabilities[k * size_t(n) + size_t(cl)];
    j["probabilities"] = probs;
    out += j.dump() + "\n";
  }
  if (a.out.empty()) {
    std::fwrite(out.data(), 1, out.size(), stdout);
  } else {
    aji::write_file_atomic(a.out, out);
    std::fprintf(stderr, "wrote %zu predictions to %s\n", data.size(), a.out.c_str());
  }
}

void run_eval(const UseArgs& a) {
  LoadedClassifier c = load_classifier(a.model);
  std::vector<LabeledExample> examples;
  InputReport report;
  const LabeledIds data = read_for(c, a, /*labeled=*/true, &examples, &report);
  if (data.size() == 0) throw aji::Error("no labeled examples left to evaluate").at(a.input);
  const ClassifyEval ev = classify_evaluate(c.model, c.head, data, c.pooling, c.input.pad_id, a.batch);
  const auto rep = aji::align::classification_report(data.labels, ev.predictions, c.head.n_classes);
  std::printf("%s", aji::align::format_report(rep, c.labels.names).c_str());
  std::printf("accuracy %.4f on %zu examples (majority baseline %.4f), mean loss %.4f\n", rep.accuracy, data.size(),
              rep.majority_baseline, ev.loss);
  if (!a.json_out.empty()) {
    auto j = aji::align::report_to_json(rep, c.labels.names);
    j["loss"] = ev.loss;
    aji::write_file_atomic(a.json_out, j.dump(2) + "\n");
  }
}

aji::cli::CommandRegistrar reg(44, [](CLI::App& app) {
  auto* group = aji::cli::classify_group(app);

  auto ta = std::make_shared<TrainArgs>();
  auto* train = group->add_subcommand("train", "Fine-tune a classifier: a class head on the last token of a pretrained model");
  train->footer(
      "The head reads the hidden state of the last non-pad token (with a causal mask only it has seen the\n"
      "whole text). --trainable picks what learns: head, last:N (the top N blocks + final norm + head;\n"
      "LLMs-from-scratch's default is last:1) or all. Give one labeled file (--data: split here into\n"
      "train/val/test, stratified and seeded, written to OUT/split/) or the splits (--train/--val/--test).\n"
      "Writes OUT/classifier/ (use it with predict/eval), metrics.jsonl, loss.svg and report.{txt,json}.\n"
      "Checkpoints (OUT/ckpt-N, every --save-every steps and at the end) let --resume continue a stopped\n"
      "run bit for bit with its own settings (Ctrl-C saves one; a kill loses the steps since the last).\n"
      "Example (SMS spam, TSV with a header 'label<TAB>text'; headerless files: --no-header --label-col 0 --text-col 1):\n"
      "  aji classify train --model out/demo/pretrain/run --data data/classify/sms_spam.tsv --out runs/spam");
  // Every check runs at parse time, before any model or data is read.
  ta->cmd = train;
  train->add_option("--model", ta->model, "Base model: an aji run dir, checkpoint dir or Hugging Face dir (new runs)");
  train->add_option("--out", ta->out, "Output directory")->required();
  train->add_option("--data", ta->data, "One labeled file to split into train/val/test");
  train->add_option("--train", ta->train, "Training split (instead of --data)");
  train->add_option("--val", ta->val, "Validation split (with --train)");
  train->add_option("--test", ta->test, "Test split (with --train)");
  train->add_flag("--balance", ta->run.balance, "Undersample the training split's classes to the smallest one");
  train->add_option("--trainable", ta->trainable, "head, last:N or all")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& v) {
            try {
              TrainableBlocks::parse(v);
            } catch (const aji::Error& e) {
              return std::string(e.what());
            }
            return std::string();
          },
          "head|last:N|all"));
  train->add_option("--pooling", ta->pooling, "last (the last non-pad token) or first (a baseline that cannot work)")
      ->capture_default_str()
      ->check(CLI::IsMember({"last", "first"}));
  // The numeric and text options: declared once in ClassifyRunOptions::for_each_option
  // (align/classify_run.h). 0 means "unset" for --steps and --max-len there; given here,
  // they must be >= 1.
  auto declared = aji::cli::add_declared_options(train, ta->run);
  for (const auto& [name, opt] : declared.options) {
    if (name == "decay") opt->check(CLI::IsMember({"constant", "linear", "cosine"}));
    if (name == "steps" || name == "max-len") {
      // The same check and words, from 1: the declared range (from 0) leaves the help line.
      ta->run.for_each_option([&, n = name, o = opt](auto&, const aji::OptionInfo& info) {
        if (info.name != n) return;
        aji::OptionInfo given = info;
        given.range.lo = 1;
        o->get_validator(0)->description("");
        o->check(aji::cli::range_check(given));
        o->default_str("");  // unset: from --epochs / the model's context
      });
    }
  }
  train->add_flag("--resume", ta->run.resume, "Continue the run in --out from its latest checkpoint, with its settings");
  train->add_flag("!--no-group-by-length", ta->run.train.group_by_length,
                  "Batch inputs in random order (default: batches of similar length, less padding)");
  train->add_flag("--keep-best", ta->run.train.keep_best,
                  "Save the weights of the evaluation with the best validation accuracy, not the last step's");
  train->add_flag("--force", ta->run.force, "Overwrite a run or classifier already in --out");
  ta->read.add_to(train);
  train->callback([ta] { run_train(*ta); });

  auto pa = std::make_shared<UseArgs>();
  auto* predict = group->add_subcommand("predict", "Label texts with a trained classifier (JSONL out: line, text, label, confidence, probabilities)");
  predict->add_option("--model", pa->model, "Classifier: the --out dir of `aji classify train`")->required();
  predict->add_option("--input", pa->input, "Texts (JSONL/CSV/TSV; a label column, if any, must use the model's labels)")
      ->required()
      ->check(CLI::ExistingFile);
  predict->add_option("--out", pa->out, "Write predictions here (default: stdout)");
  predict->add_option("--batch-size", pa->batch, "Examples per forward pass")->capture_default_str();
  pa->read.add_to(predict);
  predict->callback([pa] { run_predict(*pa); });

  auto ea = std::make_shared<UseArgs>();
  auto* ev = group->add_subcommand("eval", "Score a classifier on labeled data: accuracy, per-class P/R/F1, confusion matrix");
  ev->add_option("--model", ea->model, "Classifier: the --out dir of `aji classify train`")->required();
  ev->add_option("--data", ea->input, "Labeled file (labels must be the model's)")->required()->check(CLI::ExistingFile);
  ev->add_option("--json", ea->json_out, "Also write the report as JSON here");
  ev->add_option("--batch-size", ea->batch, "Examples per forward pass")->capture_default_str();
  ea->read.add_to(ev);
  ev->callback([ea] { run_eval(*ea); });
});

}  // namespace
