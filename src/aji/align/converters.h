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

}  // namespace aji::align
