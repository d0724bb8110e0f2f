// `aji pretrain`: train a model by next-token prediction (src/aji/train/pretrain.h).
// The numeric and text options are declared once, in PretrainOptions::for_each_option.
#include <cmath>
#include <cstdio>
#include <memory>

#include "aji/base/error.h"
#include "aji/cli/command.h"
#include "aji/cli/options.h"
#include "aji/train/pretrain.h"

namespace {

aji::cli::CommandRegistrar reg(30, [](CLI::App& app) {
  auto o = std::make_shared<aji::train::PretrainOptions>();
  auto config = std::make_shared<std::string>(), data = std::make_shared<std::string>(),
       out = std::make_shared<std::string>(), init = std::make_shared<std::string>(),
       resume_from = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "pretrain", "Train a base model by next-token prediction on token shards (from `aji data tokenize`)");
  cmd->footer(
      "Prints one line per step, evaluates and samples every N steps, writes checkpoints, metrics.jsonl\n"
      "and loss.svg into the run directory. Ctrl-C or SIGTERM saves a checkpoint; --resume continues bit\n"
      "for bit (with the same --threads) and keeps the run's settings: intervals (--save-every, --eval-every,\n"
      "--sample-every, --keep...) and the length (--steps, --tokens, --time-budget) may be changed, the\n"
      "settings that decide the next step (--batch-size, --lr, --seed...) may not.\n"
      "Example: aji pretrain --config tiny --data data/shards --out runs/tiny --steps 2000");
  cmd->add_option("--config", *config, "Model config: a JSON file or a preset (tiny, tiny-gpt2, gpt2-124m, llama-small)");
  cmd->add_option("--data", *data, "Data directory written by `aji data tokenize` (on --resume: the run's own)");
  cmd->add_option("--out", *out, "Run directory")->required();
  cmd->add_option("--init", *init,
                  "Continue pretraining from this model (a run, checkpoint or Hugging Face dir): its weights and "
                  "config, a new optimizer and schedule");
  cmd->add_flag("--resume", o->resume, "Continue the run in --out from its latest checkpoint");
  cmd->add_option("--resume-from", *resume_from,
                  "Continue the run in --out from this checkpoint (ckpt-N); later checkpoints are removed");
  cmd->add_flag("--force", o->force, "Start over in a run directory that already holds a run");
  auto declared = std::make_shared<aji::cli::DeclaredOptions>(aji::cli::add_declared_options(cmd, *o));
  cmd->callback([o, config, data, out, init, resume_from, declared] {
    o->config = *config;
    o->data_dir = *data;
    o->out_dir = *out;
    o->init = *init;
    o->resume_from = *resume_from;
    o->given = declared->given();
    o->quiet = aji::cli::global_options().quiet;
    const bool resume = o->resume || !o->resume_from.empty();
    if (!resume && o->config.empty() && o->init.empty())
      throw aji::Error("--config is required for a new run")
          .fix("e.g. --config tiny (or configs/tiny.json), or --init MODEL_DIR to continue pretraining a model");
    if (!resume && o->data_dir.empty())
      throw aji::Error("--data is required for a new run").fix("point it at the output of `aji data tokenize`");
    auto r = aji::train::pretrain(*o);
    if (!o->quiet && !r.interrupted) {
      if (std::isfinite(r.last_val_loss))
        std::printf("done: %lld steps; final val loss %.4f; checkpoint %s\n", (long long)r.step, r.last_val_loss,
                    r.checkpoint.c_str());
      else
        std::printf("done: %lld steps; no validation data (see the warning above); checkpoint %s\n",
                    (long long)r.step, r.checkpoint.c_str());
    }
  });
});

}  // namespace
