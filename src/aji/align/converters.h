// Converters from the shapes of public chat/instruction data sets to aji conversations
// (conversation.h). Each one reads the file as the data set ships it:
//
//   korean_chatbot  CSV "Q,A,label" (songys/Chatbot_data)     → user Q, assistant A
//   oasst           OASST message trees, one tree per line     → the best-ranked branch:
//                   from the prompt follow the rank-0 reply at every level (the
//                   lowest rank when rank 0 is absent; the first non-deleted reply when no
//                   reply is ranked), prompter→user; cut after the last assistant turn
//   self_instruct   {"instruction","instances":[{"input","output"}]} → one conversation
//                   per instance: user = instruction (+ "\n\n" + input), assistant = output
//   gsm8k           {"question","answer"}                     → user question, assistant
//                   answer; the <<48/2=24>> calculator annotations are removed unless
//                   keep_calculator_annotations (the "#### 72" final line is kept)
//
// Every produced conversation passes check_conversation; a record that cannot be turned
// into one (missing field, empty text, a tree with no answer) is an error naming the file
// and line, or a counted skip under OnInvalid::kSkip.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aji/align/conversation.h"
#include "aji/align/input_report.h"
#include "aji/align/preferences.h"
#include "aji/align/rl_tasks.h"

namespace aji::align {

enum class SourceFormat { kKoreanChatbot, kOasst, kSelfInstruct, kGsm8k };

std::optional<SourceFormat> parse_source_format(std::string_view name);
const char* source_format_name(SourceFormat f);
// "korean_chatbot, oasst, self_instruct, gsm8k" — for --help and error messages.
std::string source_format_list();

struct ConvertOptions {
  OnInvalid on_invalid = OnInvalid::kError;
  bool keep_calculator_annotations = false;  // gsm8k
  std::string system_prompt;                 // if set, prepended as a system message
  std::string source_tag;                    // prefix for Conversation::source (default: format name)
};

std::vector<Conversation> convert_file(SourceFormat format, const std::filesystem::path& input,
                                       const ConvertOptions& options, InputReport* report);

// Exposed for tests.
std::string strip_calculator_annotations(std::string_view answer);

// ---- Preference data (preferences.h) ----------------------------------------------------
//
//   hh-rlhf       Anthropic HH-RLHF {"chosen": "\n\nHuman: ...\n\nAssistant: ...", "rejected": ...}:
//                 the prompt is the shared text up to the last "\n\nAssistant:" both
//                 transcripts have in common, its turns becoming user/assistant messages;
//                 the rest of each transcript is the response (an assistant reply, or more
//                 turns when the transcript goes on). chosen == rejected is a counted skip
//                 (kind chosen_equals_rejected) under --skip-invalid.
//   oasst-ranked  OASST message trees: every prompter message with two or more ranked,
//                 non-deleted assistant replies gives one K-way ranking (lower "rank" is
//                 better, equal ranks are ties); the prompt is the path from the root.
enum class PreferenceFormat { kHhRlhf, kOasstRanked };
std::optional<PreferenceFormat> parse_preference_format(std::string_view name);
std::string preference_format_list();  // "hh-rlhf, oasst-ranked"

std::vector<PreferenceGroup> convert_preferences(PreferenceFormat format, const std::filesystem::path& input,
                                                 OnInvalid on_invalid, InputReport* report);

// "\n\nHuman: a\n\nAssistant: b" -> [user a, assistant b] (content trimmed). Exposed for tests.
std::optional<RuleViolation> parse_hh_transcript(std::string_view text, std::vector<Message>& out);

// ---- RL tasks (rl_tasks.h) ---------------------------------------------------------------
// GSM8K {"question","answer"} -> {"messages":[user question], "answer": the number after
// "####" with commas removed}; a record without "#### N" is an error / counted skip.
std::vector<Task> convert_gsm8k_tasks(const std::filesystem::path& input, OnInvalid on_invalid, InputReport* report);

}  // namespace aji::align
