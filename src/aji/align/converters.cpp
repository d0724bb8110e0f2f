#include "aji/align/converters.h"

#include <nlohmann/json.hpp>

#include "aji/align/delimited.h"
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
    if (r.value("deleted", false)) continue;
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
    c.source = tag(opt, SourceFormat::kOasst) + ":" + tree.value("message_tree_id", std::to_string(ln));
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
    std::string id = j.value("id", std::to_string(ln));
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

}  // namespace aji::align
