#include "aji/align/rl_tasks.h"

#include <algorithm>
#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

#include "aji/align/records.h"
#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/rng.h"

namespace aji::align {

namespace {
using json = nlohmann::json;
}  // namespace

std::optional<RuleViolation> parse_task_line(std::string_view line, Task& out) {
  out = Task{};
  json j;
  try {
    j = json::parse(line.begin(), line.end());
  } catch (const json::exception& e) {
    return RuleViolation{"malformed_json", std::string("malformed JSON: ") + e.what()};
  }
  if (!j.is_object()) return RuleViolation{"malformed_json", "the line is JSON but not an object"};
  auto m = j.find("messages");
  if (m == j.end()) return RuleViolation{"missing_field", "the task has no \"messages\" field"};
  if (auto bad = parse_messages(*m, out.messages)) return bad;
  Conversation conv;
  conv.messages = out.messages;
  if (out.messages.empty()) return RuleViolation{"missing_field", "\"messages\" is empty; a task needs a user prompt"};
  if (out.messages.back().role != Role::kUser)
    return RuleViolation{"wrong_role", "the prompt ends with a '" + std::string(role_name(out.messages.back().role)) +
                                           "' message; a task's messages end with the user turn to answer"};
  if (auto bad = check_conversation(conv, ConversationRules{false}); bad && bad->kind != "no_assistant") return bad;
  auto a = j.find("answer");
  if (a == j.end()) return RuleViolation{"missing_field", "the task has no \"answer\" field"};
  if (a->is_string()) out.answer = a->get<std::string>();
  else if (a->is_number()) out.answer = a->dump();
  else
    return RuleViolation{"malformed_json", "\"answer\" is " + std::string(a->type_name()) + ", not a string"};
  if (is_blank_line(out.answer)) return RuleViolation{"empty_answer", "\"answer\" is empty"};
  if (size_t bad = find_invalid_utf8(out.answer); bad != std::string::npos)
    return RuleViolation{"invalid_utf8", "\"answer\" has invalid UTF-8 at byte " + std::to_string(bad)};
  if (auto s = j.find("source"); s != j.end() && s->is_string()) out.source = s->get<std::string>();
  return std::nullopt;
}

std::vector<Task> read_tasks(const std::filesystem::path& path, OnInvalid policy, InputReport* report) {
  InputReport local;
  InputReport& rep = report ? *report : local;
  std::vector<Task> out;
  const std::string file = path.string();
  const std::string fix =
      "each line is {\"messages\":[{\"role\":\"user\",\"content\":\"...\"}],\"answer\":\"...\"} (the messages end "
      "with the user turn to answer)";
  for_each_record(path, policy, rep, fix, [&](std::string_view line, int64_t line_number) {
    Task t;
    std::optional<RuleViolation> bad = parse_task_line(line, t);
    if (!bad) {
      t.line = line_number;
      out.push_back(std::move(t));
    }
    return bad;
  });
  if (out.empty())
    throw Error(rep.records_read == 0 ? "the task file has no tasks"
                                      : "no valid task in the file (" + rep.summary(3) + ")")
        .at(file)
        .fix("give a JSONL file with one task per line: " + fix);
  return out;
}

std::string task_to_json_line(const Task& t) {
  nlohmann::ordered_json j;
  nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
  for (const auto& m : t.messages) {
    nlohmann::ordered_json o;
    o["role"] = role_name(m.role);
    o["content"] = m.content;
    msgs.push_back(std::move(o));
  }
  j["messages"] = std::move(msgs);
  j["answer"] = t.answer;
  if (!t.source.empty()) j["source"] = t.source;
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::strict);
}

void write_tasks(const std::filesystem::path& path, const std::vector<Task>& tasks) {
  AtomicFileWriter w(path);
  for (const auto& t : tasks) {
    w.write(task_to_json_line(t));
    w.write("\n");
  }
  w.commit();
}

// ---- arithmetic word problems ---------------------------------------------------------

std::optional<ArithLang> parse_arith_lang(std::string_view name) {
  if (name == "en") return ArithLang::kEnglish;
  if (name == "ko") return ArithLang::kKorean;
  if (name == "both") return ArithLang::kBoth;
  return std::nullopt;
}

