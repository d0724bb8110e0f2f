// `aji eval run|compare|tasks` (docs/eval.md): few-shot evaluation on the bundled tasks
// (data/eval) or task files, as lm-evaluation-harness scores them; runs side by side.
// Other `aji eval ...` commands (memorize) add themselves to the same group.
#include <cstdio>
#include <filesystem>
#include <optional>

#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/cli/command.h"
#include "aji/cli/model_loader.h"
#include "aji/eval/harness.h"
#include "aji/eval/report.h"
#include "aji/eval/tasks.h"
#include "aji/train/checkpoint.h"

namespace {

namespace fs = std::filesystem;

struct RunArgs {
  std::string model;
  std::string tokenizer;
  std::vector<std::string> tasks;
  std::vector<int> shots{0};
  int64_t limit = -1;
  std::string out;
  std::string data_dir;
  bool chat = false;
  bool no_bos = false;
  int batch = 8;
  int64_t batch_tokens = 16384;
  bool prefix_cache = true;
  int max_gen_tokens = 256;
  uint64_t seed = 1234;
  std::string device = "cpu";
};

void write_atomic(const fs::path& p, const std::string& s) {
  aji::AtomicFileWriter w(p);
  w.write(s);
  w.commit();
}

std::vector<aji::eval::Task> load_tasks(const RunArgs& a) {
  const fs::path data_dir = a.data_dir.empty() ? aji::eval::default_eval_data_dir() : fs::path(a.data_dir);
  // Load and validate every task before the model (a bad task fails fast).
  std::vector<aji::eval::Task> tasks;
  for (const auto& t : a.tasks) tasks.push_back(aji::eval::load_task(t, data_dir));
  for (int k : a.shots)
    if (k < 0) throw aji::Error("--shots must be >= 0").fix("give e.g. --shots 0 5");
  return tasks;
}

// Evaluates the model at `model_path` on every task and shot count; with `out`, writes
// results.json and report.md there. Prints the table unless `print_table` is false.
std::vector<aji::eval::TaskResult> eval_model(const RunArgs& a, const std::vector<aji::eval::Task>& tasks,
                                              const std::string& model_path, const std::string& out,
                                              bool print_table) {
  // The model, its tokenizer and the BOS / end-of-text rule of `aji generate` (cli/model_loader.h).
  aji::cli::ModelArgs margs{model_path, a.tokenizer, a.no_bos};
  margs.device = a.device;
  aji::cli::LoadedModel loaded = aji::cli::load_model_for_inference(margs);
  aji::model::Model& model = loaded.model;
  const aji::tokenizer::Tokenizer& tok = loaded.tok;

  aji::eval::EvalOptions o;
  o.limit = a.limit;
  o.chat = a.chat;
  o.batch = a.batch;
  o.batch_tokens = a.batch_tokens;
  o.prefix_cache = a.prefix_cache;
  o.max_gen_tokens = a.max_gen_tokens;
  o.seed = a.seed;
  // --no-bos (lm-eval's hf default for GPT-2): an empty context then starts with <|endoftext|>.
  if (const auto eot = tok.special_id("<|endoftext|>")) o.eot = static_cast<int32_t>(*eot);
  o.bos = loaded.bos;
  o.stop_tokens = loaded.stop_tokens;
  if (auto im_end = tok.special_id("<|im_end|>")) o.stop_tokens.push_back(static_cast<int32_t>(*im_end));

  const bool quiet = aji::cli::global_options().quiet;
  std::vector<aji::eval::TaskResult> results;
  for (const auto& t : tasks)
    for (int k : a.shots) {
      o.shots = k;
      if (!quiet) std::fprintf(stderr, "%s, %d-shot%s ...\n", t.spec.name.c_str(), k, a.chat ? ", chat" : "");
      results.push_back(aji::eval::evaluate_task(model, tok, t, o));
      const auto& r = results.back();
      if (!quiet) {
        std::fprintf(stderr, "  %lld items in %.2f s (%.1f items/s)", static_cast<long long>(r.n), r.seconds,
                     r.items_per_s());
        if (r.too_long) std::fprintf(stderr, "; %lld items longer than the context left out", (long long)r.too_long);
        std::fprintf(stderr, "\n");
      }
    }
  if (print_table) {
    std::fputs(aji::eval::results_table(results).c_str(), stdout);
    for (const auto& r : results)
      if (r.too_long)
        std::printf("%s %d-shot: %lld items longer than the model's context (%d tokens) were left out, not truncated\n",
                    r.task.c_str(), r.shots, static_cast<long long>(r.too_long), model.config().max_seq_len);
  }
  if (!out.empty()) {
    fs::create_directories(out);
    write_atomic(fs::path(out) / "results.json", aji::eval::results_json(model_path, results, true).dump(1) + "\n");
    write_atomic(fs::path(out) / "report.md", aji::eval::results_markdown(model_path, results));
    if (!quiet) std::fprintf(stderr, "wrote %s/results.json and report.md\n", out.c_str());
  }
  return results;
}

void run_eval(const RunArgs& a) { eval_model(a, load_tasks(a), a.model, a.out, true); }

struct CompareArgs {
  std::vector<std::string> runs;
  std::string out;
  std::string steps;  // a training run dir: evaluate each ckpt-N, score against step
  RunArgs eval;       // how each checkpoint is evaluated (--tasks, --shots, --limit, ...)
  bool reuse = false;
};

// Score against training step: every checkpoint of the run (ckpt-N, ascending) evaluated
// into OUT/ckpt-N/results.json (or, with --reuse, read back from there when present), then
// OUT/steps.md (one row per step) and OUT/steps.svg (one line per task).
void run_steps(const CompareArgs& a) {
  if (a.out.empty()) throw aji::Error("eval compare --steps needs --out DIR").fix("add --out DIR for the results");
  const auto ckpts = aji::train::list_checkpoints(a.steps);
  if (ckpts.empty())
    throw aji::Error("no checkpoints (ckpt-N directories) in " + a.steps)
        .fix("give the run directory of `aji pretrain --out RUN_DIR` (or sft/dpo/...) that holds ckpt-N");
  const bool quiet = aji::cli::global_options().quiet;
  std::vector<aji::eval::Task> tasks;
  if (!a.reuse || !a.eval.tasks.empty()) {
    if (a.eval.tasks.empty()) throw aji::Error("eval compare --steps needs --tasks").fix("give e.g. --tasks arc_easy piqa");
    tasks = load_tasks(a.eval);
  }
  std::vector<aji::eval::StepSummary> steps;
  for (const auto& [step, dir] : ckpts) {
    const fs::path out = fs::path(a.out) / dir.filename();
    if (!(a.reuse && fs::exists(out / "results.json"))) {
      if (tasks.empty()) throw aji::Error("no results in " + out.string() + " to reuse").fix("give --tasks to evaluate it");
      if (!quiet) std::fprintf(stderr, "step %lld: %s\n", static_cast<long long>(step), dir.string().c_str());
      eval_model(a.eval, tasks, dir.string(), out.string(), false);
    }
    steps.push_back({step, aji::eval::load_run_summary(out.string())});
  }
  const std::string md = aji::eval::steps_markdown(steps);
  std::fputs(md.c_str(), stdout);
  write_atomic(fs::path(a.out) / "steps.md", "## Evaluation against training step\n\nRun: `" + a.steps + "`\n\n" + md +
                                                 "\n![score against step](steps.svg)\n");
  write_atomic(fs::path(a.out) / "steps.svg", aji::eval::steps_svg(steps));
  if (!quiet) std::fprintf(stderr, "wrote %s/steps.md and steps.svg\n", a.out.c_str());
}

void run_compare(const CompareArgs& a) {
  if (!a.steps.empty()) {
    if (!a.runs.empty()) throw aji::Error("eval compare: give either eval runs or --steps RUN_DIR, not both");
    run_steps(a);
    return;
  }
  if (a.runs.empty())
    throw aji::Error("eval compare: nothing to compare").fix("give --out directories of `aji eval run`, or --steps RUN_DIR");
  std::vector<aji::eval::RunSummary> runs;
  for (const auto& r : a.runs) runs.push_back(aji::eval::load_run_summary(r));
  const std::string md = aji::eval::compare_markdown(runs);
  std::fputs(md.c_str(), stdout);
  if (!a.out.empty()) {
    fs::create_directories(a.out);
    write_atomic(fs::path(a.out) / "compare.md", "## Evaluation: models side by side\n\n" + md +
                                                     "\n![scores per task](compare.svg)\n");
    write_atomic(fs::path(a.out) / "compare.svg", aji::eval::compare_svg(runs));
    if (!aji::cli::global_options().quiet)
      std::fprintf(stderr, "wrote %s/compare.md and compare.svg\n", a.out.c_str());
  }
}

void run_tasks(const std::string& data_dir_arg) {
  const fs::path data_dir = data_dir_arg.empty() ? aji::eval::default_eval_data_dir() : fs::path(data_dir_arg);
  std::printf("%-14s %-7s %s\n", "task", "kind", "description");
  for (const auto& s : aji::eval::task_registry())
    std::printf("%-14s %-7s %s\n", s.name.c_str(), aji::eval::task_kind_name(s.kind), s.description.c_str());
  std::printf("\ndata: %s (a JSONL file path is accepted as a task too; docs/eval.md)\n", data_dir.string().c_str());
}

aji::cli::CommandRegistrar reg(75, [](CLI::App& app) {
  CLI::App* group = aji::cli::subcommand_group(app, "eval", "Evaluate models: few-shot tasks, comparisons");

  auto ra = std::make_shared<RunArgs>();
  CLI::App* run = group->add_subcommand("run", "Score a model on evaluation tasks (0- and k-shot), as lm-eval does");
  run->add_option("--model", ra->model, "Model: aji run dir, checkpoint dir or Hugging Face model dir")->required();
  run->add_option("--tokenizer", ra->tokenizer, "Tokenizer file (default: the one in the model directory)");
  run->add_option("--tasks", ra->tasks, "Task names (see `aji eval tasks`) or JSONL task files")->required();
  run->add_option("--shots", ra->shots, "Few-shot example counts, e.g. --shots 0 5 (default 0)");
  run->add_option("--limit", ra->limit, "Evaluate only the first N items of each task");
  run->add_option("--out", ra->out, "Directory for results.json and report.md");
  run->add_option("--data-dir", ra->data_dir, "Where the bundled tasks are (default: data/eval)");
  run->add_flag("--chat", ra->chat, "Render each item through the chat template; score/generate the assistant turn");
  run->add_flag("--no-bos", ra->no_bos, "Do not start prompts with BOS/<|endoftext|> (lm-eval's hf default for GPT-2)");
  aji::cli::add_device_option(run, ra->device);
  run->add_option("--batch", ra->batch,
                  "With --no-prefix-cache: sequences per forward pass (1 = no batching; default 8)")
      ->check(CLI::PositiveNumber);
  run->add_option("--batch-tokens", ra->batch_tokens,
                  "With --no-prefix-cache: most tokens (rows x length) per forward (default 16384)")
      ->check(CLI::PositiveNumber);
  run->add_flag("--prefix-cache,!--no-prefix-cache", ra->prefix_cache,
                "Compute each item's shared context once (KV cache), then score all its choices in one pass "
                "(default); --no-prefix-cache: batched full sequences (--batch, --batch-tokens)");
  run->add_option("--max-gen-tokens", ra->max_gen_tokens, "Generative tasks: most tokens generated (default 256)")
      ->check(CLI::PositiveNumber);
  run->add_option("--seed", ra->seed, "Few-shot sampling seed (default 1234)");
  run->callback([ra] { run_eval(*ra); });

  auto ca = std::make_shared<CompareArgs>();
  CLI::App* cmp = group->add_subcommand("compare", "Put several `aji eval run` outputs side by side, with a plot");
  cmp->add_option("runs", ca->runs, "--out directories (or results.json files) of eval runs");
  cmp->add_option("--out", ca->out, "Directory for compare.md and compare.svg (with --steps: steps.md, steps.svg)");
  cmp->add_option("--steps", ca->steps,
                  "A training run dir: evaluate each checkpoint (ckpt-N) and plot score against step");
  cmp->add_option("--tasks", ca->eval.tasks, "With --steps: task names or JSONL task files");
  cmp->add_option("--shots", ca->eval.shots, "With --steps: few-shot example counts (default 0)");
  cmp->add_option("--limit", ca->eval.limit, "With --steps: only the first N items of each task");
  cmp->add_option("--data-dir", ca->eval.data_dir, "With --steps: where the bundled tasks are");
  cmp->add_option("--tokenizer", ca->eval.tokenizer, "With --steps: tokenizer file (default: each checkpoint's)");
  cmp->add_flag("--chat", ca->eval.chat, "With --steps: score through the chat template");
  cmp->add_flag("--no-bos", ca->eval.no_bos, "With --steps: do not start prompts with BOS");
  cmp->add_flag("--reuse", ca->reuse, "With --steps: read OUT/ckpt-N/results.json where it exists instead of evaluating");
  cmp->callback([ca] { run_compare(*ca); });

  auto dd = std::make_shared<std::string>();
  CLI::App* tasks = group->add_subcommand("tasks", "List the bundled evaluation tasks");
  tasks->add_option("--data-dir", *dd, "Where the bundled tasks are (default: data/eval)");
  tasks->callback([dd] { run_tasks(*dd); });
});

}  // namespace
