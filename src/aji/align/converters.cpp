#include "aji/align/converters.h"

#include <functional>

#include <nlohmann/json.hpp>

#include "aji/align/delimited.h"
#include "aji/align/verifiers.h"
#include "aji/base/error.h"
#include "aji/base/io.h"

namespace aji::align {

std::optional<SourceFormat> parse_source_format(std::string_view name) {
  if (name == "korean_chatbot") return SourceFormat::kKoreanChatbot;
  if (name == "oasst") return SourceFormat::kOasst;
  if (name == "self_instruct") return SourceFormat::kSelfInstruct;
  if (name == "gsm8k") return SourceFormat::kGsm8k;
  return std::nullopt;
}

const char* source_format_name(SourceFormat f) {
  switch (f) {
    case SourceFormat::kKoreanChatbot: return "korean_chatbot";
    case SourceFormat::kOasst: return "oasst";
    case SourceFormat::kSelfInstruct: return "self_instruct";
    case SourceFormat::kGsm8k: return "gsm8k";
  }
  return "?";
}

std::string source_format_list() { return "korean_chatbot, oasst, self_instruct, gsm8k"; }

std::string strip_calculator_annotations(std::string_view answer) {
  // "48/2 = <<48/2=24>>24" → "48/2 = 24". An unclosed "<<" is left as is.
  std::string out;
  out.reserve(answer.size());
  size_t i = 0;
  while (i < answer.size()) {
    size_t open = answer.find("<<", i);
    if (open == std::string_view::npos) break;
    size_t close = answer.find(">>", open + 2);
    if (close == std::string_view::npos) break;
    out.append(answer.substr(i, open - i));
    i = close + 2;
  }
  out.append(answer.substr(i));
  return out;
}

namespace {

using json = nlohmann::json;

// Shared tail of every converter: prepend the system prompt, validate, keep or reject.
struct Sink {
  const ConvertOptions& opt;
  InputReport& rep;
  std::string file;
  std::string fix;
  std::vector<Conversation> out;

