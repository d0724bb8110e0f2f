// aji chat's prompt building: the same ids as the SFT renderer (prefix property), history
// trimming that keeps the system message, and a clear error without chat tokens.
#include <gtest/gtest.h>

#include "aji/align/render.h"
#include "aji/base/error.h"
#include "aji/infer/chat.h"

using aji::align::Message;
using aji::align::Role;

namespace {
aji::tokenizer::Tokenizer byte_tok(bool chat_tokens) {
  std::vector<std::string> bytes;
  for (int b = 0; b < 256; ++b) bytes.push_back(std::string(1, static_cast<char>(b)));
  std::vector<aji::tokenizer::SpecialToken> sp = {{"<|endoftext|>", 256}};
  if (chat_tokens) {
    sp.push_back({"<|im_start|>", 257});
    sp.push_back({"<|im_end|>", 258});
  }
  return aji::tokenizer::Tokenizer::from_ranks(bytes, aji::tokenizer::SplitPattern::kGpt2, sp);
}
}  // namespace

TEST(ChatPrompt, IsAPrefixOfTheTrainingRendering) {
  auto tok = byte_tok(true);
  std::vector<Message> h = {{Role::kSystem, "Be brief."}, {Role::kUser, "hi"}, {Role::kAssistant, "hello"},
                            {Role::kUser, "2+2? 안녕"}};
  auto prompt = aji::infer::build_chat_prompt(tok, h, 100000, 0);
  aji::align::Conversation conv;
  conv.messages = h;
  conv.messages.push_back({Role::kAssistant, "4"});
  auto full = aji::align::render_conversation(tok, conv);
  ASSERT_LT(prompt.size(), full.ids.size());
  for (size_t i = 0; i < prompt.size(); ++i) ASSERT_EQ(static_cast<uint32_t>(prompt[i]), full.ids[i]) << i;
  EXPECT_EQ(full.loss_mask[prompt.size()], 1);      // the reply starts right after the prompt
  EXPECT_EQ(full.loss_mask[prompt.size() - 1], 0);
}

TEST(ChatPrompt, DropsOldestTurnsKeepsSystem) {
  auto tok = byte_tok(true);
  std::vector<Message> h = {{Role::kSystem, "sys"}};
  for (int i = 0; i < 5; ++i) {
    h.push_back({Role::kUser, "question number " + std::to_string(i)});
    h.push_back({Role::kAssistant, "answer number " + std::to_string(i)});
  }
  h.push_back({Role::kUser, "last"});
  auto all = aji::infer::build_chat_prompt(tok, h, 100000, 0);
  int dropped = -1;
  std::vector<Message> h2 = h;
  auto trimmed = aji::infer::build_chat_prompt(tok, h2, static_cast<int>(all.size()) - 10, 0, &dropped);
  EXPECT_GT(dropped, 0);
  EXPECT_EQ(dropped % 2, 0);
  EXPECT_LT(trimmed.size(), all.size() - 10 + 1);
  EXPECT_EQ(h2.front().role, Role::kSystem);
  EXPECT_EQ(h2.back().content, "last");
  EXPECT_THROW(aji::infer::build_chat_prompt(tok, h2, 5, 0), aji::Error);
}

TEST(ChatPrompt, TokenizerWithoutChatTokensIsAClearError) {
  auto tok = byte_tok(false);
  EXPECT_THROW(aji::align::require_chat_tokens(tok), aji::Error);
}
