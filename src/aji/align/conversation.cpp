#include "aji/align/conversation.h"

#include <cmath>
#include <cstdio>

#include "aji/align/records.h"
#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/rng.h"

namespace aji::align {

const char* role_name(Role role) {
  switch (role) {
    case Role::kSystem: return "system";
    case Role::kUser: return "user";
    case Role::kAssistant: return "assistant";
  }
  return "?";
}

std::optional<Role> parse_role(std::string_view name) {
  if (name == "system") return Role::kSystem;
  if (name == "user") return Role::kUser;
  if (name == "assistant") return Role::kAssistant;
  return std::nullopt;
}

namespace {


std::string msg_label(size_t i) { return "message " + std::to_string(i + 1); }

}  // namespace

std::optional<RuleViolation> check_conversation(const Conversation& conv, const ConversationRules& rules) {
  const auto& m = conv.messages;
  if (m.empty()) return RuleViolation{"no_messages", "the conversation has no messages"};
  size_t start = 0;
  if (m[0].role == Role::kSystem) start = 1;
  bool any_assistant = false;
  for (size_t i = 0; i < m.size(); ++i) {
    if (is_blank_line(m[i].content))
      return RuleViolation{"empty_content", msg_label(i) + " (" + role_name(m[i].role) + ") has empty content"};
    if (size_t bad = find_invalid_utf8(m[i].content); bad != std::string_view::npos)
      return RuleViolation{"invalid_utf8", msg_label(i) + " has invalid UTF-8 at byte " + std::to_string(bad) +
                                               " of its content"};
    if (i >= start && m[i].role == Role::kSystem)
      return RuleViolation{"misplaced_system", msg_label(i) + " is a system message; only the first message may be"};
    if (i >= start) {
      Role expected = ((i - start) % 2 == 0) ? Role::kUser : Role::kAssistant;
      if (m[i].role != expected)
        return RuleViolation{"not_alternating", msg_label(i) + ": expected role '" + role_name(expected) +
                                                    "' (turns alternate user/assistant, starting with user), got '" +
                                                    role_name(m[i].role) + "'"};
    }
    any_assistant |= m[i].role == Role::kAssistant;
  }
  if (!any_assistant) return RuleViolation{"no_assistant", "the conversation has no assistant turn"};
  if (rules.require_final_assistant && m.back().role != Role::kAssistant)
    return RuleViolation{"ends_with_user", "the conversation ends with a user turn, which would never be trained on"};
  return std::nullopt;
}

std::optional<RuleViolation> parse_messages(const nlohmann::json& array, std::vector<Message>& out,
                                            std::string_view what) {
  if (!array.is_array()) {
    std::string detail(what);  // appended, not "\"" + ...: GCC 12 -Wrestrict false positive
    detail.insert(0, 1, '"');
    detail += "\" is not an array of messages";
    return RuleViolation{"malformed_json", std::move(detail)};
  }
  for (size_t i = 0; i < array.size(); ++i) {
    const auto& m = array[i];
    if (!m.is_object()) return RuleViolation{"malformed_json", msg_label(i) + " is not an object"};
    auto r = m.find("role");
    if (r == m.end() || !r->is_string())
      return RuleViolation{"unknown_role", msg_label(i) + " has no string \"role\""};
    auto role = parse_role(r->get_ref<const std::string&>());
    if (!role)
      return RuleViolation{"unknown_role", msg_label(i) + " has unknown role '" + r->get<std::string>() +
                                               "' (expected system, user or assistant)"};
    auto c = m.find("content");
    if (c == m.end() || c->is_null())
      return RuleViolation{"empty_content", msg_label(i) + " (" + role_name(*role) + ") has no \"content\""};
    if (!c->is_string())
      return RuleViolation{"malformed_json", msg_label(i) + " has a non-string \"content\" (" +
                                                 std::string(c->type_name()) + ")"};
    out.push_back({*role, c->get<std::string>()});
  }
  return std::nullopt;
}

std::optional<RuleViolation> parse_conversation_line(std::string_view line, Conversation& out) {
  out.messages.clear();
  out.source.clear();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line.begin(), line.end());
  } catch (const nlohmann::json::exception& e) {
    return RuleViolation{"malformed_json", std::string("malformed JSON: ") + e.what()};
  }
  if (!j.is_object()) return RuleViolation{"malformed_json", "the line is JSON but not an object"};
  auto it = j.find("messages");
  if (it == j.end())
    return RuleViolation{"no_messages", "the object has no \"messages\" key"};
  if (auto bad = parse_messages(*it, out.messages)) return bad;
  if (auto s = j.find("source"); s != j.end() && s->is_string()) out.source = s->get<std::string>();
  return std::nullopt;
}

