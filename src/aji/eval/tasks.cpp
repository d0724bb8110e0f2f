#include "aji/eval/tasks.h"

#include <cstdlib>
#include <fstream>
#include <numeric>

#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/rng.h"

namespace aji::eval {

namespace fs = std::filesystem;
using nlohmann::json;

const char* task_kind_name(TaskKind k) {
  switch (k) {
    case TaskKind::kMultipleChoice: return "mc";
    case TaskKind::kSchema: return "schema";
    case TaskKind::kLanguageModel: return "lm";
    case TaskKind::kGenerative: return "gen";
  }
  return "?";
}

const std::vector<TaskSpec>& task_registry() {
  static const std::vector<TaskSpec> specs = [] {
    auto mc = [](std::string name, std::string desc) {
      TaskSpec s;
      s.name = name;
      s.file = name + ".jsonl";
      s.fewshot_file = name + ".fewshot.jsonl";
      s.kind = TaskKind::kMultipleChoice;
      s.description = std::move(desc);
      return s;
    };
    std::vector<TaskSpec> v;
    v.push_back(mc("arc_easy", "ARC-Easy, grade-school science questions (4 choices)"));
    v.push_back(mc("arc_challenge", "ARC-Challenge, the hard ARC questions (4 choices)"));
    v.push_back(mc("hellaswag", "HellaSwag, commonsense sentence endings (4 choices)"));
    v.push_back(mc("piqa", "PIQA, physical commonsense (2 choices)"));
    v.push_back(mc("copa", "COPA, cause and effect (2 choices)"));
    v.push_back(mc("boolq", "BoolQ, yes/no questions about a passage (2 choices)"));
    v.push_back(mc("openbookqa", "OpenBookQA, science facts (4 choices)"));
    TaskSpec wg = mc("winogrande", "Winogrande, pronoun resolution with partial scoring of the suffix (2 contexts)");
    wg.kind = TaskKind::kSchema;
    v.push_back(wg);
    TaskSpec lb = mc("lambada", "LAMBADA (OpenAI), last word: greedy decoding must reproduce it");
    lb.kind = TaskKind::kLanguageModel;
    v.push_back(lb);
    v.push_back(mc("klue_nli", "KLUE-NLI (Korean), premise/hypothesis -> 참/중립/거짓 (3 choices)"));
    v.push_back(mc("kornli", "KorNLI XNLI dev (Korean), premise/hypothesis -> 참/중립/거짓 (3 choices)"));
    TaskSpec ko = mc("ko_analogy", "Korean A -> B (미국 -> 워싱턴, 크다 -> 작다, ...): greedy must reproduce B");
    ko.kind = TaskKind::kLanguageModel;
    ko.fewshot_delimiter = "\n";
    v.push_back(ko);
    TaskSpec gsm = mc("gsm8k", "GSM8K, grade-school math, generated \"#### N\" must equal the answer");
    gsm.kind = TaskKind::kGenerative;
    v.push_back(gsm);
    return v;
  }();
  return specs;
}

fs::path default_eval_data_dir() {
  std::error_code ec;
  if (const char* e = std::getenv("AJI_EVAL_DATA"); e && *e) return e;
  if (fs::is_directory("data/eval", ec)) return "data/eval";
  auto exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (fs::path d : {exe.parent_path() / "data" / "eval", exe.parent_path().parent_path() / "data" / "eval",
                       exe.parent_path().parent_path() / "share" / "aji" / "data" / "eval"})
      if (fs::is_directory(d, ec)) return d;
  }
  return "data/eval";
}

namespace {

std::string get_string(const json& j, const char* key, const std::string& where, int64_t line) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string())
    throw Error(std::string("missing or non-string field \"") + key + "\"").at(where, line)
        .fix(std::string("every line of this task kind needs \"") + key + "\" as a string (see docs/eval.md)");
  return it->get<std::string>();
}

std::vector<std::string> get_strings(const json& j, const char* key, const std::string& where, int64_t line) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_array() || it->empty())
    throw Error(std::string("missing or empty \"") + key + "\" list").at(where, line)
        .fix(std::string("give \"") + key + "\" as a non-empty list of strings");
  std::vector<std::string> out;
  for (const auto& c : *it) {
    if (!c.is_string() || c.get<std::string>().empty())
      throw Error(std::string("an entry of \"") + key + "\" is empty or not a string").at(where, line)
          .fix(std::string("every entry of \"") + key + "\" must be a non-empty string");
    out.push_back(c.get<std::string>());
  }
  if (out.size() < 2)
    throw Error(std::string("\"") + key + "\" has only one entry").at(where, line)
        .fix("a multiple-choice item needs at least two choices");
  return out;
}

TaskKind detect(const json& j) {
  if (j.contains("contexts")) return TaskKind::kSchema;
  if (j.contains("choices")) return TaskKind::kMultipleChoice;
  if (j.contains("answer")) return TaskKind::kGenerative;
  return TaskKind::kLanguageModel;
}

}  // namespace

