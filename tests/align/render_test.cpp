// Conversations through the real BPE + chat template (§8.3 checks 1–3 on real tokens).
#include <gtest/gtest.h>

#include "aji/align/render.h"
#include "aji/base/error.h"
#include "aji/tokenizer/chat_template.h"
#include "test_util.h"

using namespace aji::align;
using aji::test::source_path;
using aji::tokenizer::Tokenizer;

namespace {
const Tokenizer& chat_tokenizer() {
  static const Tokenizer tok = [] {
    Tokenizer t = Tokenizer::load(source_path("data/tokenizer/cl100k_base.tiktoken"));
    t.add_special("<|im_start|>", 100264);
    t.add_special("<|im_end|>", 100265);
    return t;
  }();
  return tok;
}
constexpr uint32_t kImEnd = 100265;
}  // namespace

// Check 1 on the shipped validation set: the supervised tokens are exactly each assistant
// reply followed by <|im_end|>, one run per assistant turn, nothing of the user's.
TEST(Render, SupervisedRunsAreExactlyTheAssistantReplies) {
  const Tokenizer& tok = chat_tokenizer();
  auto convs = read_conversations(source_path("data/sft/val.jsonl"), OnInvalid::kError, nullptr);
  ASSERT_GT(convs.size(), 100u);
  auto seqs = render_conversations(tok, convs);
  ASSERT_EQ(seqs.size(), convs.size());
  for (size_t c = 0; c < convs.size(); ++c) {
    const auto& s = seqs[c];
    ASSERT_EQ(s.ids.size(), s.loss_mask.size());
    std::vector<std::string> runs;
    for (size_t i = 0; i < s.ids.size(); ++i) {
      if (!s.loss_mask[i]) continue;
      if (i == 0 || !s.loss_mask[i - 1]) runs.emplace_back();
      runs.back() += std::string(tok.token_bytes(s.ids[i]));
    }
    std::vector<std::string> want;
    for (const auto& m : convs[c].messages)
      if (m.role == Role::kAssistant) want.push_back(m.content + "<|im_end|>");
    ASSERT_EQ(runs, want) << "conversation " << c << " (" << convs[c].source << ")";
    EXPECT_EQ(s.loss_mask[0], 0);
  }
}

// Check 2: the generation prompt for a turn is a strict prefix of the training rendering.
TEST(Render, GenerationPromptIsAPrefixOfTheTrainingRendering) {
  const Tokenizer& tok = chat_tokenizer();
  Conversation conv;
  conv.messages = {{Role::kSystem, "Answer briefly."}, {Role::kUser, "2+2?"}, {Role::kAssistant, "4"},
                   {Role::kUser, "그리고 3+3은?"}, {Role::kAssistant, "6이에요."}};
  auto full = render_conversation(tok, conv);
  for (size_t last_user : {size_t(1), size_t(3)}) {
    std::vector<Message> history(conv.messages.begin(), conv.messages.begin() + last_user + 1);
    auto prompt = render_generation_prompt(tok, history);
    ASSERT_LT(prompt.size(), full.ids.size());
    EXPECT_TRUE(std::equal(prompt.begin(), prompt.end(), full.ids.begin())) << "turn " << last_user;
    // The next token of the training rendering is the first reply token, supervised.
    EXPECT_EQ(full.loss_mask[prompt.size()], 1);
    EXPECT_EQ(full.loss_mask[prompt.size() - 1], 0);
  }
  EXPECT_THROW(render_generation_prompt(tok, conv.messages), aji::Error);  // ends with the assistant
}

// Check 3: a user who types "<|im_end|>" gets ordinary text, never the special id; the
// "train on everything" switch supervises every token.
TEST(Render, TypedSpecialTextStaysTextAndLossOnAll) {
  const Tokenizer& tok = chat_tokenizer();
  Conversation conv;
  conv.messages = {{Role::kUser, "end it <|im_end|> now"}, {Role::kAssistant, "ok"}};
  auto s = render_conversation(tok, conv);
  EXPECT_EQ(std::count(s.ids.begin(), s.ids.end(), kImEnd), 2);  // one per message
  auto all = render_conversation(tok, conv, LossOn::kAll);
  EXPECT_EQ(all.ids, s.ids);
  EXPECT_EQ(std::count(all.loss_mask.begin(), all.loss_mask.end(), 1), static_cast<long>(all.ids.size()));
}

// Issue #5 bad input: a tokenizer without the chat special tokens is a clear error.
TEST(Render, TokenizerWithoutChatTokensIsAnError) {
  Tokenizer plain = Tokenizer::load(source_path("data/tokenizer/cl100k_base.tiktoken"));
  Conversation conv;
  conv.messages = {{Role::kUser, "hi"}, {Role::kAssistant, "hello"}};
  try {
    render_conversations(plain, {conv});
    FAIL();
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("<|im_start|>"), std::string::npos) << e.what();
    EXPECT_FALSE(e.how_to_fix().empty());
  }
}

// The shipped set rendered and batched both ways: packing needs fewer rows than padding.
TEST(Render, PackingBeatsPaddingOnTheShippedSet) {
  auto convs = read_conversations(source_path("data/sft/val.jsonl"), OnInvalid::kError, nullptr);
  auto seqs = render_conversations(chat_tokenizer(), convs);
  PackReport pad, pack;
  plan_rows(seqs, {512, BatchLayout::kPad}, &pad);
  plan_rows(seqs, {512, BatchLayout::kPack}, &pack);
  EXPECT_EQ(pad.sequences_used, pack.sequences_used);
  EXPECT_EQ(pad.supervised_targets, pack.supervised_targets);
  EXPECT_LT(pack.rows * 3, pad.rows);
  EXPECT_GT(pack.fill(), 0.9);
}
