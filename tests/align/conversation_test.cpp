#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <string>

#include "aji/align/conversation.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace aji::align;
using aji::test::TempDir;

namespace {

fs::path write(const TempDir& dir, const std::string& name, const std::string& text) {
  fs::path p = dir.path() / name;
  std::ofstream(p, std::ios::binary) << text;
  return p;
}

std::optional<RuleViolation> check_line(const std::string& line, ConversationRules rules = {}) {
  Conversation c;
  if (auto bad = parse_conversation_line(line, c)) return bad;
  return check_conversation(c, rules);
}

}  // namespace

TEST(Conversation, AcceptsValidSingleAndMultiTurn) {
  EXPECT_FALSE(check_line(R"({"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]})"));
  EXPECT_FALSE(check_line(
      R"({"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"2+2?"},)"
      R"({"role":"assistant","content":"4"},{"role":"user","content":"안녕?"},{"role":"assistant","content":"안녕하세요"}]})"));
}

TEST(Conversation, EachRuleViolationHasItsKind) {
  struct Case {
    const char* line;
    const char* kind;
  } cases[] = {
      {R"({"messages":[{"role":"robot","content":"x"},{"role":"assistant","content":"y"}]})", "unknown_role"},
      {R"({"messages":[{"content":"x"},{"role":"assistant","content":"y"}]})", "unknown_role"},
      {R"({"messages":[{"role":"user","content":""},{"role":"assistant","content":"y"}]})", "empty_content"},
      {R"({"messages":[{"role":"user","content":" \n\t"},{"role":"assistant","content":"y"}]})", "empty_content"},
      {R"({"messages":[{"role":"user"},{"role":"assistant","content":"y"}]})", "empty_content"},
      {R"({"messages":[{"role":"user","content":"x"}]})", "no_assistant"},
      {R"({"messages":[{"role":"system","content":"s"},{"role":"user","content":"x"}]})", "no_assistant"},
      {R"({"messages":[{"role":"user","content":"x"},{"role":"user","content":"y"},{"role":"assistant","content":"z"}]})",
       "not_alternating"},
      {R"({"messages":[{"role":"assistant","content":"x"},{"role":"user","content":"y"}]})", "not_alternating"},
      {R"({"messages":[{"role":"user","content":"x"},{"role":"system","content":"s"},{"role":"assistant","content":"z"}]})",
       "misplaced_system"},
      {R"({"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"y"},{"role":"user","content":"z"}]})",
       "ends_with_user"},
      {R"({"messages":[]})", "no_messages"},
      {R"({"text":"no messages key"})", "no_messages"},
      {R"({"messages":[{"role":"user","content":"x"},)", "malformed_json"},
      {R"([1,2,3])", "malformed_json"},
      {R"({"messages":"hi"})", "malformed_json"},
      {R"({"messages":[{"role":"user","content":["part"]},{"role":"assistant","content":"y"}]})", "malformed_json"},
      {"{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"},{\"role\":\"assistant\",\"content\":\"y\"}]}",
       "malformed_json"},  // nlohmann rejects invalid UTF-8 while parsing
  };
  for (const auto& c : cases) {
    auto bad = check_line(c.line);
    ASSERT_TRUE(bad.has_value()) << c.line;
    EXPECT_EQ(bad->kind, c.kind) << c.line << " → " << bad->detail;
    EXPECT_FALSE(bad->detail.empty());
  }
}

TEST(Conversation, TrailingUserAllowedForPromptFiles) {
  const char* line =
      R"({"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"y"},{"role":"user","content":"z"}]})";
  ConversationRules prompts;
  prompts.require_final_assistant = false;
  EXPECT_FALSE(check_line(line, prompts));
}

TEST(Conversation, InvalidUtf8InMemoryIsCaught) {
  Conversation c;
  c.messages = {{Role::kUser, "ok"}, {Role::kAssistant, std::string("bad \xC0\xAF overlong")}};
  auto bad = check_conversation(c);
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->kind, "invalid_utf8");
  c.messages[1].content = "\xED\xA0\x80";  // a UTF-16 surrogate encoded in UTF-8
  EXPECT_EQ(check_conversation(c)->kind, "invalid_utf8");
  c.messages[1].content = "fine: 한국어 ✓ 😀";
  EXPECT_FALSE(check_conversation(c));
}

