// Chat template: ids and assistant masks against an independent tiktoken rendering
// (tests/reference/chat_reference.py -> tests/fixtures/tokenizer/chat_reference.json).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/tokenizer/chat_template.h"
#include "aji/tokenizer/trainer.h"
#include "test_util.h"

namespace aji::tokenizer {
namespace {

using aji::test::source_path;
using nlohmann::json;

Tokenizer cl100k_chatml() {
  Tokenizer tok = Tokenizer::load(source_path("data/tokenizer/cl100k_base.tiktoken"));
  tok.add_special("<|im_start|>", 100264);
  tok.add_special("<|im_end|>", 100265);
  return tok;
}

std::vector<ChatMessage> messages_of(const json& conv) {
  std::vector<ChatMessage> out;
  for (const auto& m : conv["messages"]) out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  return out;
}

TEST(ChatTemplate, MatchesTiktokenReferenceIdsAndMasks) {
  const Tokenizer tok = cl100k_chatml();
  const json fx = json::parse(read_file(source_path("tests/fixtures/tokenizer/chat_reference.json")));
  ASSERT_GE(fx["conversations"].size(), 8u);
  int joint_checked = 0;
  for (const auto& conv : fx["conversations"]) {
    const auto msgs = messages_of(conv);
    const bool gen = conv.value("add_generation_prompt", false);
    SCOPED_TRACE(conv["text"].get<std::string>());
    const ChatTokens ct = render_chat(tok, msgs, gen);
    EXPECT_EQ(ct.ids, conv["ids"].get<std::vector<TokenId>>());
    EXPECT_EQ(ct.mask, conv["mask"].get<std::vector<uint8_t>>());
    EXPECT_EQ(render_chat_text(msgs, gen), conv["text"].get<std::string>());
    // Where the per-part and whole-string renderings agree (content without leading white
    // space or typed special text), aji must equal the whole-string encoding too.
    if (conv["joint_ids"] == conv["ids"]) {
      EXPECT_EQ(tok.encode(conv["text"].get<std::string>(), SpecialPolicy::kAllow), ct.ids);
      ++joint_checked;
    }
  }
  EXPECT_GE(joint_checked, 5);
}

TEST(ChatTemplate, MaskCoversExactlyAssistantContentAndImEnd) {
  const Tokenizer tok = cl100k_chatml();
  const std::vector<ChatMessage> msgs = {{"system", "Be kind."},
                                         {"user", "안녕하세요?"},
                                         {"assistant", "안녕하세요! 무엇을 도와드릴까요?"},
                                         {"user", "Nothing, thanks <|im_end|>"},
                                         {"assistant", "Goodbye."}};
  const ChatTokens ct = render_chat(tok, msgs);
  ASSERT_EQ(ct.ids.size(), ct.mask.size());
  // Collect runs of mask=1 tokens: each run decodes to one assistant reply + <|im_end|>.
  std::vector<std::string> runs;
  for (size_t i = 0; i < ct.ids.size(); ++i) {
    if (!ct.mask[i]) continue;
    if (i == 0 || !ct.mask[i - 1]) runs.emplace_back();
    runs.back() += tok.decode(&ct.ids[i], 1);
  }
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0], "안녕하세요! 무엇을 도와드릴까요?<|im_end|>");
  EXPECT_EQ(runs[1], "Goodbye.<|im_end|>");
  // Decoding everything gives the rendered text; the typed "<|im_end|>" stayed text.
  EXPECT_EQ(tok.decode(ct.ids), render_chat_text(msgs));
  size_t n_im_end = 0;
  for (TokenId id : ct.ids) n_im_end += id == 100265;
  EXPECT_EQ(n_im_end, msgs.size());
}

TEST(ChatTemplate, WorksWithAnAjiTrainedTokenizer) {
  const std::string text = read_file(source_path("tests/fixtures/tokenizer/train_tiny.txt"));
  TrainResult r = train_bpe(count_pieces_in_texts({text}, SplitPattern::kO200k), 256 + 200);
  Tokenizer tok = tokenizer_from_training(r, SplitPattern::kO200k, {"<|endoftext|>", "<|im_start|>", "<|im_end|>"});
  const std::vector<ChatMessage> msgs = {{"user", "Hi"}, {"assistant", "Hello there"}};
  const ChatTokens ct = render_chat(tok, msgs, /*add_generation_prompt=*/false);
  EXPECT_EQ(ct.ids.front(), 457u);  // <|im_start|> follows the 456 ordinary tokens + <|endoftext|>
  EXPECT_EQ(tok.decode(ct.ids), render_chat_text(msgs));
  const ChatTokens with_prompt = render_chat(tok, msgs, true);
  EXPECT_EQ(tok.decode(with_prompt.ids), render_chat_text(msgs) + "<|im_start|>assistant\n");
  EXPECT_EQ(with_prompt.mask.back(), 0);
}

TEST(ChatTemplate, ClearErrors) {
  const Tokenizer plain = Tokenizer::load(source_path("data/tokenizer/cl100k_base.tiktoken"));
  try {
    render_chat(plain, {{"user", "hi"}});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(e.describe().find("<|im_start|>"), std::string::npos);
    EXPECT_NE(e.describe().find("--special"), std::string::npos);
  }
  const Tokenizer tok = cl100k_chatml();
  EXPECT_THROW(render_chat(tok, {{"robot", "beep"}}), Error);
  EXPECT_THROW(parse_chat_messages("[{\"role\": \"user\"}]"), Error);
  EXPECT_THROW(parse_chat_messages("{not json"), Error);
  const auto msgs = parse_chat_messages(R"({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})");
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_EQ(msgs[1].content, "b");
}

}  // namespace
}  // namespace aji::tokenizer
