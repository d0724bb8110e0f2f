// `aji grpo`: RL with verifiable rewards (GRPO) from an SFT model (src/aji/align/grpo_run.h).
#include <cstdio>
#include <memory>

#include "aji/align/grpo_run.h"
#include "aji/base/error.h"
#include "aji/cli/command.h"
#include "aji/cli/options.h"

namespace {

aji::cli::CommandRegistrar reg(48, [](CLI::App& app) {
  // The numeric and text options are declared once, in GrpoRunOptions::for_each_option.
  auto o = std::make_shared<aji::align::GrpoRunOptions>();
  auto model = std::make_shared<std::string>(), tasks = std::make_shared<std::string>(),
       eval = std::make_shared<std::string>(), out = std::make_shared<std::string>(),
       verifier = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "grpo", "RL with verifiable rewards: sample G replies per task, reward them with a verifier, improve (GRPO)");
  cmd->footer(
      "Each step draws --prompts-per-step tasks, samples --group-size replies to each at --temperature, scores\n"
      "them with --verifier (exact, number, choice, regex:PATTERN, command:PROGRAM), and takes one AdamW step\n"
      "on the token-level GRPO loss with advantages r - mean (scaled by the group's std unless --scale-rewards\n"
      "none) plus --kl-coef x k3 to the starting model. Logs reward, pass rate, zero-variance groups, reply\n"
      "length and KL per step, pass@1 / pass@G on --eval-tasks before, every --eval-every steps and after.\n"
      "Writes checkpoints, metrics.jsonl, loss.svg and summary.json into --out.\n"
      "Example: aji grpo --model runs/sft --tasks data/rl/train.jsonl --eval-tasks data/rl/test.jsonl "
      "--verifier number --out runs/grpo --steps 100");
  cmd->add_option("--model", *model, "SFT (instruct) model: an aji run dir, checkpoint dir or Hugging Face dir");
  cmd->add_option("--tasks", *tasks, "Training tasks (JSONL: {\"messages\": [...], \"answer\": \"...\"})");
  cmd->add_option("--verifier", *verifier, "exact, number, choice, regex:PATTERN or command:PROGRAM [ARGS]");
  cmd->add_option("--eval-tasks", *eval, "Held-out tasks for pass@1 / pass@G");
  cmd->add_option("--out", *out, "Run directory")->required();
  cmd->add_flag("--resume", o->resume, "Continue the run in --out from its latest checkpoint");
  cmd->add_flag("--force", o->force, "Start over in a run directory that already holds a run");
  cmd->add_flag("--skip-invalid", o->skip_invalid, "Count and skip invalid tasks instead of stopping");
  cmd->add_flag("--mask-truncated", o->mask_truncated,
                "No loss on replies cut off at --max-new-tokens (DAPO overlong filtering)");
  auto declared = std::make_shared<aji::cli::DeclaredOptions>(aji::cli::add_declared_options(cmd, *o));
  for (const auto& [name, opt] : declared->options) {
    if (name == "scale-rewards") opt->check(CLI::IsMember({"group", "none", "batch"}));
    if (name == "loss-type") opt->check(CLI::IsMember({"dapo", "grpo", "bnpo", "dr_grpo"}));
  }
  cmd->callback([cmd, o, declared, model, tasks, eval, out, verifier] {
    o->given.clear();
    for (const std::string& name : declared->given()) o->given.push_back("--" + name);
    for (const char* flag : {"--model", "--tasks", "--eval-tasks", "--verifier", "--mask-truncated", "--skip-invalid"})
      if (cmd->count(flag) > 0) o->given.push_back(flag);
    o->model = *model;
    o->tasks_file = *tasks;
    o->eval_file = *eval;
    o->verifier = *verifier;
    o->out_dir = *out;
    o->quiet = aji::cli::global_options().quiet;
    if (!o->resume && (o->model.empty() || o->tasks_file.empty() || o->verifier.empty()))
      throw aji::Error("--model, --tasks and --verifier are required for a new run")
          .fix("e.g. aji grpo --model runs/sft --tasks tasks.jsonl --verifier number --out runs/grpo");
    const aji::align::GrpoRunResult r = aji::align::run_grpo(*o);
    if (!o->quiet && !r.interrupted) {
      std::printf("done: %lld steps | rollout reward %.3f -> %.3f", (long long)r.step, r.first_reward, r.last_reward);
      if (r.eval_before.n_tasks > 0)
        std::printf(" | eval pass@1 %.3f -> %.3f, pass@%d %.3f -> %.3f", r.eval_before.pass_at_1,
                    r.eval_after.pass_at_1, r.eval_after.samples, r.eval_before.pass_at_k, r.eval_after.pass_at_k);
      std::printf(" | checkpoint %s\n", r.checkpoint.c_str());
    }
  });
});

}  // namespace