std::vector<Conversation> read_conversations(const std::filesystem::path& path, OnInvalid policy,
                                             InputReport* report, const ConversationRules& rules) {
  InputReport local;
  InputReport& rep = report ? *report : local;
  std::vector<Conversation> out;
  const std::string fix =
      "each line must be {\"messages\":[{\"role\":\"user\",\"content\":\"...\"},{\"role\":\"assistant\","
      "\"content\":\"...\"}]} with an optional leading system message and alternating user/assistant turns";
  for_each_record(path, policy, rep, fix, [&](std::string_view line, int64_t line_number) {
    Conversation conv;
    conv.line = line_number;
    std::optional<RuleViolation> bad = parse_conversation_line(line, conv);
    if (!bad) bad = check_conversation(conv, rules);
    if (!bad) out.push_back(std::move(conv));
    return bad;
  });
  return out;
}

std::string conversation_to_json_line(const Conversation& conv) {
  nlohmann::ordered_json j;
  nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
  for (const auto& m : conv.messages) {
    nlohmann::ordered_json o;
    o["role"] = role_name(m.role);
    o["content"] = m.content;
    msgs.push_back(std::move(o));
  }
  j["messages"] = std::move(msgs);
  if (!conv.source.empty()) j["source"] = conv.source;
  // Invalid UTF-8 never reaches here (check_conversation), so strict dumping is safe.
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::strict);
}

void write_conversations(const std::filesystem::path& path, const std::vector<Conversation>& convs) {
  AtomicFileWriter w(path);
  for (const auto& c : convs) {
    w.write(conversation_to_json_line(c));
    w.write("\n");
  }
  w.commit();
}

std::string ConversationStats::describe() const {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "%lld conversations, %lld messages, %lld multi-turn, %lld with a system prompt; "
                "text bytes: user %lld, assistant %lld, system %lld",
                (long long)conversations, (long long)messages, (long long)multi_turn, (long long)with_system,
                (long long)user_bytes, (long long)assistant_bytes, (long long)system_bytes);
  return buf;
}

ConversationStats conversation_stats(const std::vector<Conversation>& convs) {
  ConversationStats s;
  for (const auto& c : convs) {
    ++s.conversations;
    int assistants = 0;
    for (const auto& m : c.messages) {
      ++s.messages;
      switch (m.role) {
        case Role::kSystem: s.system_bytes += m.content.size(); break;
        case Role::kUser: s.user_bytes += m.content.size(); break;
        case Role::kAssistant: s.assistant_bytes += m.content.size(); ++assistants; break;
      }
    }
    if (!c.messages.empty() && c.messages[0].role == Role::kSystem) ++s.with_system;
    if (assistants >= 2) ++s.multi_turn;
  }
  return s;
}

namespace {
template <typename T>
void shuffle_in_place(std::vector<T>& v, uint64_t seed) {
  Rng rng(seed);
  for (size_t i = v.size(); i > 1; --i) {
    size_t j = rng.below(i);
    std::swap(v[i - 1], v[j]);
  }
}
}  // namespace

std::vector<Conversation> sample_conversations(std::vector<Conversation> convs, int64_t n, uint64_t seed) {
  shuffle_in_place(convs, seed);
  if (n >= 0 && static_cast<size_t>(n) < convs.size()) convs.resize(n);
  return convs;
}

std::pair<std::vector<Conversation>, std::vector<Conversation>> split_conversations(
    std::vector<Conversation> convs, double val_fraction, uint64_t seed) {
  if (!(val_fraction >= 0.0 && val_fraction < 1.0))
    throw Error("validation fraction must be in [0, 1), got " + std::to_string(val_fraction));
  shuffle_in_place(convs, seed);
  size_t n_val = static_cast<size_t>(std::llround(val_fraction * convs.size()));
  std::vector<Conversation> val(std::make_move_iterator(convs.begin()),
                                std::make_move_iterator(convs.begin() + n_val));
  convs.erase(convs.begin(), convs.begin() + n_val);
  return {std::move(convs), std::move(val)};
}

}  // namespace aji::align
