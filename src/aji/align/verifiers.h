// Verifiers: the reward of a reply to a Task (rl_tasks.h), by name.
//
//   exact            1 iff the reply, trimmed, equals the answer, trimmed
//   number           GSM8K's rule: the number after the first "####" that has one, else
//                    the last number in the reply; commas (and a leading '$', a trailing
//                    '.') stripped; 1 iff it equals the answer's number numerically
//                    ("#### 1,234" → 1234, "#### -5" → -5, "#### 3.50" == "3.5"). The
//                    answer goes through the same extraction ("72" or "... #### 72").
//   choice           a letter A–E: 1 iff the reply's first standalone capital A–E (not
//                    inside a word: "B", "(B)", "B.", "answer: B") equals the answer's
//                    letter (case-insensitive in the answer)
//   regex:PATTERN    1 iff PATTERN (PCRE2, UTF) matches the whole trimmed reply; "{answer}"
//                    in PATTERN stands for the task's answer, matched literally
//   command:PROGRAM  PROGRAM [ARGS...] (split on spaces, run without a shell, PATH
//                    searched when it has no '/') gets {"prompt","reply","answer"} as one
//                    JSON object on stdin and prints a reward in [0, 1] on stdout; it is
//                    killed (its whole process group) after the timeout (5 s by default).
//                    A failed start, crash, non-zero exit, timeout, output that is not a
//                    number, or a number outside [0, 1] gives reward 0 and a counted
//                    failure with the reason — never an exception, never a stopped run.
//
// An unknown name is an aji::Error listing the valid ones. score() is const and
// thread-safe; VerifyStats may be shared by threads (it locks).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aji/align/rl_tasks.h"

namespace aji::align {

struct VerifyStats {
  int64_t calls = 0;
  int64_t passed = 0;    // calls with reward >= 0.5
  double reward_sum = 0;
  int64_t failures = 0;  // the verifier itself failed (command crashed, timed out, ...)
  std::map<std::string, int64_t> failures_by_kind;  // "timeout", "crash", "exit_status", "not_a_number", ...
  std::vector<std::string> first_failures;          // up to 8 sentences, for the log

  void record(float reward);
  void record_failure(const std::string& kind, const std::string& detail);
  // "120 calls, mean reward 0.42, 3 verifier failures (timeout 2, crash 1)" + first reasons.
  std::string summary() const;
  mutable std::mutex mu;
};

struct VerifierOptions {
  double command_timeout_s = 5.0;
};

class Verifier {
 public:
  virtual ~Verifier() = default;
  // The reward in [0, 1]; never throws for a bad reply or a failing command.
  virtual float score(const Task& task, std::string_view reply, VerifyStats* stats) const = 0;
  const std::string& name() const { return name_; }

 protected:
  explicit Verifier(std::string name) : name_(std::move(name)) {}

 private:
  std::string name_;
};

// "exact", "number", "choice", "regex:PATTERN", "command:PROGRAM ARGS..."; throws
// aji::Error (with the list) for an unknown name, an invalid pattern or a program that
// cannot be found.
std::unique_ptr<Verifier> make_verifier(const std::string& name, const VerifierOptions& options = {});
// "exact, number, choice, regex:PATTERN, command:PROGRAM"
std::string verifier_list();

// ---- Extraction rules, exposed for tests ----------------------------------------------
// The number after the first "####" that is followed by one (spaces and '$' allowed in
// between), commas removed, a trailing '.' dropped: "#### 1,234" → "1234".
std::optional<std::string> extract_marked_number(std::string_view text);
// The last number in the text (same cleaning): "so 3 + 4 = 7." → "7".
std::optional<std::string> extract_last_number(std::string_view text);
// marked if present, else last.
std::optional<std::string> extract_number(std::string_view text);
// Numeric equality of two extracted numbers ("3.50" == "3.5", "-0" == "0").
bool numbers_equal(std::string_view a, std::string_view b);
// The first standalone capital A-E, or nullopt.
std::optional<char> extract_choice(std::string_view text);

}  // namespace aji::align
