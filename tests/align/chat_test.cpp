// aji chat's prompt building: the same ids as the SFT renderer (prefix property), history
// trimming that keeps the system message, and a clear error without chat tokens.
#include <gtest/gtest.h>

#include <fstream>

#include "aji/align/render.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/align/chat.h"
#include "aji/tokenizer/tokenizer_files.h"
#include "aji/train/checkpoint.h"
#include "infer/byte_model.h"
#include "test_util.h"

using aji::align::Message;
using aji::align::Role;

using aji::test::byte_tok;

TEST(ChatPrompt, IsAPrefixOfTheTrainingRendering) {
  auto tok = byte_tok(true);
  std::vector<Message> h = {{Role::kSystem, "Be brief."}, {Role::kUser, "hi"}, {Role::kAssistant, "hello"},
                            {Role::kUser, "2+2? 안녕"}};
  auto prompt = aji::align::build_chat_prompt(tok, h, 100000, 0);
  aji::align::Conversation conv;
  conv.messages = h;
  conv.messages.push_back({Role::kAssistant, "4"});
  auto full = aji::align::render_conversation(tok, conv);
  ASSERT_LT(prompt.size(), full.ids.size());
  for (size_t i = 0; i < prompt.size(); ++i) ASSERT_EQ(static_cast<uint32_t>(prompt[i]), full.ids[i]) << i;
  EXPECT_EQ(full.loss_mask[prompt.size()], 1);      // the reply starts right after the prompt
  EXPECT_EQ(full.loss_mask[prompt.size() - 1], 0);
}

