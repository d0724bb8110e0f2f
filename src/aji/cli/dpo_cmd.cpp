// `aji dpo`: Direct Preference Optimization of an SFT model on preference pairs
// (src/aji/align/dpo_run.h).
#include <cstdio>
#include <memory>

#include "aji/align/dpo_run.h"
#include "aji/base/error.h"
#include "aji/cli/command.h"
#include "aji/cli/options.h"

namespace {

aji::cli::CommandRegistrar reg(48, [](CLI::App& app) {
  // The numeric options are declared once, in DpoRunOptions::for_each_option (align/dpo_run.h).
  auto o = std::make_shared<aji::align::DpoRunOptions>();
  auto model = std::make_shared<std::string>(), val = std::make_shared<std::string>(),
       out = std::make_shared<std::string>();
  auto data = std::make_shared<std::vector<std::string>>();
  CLI::App* cmd = app.add_subcommand("dpo", "Direct Preference Optimization: improve an SFT model from preference pairs");
  cmd->footer(
      "Loss -log sigmoid(beta * [(log pi(chosen) - log ref(chosen)) - (log pi(rejected) - log ref(rejected))]),\n"
      "log pi summed over the reply tokens; the reference is the --model itself, frozen (its log-probs are\n"
      "computed once before training). --nll-weight adds the NLL of the chosen reply (RPO), which keeps the\n"
      "policy on the data when beta is small. Preference files: TRL pairs {\"prompt\",\"chosen\",\"rejected\"} or\n"
      "K-way rankings {\"prompt\",\"responses\",\"ranking\"}, rendered with the model's chat template; pairs longer\n"
      "than the context are skipped (counted). Metrics: loss, implicit-reward accuracy and margin, chosen and\n"
      "rejected log-ratios, and the KL to the reference on sampled replies (metrics.jsonl, loss.svg, summary.json).\n"
      "Example: aji dpo --model runs/tiny-sft --data data/prefs/hh_rlhf_sample.jsonl --out runs/tiny-dpo --beta 0.1");
  cmd->add_option("--model", *model, "The SFT model (policy start and frozen reference): run, checkpoint or HF dir");
  cmd->add_option("--data", *data, "Preference JSONL file(s) (.gz/.zst ok)");
  cmd->add_option("--val", *val, "Held-out preference file (default: --val-fraction of the --data records)");
  cmd->add_option("--out", *out, "Run directory")->required();
  cmd->add_flag("--resume", o->resume, "Continue the run in --out from its latest checkpoint");
  cmd->add_flag("--force", o->force, "Start over in a run directory that already holds a run");
  cmd->add_flag("--skip-invalid", o->skip_invalid, "Count and skip invalid records instead of stopping");
  auto declared = std::make_shared<aji::cli::DeclaredOptions>(aji::cli::add_declared_options(cmd, *o));
  for (const auto& [name, opt] : declared->options)
    if (name == "decay") opt->check(CLI::IsMember({"cosine", "linear", "constant"}));
  cmd->callback([cmd, o, declared, model, data, val, out] {
    o->given.clear();
    for (const std::string& name : declared->given()) o->given.push_back("--" + name);
    for (const char* flag : {"--model", "--data", "--val", "--skip-invalid"})
      if (cmd->count(flag) > 0) o->given.push_back(flag);
    o->model = *model;
    o->data_files.assign(data->begin(), data->end());
    o->val_file = *val;
    o->out_dir = *out;
    o->quiet = aji::cli::global_options().quiet;
    if (!o->resume && (o->model.empty() || o->data_files.empty()))
      throw aji::Error("--model and --data are required for a new run")
          .fix("e.g. aji dpo --model runs/tiny-sft --data prefs.jsonl --out runs/tiny-dpo");
    auto r = aji::align::run_dpo(*o);
    if (!o->quiet && !r.interrupted)
      std::printf("done: %lld steps | loss %.4f -> %.4f | held-out accuracy %.3f -> %.3f | margin %.3f | KL %.3f | "
                  "checkpoint %s\n",
                  (long long)r.step, r.first_loss, r.last_loss, r.first_val_accuracy, r.last_val_accuracy,
                  r.last_val_margin, r.last_kl, r.checkpoint.c_str());
  });
});

}  // namespace
