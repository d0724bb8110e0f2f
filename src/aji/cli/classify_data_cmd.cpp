// `aji classify split | metrics`: preparing labeled data and scoring predictions
// (`aji classify train | predict | eval` are in classify_cmd.cpp).
#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "aji/align/classify_data.h"
#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/cli/classify_args.h"
#include "aji/cli/command.h"
#include "aji/align/classification_metrics.h"

namespace {

using namespace aji::align;

struct SplitArgs {
  aji::cli::ReadArgs read;
  std::string input, out_dir;
  double val = 0.1, test = 0.2;
  uint64_t seed = 1234;
  bool balance = false;
};

struct MetricsArgs {
  aji::cli::ReadArgs read;
  std::string gold, pred, labels_file, json_out;
};

void print_split(const char* name, const std::vector<int64_t>& idx, const std::vector<int>& ids, const LabelSet& set) {
  std::vector<int64_t> per(set.size(), 0);
  for (int64_t i : idx) ++per[ids[i]];
  std::fprintf(stderr, "  %-5s %6zu:", name, idx.size());
  for (size_t c = 0; c < set.size(); ++c) std::fprintf(stderr, "  %s %lld", set.names[c].c_str(), (long long)per[c]);
  std::fprintf(stderr, "\n");
}

void run_split(const SplitArgs& a) {
  InputReport rep;
  auto examples = read_labeled(a.input, a.read.options(), &rep);
  std::fprintf(stderr, "%s: %s\n", a.input.c_str(), rep.summary(20).c_str());
  if (examples.empty()) throw aji::Error("no labeled examples in the input").at(a.input);
  LabelSet labels = LabelSet::from_examples(examples);
  if (labels.size() < 2)
    throw aji::Error("the data has only one label ('" + labels.joined() + "'); classification needs two or more")
        .at(a.input)
        .fix("check --label-col");
  auto ids = encode_labels(examples, labels, a.input, OnInvalid::kError, nullptr);
  std::vector<int> use_ids = ids;
  if (a.balance) {
    auto keep = balance_classes(ids, static_cast<int>(labels.size()), a.seed);
    std::vector<char> in(ids.size(), 0);
    for (int64_t i : keep) in[i] = 1;
    for (size_t i = 0; i < ids.size(); ++i)
      if (!in[i]) use_ids[i] = -1;  // left out of every split
    std::fprintf(stderr, "balanced: kept %zu of %zu (every class cut to the smallest)\n", keep.size(), ids.size());
  }
  auto split = stratified_split(use_ids, static_cast<int>(labels.size()), a.val, a.test, a.seed);
  std::filesystem::create_directories(a.out_dir);
  const std::filesystem::path dir(a.out_dir);
  write_labeled_jsonl(dir / "train.jsonl", examples, split.train);
  write_labeled_jsonl(dir / "val.jsonl", examples, split.val);
  write_labeled_jsonl(dir / "test.jsonl", examples, split.test);
  labels.save(dir / "labels.json");
  std::fprintf(stderr, "wrote %s/{train,val,test}.jsonl and labels.json (labels: %s)\n", a.out_dir.c_str(),
               labels.joined().c_str());
  print_split("train", split.train, ids, labels);
  print_split("val", split.val, ids, labels);
  print_split("test", split.test, ids, labels);
}

void run_metrics(const MetricsArgs& a) {
  auto opts = a.read.options();
  InputReport gold_rep, pred_rep;
  auto gold = read_labeled(a.gold, opts, &gold_rep);
  auto pred = read_labeled(a.pred, opts, &pred_rep);
  if (gold_rep.skipped_count() || pred_rep.skipped_count())
    throw aji::Error("rows were skipped, so gold and predictions can no longer be lined up row by row")
        .fix("fix the rows listed with --skip-invalid, then score without it");
  if (gold.size() != pred.size())
    throw aji::Error("the gold file has " + std::to_string(gold.size()) + " examples but the predictions file has " +
                     std::to_string(pred.size()))
        .at(a.pred)
        .fix("predictions must be in the same order as the gold file, one per example");
  LabelSet labels = a.labels_file.empty() ? LabelSet::from_examples(gold) : LabelSet::load(a.labels_file);
  auto g = encode_labels(gold, labels, a.gold, OnInvalid::kError, nullptr);
  auto p = encode_labels(pred, labels, a.pred, OnInvalid::kError, nullptr);
  auto report = aji::align::classification_report(g, p, static_cast<int>(labels.size()));
  std::printf("%s", aji::align::format_report(report, labels.names).c_str());
  if (!a.json_out.empty()) aji::write_file_atomic(a.json_out, aji::align::report_to_json(report, labels.names).dump(2) + "\n");
}

aji::cli::CommandRegistrar reg(45, [](CLI::App& app) {
  auto* group = aji::cli::classify_group(app);

  auto sa = std::make_shared<SplitArgs>();
  auto* split = group->add_subcommand(
      "split",
      "Read labeled text (JSONL {text,label}, CSV or TSV), build the label set and write a stratified, seeded\n"
      "train/val/test split as JSONL plus labels.json. Example (NSMC ratings to sentiment):\n"
      "  aji classify split --input nsmc.tsv --text-col review --label-col rating \\\n"
      "     --label-map 1=neg,2=neg,3=neg,4=neg,9=pos,10=pos --skip-unmapped --out-dir runs/nsmc");
  split->add_option("--input", sa->input, "Labeled file (.jsonl, .csv, .tsv; .gz/.zst ok)")->required();
  split->add_option("--out-dir", sa->out_dir, "Directory for train.jsonl, val.jsonl, test.jsonl, labels.json")->required();
  split->add_option("--val", sa->val, "Validation share per class")->check(CLI::Range(0.0, 0.9));
  split->add_option("--test", sa->test, "Test share per class")->check(CLI::Range(0.0, 0.9));
  split->add_option("--seed", sa->seed, "Random seed of the split");
  split->add_flag("--balance", sa->balance, "Undersample every class to the smallest one first (LLMs-from-scratch ch06)");
  sa->read.add_to(split);
  split->callback([sa] { run_split(*sa); });

  auto ma = std::make_shared<MetricsArgs>();
  auto* metrics = group->add_subcommand(
      "metrics",
      "Score predictions against gold labels: accuracy, per-class precision/recall/F1, macro/weighted averages,\n"
      "majority baseline and confusion matrix (scikit-learn's definitions). Rows are matched by order.");
  metrics->add_option("--gold", ma->gold, "Labeled file with the true labels")->required()->check(CLI::ExistingFile);
  metrics->add_option("--pred", ma->pred, "File with predicted labels, same order and columns")
      ->required()
      ->check(CLI::ExistingFile);
  metrics->add_option("--labels", ma->labels_file, "labels.json of the model (default: the gold file's labels)");
  metrics->add_option("--json", ma->json_out, "Also write the report as JSON here");
  ma->read.add_to(metrics);
  metrics->callback([ma] { run_metrics(*ma); });
});

}  // namespace
