// How a stage adds subcommands to `aji`: define a function that attaches them to the
// root CLI11 app, and register it at static-initialisation time in its own
// src/aji/cli/<stage>_cmd.cpp:
//
//   static aji::cli::CommandRegistrar reg(20, [](CLI::App& app) { ... });
//
// `order` fixes the order in `aji --help` (tokenizer 10, data 20, pretrain 30, ...).
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace aji::cli {

using RegisterFn = std::function<void(CLI::App&)>;

struct CommandRegistrar {
  CommandRegistrar(int order, RegisterFn fn);
};

// Finds the subcommand group `name` (e.g. "tokenizer", "data") or creates it, so that
// several *_cmd.cpp files can add commands under one group.
CLI::App* subcommand_group(CLI::App& app, const std::string& name, const std::string& description);

// Called by main(): attaches every registered command, in order.
void register_all_commands(CLI::App& app);

// Global options every command can read after parsing.
struct GlobalOptions {
  int threads = 0;  // 0 = all cores (or AJI_THREADS)
  bool quiet = false;
};
GlobalOptions& global_options();

}  // namespace aji::cli
