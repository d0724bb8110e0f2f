// Conversations for supervised fine-tuning and chat, in the common JSONL form
//   {"messages": [{"role": "system|user|assistant", "content": "..."}, ...], ...}
// one conversation per line (other keys, e.g. "source", are kept as metadata).
//
// The rules a conversation must follow (they match nanochat's render_conversation and
// the chat template): an optional system message first and only first; then user and
// assistant strictly alternating, starting with user; at least one assistant turn; no
// empty (or whitespace-only) content; content valid UTF-8. By default it must also end
// with an assistant turn (a trailing user turn would never be trained on).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/align/input_report.h"

namespace aji::align {

enum class Role : uint8_t { kSystem, kUser, kAssistant };

const char* role_name(Role role);
std::optional<Role> parse_role(std::string_view name);

struct Message {
  Role role;
  std::string content;
};

struct Conversation {
  std::vector<Message> messages;
  std::string source;   // "gsm8k:train:12", "oasst:<tree id>", ... (optional)
  int64_t line = 0;     // line in the file it was read from (0 when built in memory)
};

struct ConversationRules {
  bool require_final_assistant = true;  // false for prompt files (chat eval, RL prompts)
};

// Why the conversation breaks the rules — {kind, sentence} — or nullopt when it is valid.
struct RuleViolation {
  std::string kind;    // "unknown_role", "empty_content", "no_assistant", "not_alternating", ...
  std::string detail;  // "message 3: expected role 'assistant' after 'user', got 'user'"
};
std::optional<RuleViolation> check_conversation(const Conversation& conv, const ConversationRules& rules = {});

// Parses a JSON array of {"role","content"} objects into messages (appending to out); on
// failure the violation names the message ("message 2 has unknown role ..."). `what`
// names the array in the detail when it is not an array ("\"chosen\" is not an array").
std::optional<RuleViolation> parse_messages(const nlohmann::json& array, std::vector<Message>& out,
                                            std::string_view what = "messages");

// Parses one JSONL line; on failure returns the violation (malformed JSON included).
// Does not apply check_conversation except for what is needed to build the struct.
std::optional<RuleViolation> parse_conversation_line(std::string_view line, Conversation& out);

// Reads a JSONL file of conversations (.gz/.zst ok). Every invalid line throws an
// aji::Error naming file:line (kError) or becomes a counted skip in report (kSkip).
std::vector<Conversation> read_conversations(const std::filesystem::path& path, OnInvalid policy,
                                             InputReport* report, const ConversationRules& rules = {});

// One JSONL line (no trailing newline), keys in the order messages, source.
std::string conversation_to_json_line(const Conversation& conv);
// Writes conversations as JSONL, atomically.
void write_conversations(const std::filesystem::path& path, const std::vector<Conversation>& convs);

// Simple counts for reports: conversations, turns, characters by role.
struct ConversationStats {
  int64_t conversations = 0;
  int64_t messages = 0;
  int64_t multi_turn = 0;  // conversations with >= 2 assistant turns
  int64_t with_system = 0;
  int64_t user_bytes = 0, assistant_bytes = 0, system_bytes = 0;
  std::string describe() const;
};
ConversationStats conversation_stats(const std::vector<Conversation>& convs);

// Deterministic selection helpers for building mixtures.
// Shuffles convs with aji::Rng(seed) (Fisher-Yates) and keeps the first n (all if n < 0).
std::vector<Conversation> sample_conversations(std::vector<Conversation> convs, int64_t n, uint64_t seed);
// Splits into (train, val) with round(val_fraction * size) conversations in val, after a
// seeded shuffle; both halves keep their shuffled order.
std::pair<std::vector<Conversation>, std::vector<Conversation>> split_conversations(
    std::vector<Conversation> convs, double val_fraction, uint64_t seed);

}  // namespace aji::align