  void reject(int64_t line, const std::string& kind, const std::string& detail) {
    rep.reject(opt.on_invalid, file, line, kind, detail, fix);
  }
  void add(Conversation conv, int64_t line) {
    if (!opt.system_prompt.empty())
      conv.messages.insert(conv.messages.begin(), Message{Role::kSystem, opt.system_prompt});
    conv.line = line;
    if (auto bad = check_conversation(conv)) {
      reject(line, bad->kind, bad->detail);
      return;
    }
    ++rep.records_kept;
    out.push_back(std::move(conv));
  }
};

std::string tag(const ConvertOptions& opt, SourceFormat f) {
  return opt.source_tag.empty() ? std::string(source_format_name(f)) : opt.source_tag;
}

// A string field of a JSON object, or nullopt when missing / not a string.
std::optional<std::string> string_field(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

void convert_korean_chatbot(Sink& sink, const std::filesystem::path& input, const ConvertOptions& opt) {
  DelimitedReader reader(input, TableFormat::kCsv);
  std::vector<std::string> f;
  if (!reader.next(f) || f.size() < 2 || f[0] != "Q" || f[1] != "A")
    throw Error("not a korean_chatbot CSV: the first line must be the header Q,A,label").at(sink.file, 1)
        .fix("pass the ChatbotData.csv of songys/Chatbot_data, or choose another --from");
  int64_t index = 0;
  while (reader.next(f)) {
    ++sink.rep.records_read;
    int64_t line = reader.record_line();
    if (f.size() < 2) {
      sink.reject(line, "missing_field", "the row has " + std::to_string(f.size()) + " field(s), expected Q,A,label");
      continue;
    }
    Conversation c;
    c.source = tag(opt, SourceFormat::kKoreanChatbot) + ":" + std::to_string(index++);
    c.messages = {{Role::kUser, f[0]}, {Role::kAssistant, f[1]}};
    sink.add(std::move(c), line);
  }
}

// True when j[key] is the JSON boolean true (a number or string there is not a flag; value()
// would throw nlohmann's type_error on it: found by fuzz_sft_sources).
bool flag_set(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() && it->get<bool>();
}

// Picks the reply to follow: rank 0 (lowest rank) among non-deleted replies with the same
// role, else the first non-deleted reply.
const json* best_reply(const json& node) {
  auto it = node.find("replies");
  if (it == node.end() || !it->is_array()) return nullptr;
  const json* best = nullptr;
  int64_t best_rank = INT64_MAX;
  const json* first = nullptr;
  for (const auto& r : *it) {
    if (!r.is_object()) continue;
    if (flag_set(r, "deleted")) continue;
    if (!first) first = &r;
    auto rk = r.find("rank");
    if (rk != r.end() && rk->is_number_integer() && rk->get<int64_t>() < best_rank) {
      best_rank = rk->get<int64_t>();
      best = &r;
    }
  }
  return best ? best : first;
}

void convert_oasst(Sink& sink, const std::filesystem::path& input, const ConvertOptions& opt) {
  LineReader reader(input, size_t(256) << 20);
  std::string_view line;
  while (reader.next(line)) {
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    ++sink.rep.records_read;
    int64_t ln = reader.line_number();
    json tree;
    try {
      tree = json::parse(line.begin(), line.end());
    } catch (const json::exception& e) {
      sink.reject(ln, "malformed_json", std::string("malformed JSON: ") + e.what());
      continue;
    }
    if (!tree.is_object() || !tree.contains("prompt") || !tree["prompt"].is_object()) {
      sink.reject(ln, "missing_field", "not an OASST message tree: no \"prompt\" object");
      continue;
    }
    Conversation c;
    c.source = tag(opt, SourceFormat::kOasst) + ":" + string_field(tree, "message_tree_id").value_or(std::to_string(ln));
    std::string problem;
    for (const json* node = &tree["prompt"]; node; node = best_reply(*node)) {
      auto role = string_field(*node, "role");
      auto text = string_field(*node, "text");
      if (!role || !text) {
        problem = "a message has no string \"role\" or \"text\"";
        break;
      }
      Role r;
      if (*role == "prompter") r = Role::kUser;
      else if (*role == "assistant") r = Role::kAssistant;
      else {
        problem = "a message has unknown OASST role '" + *role + "' (expected prompter or assistant)";
        break;
      }
      c.messages.push_back({r, *text});
    }
    if (!problem.empty()) {
      sink.reject(ln, "unknown_role", problem);
      continue;
    }
    // Cut after the last assistant turn: a trailing prompter message has no answer.
    while (!c.messages.empty() && c.messages.back().role != Role::kAssistant) c.messages.pop_back();
    if (c.messages.empty()) {
      sink.reject(ln, "no_assistant", "the tree's best branch has no assistant reply");
      continue;
    }
    sink.add(std::move(c), ln);
  }
}

void convert_json_lines(Sink& sink, const std::filesystem::path& input, SourceFormat format,
                        const ConvertOptions& opt) {
  LineReader reader(input, size_t(256) << 20);
  std::string_view line;
  int64_t index = 0;
  while (reader.next(line)) {
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    int64_t ln = reader.line_number();
    json j;
    try {
      j = json::parse(line.begin(), line.end());
    } catch (const json::exception& e) {
      ++sink.rep.records_read;
      sink.reject(ln, "malformed_json", std::string("malformed JSON: ") + e.what());
      continue;
    }
    if (!j.is_object()) {
      ++sink.rep.records_read;
      sink.reject(ln, "malformed_json", "the line is JSON but not an object");
      continue;
    }
    if (format == SourceFormat::kGsm8k) {
      ++sink.rep.records_read;
      auto q = string_field(j, "question");
      auto a = string_field(j, "answer");
      if (!q || !a) {
        sink.reject(ln, "missing_field", "a gsm8k record needs string \"question\" and \"answer\"");
        continue;
      }
      Conversation c;
      c.source = tag(opt, format) + ":" + std::to_string(index++);
      c.messages = {{Role::kUser, *q},
                    {Role::kAssistant, opt.keep_calculator_annotations ? *a : strip_calculator_annotations(*a)}};
      sink.add(std::move(c), ln);
      continue;
    }
    // self_instruct: one conversation per instance.
    auto instruction = string_field(j, "instruction");
    auto inst = j.find("instances");
    if (!instruction || inst == j.end() || !inst->is_array() || inst->empty()) {
      ++sink.rep.records_read;
      sink.reject(ln, "missing_field", "a self_instruct record needs \"instruction\" and a non-empty \"instances\" array");
      continue;
    }
    std::string id = string_field(j, "id").value_or(std::to_string(ln));
    for (size_t k = 0; k < inst->size(); ++k) {
      ++sink.rep.records_read;
      const json& x = (*inst)[k];
      auto in = x.is_object() ? string_field(x, "input") : std::nullopt;
      auto outp = x.is_object() ? string_field(x, "output") : std::nullopt;
      if (!outp) {
        sink.reject(ln, "missing_field", "instance " + std::to_string(k + 1) + " has no string \"output\"");
        continue;
      }
      std::string user = *instruction;
      if (in && in->find_first_not_of(" \t\r\n") != std::string::npos) user += "\n\n" + *in;
      Conversation c;
      c.source = tag(opt, format) + ":" + id + (inst->size() > 1 ? "#" + std::to_string(k) : "");
      c.messages = {{Role::kUser, std::move(user)}, {Role::kAssistant, *outp}};
      sink.add(std::move(c), ln);
    }
  }
}

}  // namespace

std::vector<Conversation> convert_file(SourceFormat format, const std::filesystem::path& input,
                                       const ConvertOptions& options, InputReport* report) {
  InputReport local;
  Sink sink{options, report ? *report : local, input.string(), "", {}};
  switch (format) {
    case SourceFormat::kKoreanChatbot:
      sink.fix = "each row is Q,A,label with non-empty Q and A (quote fields that contain commas)";
      convert_korean_chatbot(sink, input, options);
      break;
    case SourceFormat::kOasst:
      sink.fix = "each line is one OASST message tree {\"message_tree_id\",\"prompt\":{\"role\",\"text\",\"replies\"}}";
      convert_oasst(sink, input, options);
      break;
    case SourceFormat::kSelfInstruct:
      sink.fix = "each line is {\"instruction\":...,\"instances\":[{\"input\":...,\"output\":...}]}";
      convert_json_lines(sink, input, format, options);
      break;
    case SourceFormat::kGsm8k:
      sink.fix = "each line is {\"question\":...,\"answer\":...}";
      convert_json_lines(sink, input, format, options);
      break;
  }
  return std::move(sink.out);
}

// ---- preference data ---------------------------------------------------------------------

std::optional<PreferenceFormat> parse_preference_format(std::string_view name) {
  if (name == "hh-rlhf") return PreferenceFormat::kHhRlhf;
  if (name == "oasst-ranked") return PreferenceFormat::kOasstRanked;
  return std::nullopt;
}

std::string preference_format_list() { return "hh-rlhf, oasst-ranked"; }

namespace {
constexpr std::string_view kHuman = "\n\nHuman:";
constexpr std::string_view kAssistant = "\n\nAssistant:";

std::string trimmed(std::string_view s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  size_t e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}
}  // namespace

std::optional<RuleViolation> parse_hh_transcript(std::string_view text, std::vector<Message>& out) {
  out.clear();
  auto next_marker = [&](size_t from, Role* role) {
    size_t h = text.find(kHuman, from), a = text.find(kAssistant, from);
    if (h == std::string_view::npos && a == std::string_view::npos) return std::string_view::npos;
    if (a == std::string_view::npos || (h != std::string_view::npos && h < a)) {
      *role = Role::kUser;
      return h;
    }
    *role = Role::kAssistant;
    return a;
  };
  Role role{};
  size_t pos = next_marker(0, &role);
  if (pos == std::string_view::npos)
    return RuleViolation{"not_a_transcript", "no \"\\n\\nHuman:\" or \"\\n\\nAssistant:\" turn marker"};
  if (!trimmed(text.substr(0, pos)).empty())
    return RuleViolation{"not_a_transcript", "text before the first \"\\n\\nHuman:\" / \"\\n\\nAssistant:\" marker"};
  while (pos != std::string_view::npos) {
    size_t start = pos + (role == Role::kUser ? kHuman.size() : kAssistant.size());
    Role next_role{};
    size_t next = next_marker(start, &next_role);
    out.push_back({role, trimmed(text.substr(start, (next == std::string_view::npos ? text.size() : next) - start))});
    pos = next;
    role = next_role;
  }
  return std::nullopt;
}

namespace {

void convert_hh(const std::filesystem::path& input, OnInvalid policy, InputReport& rep,
                std::vector<PreferenceGroup>& out) {
  const std::string file = input.string();
  const std::string fix =
      "each line is {\"chosen\":\"\\n\\nHuman: ...\\n\\nAssistant: ...\",\"rejected\":\"...\"}, two transcripts "
      "that share everything up to the last Assistant turn";
  LineReader reader(input, size_t(256) << 20);
  std::string_view line;
  int64_t index = 0;
  while (reader.next(line)) {
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    ++rep.records_read;
    const int64_t ln = reader.line_number();
    auto reject = [&](const std::string& kind, const std::string& detail) {
      rep.reject(policy, file, ln, kind, detail, fix);
    };
    json j;
    try {
      j = json::parse(line.begin(), line.end());
    } catch (const json::exception& e) {
      reject("malformed_json", std::string("malformed JSON: ") + e.what());
      continue;
    }
    auto chosen = j.is_object() ? string_field(j, "chosen") : std::nullopt;
    auto rejected = j.is_object() ? string_field(j, "rejected") : std::nullopt;
    if (!chosen || !rejected) {
      reject("missing_field", "an HH-RLHF record needs string \"chosen\" and \"rejected\"");
      continue;
    }
    // The prompt: up to the last "\n\nAssistant:" inside the shared prefix.
    size_t common = 0;
    while (common < chosen->size() && common < rejected->size() && (*chosen)[common] == (*rejected)[common])
      ++common;
    size_t split = common >= kAssistant.size() ? chosen->rfind(kAssistant, common - kAssistant.size())
                                               : std::string::npos;
    if (split == std::string::npos) {
      reject("no_shared_prompt", "\"chosen\" and \"rejected\" share no prompt ending at an \"\\n\\nAssistant:\" turn");
      continue;
    }
    PreferenceGroup g;
    g.line = ln;
    g.source = "hh-rlhf:" + input.filename().string() + ":" + std::to_string(index++);
    std::optional<RuleViolation> bad = parse_hh_transcript(std::string_view(*chosen).substr(0, split), g.prompt);
    for (const std::string* side : {&*chosen, &*rejected}) {
      if (bad) break;
      std::vector<Message> resp;
      bad = parse_hh_transcript(std::string_view(*side).substr(split), resp);
      g.responses.push_back(std::move(resp));
    }
    if (!bad) {
      g.tiers = {{0}, {1}};
      bad = finish_preference_group(g);
    }
    if (bad) {
      reject(bad->kind, bad->detail);
      continue;
    }
    ++rep.records_kept;
    out.push_back(std::move(g));
  }
}

void convert_oasst_ranked(const std::filesystem::path& input, OnInvalid policy, InputReport& rep,
                          std::vector<PreferenceGroup>& out) {
  const std::string file = input.string();
  const std::string fix =
      "each line is one OASST message tree {\"message_tree_id\",\"prompt\":{\"role\",\"text\",\"replies\":[...]}} "
      "whose ranked replies carry an integer \"rank\"";
  LineReader reader(input, size_t(256) << 20);
  std::string_view line;
  while (reader.next(line)) {
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const int64_t ln = reader.line_number();
    json tree;
    try {
      tree = json::parse(line.begin(), line.end());
    } catch (const json::exception& e) {
      ++rep.records_read;
      rep.reject(policy, file, ln, "malformed_json", std::string("malformed JSON: ") + e.what(), fix);
      continue;
    }
    if (!tree.is_object() || !tree.contains("prompt") || !tree["prompt"].is_object()) {
      ++rep.records_read;
      rep.reject(policy, file, ln, "missing_field", "not an OASST message tree: no \"prompt\" object", fix);
      continue;
    }
    const std::string tree_id = string_field(tree, "message_tree_id").value_or(std::to_string(ln));
    // Depth-first over non-deleted messages, carrying the path as the prompt.
    std::vector<Message> path;
    std::string problem;
    std::function<void(const json&)> visit = [&](const json& node) {
      auto role = string_field(node, "role");
      auto text = string_field(node, "text");
      if (!role || !text || (*role != "prompter" && *role != "assistant")) {
        if (problem.empty())
          problem = "a message has no string \"text\" or its \"role\" is not prompter/assistant";
        return;
      }
      path.push_back({*role == "prompter" ? Role::kUser : Role::kAssistant, *text});
      auto replies = node.find("replies");
      if (replies != node.end() && replies->is_array()) {
        if (*role == "prompter") {
          // The ranked assistant replies of this prompt.
          std::vector<std::pair<int64_t, const json*>> ranked;
          for (const auto& r : *replies)
            if (r.is_object() && !flag_set(r, "deleted") && string_field(r, "role") == "assistant" &&
                r.contains("rank") && r["rank"].is_number_integer() && string_field(r, "text"))
              ranked.push_back({r["rank"].get<int64_t>(), &r});
          if (ranked.size() >= 2) {
            ++rep.records_read;
            std::stable_sort(ranked.begin(), ranked.end(),
                             [](const auto& a, const auto& b) { return a.first < b.first; });
            PreferenceGroup g;
            g.prompt = path;
            g.ranked = true;
            g.line = ln;
            g.source = "oasst:" + tree_id + ":" + string_field(node, "message_id").value_or(std::to_string(path.size()));
            for (size_t k = 0; k < ranked.size(); ++k) {
              g.responses.push_back({{Role::kAssistant, *string_field(*ranked[k].second, "text")}});
              if (k == 0 || ranked[k].first != ranked[k - 1].first) g.tiers.emplace_back();
              g.tiers.back().push_back(static_cast<int32_t>(k));
            }
            if (auto bad = finish_preference_group(g)) {
              rep.reject(policy, file, ln, bad->kind, "prompt " + g.source + ": " + bad->detail, fix);
            } else {
              ++rep.records_kept;
              out.push_back(std::move(g));
            }
          }
        }
        for (const auto& r : *replies)
          if (r.is_object() && !flag_set(r, "deleted")) visit(r);
      }
      path.pop_back();
    };
    visit(tree["prompt"]);
    if (!problem.empty()) {
      ++rep.records_read;
      rep.reject(policy, file, ln, "unknown_role", "tree " + tree_id + ": " + problem, fix);
    }
  }
}

}  // namespace

std::vector<PreferenceGroup> convert_preferences(PreferenceFormat format, const std::filesystem::path& input,
                                                 OnInvalid on_invalid, InputReport* report) {
  InputReport local;
  InputReport& rep = report ? *report : local;
  std::vector<PreferenceGroup> out;
  if (format == PreferenceFormat::kHhRlhf) convert_hh(input, on_invalid, rep, out);
  else convert_oasst_ranked(input, on_invalid, rep, out);
  return out;
}

std::vector<Task> convert_gsm8k_tasks(const std::filesystem::path& input, OnInvalid on_invalid, InputReport* report) {
  InputReport local;
  InputReport& rep = report ? *report : local;
  const std::string file = input.string();
  const std::string fix = "each line is {\"question\":...,\"answer\":\"...#### 72\"} (GSM8K's shape)";
  std::vector<Task> out;
  LineReader reader(input, size_t(256) << 20);
  std::string_view line;
  int64_t index = 0;
  while (reader.next(line)) {
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    ++rep.records_read;
    const int64_t ln = reader.line_number();
    json j;
    try {
      j = json::parse(line.begin(), line.end());
    } catch (const json::exception& e) {
      rep.reject(on_invalid, file, ln, "malformed_json", std::string("malformed JSON: ") + e.what(), fix);
      continue;
    }
    auto q = j.is_object() ? string_field(j, "question") : std::nullopt;
    auto a = j.is_object() ? string_field(j, "answer") : std::nullopt;
    if (!q || !a) {
      rep.reject(on_invalid, file, ln, "missing_field", "a gsm8k record needs string \"question\" and \"answer\"", fix);
      continue;
    }
    auto final_answer = extract_marked_number(*a);
    if (!final_answer) {
      rep.reject(on_invalid, file, ln, "no_final_answer", "the answer has no \"#### N\" final line", fix);
      continue;
    }
    Task t;
    t.messages = {{Role::kUser, trimmed(*q)}};
    t.answer = *final_answer;
    t.source = "gsm8k:" + std::to_string(index++);
    t.line = ln;
    Conversation c;
    c.messages = t.messages;
    if (auto bad = check_conversation(c, ConversationRules{false}); bad && bad->kind != "no_assistant") {
      rep.reject(on_invalid, file, ln, bad->kind, bad->detail, fix);
      continue;
    }
    ++rep.records_kept;
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace aji::align
