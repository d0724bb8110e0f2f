// What `aji eval run` and `aji eval compare` write (docs/eval.md): the results table (task,
// metric, shots, value, stderr, n), results.json, the Markdown report-card section, and a
// grouped bar chart (score per task per run) as a small hand-written SVG.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/eval/harness.h"

namespace aji::eval {

// One row per (task, shots, metric).
std::string results_table(const std::vector<TaskResult>& results);
// "## Evaluation" section: the model, the table as Markdown, too-long counts, speed.
std::string results_markdown(const std::string& model, const std::vector<TaskResult>& results);
nlohmann::json results_json(const std::string& model, const std::vector<TaskResult>& results, bool with_items);

// A run loaded back from results.json (or its directory) for `aji eval compare`.
struct RunSummary {
  std::string label;  // the run directory's name (eval/base -> "base")
  struct Row {
    std::string task, metric;
    int shots = 0;
    double value = 0, stderr_ = 0;
    int64_t n = 0;
  };
  std::vector<Row> rows;
};
RunSummary load_run_summary(const std::string& path);

// Side by side: one row per (task, shots, metric), one "value ± stderr" column per run.
std::string compare_markdown(const std::vector<RunSummary>& runs);
// Bars: for each (task, shots) the chosen metric (acc_norm for mc, else the first one), one
// bar per run, error bars of ±1 stderr.
std::string compare_svg(const std::vector<RunSummary>& runs);

// Score against training step: the evaluation of each checkpoint of one run (ckpt-N).
struct StepSummary {
  int64_t step = 0;
  RunSummary run;
};
// One row per step, one "value ± stderr" column per (task, shots) with its headline metric
// (acc_norm for mc, else the first), steps in the given order.
std::string steps_markdown(const std::vector<StepSummary>& steps);
// One line per (task, shots): the headline metric against the step, ±1 stderr bars.
std::string steps_svg(const std::vector<StepSummary>& steps);

}  // namespace aji::eval
