// `aji sft train`: supervised fine-tuning of a pretrained model on conversations
// (src/aji/align/sft_run.h).
#include <cstdio>
#include <memory>

#include "aji/align/sft_run.h"
#include "aji/base/error.h"
#include "aji/cli/command.h"
#include "aji/cli/options.h"

namespace {

aji::cli::CommandRegistrar reg(41, [](CLI::App& app) {
  auto* sft = aji::cli::subcommand_group(app, "sft", "Supervised fine-tuning: convert, check and mix chat sets; train an instruct model");
  // The numeric and text options are declared once, in SftRunOptions::for_each_option
  // (align/sft_run.h): their help, defaults and ranges, checked at parse time before any
  // data is read, and the run's saved settings for --resume.
  auto o = std::make_shared<aji::align::SftRunOptions>();
  auto model = std::make_shared<std::string>(), data = std::make_shared<std::string>(),
       val = std::make_shared<std::string>(), out = std::make_shared<std::string>();
  auto all_tokens = std::make_shared<bool>(false);
  CLI::App* cmd = sft->add_subcommand("train", "Fine-tune a pretrained model on chat conversations (loss on the assistant's turns)");
  cmd->footer(
      "Renders every conversation with the ChatML template of the model's tokenizer; the loss covers the\n"
      "assistant's replies and their <|im_end|> only (--all-tokens: everything). One conversation per row,\n"
      "right-padded per batch (or --batching pack); conversations longer than --seq-len are truncated (counted).\n"
      "Writes checkpoints (the same format as `aji pretrain`), metrics.jsonl and loss.svg into --out.\n"
      "Example: aji sft train --model runs/tiny --data data/sft/train.jsonl --val data/sft/val.jsonl --out runs/tiny-sft --epochs 2");
  cmd->add_option("--model", *model, "Base model: an aji run dir, checkpoint dir or Hugging Face dir");
  cmd->add_option("--data", *data, "Training conversations (JSONL: {\"messages\": [...]}, .gz/.zst ok)");
  cmd->add_option("--val", *val, "Validation conversations (default: --val-fraction of --data)");
  cmd->add_option("--out", *out, "Run directory")->required();
  cmd->add_flag("--resume", o->resume, "Continue the run in --out from its latest checkpoint");
  cmd->add_flag("--force", o->force, "Start over in a run directory that already holds a run");
  cmd->add_flag("--skip-invalid", o->skip_invalid, "Count and skip invalid conversations instead of stopping");
  cmd->add_flag("--all-tokens", *all_tokens, "Train on every token, not only the assistant's");
  auto declared = std::make_shared<aji::cli::DeclaredOptions>(aji::cli::add_declared_options(cmd, *o));
  for (const auto& [name, opt] : declared->options)
    if (name == "decay") opt->check(CLI::IsMember({"cosine", "linear", "constant"}));
  auto batching = std::make_shared<std::string>("pad");
  cmd->add_option("--batching", *batching,
                  "pad: one conversation per row, padded; pack: rows of --seq-len filled with whole conversations "
                  "that attend only within themselves (--batch-size counts rows)")
      ->check(CLI::IsMember({"pad", "pack"}))
      ->capture_default_str();
  cmd->callback([cmd, o, declared, model, data, val, out, all_tokens, batching] {
    o->given.clear();
    for (const std::string& name : declared->given()) o->given.push_back("--" + name);
    for (const char* flag : {"--model", "--data", "--val", "--all-tokens", "--skip-invalid", "--batching"})
      if (cmd->count(flag) > 0) o->given.push_back(flag);
    o->train.layout = *batching == "pack" ? aji::align::BatchLayout::kPack : aji::align::BatchLayout::kPad;
    o->model = *model;
    o->train_file = *data;
    o->val_file = *val;
    o->out_dir = *out;
    o->loss_on = *all_tokens ? aji::align::LossOn::kAll : aji::align::LossOn::kAssistant;
    o->quiet = aji::cli::global_options().quiet;
    if (!o->resume && (o->model.empty() || o->train_file.empty()))
      throw aji::Error("--model and --data are required for a new run")
          .fix("e.g. aji sft train --model runs/tiny --data data/sft/train.jsonl --out runs/tiny-sft");
    auto r = aji::align::run_sft(*o);
    if (!o->quiet && !r.interrupted)
      std::printf("done: %lld steps | train loss %.4f -> %.4f | val loss %.4f -> %.4f | checkpoint %s\n",
                  (long long)r.step, r.first_loss, r.last_loss, r.first_val_loss, r.last_val_loss,
                  r.checkpoint.c_str());
  });
});

}  // namespace
