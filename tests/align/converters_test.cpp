#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <nlohmann/json.hpp>

#include "aji/align/converters.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace aji::align;
using aji::test::TempDir;
using aji::test::source_path;

namespace {

// Expected conversations written by tests/reference/sft_converters.py (an independent
// Python implementation over the same sample of the real data set).
std::vector<nlohmann::json> expected(const std::string& name) {
  std::vector<nlohmann::json> out;
  aji::LineReader r(source_path("tests/fixtures/sft/" + name));
  std::string_view line;
  while (r.next(line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line)["messages"]);
  return out;
}

nlohmann::json as_json(const Conversation& c) {
  nlohmann::json msgs = nlohmann::json::array();
  for (const auto& m : c.messages) msgs.push_back({{"role", role_name(m.role)}, {"content", m.content}});
  return msgs;
}

void expect_matches_reference(SourceFormat f, const std::string& input, const std::string& expected_file) {
  InputReport rep;
  auto convs = convert_file(f, source_path("tests/fixtures/sft/" + input), {}, &rep);
  auto want = expected(expected_file);
  ASSERT_EQ(convs.size(), want.size());
  for (size_t i = 0; i < convs.size(); ++i) EXPECT_EQ(as_json(convs[i]), want[i]) << input << " conversation " << i;
  EXPECT_EQ(rep.records_kept, static_cast<int64_t>(want.size()));
  EXPECT_EQ(rep.skipped_count(), 0);
}

fs::path write(const TempDir& dir, const std::string& name, const std::string& text) {
  fs::path p = dir.path() / name;
  std::ofstream(p, std::ios::binary) << text;
  return p;
}

}  // namespace

TEST(Converters, KoreanChatbotMatchesReference) {
  expect_matches_reference(SourceFormat::kKoreanChatbot, "chatbot_sample.csv", "chatbot_expected.jsonl");
}
TEST(Converters, OasstBestBranchMatchesReference) {
  expect_matches_reference(SourceFormat::kOasst, "oasst_trees.jsonl", "oasst_expected.jsonl");
}
TEST(Converters, SelfInstructMatchesReference) {
  expect_matches_reference(SourceFormat::kSelfInstruct, "self_instruct_sample.jsonl", "self_instruct_expected.jsonl");
}
TEST(Converters, Gsm8kMatchesReference) {
  expect_matches_reference(SourceFormat::kGsm8k, "gsm8k_sample.jsonl", "gsm8k_expected.jsonl");
}

TEST(Converters, OasstFollowsRankZeroAndSkipsDeleted) {
  TempDir dir;
  // prompt → {rank 1: "worse", rank 0: "best" → {deleted prompter, prompter "follow-up" → unranked
  // [first "A", second "B"]}}: the branch is prompt, best, follow-up, A.
  auto p = write(dir, "t.jsonl", R"({"message_tree_id":"t1","prompt":{"role":"prompter","text":"prompt","replies":[)"
                                 R"({"role":"assistant","text":"worse","rank":1,"replies":[]},)"
                                 R"({"role":"assistant","text":"best","rank":0,"replies":[)"
                                 R"({"role":"prompter","text":"deleted","deleted":true,"replies":[]},)"
                                 R"({"role":"prompter","text":"follow-up","replies":[)"
                                 R"({"role":"assistant","text":"A","replies":[]},{"role":"assistant","text":"B","replies":[]}]}]}]}})"
                                 "\n"
                                 R"({"message_tree_id":"t2","prompt":{"role":"prompter","text":"unanswered","replies":[]}})"
                                 "\n");
  InputReport rep;
  ConvertOptions opt;
  opt.on_invalid = OnInvalid::kSkip;
  opt.system_prompt = "You are helpful.";
  auto convs = convert_file(SourceFormat::kOasst, p, opt, &rep);
  ASSERT_EQ(convs.size(), 1u);
  nlohmann::json want = nlohmann::json::parse(
      R"([{"role":"system","content":"You are helpful."},{"role":"user","content":"prompt"},)"
      R"({"role":"assistant","content":"best"},{"role":"user","content":"follow-up"},{"role":"assistant","content":"A"}])");
  EXPECT_EQ(as_json(convs[0]), want);
  EXPECT_EQ(convs[0].source, "oasst:t1");
  ASSERT_EQ(rep.skipped_count(), 1);
  EXPECT_EQ(rep.skipped[0].line, 2);
  EXPECT_EQ(rep.skipped[0].kind, "no_assistant");
}

// Fields of the wrong JSON type ("deleted": 1, a numeric tree or message id) threw
// nlohmann's type_error out of the converter (fuzz_sft_sources): a non-boolean "deleted" is
// not a deletion, a non-string id falls back to the line number.
TEST(Converters, OasstFieldsOfTheWrongTypeAreNotFatal) {
  TempDir dir;
  auto p = write(dir, "t.jsonl", R"({"message_tree_id":7,"prompt":{"role":"prompter","text":"q","message_id":3,"replies":[)"
                                 R"({"role":"assistant","text":"a","rank":0,"deleted":1,"replies":[]},)"
                                 R"({"role":"assistant","text":"b","rank":1,"deleted":"yes","replies":[]}]}})"
                                 "\n");
  InputReport rep;
  ConvertOptions opt;
  opt.on_invalid = OnInvalid::kSkip;
  std::vector<Conversation> convs;
  ASSERT_NO_THROW(convs = convert_file(SourceFormat::kOasst, p, opt, &rep));
  ASSERT_EQ(convs.size(), 1u);
  EXPECT_EQ(convs[0].source, "oasst:1");
  EXPECT_EQ(as_json(convs[0]).back()["content"], "a");
}