namespace {

struct KoObject {
  const char* noun;
  const char* topic;    // 는/은 after the noun
  const char* counter;  // 개, 자루, ...
  const char* obj;      // 를/을 after the counter
  const char* subj;     // 가/이 after the counter
};

constexpr const char* kEnNames[] = {"Tom", "Anna", "Ben", "Mia", "Sam", "Lily"};
constexpr const char* kEnObjects[] = {"apples", "pencils", "books", "cookies", "marbles", "stickers"};
// Names that end in a vowel, so the particles are always 는 / 가.
constexpr const char* kKoNames[] = {"민수", "지우", "하나", "유나", "준호", "서아"};
constexpr KoObject kKoObjects[] = {
    {"사과", "는", "개", "를", "가"},   {"연필", "은", "자루", "를", "가"}, {"책", "은", "권", "을", "이"},
    {"쿠키", "는", "개", "를", "가"},   {"구슬", "은", "개", "를", "가"},   {"스티커", "는", "장", "을", "이"},
};

std::string fill(std::string s, const std::vector<std::pair<std::string, std::string>>& vars) {
  for (const auto& [k, v] : vars) {
    std::string key = "{" + k + "}";
    for (size_t p = s.find(key); p != std::string::npos; p = s.find(key, p + v.size())) s.replace(p, key.size(), v);
  }
  return s;
}

std::string english_problem(bool add, int tmpl, const std::string& name, const std::string& objs, int a, int b) {
  static const char* kAdd[] = {
      "{name} has {a} {objs} and buys {b} more. How many {objs} does {name} have now?",
      "There are {a} {objs} in a box. {name} puts in {b} more. How many {objs} are in the box now?",
      "{name} got {a} {objs} in the morning and {b} {objs} in the afternoon. How many {objs} did {name} get in all?",
  };
  static const char* kSub[] = {
      "{name} has {a} {objs} and gives {b} to a friend. How many {objs} does {name} have left?",
      "There are {a} {objs} in a box. {name} takes out {b}. How many {objs} are left in the box?",
      "{name} had {a} {objs} and lost {b} of them. How many {objs} does {name} have now?",
  };
  return fill(add ? kAdd[tmpl] : kSub[tmpl],
              {{"name", name}, {"objs", objs}, {"a", std::to_string(a)}, {"b", std::to_string(b)}});
}

std::string korean_problem(bool add, int tmpl, const std::string& name, const KoObject& o, int a, int b) {
  static const char* kAdd[] = {
      "{name}는 {obj} {a}{cnt}{eul} 가지고 있고 {b}{cnt}{eul} 더 샀습니다. {obj}{top} 모두 몇 {cnt}입니까?",
      ("상자에 {obj} {a}{cnt}{ga} 있습니다. {name}가 {b}{cnt}{eul} 더 넣었습니다. 상자에 있는 {obj}{top} 모두 몇 "
       "{cnt}입니까?"),
      ("{name}는 오전에 {obj} {a}{cnt}{eul} 받고 오후에 {b}{cnt}{eul} 더 받았습니다. 받은 {obj}{top} 모두 몇 "
       "{cnt}입니까?"),
  };
  static const char* kSub[] = {
      ("{name}는 {obj} {a}{cnt}{eul} 가지고 있었는데 친구에게 {b}{cnt}{eul} 주었습니다. 남은 {obj}{top} 몇 "
       "{cnt}입니까?"),
      "상자에 {obj} {a}{cnt}{ga} 있습니다. {name}가 {b}{cnt}{eul} 꺼냈습니다. 상자에 남은 {obj}{top} 몇 {cnt}입니까?",
      "{name}는 {obj} {a}{cnt}{eul} 가지고 있었는데 {b}{cnt}{eul} 잃어버렸습니다. 남은 {obj}{top} 몇 {cnt}입니까?",
  };
  return fill(add ? kAdd[tmpl] : kSub[tmpl], {{"name", name},
                                              {"obj", o.noun},
                                              {"top", o.topic},
                                              {"cnt", o.counter},
                                              {"eul", o.obj},
                                              {"ga", o.subj},
                                              {"a", std::to_string(a)},
                                              {"b", std::to_string(b)}});
}

template <typename T>
void shuffle(std::vector<T>& v, Rng& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
}

struct Problem {
  Task task;
  int a = 0, b = 0, c = 0;
  bool add = true;
};

std::vector<Problem> generate(const std::vector<std::pair<int, int>>& pairs, int64_t n, ArithLang lang, Rng& rng) {
  std::vector<Problem> out;
  std::set<std::string> seen;
  for (int64_t i = 0; i < n; ++i) {
    Problem p;
    for (int attempt = 0; attempt < 50; ++attempt) {
      auto [x, y] = pairs[rng.below(pairs.size())];
      p.add = rng.below(2) == 0;
      bool swap = p.add && rng.below(2) == 0;
      p.a = p.add ? (swap ? y : x) : y;
      p.b = p.add ? (swap ? x : y) : x;
      p.c = p.add ? p.a + p.b : p.a - p.b;
      bool ko = lang == ArithLang::kKorean || (lang == ArithLang::kBoth && (i % 2 == 1));
      int tmpl = static_cast<int>(rng.below(3));
      int who = static_cast<int>(rng.below(6)), what = static_cast<int>(rng.below(6));
      std::string text = ko ? korean_problem(p.add, tmpl, kKoNames[who], kKoObjects[what], p.a, p.b)
                            : english_problem(p.add, tmpl, kEnNames[who], kEnObjects[what], p.a, p.b);
      p.task.messages = {{Role::kUser, text}};
      p.task.answer = std::to_string(p.c);
      p.task.source = std::string("arith:") + (ko ? "ko" : "en") + ":" + (p.add ? "add:" : "sub:") +
                      std::to_string(p.a) + (p.add ? "+" : "-") + std::to_string(p.b);
      // Avoid repeating a prompt while the space allows it.
      if (seen.insert(text).second) break;
    }
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace

ArithSet make_arithmetic(const ArithOptions& o) {
  if (o.min_operand < 0 || o.max_operand - o.min_operand < 2 || o.max_operand > 100000)
    throw Error("arithmetic operands must satisfy 0 <= min < max - 1 (got " + std::to_string(o.min_operand) + ".." +
                std::to_string(o.max_operand) + ")")
        .fix("pick a range such as 2..20");
  if (o.train < 0 || o.test < 0) throw Error("negative task count").fix("pass --train N and --test N with N >= 0");
  if (!(o.test_pair_fraction > 0 && o.test_pair_fraction < 1))
    throw Error("test_pair_fraction must be in (0, 1)");
  if (!(o.sft_wrong_fraction >= 0 && o.sft_wrong_fraction <= 1))
    throw Error("--sft-wrong-fraction must be in [0, 1], got " + std::to_string(o.sft_wrong_fraction))
        .fix("0 gives a clean SFT set; 0.3 makes 30% of its answers wrong");
  // Unordered operand pairs {x < y} (x < y keeps every difference positive).
  std::vector<std::pair<int, int>> pairs;
  for (int x = o.min_operand; x <= o.max_operand; ++x)
    for (int y = x + 1; y <= o.max_operand; ++y) pairs.push_back({x, y});
  Rng split_rng(o.seed * 0x9E3779B97F4A7C15ULL + 1);
  shuffle(pairs, split_rng);
  size_t n_test = std::clamp<size_t>(static_cast<size_t>(std::llround(o.test_pair_fraction * pairs.size())), 1,
                                     pairs.size() - 1);
  std::vector<std::pair<int, int>> test_pairs(pairs.begin(), pairs.begin() + static_cast<std::ptrdiff_t>(n_test));
  std::vector<std::pair<int, int>> train_pairs(pairs.begin() + static_cast<std::ptrdiff_t>(n_test), pairs.end());

  ArithSet set;
  set.train_pairs = static_cast<int64_t>(train_pairs.size());
  set.test_pairs = static_cast<int64_t>(test_pairs.size());
  Rng train_rng(o.seed * 0x9E3779B97F4A7C15ULL + 2), test_rng(o.seed * 0x9E3779B97F4A7C15ULL + 3);
  auto train = generate(train_pairs, o.train, o.lang, train_rng);
  auto test = generate(test_pairs, o.test, o.lang, test_rng);

  // SFT replies: exactly round(fraction * N) of them wrong, chosen by a seeded shuffle.
  Rng wrong_rng(o.seed * 0x9E3779B97F4A7C15ULL + 4);
  std::vector<size_t> order(train.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  shuffle(order, wrong_rng);
  size_t n_wrong = static_cast<size_t>(std::llround(o.sft_wrong_fraction * train.size()));
  std::vector<uint8_t> wrong(train.size(), 0);
  for (size_t i = 0; i < n_wrong; ++i) wrong[order[i]] = 1;
  for (size_t i = 0; i < train.size(); ++i) {
    const Problem& p = train[i];
    int shown = p.c;
    if (wrong[i]) {
      int delta = 1 + static_cast<int>(wrong_rng.below(3));
      shown = (p.c - delta >= 0 && wrong_rng.below(2) == 0) ? p.c - delta : p.c + delta;
    }
    Conversation c;
    c.messages = p.task.messages;
    c.messages.push_back({Role::kAssistant, std::to_string(p.a) + (p.add ? " + " : " - ") + std::to_string(p.b) +
                                                " = " + std::to_string(shown) + "\n#### " + std::to_string(shown)});
    c.source = p.task.source + (wrong[i] ? ":wrong" : "");
    set.sft.push_back(std::move(c));
  }
  set.sft_wrong = static_cast<int64_t>(n_wrong);
  for (auto& p : train) set.train.push_back(std::move(p.task));
  for (auto& p : test) set.test.push_back(std::move(p.task));
  return set;
}

std::optional<std::pair<int, int>> arith_operands(const Task& task) {
  if (task.source.rfind("arith:", 0) != 0) return std::nullopt;
  size_t colon = task.source.rfind(':');
  std::string expr = task.source.substr(colon + 1);
  size_t op = expr.find_first_of("+-");
  if (op == std::string::npos || op == 0) return std::nullopt;
  try {
    int a = std::stoi(expr.substr(0, op)), b = std::stoi(expr.substr(op + 1));
    return std::make_pair(std::min(a, b), std::max(a, b));
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace aji::align
