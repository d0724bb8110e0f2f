// aji chat's prompt building: the same ids as the SFT renderer (prefix property), history
// trimming that keeps the system message, and a clear error without chat tokens.
#include <gtest/gtest.h>

#include "aji/align/render.h"
#include "aji/base/error.h"
#include "aji/infer/chat.h"
#include "aji/tokenizer/tokenizer_files.h"
#include "aji/train/checkpoint.h"
#include "test_util.h"

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

TEST(ChatSession, RepliesKeepHistoryAndNeverPrintImEnd) {
  auto tok = byte_tok(true);
  aji::model::ModelConfig c;
  c.vocab_size = 259; c.n_layer = 1; c.n_head = 2; c.n_kv_head = 2; c.d_model = 16; c.d_ff = 32; c.max_seq_len = 128;
  aji::model::Model m(c);
  m.init_weights(1);
  aji::infer::GenerateOptions o;
  o.max_tokens = 8;
  o.sampling = {0.0f, 0, 1.0f};
  aji::infer::ChatSession s(m, tok, o);
  s.set_system("sys");
  std::string streamed;
  std::string r = s.reply("hi", [&](const std::string& p) { streamed += p; });
  EXPECT_EQ(r, streamed);
  EXPECT_EQ(r.find("<|im_end|>"), std::string::npos);
  ASSERT_EQ(s.history().size(), 3u);
  int dropped = 0;
  for (int i = 0; i < 10; ++i) s.reply("a longer question to fill the context " + std::to_string(i), nullptr, &dropped);
  EXPECT_EQ(s.history().front().role, Role::kSystem);
  s.reset();
  EXPECT_EQ(s.history().size(), 1u);
  aji::tokenizer::Tokenizer plain = byte_tok(false);
  EXPECT_THROW(aji::infer::ChatSession(m, plain, o), aji::Error);
}

TEST(ChatCli, PromptRepliesAndClearErrors) {
  aji::test::TempDir tmp;
  aji::model::ModelConfig c;
  c.vocab_size = 259; c.n_layer = 1; c.n_head = 2; c.n_kv_head = 2; c.d_model = 16; c.d_ff = 32; c.max_seq_len = 128;
  aji::model::Model m(c);
  m.init_weights(2);
  auto tokp = tmp.path() / "aji_tokenizer.json";
  aji::tokenizer::save_aji_tokenizer_file(byte_tok(true), tokp);
  aji::train::save_model_dir(tmp.path() / "m", m, {tokp});
  std::string out;
  std::string bin = AJI_BINARY;
  int rc = aji::test::run_command(bin + " chat --model " + (tmp.path() / "m").string() +
                                      " --prompt hi --prompt 안녕 --max-tokens 5 --temperature 0 2>&1", &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(out.find("<|im_end|>"), std::string::npos) << out;
  auto plain = tmp.path() / "plain.json";
  aji::tokenizer::save_aji_tokenizer_file(byte_tok(false), plain);
  rc = aji::test::run_command(bin + " chat --model " + (tmp.path() / "m").string() + " --tokenizer " + plain.string() +
                                  " --prompt hi 2>&1", &out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("<|im_start|>"), std::string::npos) << out;
  EXPECT_NE(out.find("fix"), std::string::npos) << out;
}
