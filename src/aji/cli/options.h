// Command-line side of the declared options (base/options.h): one call adds a CLI11
// option per field of a settings struct, with its help, its default and its range
// checked at parse time (an aji::Error before any work starts).
//
//   auto o = std::make_shared<MyOptions>();
//   auto declared = std::make_shared<aji::cli::DeclaredOptions>(aji::cli::add_declared_options(cmd, *o));
//   cmd->callback([o, declared] { run(*o, declared->given()); });
//
// given() names the options typed on the command line (for --resume: which saved
// settings the user asked to change, see apply_saved_options).
#pragma once

#include <CLI/CLI.hpp>

#include <cerrno>
#include <cstdlib>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "aji/base/options.h"

namespace aji::cli {

struct DeclaredOptions {
  std::vector<std::pair<std::string, CLI::Option*>> options;  // (name, option)
  std::set<std::string> given() const {
    std::set<std::string> s;
    for (const auto& [name, opt] : options)
      if (opt->count() > 0) s.insert(name);
    return s;
  }
};

// A CLI11 check of a number against info.range: a value outside (NaN included) is an
// aji::Error with the same words as validate_options(); text that is not a number is
// left to CLI11's conversion error.
inline CLI::Validator range_check(const OptionInfo& info) {
  return CLI::Validator(
      [info](std::string& text) -> std::string {
        const char* s = text.c_str();
        char* end = nullptr;
        errno = 0;
        const double v = std::strtod(s, &end);
        if (end == s || *end != '\0') return std::string();  // not a number: CLI11 says so
        if (!info.range.contains(v)) throw option_range_error(info, text);
        return std::string();
      },
      info.range.describe());
}

// An unbounded range adds no CLI check (nor "any number" to the help line); NaN and
// infinities are still refused by validate_options() when the command runs.
inline bool bounded(const Range& r) { return r.lo != -HUGE_VAL || r.hi != HUGE_VAL; }

template <class Opts>
DeclaredOptions add_declared_options(CLI::App* cmd, Opts& opts) {
  DeclaredOptions declared;
  opts.for_each_option([&](auto& field, const OptionInfo& info) {
    using T = std::decay_t<decltype(field)>;
    CLI::Option* opt = nullptr;
    if constexpr (options_detail::is_optional<T>::value) {
      using V = typename options_detail::is_optional<T>::value_type;
      opt = cmd->add_option_function<V>(info.flag(), [&field](const V& v) { field = v; }, info.help);
      if (bounded(info.range)) opt->check(range_check(info));
    } else {
      opt = cmd->add_option(info.flag(), field, info.help);
      opt->capture_default_str();
      if constexpr (options_detail::is_number_v<T>)
        if (bounded(info.range)) opt->check(range_check(info));
    }
    declared.options.emplace_back(info.name, opt);
  });
  return declared;
}

}  // namespace aji::cli