std::vector<TaskItem> read_task_file(const fs::path& path, std::optional<TaskKind> kind, TaskKind* detected) {
  std::ifstream in(path);
  if (!in) throw Error("cannot open task file " + path.string()).fix("check the path, or run `aji eval tasks`");
  std::vector<TaskItem> items;
  std::string line;
  int64_t no = 0;
  const std::string where = path.string();
  while (std::getline(in, line)) {
    ++no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const std::exception& e) {
      throw Error(std::string("not valid JSON: ") + e.what()).at(where, no).fix("one JSON object per line");
    }
    if (!j.is_object()) throw Error("a task line must be a JSON object").at(where, no).fix("one JSON object per line");
    TaskKind k = detect(j);
    if (!kind) kind = k;
    if (k != *kind)
      throw Error(std::string("this line is a \"") + task_kind_name(k) + "\" item but the task is \"" +
                  task_kind_name(*kind) + "\"").at(where, no)
          .fix("all lines of a task have the same fields (docs/eval.md)");
    TaskItem it;
    it.line = no;
    switch (k) {
      case TaskKind::kMultipleChoice:
        it.context = get_string(j, "context", where, no);
        it.choices = get_strings(j, "choices", where, no);
        break;
      case TaskKind::kSchema:
        it.choices = get_strings(j, "contexts", where, no);
        it.continuation = get_string(j, "continuation", where, no);
        break;
      case TaskKind::kLanguageModel:
      case TaskKind::kGenerative:
        it.context = get_string(j, "context", where, no);
        it.continuation = get_string(j, "target", where, no);
        if (it.continuation.empty()) throw Error("empty \"target\"").at(where, no).fix("give the expected text");
        if (k == TaskKind::kGenerative) it.answer = get_string(j, "answer", where, no);
        break;
    }
    if (k == TaskKind::kMultipleChoice || k == TaskKind::kSchema) {
      auto g = j.find("gold");
      if (g == j.end() || !g->is_number_integer())
        throw Error("missing or non-integer \"gold\"").at(where, no).fix("give the index of the right choice");
      int64_t gi = g->get<int64_t>();
      if (gi < 0 || gi >= static_cast<int64_t>(it.choices.size()))
        throw Error("gold index " + std::to_string(gi) + " is out of range for " + std::to_string(it.choices.size()) +
                    " choices").at(where, no)
            .fix("\"gold\" is the 0-based index of the right choice");
      it.gold = static_cast<int>(gi);
    }
    items.push_back(std::move(it));
  }
  if (items.empty()) throw Error("the task file has no items").at(where).fix("give at least one JSON line");
  if (detected) *detected = *kind;
  return items;
}

Task load_task(const std::string& name, const fs::path& data_dir) {
  Task t;
  std::error_code ec;
  const TaskSpec* reg = nullptr;
  for (const auto& s : task_registry())
    if (s.name == name) reg = &s;
  if (reg) {
    t.spec = *reg;
    t.spec.file = (data_dir / reg->file).string();
    t.spec.fewshot_file = reg->fewshot_file.empty() ? "" : (data_dir / reg->fewshot_file).string();
    if (!fs::exists(t.spec.file, ec))
      throw Error("the bundled task file for " + name + " is missing").at(t.spec.file)
          .fix("run from the repository root, set AJI_EVAL_DATA=DIR, or pass --data-dir DIR (data/eval)");
  } else if (fs::is_regular_file(name, ec)) {
    t.spec.name = fs::path(name).stem().string();
    t.spec.file = name;
    fs::path few = fs::path(name).parent_path() / (t.spec.name + ".fewshot.jsonl");
    if (fs::is_regular_file(few, ec)) t.spec.fewshot_file = few.string();
    t.spec.description = "task file " + name;
  } else {
    std::string known;
    for (const auto& s : task_registry()) known += (known.empty() ? "" : ", ") + s.name;
    throw Error("unknown task \"" + name + "\"").fix("known tasks: " + known + "; or give a JSONL task file (docs/eval.md)");
  }
  TaskKind kind;
  t.items = read_task_file(t.spec.file, reg ? std::optional<TaskKind>(reg->kind) : std::nullopt, &kind);
  t.spec.kind = kind;
  if (!t.spec.fewshot_file.empty()) {
    t.fewshot = read_task_file(t.spec.fewshot_file, kind);
  } else {
    t.fewshot = t.items;
    t.fewshot_is_items = true;
  }
  return t;
}

std::vector<size_t> fewshot_indices(size_t pool_size, int k, size_t item_index, bool same_split, uint64_t seed) {
  if (k <= 0) return {};
  size_t avail = pool_size - (same_split && item_index < pool_size ? 1 : 0);
  if (static_cast<size_t>(k) > avail)
    throw Error(std::to_string(k) + " few-shot examples asked for but the few-shot split has only " +
                std::to_string(avail))
        .fix("use fewer --shots");
  std::vector<size_t> pool(pool_size);
  std::iota(pool.begin(), pool.end(), size_t{0});
  if (same_split && item_index < pool_size) pool.erase(pool.begin() + static_cast<std::ptrdiff_t>(item_index));
  Rng rng(seed + item_index);
  std::vector<size_t> out;
  for (int i = 0; i < k; ++i) {  // partial Fisher-Yates
    size_t j = i + rng.below(pool.size() - i);
    std::swap(pool[i], pool[j]);
    out.push_back(pool[i]);
  }
  return out;
}

std::string gold_context(const TaskSpec& spec, const TaskItem& item) {
  return spec.kind == TaskKind::kSchema ? item.choices[item.gold] : item.context;
}

std::string gold_continuation(const TaskSpec& spec, const TaskItem& item) {
  return spec.kind == TaskKind::kMultipleChoice ? item.choices[item.gold] : item.continuation;
}

std::string fewshot_prefix(const Task& task, const std::vector<size_t>& examples) {
  std::string out;
  for (size_t i : examples) {
    const TaskItem& ex = task.fewshot.at(i);
    out += gold_context(task.spec, ex) + task.spec.delimiter + gold_continuation(task.spec, ex) +
           task.spec.fewshot_delimiter;
  }
  return out;
}

}  // namespace aji::eval
