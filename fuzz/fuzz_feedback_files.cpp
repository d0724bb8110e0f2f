// Feedback-stage data (issue #14): the first input byte picks the parser, the rest is the file.
//   0  preference JSONL (align/preferences.cpp), both policies
//   1  RL task JSONL (align/rl_tasks.cpp), both policies
//   2  HH-RLHF transcripts → preferences (align/converters.cpp)
//   3  OASST trees → K-way rankings (align/converters.cpp)
//   4  GSM8K → tasks (align/converters.cpp)
//   5  the verifiers' extraction rules and exact/number/choice/regex scoring on the bytes
// Checks: every group has pairs whose indices are in range, better != worse, and the
// group round-trips through preference_to_json_line; every task round-trips through
// task_to_json_line; extracted numbers start with '-' or a digit; rewards are 0 or 1.
#include <cstdlib>

#include "aji/align/converters.h"
#include "aji/align/preferences.h"
#include "aji/align/rl_tasks.h"
#include "aji/align/verifiers.h"
#include "fuzz_util.h"

namespace {

using namespace aji::align;

void check_groups(const std::vector<PreferenceGroup>& groups) {
  for (const auto& g : groups) {
    if (g.pairs.empty() || g.responses.size() < 2) std::abort();
    for (const auto& p : g.pairs)
      if (p.better == p.worse || p.better < 0 || p.worse < 0 || static_cast<size_t>(p.better) >= g.responses.size() ||
          static_cast<size_t>(p.worse) >= g.responses.size())
        std::abort();
    const std::string line = preference_to_json_line(g);
    PreferenceGroup again;
    if (parse_preference_line(line, again)) std::abort();
    if (preference_to_json_line(again) != line || again.pairs.size() != g.pairs.size()) std::abort();
  }
}

void check_tasks(const std::vector<Task>& tasks) {
  for (const auto& t : tasks) {
    const std::string line = task_to_json_line(t);
    Task again;
    if (parse_task_line(line, again)) std::abort();
    if (task_to_json_line(again) != line) std::abort();
  }
}

void check_number(const std::optional<std::string>& n) {
  if (n && (n->empty() || !((*n)[0] == '-' || ((*n)[0] >= '0' && (*n)[0] <= '9')))) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int which = data[0] % 6;
  const std::string_view payload(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (which == 5) {
    check_number(extract_marked_number(payload));
    check_number(extract_last_number(payload));
    check_number(extract_number(payload));
    (void)extract_choice(payload);
    // The first line is the answer, the rest the reply.
    size_t nl = payload.find('\n');
    Task t;
    t.messages = {{Role::kUser, "q"}};
    t.answer = std::string(payload.substr(0, nl == std::string_view::npos ? payload.size() : nl));
    std::string_view reply = nl == std::string_view::npos ? std::string_view() : payload.substr(nl + 1);
    static const auto verifiers = [] {
      std::vector<std::unique_ptr<Verifier>> v;
      for (const char* name : {"exact", "number", "choice", "regex:[0-9]+", "regex:(?s).*#### {answer}"})
        v.push_back(make_verifier(name));
      return v;
    }();
    for (const auto& v : verifiers) {
      VerifyStats stats;
      float r = v->score(t, reply, &stats);
      if (r != 0.f && r != 1.f) std::abort();
      if (stats.calls != 1) std::abort();
    }
    return 0;
  }
  const auto path = aji::fuzz::write_input("feedback.jsonl", payload);
  for (OnInvalid policy : {OnInvalid::kSkip, OnInvalid::kError}) {
    aji::fuzz::run_reader(path, [&] {
      InputReport report;
      switch (which) {
        case 0: check_groups(read_preferences(path, policy, &report)); break;
        case 1: check_tasks(read_tasks(path, policy, &report)); break;
        case 2: check_groups(convert_preferences(PreferenceFormat::kHhRlhf, path, policy, &report)); break;
        case 3: check_groups(convert_preferences(PreferenceFormat::kOasstRanked, path, policy, &report)); break;
        case 4: check_tasks(convert_gsm8k_tasks(path, policy, &report)); break;
      }
      if (report.records_kept + report.skipped_count() > report.records_read) std::abort();
    });
  }
  return 0;
}
