// From aji conversations to what SFT trains on: the tokenizer's chat template
// (tokenizer/chat_template.h, ChatML) applied to every conversation, giving token ids and
// a loss mask that is 1 exactly on the assistant replies and their <|im_end|> (§1.1), or
// on every token with LossOn::kAll (the "train on everything" switch).
// `aji chat` must build its prompts with render_generation_prompt so that inference sees
// the same tokens as training (a strict prefix of the training rendering).
#pragma once

#include <vector>

#include "aji/align/conversation.h"
#include "aji/align/packing.h"
#include "aji/tokenizer/tokenizer.h"

namespace aji::align {

enum class LossOn { kAssistant, kAll };

// Throws aji::Error (with the fix) when the tokenizer lacks <|im_start|> / <|im_end|>.
void require_chat_tokens(const tokenizer::Tokenizer& tok);

RenderedSequence render_conversation(const tokenizer::Tokenizer& tok, const Conversation& conv,
                                     LossOn loss_on = LossOn::kAssistant);

// Many conversations over aji::num_threads() threads, in input order; shows aji::Progress
// when show_progress and the input is large.
std::vector<RenderedSequence> render_conversations(const tokenizer::Tokenizer& tok,
                                                   const std::vector<Conversation>& convs,
                                                   LossOn loss_on = LossOn::kAssistant, bool show_progress = false);

// The prompt for the next assistant turn: the history (ending with a user turn) rendered
// as in training, then "<|im_start|>assistant\n". Generation stops at <|im_end|>.
std::vector<uint32_t> render_generation_prompt(const tokenizer::Tokenizer& tok, const std::vector<Message>& history);

}  // namespace aji::align
