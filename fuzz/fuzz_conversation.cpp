// Conversation JSONL (SFT and chat-eval input): every line through parse_conversation_line
// and check_conversation, then the whole file through read_conversations under both
// policies. Invalid lines are counted skips (kSkip) or an aji::Error naming file:line.
#include <cstdlib>

#include "aji/align/conversation.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace aji::align;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  size_t start = 0;
  while (start <= bytes.size()) {
    size_t nl = bytes.find('\n', start);
    if (nl == std::string_view::npos) nl = bytes.size();
    Conversation conv;
    if (!parse_conversation_line(bytes.substr(start, nl - start), conv)) {
      if (!check_conversation(conv)) {
        // A valid conversation must survive a write/parse round trip unchanged.
        Conversation again;
        if (parse_conversation_line(conversation_to_json_line(conv), again)) std::abort();
        if (again.messages.size() != conv.messages.size() || again.source != conv.source) std::abort();
        for (size_t i = 0; i < conv.messages.size(); ++i)
          if (again.messages[i].content != conv.messages[i].content || again.messages[i].role != conv.messages[i].role)
            std::abort();
      }
    }
    start = nl + 1;
  }
  const auto path = aji::fuzz::write_input("conversations.jsonl", bytes);
  InputReport report;
  aji::fuzz::run_reader(path, [&] { (void)read_conversations(path, OnInvalid::kSkip, &report); });
  aji::fuzz::run_reader(path, [&] {
    InputReport r2;
    (void)read_conversations(path, OnInvalid::kError, &r2, ConversationRules{false});
  });
  return 0;
}
