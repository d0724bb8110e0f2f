// `aji prefs convert|check` and `aji tasks convert|make-arithmetic|check`: the data of the
// feedback stage (reward models, DPO, PPO, GRPO).
//   prefs convert          HH-RLHF transcripts / OASST ranked siblings → preference JSONL
//   prefs check            validate preference files: counts, skips with reasons, and with
//                          --tokenizer the rendered lengths and what --max-tokens filters
//   tasks convert          GSM8K → RL task JSONL
//   tasks make-arithmetic  the generated English/Korean arithmetic word problems (train,
//                          held-out test, and an SFT set with optional wrong answers)
//   tasks check            every task's own answer must score 1 under the verifier
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "aji/align/converters.h"
#include "aji/align/preferences.h"
#include "aji/align/rl_tasks.h"
#include "aji/align/verifiers.h"
#include "aji/base/error.h"
#include "aji/base/rng.h"
#include "aji/cli/command.h"
#include "aji/tokenizer/tokenizer.h"

namespace {

using namespace aji::align;

OnInvalid policy(bool skip) { return skip ? OnInvalid::kSkip : OnInvalid::kError; }

struct PrefsConvertArgs {
  std::string format, out;
  std::vector<std::string> inputs;
  bool skip_invalid = false;
  int64_t sample = -1;
  uint64_t seed = 1234;
};

void run_prefs_convert(const PrefsConvertArgs& a) {
  auto format = parse_preference_format(a.format);
  if (!format)
    throw aji::Error("unknown --format '" + a.format + "'").fix("choose one of: " + preference_format_list());
  std::vector<PreferenceGroup> all;
  for (const auto& in : a.inputs) {
    InputReport rep;
    auto groups = convert_preferences(*format, in, policy(a.skip_invalid), &rep);
    std::fprintf(stderr, "%s: %s\n", in.c_str(), rep.summary(20).c_str());
    for (auto& g : groups) all.push_back(std::move(g));
  }
  if (a.sample >= 0 && static_cast<size_t>(a.sample) < all.size()) {
    // A seeded sample, kept in input order.
    aji::Rng rng(a.seed);
    std::vector<size_t> idx(all.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    for (size_t i = idx.size(); i > 1; --i) std::swap(idx[i - 1], idx[rng.below(i)]);
    idx.resize(static_cast<size_t>(a.sample));
    std::sort(idx.begin(), idx.end());
    std::vector<PreferenceGroup> picked;
    for (size_t i : idx) picked.push_back(std::move(all[i]));
    all = std::move(picked);
  }
  if (all.empty())
    throw aji::Error("no preference record was converted; nothing written to " + a.out)
        .fix("check --format and the input files");
  write_preferences(a.out, all);
  std::fprintf(stderr, "wrote %s: %s\n", a.out.c_str(), preference_stats(all).describe().c_str());
}

struct PrefsCheckArgs {
  std::vector<std::string> inputs;
  std::string tokenizer;
  int64_t max_tokens = 0;
  bool skip_invalid = false;
};

void run_prefs_check(const PrefsCheckArgs& a) {
  std::optional<aji::tokenizer::Tokenizer> tok;
  if (!a.tokenizer.empty()) tok = aji::tokenizer::Tokenizer::load(a.tokenizer);
  for (const auto& in : a.inputs) {
    InputReport rep;
    auto groups = read_preferences(in, policy(a.skip_invalid), &rep);
    if (tok) {
      PreferenceRenderReport rr;
      render_preferences(*tok, groups, a.max_tokens, in, &rep, &rr);
      std::printf("%s: rendered: %s\n", in.c_str(), rr.describe().c_str());
    }
    std::fprintf(stderr, "%s: %s\n", in.c_str(), rep.summary(20).c_str());
    std::printf("%s: %s\n", in.c_str(), preference_stats(groups).describe().c_str());
  }
}

struct TasksConvertArgs {
  std::string format, input, out;
  bool skip_invalid = false;
};

void run_tasks_convert(const TasksConvertArgs& a) {
  if (a.format != "gsm8k") throw aji::Error("unknown --format '" + a.format + "'").fix("choose one of: gsm8k");
  InputReport rep;
  auto tasks = convert_gsm8k_tasks(a.input, policy(a.skip_invalid), &rep);
  std::fprintf(stderr, "%s: %s\n", a.input.c_str(), rep.summary(20).c_str());
  if (tasks.empty())
    throw aji::Error("no task was converted; nothing written to " + a.out).at(a.input).fix("check the input file");
  write_tasks(a.out, tasks);
  std::fprintf(stderr, "wrote %s: %zu tasks\n", a.out.c_str(), tasks.size());
}

struct MakeArithArgs {
  std::string lang = "both", out_dir;
  ArithOptions opt;
};

void run_make_arith(MakeArithArgs a) {
  auto lang = parse_arith_lang(a.lang);
  if (!lang) throw aji::Error("unknown --lang '" + a.lang + "'").fix("choose en, ko or both");
  a.opt.lang = *lang;
  ArithSet set = make_arithmetic(a.opt);
  std::filesystem::create_directories(a.out_dir);
  const auto dir = std::filesystem::path(a.out_dir);
  write_tasks(dir / "arith_train.jsonl", set.train);
  write_tasks(dir / "arith_test.jsonl", set.test);
  write_conversations(dir / "arith_sft.jsonl", set.sft);
  std::fprintf(stderr,
               "wrote %s: arith_train.jsonl %zu tasks (%lld operand pairs), arith_test.jsonl %zu tasks (%lld held-out "
               "pairs), arith_sft.jsonl %zu conversations (%lld with a wrong answer)\n",
               a.out_dir.c_str(), set.train.size(), (long long)set.train_pairs, set.test.size(),
               (long long)set.test_pairs, set.sft.size(), (long long)set.sft_wrong);
}

struct TasksCheckArgs {
  std::string input, verifier;
  double timeout_s = 5.0;
  bool skip_invalid = false;
};

void run_tasks_check(const TasksCheckArgs& a) {
  VerifierOptions vo;
  vo.command_timeout_s = a.timeout_s;
  auto verifier = make_verifier(a.verifier, vo);
  InputReport rep;
  auto tasks = read_tasks(a.input, policy(a.skip_invalid), &rep);
  std::fprintf(stderr, "%s: %s\n", a.input.c_str(), rep.summary(20).c_str());
  VerifyStats stats;
  std::vector<std::string> bad;
  int64_t n_bad = 0;
  for (const auto& t : tasks) {
    float r = verifier->score(t, t.answer, &stats);
    if (r != 1.f) {
      ++n_bad;
      if (bad.size() < 10)
        bad.push_back(a.input + ":" + std::to_string(t.line) + ": answer '" + t.answer.substr(0, 60) + "' scores " +
                      std::to_string(r));
    }
  }
  std::printf("%s: %zu tasks, verifier %s: %s\n", a.input.c_str(), tasks.size(), verifier->name().c_str(),
              stats.summary().c_str());
  if (n_bad) {
    std::string list;
    for (const auto& b : bad) list += "\n  " + b;
    throw aji::Error(std::to_string(n_bad) + " of " + std::to_string(tasks.size()) +
                     " tasks' own answers do not score 1 under verifier '" + verifier->name() + "':" + list)
        .at(a.input)
        .fix("the answers and the verifier disagree on the format: pick the verifier that matches the answers "
             "(exact, number, choice, ...) or rewrite the answers");
  }
  std::printf("every task's answer scores 1\n");
}

aji::cli::CommandRegistrar reg(46, [](CLI::App& app) {
  auto* prefs = aji::cli::subcommand_group(app, "prefs", "Preference data for reward models and DPO: convert, check");

  auto pc = std::make_shared<PrefsConvertArgs>();
  auto* convert = prefs->add_subcommand(
      "convert",
      "Convert public preference data to aji's preference JSONL\n"
      "({\"prompt\":[...],\"chosen\":[...],\"rejected\":[...]} or {\"prompt\",\"responses\",\"ranking\"} per line).\n"
      "  hh-rlhf       Anthropic HH-RLHF {chosen, rejected} transcripts (.jsonl.gz ok)\n"
      "  oasst-ranked  OpenAssistant message trees: ranked sibling replies become K-way rankings");
  convert->add_option("--format", pc->format, "Input shape: " + preference_format_list())->required();
  convert->add_option("inputs", pc->inputs, "Input files")->required()->check(CLI::ExistingFile);
  convert->add_option("--out", pc->out, "Output JSONL (written atomically)")->required();
  convert->add_flag("--skip-invalid", pc->skip_invalid,
                    "Skip records that cannot be converted and list them (default: stop at the first one)");
  convert->add_option("--sample", pc->sample, "Keep a seeded random sample of N records (input order kept)");
  convert->add_option("--seed", pc->seed, "Seed for --sample");
  convert->callback([pc] { run_prefs_convert(*pc); });

  auto pk = std::make_shared<PrefsCheckArgs>();
  auto* check = prefs->add_subcommand("check",
                                      "Validate preference JSONL files and print counts (groups, pairs, rankings) "
                                      "and every skipped record with its reason");
  check->add_option("inputs", pk->inputs, "Preference JSONL files")->required()->check(CLI::ExistingFile);
  check->add_flag("--skip-invalid", pk->skip_invalid, "Report every invalid line instead of stopping at the first");
  check->add_option("--tokenizer", pk->tokenizer,
                    "Also render with this tokenizer's chat template and report lengths")
      ->check(CLI::ExistingFile);
  check->add_option("--max-tokens", pk->max_tokens,
                    "With --tokenizer: the context; responses longer with their prompt are filtered (counted)");
  check->callback([pk] { run_prefs_check(*pk); });

  auto* tasks = aji::cli::subcommand_group(app, "tasks", "Tasks with checkable answers for RL (GRPO): convert, generate, check");

  auto tc = std::make_shared<TasksConvertArgs>();
  auto* tconvert = tasks->add_subcommand("convert", "Convert a data set to task JSONL ({\"messages\",\"answer\"} per line)\n"
                                                    "  gsm8k  {question, answer}: the answer is the number after ####");
  tconvert->add_option("--format", tc->format, "Input shape: gsm8k")->required();
  tconvert->add_option("input", tc->input, "Input file")->required()->check(CLI::ExistingFile);
  tconvert->add_option("--out", tc->out, "Output JSONL (written atomically)")->required();
  tconvert->add_flag("--skip-invalid", tc->skip_invalid, "Skip records that cannot be converted and list them");
  tconvert->callback([tc] { run_tasks_convert(*tc); });

  auto ma = std::make_shared<MakeArithArgs>();
  auto* make = tasks->add_subcommand(
      "make-arithmetic",
      "Generate arithmetic word problems (+ and -, small numbers) in English and/or Korean: arith_train.jsonl, "
      "arith_test.jsonl (operand pairs never seen in training) and arith_sft.jsonl (worked replies ending with "
      "\"#### N\"); deterministic for a seed");
  make->add_option("--lang", ma->lang, "en, ko or both (alternating)");
  make->add_option("--train", ma->opt.train, "Training tasks")->check(CLI::Range(int64_t(0), int64_t(10000000)));
  make->add_option("--test", ma->opt.test, "Held-out tasks")->check(CLI::Range(int64_t(0), int64_t(10000000)));
  make->add_option("--seed", ma->opt.seed, "Random seed");
  make->add_option("--max-operand", ma->opt.max_operand, "Largest operand (operands are 2..N)")
      ->check(CLI::Range(4, 100000));
  make->add_option("--sft-wrong-fraction", ma->opt.sft_wrong_fraction,
                   "Share of SFT replies with a deliberately wrong answer (for an imperfect SFT model)")
      ->check(CLI::Range(0.0, 1.0));
  make->add_option("--out-dir", ma->out_dir, "Output directory")->required();
  make->callback([ma] { run_make_arith(*ma); });

  auto tk = std::make_shared<TasksCheckArgs>();
  auto* tcheck = tasks->add_subcommand(
      "check", "Validate a task file and score every task's own answer with the verifier: each must score 1 "
               "(catches a verifier/answer format mismatch before a GRPO run)");
  tcheck->add_option("input", tk->input, "Task JSONL")->required()->check(CLI::ExistingFile);
  tcheck->add_option("--verifier", tk->verifier, "Verifier: " + verifier_list())->required();
  tcheck->add_option("--timeout", tk->timeout_s, "command: verifier timeout in seconds")->check(CLI::PositiveNumber);
  tcheck->add_flag("--skip-invalid", tk->skip_invalid, "Report every invalid line instead of stopping at the first");
  tcheck->callback([tk] { run_tasks_check(*tk); });
});

}  // namespace
