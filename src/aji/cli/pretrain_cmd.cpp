// `aji pretrain`: train a model by next-token prediction (src/aji/train/pretrain.h).
#include <cstdio>
#include <memory>

#include "aji/base/error.h"
#include "aji/cli/command.h"
#include "aji/train/pretrain.h"

namespace {

aji::cli::CommandRegistrar reg(30, [](CLI::App& app) {
  auto o = std::make_shared<aji::train::PretrainOptions>();
  auto config = std::make_shared<std::string>(), data = std::make_shared<std::string>(),
       out = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "pretrain", "Train a base model by next-token prediction on token shards (from `aji data tokenize`)");
  cmd->footer(
      "Prints one line per step, evaluates and samples every N steps, writes checkpoints, metrics.jsonl\n"
      "and loss.svg into the run directory. Ctrl-C saves a checkpoint; --resume continues bit for bit\n"
      "(with the same --threads).\n"
      "Example: aji pretrain --config tiny --data data/shards --out runs/tiny --steps 2000");
  cmd->add_option("--config", *config, "Model config: a JSON file or a preset (tiny, tiny-gpt2, gpt2-124m, llama-small)");
  cmd->add_option("--data", *data, "Data directory written by `aji data tokenize` (on --resume: the run's own)");
  cmd->add_option("--out", *out, "Run directory")->required();
  cmd->add_option("--steps", o->steps, "Optimizer steps to train");
  cmd->add_option("--tokens", o->tokens, "Or: tokens to train on (steps = tokens / total batch)");
  auto minutes = std::make_shared<double>(0.0);
  cmd->add_option("--time-budget", *minutes,
                  "Or: train for about this many minutes (steps set from the speed of the first steps)");
  cmd->add_flag("--resume", o->resume, "Continue the run in --out from its latest checkpoint");
  cmd->add_flag("--force", o->force, "Start over in a run directory that already holds a run");
  cmd->add_option("--batch-size", o->batch, "Sequences per micro-batch (B)")->capture_default_str();
  cmd->add_option("--seq-len", o->seq_len, "Tokens per sequence (T); default: the model's context");
  cmd->add_option("--total-batch-tokens", o->total_batch_tokens,
                  "Tokens per optimizer step; a multiple of B*T (gradient accumulation). Default: B*T");
  cmd->add_option("--lr", o->lr, "Peak learning rate")->capture_default_str();
  cmd->add_option("--min-lr-frac", o->min_lr_frac, "Final learning rate as a fraction of the peak")->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "Warmup steps (default: 5% of the steps, at most 200)");
  cmd->add_option("--decay", o->decay, "Learning-rate decay after warmup: cosine, linear or constant")
      ->capture_default_str();
  cmd->add_option("--weight-decay", o->weight_decay, "AdamW weight decay (matrices only)")->capture_default_str();
  cmd->add_option("--beta1", o->beta1, "AdamW beta1")->capture_default_str();
  cmd->add_option("--beta2", o->beta2, "AdamW beta2")->capture_default_str();
  cmd->add_option("--grad-clip", o->grad_clip, "Global gradient-norm clip (0 = off)")->capture_default_str();
  cmd->add_option("--eval-every", o->eval_every, "Validation loss and bits per byte every N steps (0 = at the end)")
      ->capture_default_str();
  cmd->add_option("--eval-batches", o->eval_batches, "Validation batches per evaluation")->capture_default_str();
  cmd->add_option("--sample-every", o->sample_every, "Print a generated sample every N steps (0 = never)")
      ->capture_default_str();
  cmd->add_option("--sample-tokens", o->sample_tokens, "Tokens per sample")->capture_default_str();
  cmd->add_option("--sample-prompt", o->sample_prompt, "Text the samples start with (after <|endoftext|>)");
  cmd->add_option("--save-every", o->save_every, "Checkpoint every N steps (0 = only at the end)")->capture_default_str();
  cmd->add_option("--keep", o->keep, "Keep the last K checkpoints (0 = all)")->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed of the initial weights and the data order")->capture_default_str();
  cmd->add_option("--peak-gflops", o->peak_gflops_per_core, "fp32 peak GFLOP/s of one core, for the MFU figure (default: measured at start)");
  cmd->add_option("--stop-after", o->stop_after, "End this session after N steps with a checkpoint (resume later)");
  cmd->callback([o, config, data, out, minutes] {
    o->time_budget_s = *minutes * 60.0;
    o->config = *config;
    o->data_dir = *data;
    o->out_dir = *out;
    o->quiet = aji::cli::global_options().quiet;
    if (!o->resume && o->config.empty())
      throw aji::Error("--config is required for a new run").fix("e.g. --config tiny (or configs/tiny.json)");
    if (!o->resume && o->data_dir.empty())
      throw aji::Error("--data is required for a new run").fix("point it at the output of `aji data tokenize`");
    auto r = aji::train::pretrain(*o);
    if (!o->quiet && !r.interrupted)
      std::printf("done: %lld steps; final val loss %.4f; checkpoint %s\n", (long long)r.step, r.last_val_loss,
                  r.checkpoint.c_str());
  });
});

}  // namespace
