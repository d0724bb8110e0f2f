// Evaluation tasks for `aji eval` (post-training spec §7, docs/eval.md): the one JSONL task
// format, the registry of the tasks bundled in data/eval/, loading with validation, and
// few-shot prompt building (lm-eval's rule: examples come from a separate few-shot split,
// never the evaluated item itself, drawn with a fixed seed).
//
// One object per line; the kind is read from the fields and must be the same on every line:
//   mc      {"context", "choices": [...], "gold"}         multiple choice (ARC, HellaSwag, NLI, ...)
//   schema  {"contexts": [...], "continuation", "gold"}   partial scoring (Winogrande): the
//                                                          contexts differ, the continuation is scored
//   lm      {"context", "target"}                         greedy decoding must reproduce target (LAMBADA)
//   gen     {"context", "target", "answer"}               generation; "#### N" must equal answer (GSM8K)
// A request is context + delimiter (" ") + continuation; a few-shot example is the same
// with the gold continuation, examples joined by the task's few-shot delimiter ("\n\n").
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace aji::eval {

enum class TaskKind { kMultipleChoice, kSchema, kLanguageModel, kGenerative };
const char* task_kind_name(TaskKind k);

struct TaskItem {
  std::string context;                // mc, lm, gen
  std::vector<std::string> choices;   // mc: the choices; schema: the contexts
  std::string continuation;           // schema: the shared continuation; lm, gen: the target
  std::string answer;                 // gen: the final answer ("72")
  int gold = 0;                       // mc, schema
  int64_t line = 0;                   // 1-based line in its file
};

struct TaskSpec {
  std::string name;                   // "arc_easy"
  std::string file;                   // items file (bundled: data/eval/<name>.jsonl)
  std::string fewshot_file;           // few-shot split; empty: the items file (the item itself excluded)
  TaskKind kind = TaskKind::kMultipleChoice;
  std::string description;            // one line for `aji eval tasks`
  std::string delimiter = " ";        // between context and continuation
  std::string fewshot_delimiter = "\n\n";
};

struct Task {
  TaskSpec spec;
  std::vector<TaskItem> items;
  std::vector<TaskItem> fewshot;      // the pool examples are drawn from
  bool fewshot_is_items = false;      // same split: the evaluated item is never its own example
};

// The bundled tasks (file names relative to the data directory).
const std::vector<TaskSpec>& task_registry();

// data/eval: $AJI_EVAL_DATA, ./data/eval, or beside the binary (build/ -> ../data/eval).
std::filesystem::path default_eval_data_dir();

// Reads and validates one task file. kind: required kind, or nullopt to detect it from the
// first line. aji::Error (file:line and the fix) for a gold index out of range, missing or
// empty choices, missing fields, mixed kinds, bad JSON or an empty file.
std::vector<TaskItem> read_task_file(const std::filesystem::path& path, std::optional<TaskKind> kind,
                                     TaskKind* detected = nullptr);

// A registered name (its files under data_dir) or a path to a JSONL file (its few-shot
// split: FILE with .fewshot.jsonl beside it when present, else the file itself). An unknown
// name is an aji::Error listing the known ones.
Task load_task(const std::string& name_or_file, const std::filesystem::path& data_dir);

// Indices of k few-shot examples for item `item_index` from a pool of pool_size, drawn with
// aji::Rng(seed + item_index) without replacement; when same_split the item itself is never
// drawn. k larger than what the pool offers is an aji::Error.
std::vector<size_t> fewshot_indices(size_t pool_size, int k, size_t item_index, bool same_split, uint64_t seed);

// "example\n\nexample\n\n" for the given examples (empty for none): each example is its
// context + delimiter + gold continuation.
std::string fewshot_prefix(const Task& task, const std::vector<size_t>& examples);
// The gold continuation of an item (the text after the delimiter in a few-shot example).
std::string gold_continuation(const TaskSpec& spec, const TaskItem& item);
// The context of an item for few-shot display (schema: the gold context).
std::string gold_context(const TaskSpec& spec, const TaskItem& item);

}  // namespace aji::eval
