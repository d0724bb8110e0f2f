// aji — one binary for every stage of building a chat model. This file only wires the
// front end: each stage's subcommands live in src/aji/cli/<stage>_cmd.cpp.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <iostream>
#include <vector>

#include "aji/base/dist.h"
#include "aji/base/error.h"
#include "aji/base/threads.h"
#include "aji/cli/command.h"
#include "aji/cli/options.h"

namespace aji::cli {

namespace {
struct Entry {
  int order;
  RegisterFn fn;
};
std::vector<Entry>& registry() {
  static std::vector<Entry> entries;
  return entries;
}
}  // namespace

CommandRegistrar::CommandRegistrar(int order, RegisterFn fn) { registry().push_back({order, std::move(fn)}); }

void register_all_commands(CLI::App& app) {
  auto entries = registry();
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.order < b.order; });
  for (auto& e : entries) e.fn(app);
}

CLI::App* subcommand_group(CLI::App& app, const std::string& name, const std::string& description) {
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
    if (sub->get_name() == name) return sub;
  CLI::App* group = app.add_subcommand(name, description);
  group->require_subcommand(1);
  return group;
}

GlobalOptions& global_options() {
  static GlobalOptions options;
  return options;
}

}  // namespace aji::cli

int main(int argc, char** argv) {
  CLI::App app{
      "aji (아지) — build a ChatGPT-style language model from raw text, end to end, on your own machine.\n"
      "Stages: data → tokenizer → pretrain → sft → align → eval/chat. Run `aji <command> --help` for each."};
  app.set_version_flag("--version", std::string("aji ") + AJI_VERSION);
  app.require_subcommand(1);
  auto& opts = aji::cli::global_options();
  // Global options may also follow the subcommand (`aji tokenizer train --threads 2`).
  app.fallthrough();
  const aji::OptionInfo threads_option{
      "threads", "Worker threads: 0 = all cores (default: $AJI_THREADS, else all cores); more than the cores is capped",
      aji::Range::at_least(0)};
  app.add_option_function<int>(
         threads_option.flag(),
         [&](int n) {
           opts.threads = n;
           aji::set_num_threads(n);
         },
         threads_option.help)
      ->check(aji::cli::range_check(threads_option));
  app.add_flag("-q,--quiet", opts.quiet, "No progress output");
  aji::cli::register_all_commands(app);
  try {
    if (std::getenv("AJI_THREADS")) (void)aji::num_threads();  // an invalid AJI_THREADS is an error now, not later
    if (aji::dist::launch_rank() > 0) opts.quiet = true;  // under mpirun / srun rank 0 alone prints progress
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const aji::Error& e) {
    std::fflush(stdout);
    aji::dist::abort_all_if_distributed(e.describe());  // one rank of several: ends them all
    std::cerr << e.describe() << std::endl;
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    aji::dist::abort_all_if_distributed(std::string("error: ") + e.what());
    std::cerr << "error: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