// Sizes worked out by hand: with one token per byte, a ChatML message is <|im_start|> role
// \n content <|im_end|> \n = len(role) + len(content) + 4 tokens, and the generation
// prompt <|im_start|> assistant \n is 11. System "sys": 13; user "question number i": 25;
// assistant "answer number i": 28 (a pair: 53); user "last": 12. All: 13 + 5*53 + 12 + 11 = 301.
TEST(ChatPrompt, DropsOldestTurnsKeepsSystem) {
  auto tok = byte_tok(true);
  std::vector<Message> h = {{Role::kSystem, "sys"}};
  for (int i = 0; i < 5; ++i) {
    h.push_back({Role::kUser, "question number " + std::to_string(i)});
    h.push_back({Role::kAssistant, "answer number " + std::to_string(i)});
  }
  h.push_back({Role::kUser, "last"});
  auto fit = [&](int max_context, int reserve, int* dropped) {
    std::vector<Message> copy = h;
    auto ids = aji::align::build_chat_prompt(tok, copy, max_context, reserve, dropped);
    EXPECT_EQ(copy.size(), h.size() - static_cast<size_t>(*dropped));
    EXPECT_EQ(copy.front().content, "sys");
    EXPECT_EQ(copy.back().content, "last");
    if (*dropped < 10) {
      EXPECT_EQ(copy[1].content, "question number " + std::to_string(*dropped / 2));
    }
    return ids.size();
  };
  int dropped = -1;
  EXPECT_EQ(fit(100000, 0, &dropped), 301u);
  EXPECT_EQ(dropped, 0);
  EXPECT_EQ(fit(301, 0, &dropped), 301u);  // exactly full: nothing dropped
  EXPECT_EQ(dropped, 0);
  EXPECT_EQ(fit(291, 0, &dropped), 248u);  // one pair out
  EXPECT_EQ(dropped, 2);
  EXPECT_EQ(fit(301, 10, &dropped), 248u);  // the reply's reserve counts too
  EXPECT_EQ(dropped, 2);
  EXPECT_EQ(fit(142, 0, &dropped), 142u);  // three pairs out, exactly full
  EXPECT_EQ(dropped, 6);
  EXPECT_EQ(fit(141, 0, &dropped), 89u);
  EXPECT_EQ(dropped, 8);
  EXPECT_EQ(fit(36, 0, &dropped), 36u);  // system + last user + prompt only
  EXPECT_EQ(dropped, 10);
  std::vector<Message> h2 = h;
  EXPECT_THROW(aji::align::build_chat_prompt(tok, h2, 35, 0), aji::Error);
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
  aji::align::ChatSession s(m, tok, o);
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
  EXPECT_THROW(aji::align::ChatSession(m, plain, o), aji::Error);
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

TEST(ChatSession, StopRetryUndoSaveAndTheFullHistory) {
  aji::test::TempDir tmp;
  auto tok = byte_tok(true);
  aji::model::Model m(aji::test::byte_model_config(512));
  m.init_weights(4);
  aji::infer::GenerateOptions o;
  o.max_tokens = 12;
  o.sampling = {0.0f, 0, 1.0f};
  aji::align::ChatSession s(m, tok, o);
  EXPECT_EQ(s.system(), "");
  s.set_system("sys");
  EXPECT_EQ(s.system(), "sys");
  EXPECT_THROW(s.retry(), aji::Error);
  EXPECT_FALSE(s.undo());
  EXPECT_THROW(s.save(tmp.path() / "none.jsonl"), aji::Error);
  const std::string r1 = s.reply("first");
  // Stopped after two pieces (Ctrl-C): the reply so far is kept, the session goes on.
  int pieces = 0;
  std::string partial;
  const std::string r2 = s.reply("second", [&](const std::string& p) { partial += p, ++pieces; }, nullptr,
                                 [&] { return pieces >= 2; });
  EXPECT_EQ(s.last_stop(), aji::infer::StopReason::kCallback);
  EXPECT_EQ(pieces, 2);
  EXPECT_EQ(r2, partial);
  ASSERT_EQ(s.history().size(), 5u);
  EXPECT_EQ(s.history().back().content, r2.empty() ? " " : r2);
  // Greedy: retrying gives the full reply the interrupted one would have been.
  const std::string full2 = s.retry();
  EXPECT_EQ(full2.rfind(r2, 0), 0u);
  EXPECT_NE(s.last_stop(), aji::infer::StopReason::kCallback);
  ASSERT_EQ(s.history().size(), 5u);
  EXPECT_EQ(s.history()[3].content, "second");
  EXPECT_TRUE(s.undo());
  ASSERT_EQ(s.history().size(), 3u);
  EXPECT_EQ(s.history().back().content, r1.empty() ? " " : r1);
  s.reply("third");
  s.save(tmp.path() / "c.jsonl");
  aji::align::InputReport report;
  auto convs = aji::align::read_conversations(tmp.path() / "c.jsonl", aji::align::OnInvalid::kError, &report);
  ASSERT_EQ(convs.size(), 1u);
  ASSERT_EQ(convs[0].messages.size(), 5u);
  EXPECT_EQ(convs[0].messages[0].content, "sys");
  EXPECT_EQ(convs[0].messages[1].content, "first");
  EXPECT_EQ(convs[0].messages[3].content, "third");
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(convs[0].messages[i].content, s.history()[i].content);
  // Replies left out of the prompt to fit the context stay in the history (and in /save).
  aji::infer::GenerateOptions small = o;
  aji::model::Model m64(aji::test::byte_model_config(64));
  m64.init_weights(4);
  aji::align::ChatSession t(m64, tok, small);
  int dropped = 0;
  for (int i = 0; i < 4; ++i) t.reply("question " + std::to_string(i), nullptr, &dropped);
  EXPECT_GT(dropped, 0);
  EXPECT_EQ(t.history().size(), 8u);
  EXPECT_EQ(t.history()[0].content, "question 0");
}

namespace {
struct ChatRun {
  int rc;
  std::string out, err;
};
ChatRun chat_cli(const aji::test::TempDir& tmp, const std::string& args, const std::string& input) {
  const auto in = tmp.path() / "in.txt";
  const auto err = tmp.path() / "err.txt";
  { std::ofstream(in, std::ios::binary) << input; }
  ChatRun r;
  r.rc = aji::test::run_command(std::string(AJI_BINARY) + " chat " + args + " < " + in.string() + " 2> " + err.string(),
                                &r.out);
  r.err = aji::read_file(err);
  return r;
}
size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}
}  // namespace

