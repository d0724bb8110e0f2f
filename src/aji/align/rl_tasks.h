// Tasks for RL with verifiable rewards (GRPO), one a line:
//
//   {"messages":[{"role":"user","content":"..."}], "answer":"7", "source":"..."}
//
// "messages" is the prompt (optional system message, user/assistant alternating, ending
// with the user turn the policy answers); "answer" is what a verifier (verifiers.h)
// checks the reply against: a non-empty string (a JSON number is accepted and kept as
// written). Invalid lines are an aji::Error naming file:line, or counted skips under
// OnInvalid::kSkip; a file with no task at all is an error (GRPO cannot train on nothing).
//
// Also here: the generated arithmetic word-problem family ("Tom has 3 apples and buys 4
// more. How many apples does he have now?" / "민수는 사과 3개를 가지고 있고 4개를 더
// 샀습니다. ..."), small enough for a model trained on 2 cores, in English and Korean,
// deterministic from a seed, with a held-out split whose operand pairs never occur in
// training, and a matching SFT set whose replies end with "#### N" (optionally with a
// share of deliberately wrong answers, for a deliberately imperfect SFT model).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "aji/align/conversation.h"
#include "aji/align/input_report.h"

namespace aji::align {

struct Task {
  std::vector<Message> messages;  // the prompt, ending with a user turn
  std::string answer;
  std::string source;
  int64_t line = 0;
};

std::optional<RuleViolation> parse_task_line(std::string_view line, Task& out);
// Reads a task JSONL file (.gz/.zst ok); throws aji::Error when no task is left.
std::vector<Task> read_tasks(const std::filesystem::path& path, OnInvalid policy, InputReport* report);
std::string task_to_json_line(const Task& task);
void write_tasks(const std::filesystem::path& path, const std::vector<Task>& tasks);

// ---- Generated arithmetic word problems -----------------------------------------------

enum class ArithLang { kEnglish, kKorean, kBoth };
std::optional<ArithLang> parse_arith_lang(std::string_view name);  // "en", "ko", "both"

struct ArithOptions {
  ArithLang lang = ArithLang::kBoth;
  int64_t train = 3000;
  int64_t test = 300;
  uint64_t seed = 1;
  int min_operand = 2;      // operands are drawn from [min_operand, max_operand]
  int max_operand = 20;
  double test_pair_fraction = 0.15;  // share of operand pairs held out for the test split
  double sft_wrong_fraction = 0.0;   // share of SFT replies with a wrong answer
};

struct ArithSet {
  std::vector<Task> train, test;
  std::vector<Conversation> sft;  // one per train task: the worked reply "a + b = c\n#### c"
  int64_t sft_wrong = 0;          // how many SFT replies are deliberately wrong
  int64_t train_pairs = 0, test_pairs = 0;  // distinct unordered operand pairs in each split
};

// Deterministic for the options. The split is by unordered operand pair {x, y}: a pair
// held out for test never appears in train, with either operation or operand order.
ArithSet make_arithmetic(const ArithOptions& options);

// The unordered operand pair of a generated task, parsed from its source tag
// ("arith:en:add:3+4" → {3, 4}); nullopt for other tasks. Exposed for tests.
std::optional<std::pair<int, int>> arith_operands(const Task& task);

}  // namespace aji::align