TEST(Converters, BadRecordsAreErrorsWithFileAndLine) {
  TempDir dir;
  auto gsm = write(dir, "g.jsonl", "{\"question\":\"q\",\"answer\":\"a #### 1\"}\n{\"question\":\"q\"}\n");
  try {
    convert_file(SourceFormat::kGsm8k, gsm, {}, nullptr);
    FAIL();
  } catch (const aji::Error& e) {
    EXPECT_EQ(e.line(), 2);
    EXPECT_EQ(e.file(), gsm.string());
  }
  auto csv = write(dir, "c.csv", "Q,A,label\nq1,a1,0\nq2,,0\n\"q3\",a3,1\n");
  ConvertOptions skip;
  skip.on_invalid = OnInvalid::kSkip;
  InputReport rep;
  auto convs = convert_file(SourceFormat::kKoreanChatbot, csv, skip, &rep);
  EXPECT_EQ(convs.size(), 2u);
  ASSERT_EQ(rep.skipped_count(), 1);
  EXPECT_EQ(rep.skipped[0].line, 3);
  EXPECT_EQ(rep.skipped[0].kind, "empty_content");
  auto wrong = write(dir, "w.csv", "question,answer\nq,a\n");
  EXPECT_THROW(convert_file(SourceFormat::kKoreanChatbot, wrong, {}, nullptr), aji::Error);
}

TEST(Converters, CalculatorAnnotations) {
  EXPECT_EQ(strip_calculator_annotations("48/2 = <<48/2=24>>24 clips\n#### 72"), "48/2 = 24 clips\n#### 72");
  EXPECT_EQ(strip_calculator_annotations("a <<1+1=2>>2 and <<2*3=6>>6"), "a 2 and 6");
  EXPECT_EQ(strip_calculator_annotations("unclosed <<1+1=2"), "unclosed <<1+1=2");
  EXPECT_EQ(parse_source_format("gsm8k"), SourceFormat::kGsm8k);
  EXPECT_FALSE(parse_source_format("alpaca"));
}

TEST(SftCli, ConvertWritesValidJsonlAndRejectsUnknownFormat) {
  TempDir dir;
  fs::path out = dir.path() / "o.jsonl";
  std::string cmd = std::string(AJI_BINARY) + " sft convert --from gsm8k --input " +
                    source_path("tests/fixtures/sft/gsm8k_sample.jsonl").string() + " --out " + out.string() + " 2>&1";
  std::string log;
  ASSERT_EQ(aji::test::run_command(cmd, &log), 0) << log;
  EXPECT_NE(log.find("kept 8"), std::string::npos) << log;
  auto back = read_conversations(out, OnInvalid::kError, nullptr);
  EXPECT_EQ(back.size(), 8u);
  EXPECT_EQ(back[0].source, "gsm8k:0");
  int rc = aji::test::run_command(std::string(AJI_BINARY) + " sft convert --from alpaca --input " +
                                      source_path("tests/fixtures/sft/gsm8k_sample.jsonl").string() + " --out " +
                                      out.string() + " 2>&1",
                                  &log);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(log.find("korean_chatbot, oasst, self_instruct, gsm8k"), std::string::npos) << log;
}

// Issue #13: `sft mix` without --val wrote a train file missing 5% of the conversations and
// then exited 1. Without --val every conversation goes to --train; an explicit
// --val-fraction without --val is refused before anything is written; with --val the two
// files together hold every input conversation exactly once.
TEST(SftCli, MixWithoutValKeepsEveryConversation) {
  TempDir dir;
  const fs::path in = source_path("tests/fixtures/sft/chatbot_expected.jsonl");
  auto lines_of = [](const fs::path& p) {
    std::multiset<std::string> out;
    for (const Conversation& c : read_conversations(p, OnInvalid::kError, nullptr)) out.insert(as_json(c).dump());
    return out;
  };
  const auto all = lines_of(in);
  ASSERT_GE(all.size(), 10u);
  const fs::path train = dir.path() / "train.jsonl", val = dir.path() / "val.jsonl";
  std::string log;
  ASSERT_EQ(aji::test::run_command(std::string(AJI_BINARY) + " sft mix --in " + in.string() + " --train " +
                                       train.string() + " 2>&1",
                                   &log),
            0)
      << log;
  EXPECT_EQ(lines_of(train), all);

  const fs::path train2 = dir.path() / "train2.jsonl";
  EXPECT_EQ(aji::test::run_command(std::string(AJI_BINARY) + " sft mix --in " + in.string() + " --train " +
                                       train2.string() + " --val-fraction 0.2 2>&1",
                                   &log),
            1);
  EXPECT_NE(log.find("no --val file"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(train2)) << "nothing is written when the command is refused";

  ASSERT_EQ(aji::test::run_command(std::string(AJI_BINARY) + " sft mix --in " + in.string() + " --train " +
                                       train2.string() + " --val " + val.string() + " --val-fraction 0.2 2>&1",
                                   &log),
            0)
      << log;
  auto joined = lines_of(train2);
  const auto held = lines_of(val);
  EXPECT_FALSE(held.empty());
  EXPECT_LT(held.size(), all.size());
  joined.insert(held.begin(), held.end());
  EXPECT_EQ(joined, all);
}