// Before: a bare /system said "system message set" (and cleared it); an unknown /command
// was sent to the model as a message. Plain lines on stdin (not a terminal): commands,
// `\` continuation, """ blocks, //escape, /undo, /retry, /save.
TEST(ChatCli, CommandsMultiLineInputAndSave) {
  aji::test::TempDir tmp;
  const auto dir = aji::test::make_byte_model_dir(tmp.path(), "m", 256, 6);
  const auto saved = tmp.path() / "conv.jsonl";
  const std::string input = "/system\n/system Be brief.\n/system\n/foo bar\nline one\\\nline two\n\"\"\"\nblock a\n"
                            "/not a command\n\"\"\"\n//slash\n/undo\n/retry\n/save " + saved.string() + "\n/nonsense\n";
  ChatRun r = chat_cli(tmp, "--model " + dir.string() + " --temperature 0 --max-tokens 8", input);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("no system message; set one with /system TEXT"), std::string::npos) << r.err;
  EXPECT_EQ(count(r.err, "system message set"), 1u) << r.err;
  EXPECT_NE(r.err.find("system: Be brief."), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("unknown command /foo"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("unknown command /nonsense"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("/retry"), std::string::npos) << r.err;  // the list of commands follows
  aji::align::InputReport report;
  auto convs = aji::align::read_conversations(saved, aji::align::OnInvalid::kError, &report);
  ASSERT_EQ(convs.size(), 1u);
  const auto& msgs = convs[0].messages;
  ASSERT_EQ(msgs.size(), 5u);
  EXPECT_EQ(msgs[0].role, Role::kSystem);
  EXPECT_EQ(msgs[0].content, "Be brief.");
  EXPECT_EQ(msgs[1].content, "line one\nline two");
  EXPECT_EQ(msgs[3].content, "block a\n/not a command");
  EXPECT_EQ(msgs[4].role, Role::kAssistant);
  // stdout: the replies to the two messages, to //slash (undone later) and the retried
  // one (greedy: the same text again), each followed by a newline.
  const std::string r1 = msgs[2].content, r2 = msgs[4].content;
  EXPECT_EQ(r.out.rfind(r1 + "\n" + r2 + "\n", 0), 0u) << r.out;
  ASSERT_GE(r.out.size(), r2.size() + 2);
  EXPECT_EQ(r.out.substr(r.out.size() - r2.size() - 2), "\n" + r2 + "\n") << r.out;
}

// Ctrl-C during a reply stops that reply; the session goes on (here to /save and EOF).
TEST(ChatCli, CtrlCStopsTheReplyNotTheSession) {
  aji::test::TempDir tmp;
  // Seed 1: greedy replies run to --max-tokens without <|im_end|> (8000 tokens take ~5 s of
  // CPU); SIGINT goes as soon as the reply has begun to stream, then the next line (/save).
  const auto dir = aji::test::make_byte_model_dir(tmp.path(), "m", 8192, 1);
  const auto saved = tmp.path() / "conv.jsonl";
  const auto out = tmp.path() / "out.txt", err = tmp.path() / "err.txt";
  const auto script = tmp.path() / "ctrl_c.sh";
  std::ofstream(script) << "cd " << tmp.path().string() << "\nmkfifo fifo\n"
                        << AJI_BINARY << " chat --model " << dir.string()
                        << " --temperature 0 --max-tokens 8000 < fifo > " << out.string() << " 2> " << err.string()
                        << " &\npid=$!\nexec 3> fifo\nprintf 'hello\\n' >&3\ni=0\n"
                        << "while [ ! -s " << out.string() << " ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done\n"
                        << "kill -INT $pid\nsleep 0.3\nprintf '/save " << saved.string() << "\\n' >&3\n"
                        << "exec 3>&-\nwait $pid\necho rc=$?\n";
  std::string rc;
  aji::test::run_command("bash " + script.string(), &rc);
  const std::string e = aji::read_file(err);
  EXPECT_NE(rc.find("rc=0"), std::string::npos) << rc << e;
  EXPECT_NE(e.find("(stopped)"), std::string::npos) << e << "\nstdout: " << aji::read_file(out).size() << " bytes";
  aji::align::InputReport report;
  auto convs = aji::align::read_conversations(saved, aji::align::OnInvalid::kError, &report);
  ASSERT_EQ(convs.size(), 1u);
  ASSERT_EQ(convs[0].messages.size(), 2u);
  EXPECT_EQ(convs[0].messages[0].content, "hello");
  EXPECT_FALSE(convs[0].messages[1].content.empty());
}
