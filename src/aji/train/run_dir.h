// The run directory of a training command (`aji sft train`, `aji classify train`, and the
// trainers built on train/trainer_run.h): one
// rule for starting, resuming and overwriting, and for keeping a resumed run's settings.
//
//   fresh start, dir has a checkpoint  -> refused unless --force (the fix names --resume)
//   fresh start, finished result there -> refused unless --force
//   fresh start, dir has none          -> allowed: what an earlier run left (run.json,
//                                         metrics, plots) is replaced, said in a note
//   --resume, dir has a checkpoint     -> continue from the latest one
//   --resume, dir has none             -> "nothing to resume", the fix is the fresh command
// Checkpoints are train::save_checkpoint's (ckpt-N + `latest`, written atomically), so a
// kill -9 at any moment leaves the previous checkpoint usable.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/base/options.h"

namespace aji::train {

struct RunDirRequest {
  std::filesystem::path dir;
  bool resume = false, force = false, quiet = false;
  std::string command;        // "aji sft train"
  std::string fresh_command;  // the command line a fresh start takes (for the fix)
  std::string state_key;      // trainer_state.json must hold this section ("sft", "classify")
  std::vector<std::string> outputs;  // files and dirs (relative) a fresh start replaces
  std::string finished;  // a relative path whose presence means a finished result: refused without --force
};

struct RunDirStart {
  std::optional<std::filesystem::path> checkpoint;  // set when resuming
  nlohmann::json state;                             // its trainer_state.json
};

// Applies the rule above; on a fresh start removes the old checkpoints and outputs and
// creates the directory. Throws aji::Error (with the fix) when the rule refuses.
RunDirStart open_run_dir(const RunDirRequest& request);

// A setting outside the declared options (base/options.h) that a resumed run compares with
// what it saved: the CLI flag and its key in the settings JSON (a path, a plain flag...).
struct ResumeSetting {
  const char* flag;
  const char* key;
};

// The flags whose values a resumed run keeps: every declared option of Options that is
// saved (Options::for_each_option, base/options.h) and then the `other` settings.
template <class Options>
std::vector<std::string> resume_setting_flags(const std::vector<ResumeSetting>& other) {
  std::vector<std::string> v;
  Options o;
  o.for_each_option([&](auto&, const OptionInfo& info) {
    if (info.resume != OnResume::kNotSaved) v.push_back(info.flag());
  });
  for (const ResumeSetting& s : other) v.push_back(s.flag);
  return v;
}

// The flags the user passed (`given`), split: those in `table` (compared by
// check_resume_settings) and the declared options' names without "--" (for
// apply_saved_options).
struct GivenFlags {
  std::vector<std::string> other;
  std::set<std::string> declared;
};
GivenFlags split_given_flags(const std::vector<std::string>& given, const std::vector<ResumeSetting>& table);

// For each flag in `given` (the flags the user passed) that is in `table`: equal to `saved`
// -> nothing; different -> aji::Error naming both values and the fix (none of these may
// change on resume). Keys missing from `saved` or `now` are skipped.
void check_resume_settings(const std::vector<ResumeSetting>& table, const std::vector<std::string>& given,
                           const nlohmann::json& now, const nlohmann::json& saved, const std::filesystem::path& dir);

// After apply_saved_options (base/options.h) on a resumed run: a declared option given with
// another value than the run's (rep.refused) is an aji::Error in the words of
// check_resume_settings ("--lr 0.5 differs from the run's 0.003: ..."; the fix: leave it out
// or start a new run); the safe changes taken (rep.changed) are printed as notes unless quiet.
void report_resumed_options(const SavedOptionsReport& rep, const std::filesystem::path& dir, bool quiet);

// Rewrites dir/metrics.jsonl keeping the lines with "step" <= step (a resumed run rewrites
// what follows); calls each(line) for every kept line. A missing file is an empty one.
void keep_metrics_up_to(const std::filesystem::path& dir, int64_t step,
                        const std::function<void(const nlohmann::json&)>& each);

}  // namespace aji::train
