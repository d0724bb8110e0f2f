#include "aji/tokenizer/chat_template.h"

#include <nlohmann/json.hpp>

#include "aji/base/error.h"

namespace aji::tokenizer {

namespace {

TokenId require_special(const Tokenizer& tok, std::string_view text) {
  if (auto id = tok.special_id(text)) return *id;
  throw Error("the tokenizer has no special token " + std::string(text) + ", which the chat template needs")
      .fix("train the tokenizer with it (aji tokenizer train adds <|endoftext|>, <|im_start|> and <|im_end|> by "
           "default; with --special, list them all: --special '<|endoftext|>' --special '<|im_start|>' --special "
           "'<|im_end|>')");
}

void check_role(const std::string& role, size_t index) {
  if (role == "system" || role == "user" || role == "assistant") return;
  throw Error("message " + std::to_string(index) + " has the role \"" + role + "\"")
      .fix("use one of the roles system, user, assistant");
}

}  // namespace

ChatTokens render_chat(const Tokenizer& tok, const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  const TokenId im_start = require_special(tok, kImStart);
  const TokenId im_end = require_special(tok, kImEnd);
  ChatTokens out;
  auto append = [&](std::string_view text, uint8_t mask) {
    tok.encode_ordinary(text, out.ids);
    out.mask.resize(out.ids.size(), mask);
  };
  auto append_id = [&](TokenId id, uint8_t mask) {
    out.ids.push_back(id);
    out.mask.push_back(mask);
  };
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    check_role(m.role, i);
    const uint8_t train = m.role == "assistant" ? 1 : 0;
    append_id(im_start, 0);
    append(m.role, 0);
    append("\n", 0);
    append(m.content, train);
    append_id(im_end, train);
    append("\n", 0);
  }
  if (add_generation_prompt) {
    append_id(im_start, 0);
    append("assistant", 0);
    append("\n", 0);
  }
  return out;
}

std::string render_chat_text(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  std::string s;
  for (const ChatMessage& m : messages) {
    s += kImStart;
    s += m.role;
    s += '\n';
    s += m.content;
    s += kImEnd;
    s += '\n';
  }
  if (add_generation_prompt) {
    s += kImStart;
    s += "assistant\n";
  }
  return s;
}

std::string_view chat_template_jinja() {
  return "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
         "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
}

std::vector<ChatMessage> parse_chat_messages(std::string_view json_text) {
  nlohmann::json j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  const std::string fix = "give a JSON array of {\"role\": \"user\", \"content\": \"...\"} objects";
  if (j.is_discarded()) throw Error("the conversation is not valid JSON").fix(fix);
  if (j.is_object() && j.contains("messages")) j = j["messages"];
  if (!j.is_array()) throw Error("the conversation is not a JSON array of messages").fix(fix);
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const auto& m = j[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
        !m["content"].is_string())
      throw Error("message " + std::to_string(i) + " is not {\"role\": string, \"content\": string}").fix(fix);
    out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    check_role(out.back().role, i);
  }
  return out;
}

}  // namespace aji::tokenizer