TEST(Conversation, ReadStopsAtFirstBadLineNamingFileAndLine) {
  TempDir dir;
  auto p = write(dir, "c.jsonl",
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\",\"content\":\"b\"}]}\n"
                 "\n"
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"bot\",\"content\":\"b\"}]}\n");
  try {
    read_conversations(p, OnInvalid::kError, nullptr);
    FAIL() << "expected an error";
  } catch (const aji::Error& e) {
    EXPECT_EQ(e.file(), p.string());
    EXPECT_EQ(e.line(), 3);
    EXPECT_NE(std::string(e.what()).find("unknown role 'bot'"), std::string::npos) << e.what();
    EXPECT_NE(e.how_to_fix().find("--skip-invalid"), std::string::npos);
  }
}

TEST(Conversation, SkipPolicyCountsAndListsEverySkip) {
  TempDir dir;
  std::string good = R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}],"source":"s:1"})";
  auto p = write(dir, "c.jsonl",
                 good + "\n" + R"({"messages":[{"role":"user","content":""},{"role":"assistant","content":"a"}]})" +
                     "\nnot json\n" + good + "\n" + R"({"messages":[{"role":"user","content":"q"}]})" + "\n");
  InputReport rep;
  auto convs = read_conversations(p, OnInvalid::kSkip, &rep);
  ASSERT_EQ(convs.size(), 2u);
  EXPECT_EQ(convs[0].source, "s:1");
  EXPECT_EQ(convs[1].line, 4);
  EXPECT_EQ(rep.records_read, 5);
  EXPECT_EQ(rep.records_kept, 2);
  ASSERT_EQ(rep.skipped_count(), 3);
  EXPECT_EQ(rep.skipped[0].line, 2);
  EXPECT_EQ(rep.skipped[1].kind, "malformed_json");
  EXPECT_EQ(rep.skipped[2].kind, "no_assistant");
  EXPECT_EQ(rep.skipped_by_kind.at("empty_content"), 1);
  std::string summary = rep.summary();
  EXPECT_NE(summary.find("skipped 3"), std::string::npos) << summary;
  EXPECT_NE(summary.find(p.string() + ":2:"), std::string::npos) << summary;
}

TEST(Conversation, WriteThenReadRoundTripsExactly) {
  TempDir dir;
  Conversation a;
  a.messages = {{Role::kSystem, "시스템"}, {Role::kUser, "line1\nline2 \"quoted\" \\ <|im_end|>"},
                {Role::kAssistant, "tab\there"}, {Role::kUser, "again"}, {Role::kAssistant, "😀"}};
  a.source = "test:1";
  Conversation b;
  b.messages = {{Role::kUser, "x"}, {Role::kAssistant, "y"}};
  auto p = dir.path() / "out.jsonl";
  write_conversations(p, {a, b});
  auto back = read_conversations(p, OnInvalid::kError, nullptr);
  ASSERT_EQ(back.size(), 2u);
  ASSERT_EQ(back[0].messages.size(), a.messages.size());
  for (size_t i = 0; i < a.messages.size(); ++i) {
    EXPECT_EQ(back[0].messages[i].role, a.messages[i].role);
    EXPECT_EQ(back[0].messages[i].content, a.messages[i].content);
  }
  EXPECT_EQ(back[0].source, "test:1");
  EXPECT_TRUE(back[1].source.empty());
  // One conversation per line, UTF-8 kept as is (not \u escapes).
  std::string text = aji::read_file(p);
  EXPECT_NE(text.find("시스템"), std::string::npos);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2);
}

TEST(Conversation, StatsCountTurnsAndBytes) {
  Conversation a;
  a.messages = {{Role::kSystem, "s"}, {Role::kUser, "uu"}, {Role::kAssistant, "aaa"}, {Role::kUser, "u"},
                {Role::kAssistant, "a"}};
  Conversation b;
  b.messages = {{Role::kUser, "q"}, {Role::kAssistant, "r"}};
  auto s = conversation_stats({a, b});
  EXPECT_EQ(s.conversations, 2);
  EXPECT_EQ(s.messages, 7);
  EXPECT_EQ(s.multi_turn, 1);
  EXPECT_EQ(s.with_system, 1);
  EXPECT_EQ(s.user_bytes, 4);
  EXPECT_EQ(s.assistant_bytes, 5);
  EXPECT_EQ(s.system_bytes, 1);
}

