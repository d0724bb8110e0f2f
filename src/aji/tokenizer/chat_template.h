// The chat template (ChatML): a conversation becomes
//   <|im_start|>system\n...<|im_end|>\n<|im_start|>user\n...<|im_end|>\n<|im_start|>assistant\n...<|im_end|>\n
// as token ids plus a per-token mask that is 1 exactly on the tokens of assistant replies
// (their content and their <|im_end|>), the tokens SFT trains on. `aji sft` and `aji chat`
// use this one renderer, so training and inference see identical tokens.
//
// Each part is encoded on its own: <|im_start|> (special id), "role\n", the content, then
// <|im_end|> (special id) and "\n". Encoding the content separately makes the assistant
// prefix "<|im_start|>assistant\n" tokenize identically in training and at generation time;
// for content that does not start with white space it equals encoding the whole rendered
// string with tiktoken (tests/reference/chat_reference.py checks both).
// Special-token text inside a message ("<|im_end|>" typed by a user) is encoded as plain
// text, never as the special token, so a message cannot forge the template.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "aji/tokenizer/tokenizer.h"

namespace aji::tokenizer {

struct ChatMessage {
  std::string role;  // "system" | "user" | "assistant"
  std::string content;
};

struct ChatTokens {
  std::vector<TokenId> ids;
  std::vector<uint8_t> mask;  // same length as ids; 1 = assistant reply token (train on it)
};

inline constexpr std::string_view kImStart = "<|im_start|>";
inline constexpr std::string_view kImEnd = "<|im_end|>";

// Renders messages into ids + mask. add_generation_prompt appends "<|im_start|>assistant\n"
// (mask 0) so the model continues with the reply. Throws aji::Error if the tokenizer lacks
// <|im_start|>/<|im_end|> or a role is unknown.
ChatTokens render_chat(const Tokenizer& tok, const std::vector<ChatMessage>& messages,
                       bool add_generation_prompt = false);

// The same conversation as text (for display and for the reference scripts).
std::string render_chat_text(const std::vector<ChatMessage>& messages, bool add_generation_prompt = false);

// The same template in Jinja, as Hugging Face's tokenizer_config.json "chat_template" and
// GGUF's tokenizer.chat_template carry it (messages, add_generation_prompt; no BOS): it
// renders exactly render_chat_text. The HF and GGUF exports both write this one string.
std::string_view chat_template_jinja();

// Parses a JSON array of {"role": ..., "content": ...} objects (or an object with a
// "messages" array, as OpenAI / HF chat data has it). Errors name the message index.
std::vector<ChatMessage> parse_chat_messages(std::string_view json_text);

}  // namespace aji::tokenizer
