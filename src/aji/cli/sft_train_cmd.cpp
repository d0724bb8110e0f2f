// `aji sft train`: supervised fine-tuning of a pretrained model on conversations
// (src/aji/align/sft_run.h).
#include <cstdio>
#include <memory>

#include "aji/align/sft_run.h"
#include "aji/base/error.h"
#include "aji/cli/command.h"

namespace {

aji::cli::CommandRegistrar reg(41, [](CLI::App& app) {
  auto* sft = aji::cli::subcommand_group(app, "sft", "Supervised fine-tuning: convert, check and mix chat sets; train an instruct model");
  // Every option is declared (with its range check) here, in one place; the checks run at
  // parse time, before any data is read.
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
  cmd->add_option("--val-fraction", o->val_fraction, "Share of --data held out when --val is not given")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.9));
  cmd->add_option("--out", *out, "Run directory")->required();
  cmd->add_flag("--resume", o->resume, "Continue the run in --out from its latest checkpoint");
  cmd->add_flag("--force", o->force, "Start over in a run directory that already holds a run");
  cmd->add_flag("--skip-invalid", o->skip_invalid, "Count and skip invalid conversations instead of stopping");
  cmd->add_flag("--all-tokens", *all_tokens, "Train on every token, not only the assistant's");
  cmd->add_option("--steps", o->train.steps, "Optimizer steps (default: from --epochs)")->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  cmd->add_option("--epochs", o->train.epochs, "Passes over the training conversations")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--batch-size", o->train.batch, "Rows per micro-batch (one conversation each, unless --batching pack)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--grad-accum", o->train.grad_accum, "Micro-batches per optimizer step")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  auto batching = std::make_shared<std::string>("pad");
  cmd->add_option("--batching", *batching,
                  "pad: one conversation per row, padded; pack: rows of --seq-len filled with whole conversations "
                  "that attend only within themselves (--batch-size counts rows)")
      ->check(CLI::IsMember({"pad", "pack"}))
      ->capture_default_str();
  cmd->add_option("--seq-len", o->train.seq_len, "Tokens per row (default: the model's context)")->check(CLI::Range(2, 1 << 24));
  cmd->add_option("--lr", o->train.lr, "Peak learning rate")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--min-lr-frac", o->train.min_lr_frac, "Final learning rate as a fraction of the peak")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--warmup", o->train.warmup, "Warmup steps")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--decay", o->train.decay, "cosine, linear or constant")
      ->capture_default_str()
      ->check(CLI::IsMember({"cosine", "linear", "constant"}));
  cmd->add_option("--weight-decay", o->train.weight_decay, "AdamW weight decay (matrices only)")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--grad-clip", o->train.grad_clip, "Global gradient-norm clip (0 = off)")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--eval-every", o->train.eval_every, "Validation loss every N steps (0 = at the end)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--save-every", o->save_every, "Checkpoint every N steps (0 = only at the end)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--keep", o->keep, "Keep the last K checkpoints (0 = all)")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", o->train.seed, "Seed of the data order and the validation split")->capture_default_str();
  cmd->add_option("--stop-after", o->stop_after, "End this session after N steps with a checkpoint (resume later)")
      ->check(CLI::NonNegativeNumber);
  cmd->callback([cmd, o, model, data, val, out, all_tokens, batching] {
    o->given.clear();
    for (const std::string& flag : aji::align::sft_setting_flags())
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