TEST(Conversation, SampleAndSplitAreDeterministicPartitions) {
  std::vector<Conversation> convs(100);
  for (int i = 0; i < 100; ++i) convs[i].source = std::to_string(i);
  auto s1 = sample_conversations(convs, 30, 7), s2 = sample_conversations(convs, 30, 7),
       s3 = sample_conversations(convs, 30, 8);
  ASSERT_EQ(s1.size(), 30u);
  bool same = true, differs = false;
  for (int i = 0; i < 30; ++i) {
    same &= s1[i].source == s2[i].source;
    differs |= s1[i].source != s3[i].source;
  }
  EXPECT_TRUE(same);
  EXPECT_TRUE(differs);
  EXPECT_EQ(sample_conversations(convs, -1, 1).size(), 100u);

  auto [train, val] = split_conversations(convs, 0.1, 3);
  EXPECT_EQ(val.size(), 10u);
  EXPECT_EQ(train.size(), 90u);
  std::set<std::string> seen;
  for (auto& c : train) seen.insert(c.source);
  for (auto& c : val) EXPECT_TRUE(seen.insert(c.source).second) << "in both halves: " << c.source;
  EXPECT_EQ(seen.size(), 100u);
  EXPECT_THROW(split_conversations(convs, 1.0, 3), aji::Error);
}

TEST(SftCli, CheckReportsBadLineAndExitsNonZero) {
  TempDir dir;
  auto p = write(dir, "bad.jsonl",
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\",\"content\":\"b\"}]}\n"
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":\"b\"}]}\n");
  std::string out;
  int rc = aji::test::run_command(std::string(AJI_BINARY) + " sft check --input " + p.string() + " 2>&1", &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find(p.string() + ":2"), std::string::npos) << out;
  EXPECT_NE(out.find("alternate"), std::string::npos) << out;
  rc = aji::test::run_command(std::string(AJI_BINARY) + " sft check --skip-invalid --input " + p.string() + " 2>&1", &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("kept 1, skipped 1 (not_alternating 1)"), std::string::npos) << out;
}

TEST(SftCli, MixSamplesSplitsAndIsDeterministic) {
  TempDir dir;
  std::string a, b;
  for (int i = 0; i < 30; ++i)
    a += R"({"messages":[{"role":"user","content":"a)" + std::to_string(i) +
         R"("},{"role":"assistant","content":"x"}],"source":"a:)" + std::to_string(i) + "\"}\n";
  for (int i = 0; i < 10; ++i)
    b += R"({"messages":[{"role":"user","content":"b)" + std::to_string(i) +
         R"("},{"role":"assistant","content":"y"}],"source":"b:)" + std::to_string(i) + "\"}\n";
  auto pa = write(dir, "a.jsonl", a), pb = write(dir, "b.jsonl", b);
  auto run = [&](const std::string& tag) {
    std::string out;
    std::string cmd = std::string(AJI_BINARY) + " sft mix --in " + pa.string() + ":20 --in " + pb.string() +
                      " --val-fraction 0.1 --seed 5 --train " + (dir.path() / (tag + "_train.jsonl")).string() +
                      " --val " + (dir.path() / (tag + "_val.jsonl")).string() + " 2>&1";
    EXPECT_EQ(aji::test::run_command(cmd, &out), 0) << out;
  };
  run("one");
  run("two");
  auto train = read_conversations(dir.path() / "one_train.jsonl", OnInvalid::kError, nullptr);
  auto val = read_conversations(dir.path() / "one_val.jsonl", OnInvalid::kError, nullptr);
  EXPECT_EQ(train.size(), 27u);  // 20 of a + all 10 of b = 30, 3 held out
  EXPECT_EQ(val.size(), 3u);
  int from_b = 0;
  for (const auto& c : train) from_b += c.source[0] == 'b';
  for (const auto& c : val) from_b += c.source[0] == 'b';
  EXPECT_EQ(from_b, 10);
  EXPECT_EQ(aji::read_file(dir.path() / "one_train.jsonl"), aji::read_file(dir.path() / "two_train.jsonl"));
  std::string out;
  int rc = aji::test::run_command(std::string(AJI_BINARY) + " sft mix --in " + pb.string() + ":11 --val-fraction 0 --train " +
                                      (dir.path() / "x.jsonl").string() + " 2>&1",
                                  &out);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find("only 10"), std::string::npos) << out;
}
