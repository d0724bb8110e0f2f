// `aji rm train` and `aji rm score`: reward models (src/aji/align/reward_model_run.h).
#include <cstdio>
#include <memory>

#include "aji/align/reward_model_run.h"
#include "aji/base/error.h"
#include "aji/cli/command.h"
#include "aji/cli/options.h"

namespace {

aji::cli::CommandRegistrar reg(47, [](CLI::App& app) {
  auto* rm = aji::cli::subcommand_group(app, "rm", "Reward models: train on preference pairs or rankings, score replies");

  // --- train ---
  // The numeric and text options are declared once, in RmRunOptions::for_each_option.
  auto o = std::make_shared<aji::align::RmRunOptions>();
  auto model = std::make_shared<std::string>(), out = std::make_shared<std::string>();
  auto data = std::make_shared<std::vector<std::string>>();
  CLI::App* cmd = rm->add_subcommand("train", "Train a reward model (Bradley-Terry) from an SFT model on preference data");
  cmd->footer(
      "Data: TRL's conversational pairs {\"prompt\":[...], \"chosen\":[...], \"rejected\":[...]} or K-way rankings\n"
      "{\"prompt\":[...], \"responses\":[[...],...], \"ranking\":[best, ...]} (see `aji prefs`). One prompt is one batch\n"
      "element with all its pairs; the score is read at the reply's last token. Writes OUT/rm (the reward model:\n"
      "use it with `aji rm score --model OUT` and `aji ppo --reward OUT`), metrics.jsonl, loss.svg, summary.json.\n"
      "Example: aji rm train --model runs/tiny-sft --data data/prefs.jsonl --out runs/tiny-rm --epochs 1");
  cmd->add_option("--model", *model, "SFT model: an aji run dir, checkpoint dir or Hugging Face dir");
  cmd->add_option("--data", *data, "Preference files (JSONL, .gz/.zst ok), one or more");
  cmd->add_option("--out", *out, "Run directory (the reward model goes to OUT/rm)")->required();
  cmd->add_flag("--resume", o->resume, "Continue the run in --out from its latest checkpoint");
  cmd->add_flag("--force", o->force, "Start over in a run directory that already holds a run");
  cmd->add_flag("--skip-invalid", o->skip_invalid, "Count and skip invalid records instead of stopping");
  auto declared = std::make_shared<aji::cli::DeclaredOptions>(aji::cli::add_declared_options(cmd, *o));
  for (const auto& [name, opt] : declared->options)
    if (name == "decay") opt->check(CLI::IsMember({"cosine", "linear", "constant"}));
  cmd->callback([cmd, o, declared, model, data, out] {
    o->given.clear();
    for (const std::string& name : declared->given()) o->given.push_back("--" + name);
    for (const char* flag : {"--model", "--data", "--skip-invalid"})
      if (cmd->count(flag) > 0) o->given.push_back(flag);
    o->model = *model;
    o->data.assign(data->begin(), data->end());
    o->out_dir = *out;
    o->quiet = aji::cli::global_options().quiet;
    if (!o->resume && (o->model.empty() || o->data.empty()))
      throw aji::Error("--model and --data are required for a new run")
          .fix("e.g. aji rm train --model runs/tiny-sft --data data/prefs.jsonl --out runs/tiny-rm");
    const aji::align::RmRunResult r = aji::align::run_rm_train(*o);
    if (!o->quiet && !r.interrupted)
      std::printf("done: %lld steps | loss %.4f -> %.4f | held-out pairwise accuracy %.4f -> %.4f | %s\n",
                  (long long)r.steps, r.first_loss, r.step_losses.empty() ? NAN : double(r.step_losses.back()),
                  r.val_before.accuracy, r.val_after.accuracy, r.rm_dir.c_str());
  });

  // --- score ---
  auto so = std::make_shared<aji::align::RmScoreOptions>();
  auto smodel = std::make_shared<std::string>(), input = std::make_shared<std::string>();
  CLI::App* sc = rm->add_subcommand("score", "Score conversations with a reward model (one JSON line per input line)");
  sc->footer(
      "Input: JSONL {\"messages\":[...]} ending with the assistant's reply, rendered with the chat template the\n"
      "reward model was trained with. Prints {\"line\": N, \"score\": S} per line; S is shifted so that the chosen\n"
      "replies of the training data score 0 on average.\n"
      "Example: aji rm score --model runs/tiny-rm --input replies.jsonl");
  sc->add_option("--model", *smodel, "Reward model: the --out of `aji rm train` or its rm/ directory")->required();
  sc->add_option("--input", *input, "Conversations to score (JSONL)")->required();
  sc->add_option("--batch-size", so->batch, "Conversations per forward pass")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  sc->add_flag("--skip-invalid", so->skip_invalid, "Count and skip invalid or too long lines instead of stopping");
  sc->callback([so, smodel, input] {
    so->model = *smodel;
    so->input = *input;
    aji::align::run_rm_score(*so, stdout);
  });
});

}  // namespace
