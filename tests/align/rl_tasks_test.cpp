// RL tasks: the reader, the verifiers (spec §5.5 and §8.3 check 23), the command verifier
// against misbehaving programs, the GSM8K converter, the arithmetic generator and the CLI.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <fstream>
// libstdc++ 12's <regex> NFA trips gcc's -Wmaybe-uninitialized in the sanitizer build (a
// false positive inside the library header).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <regex>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "aji/align/converters.h"
#include "aji/align/rl_tasks.h"
#include "aji/align/verifiers.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace aji::align;
using aji::test::source_path;
using aji::test::TempDir;

namespace {

fs::path write(const TempDir& dir, const std::string& name, const std::string& text, bool executable = false) {
  fs::path p = dir.path() / name;
  std::ofstream(p, std::ios::binary) << text;
  if (executable) ::chmod(p.c_str(), 0755);
  return p;
}

Task task(const std::string& answer) {
  Task t;
  t.messages = {{Role::kUser, "What is 3 + 4?"}};
  t.answer = answer;
  t.line = 7;
  return t;
}

float score(const std::string& verifier, const std::string& answer, const std::string& reply) {
  return make_verifier(verifier)->score(task(answer), reply, nullptr);
}

}  // namespace

TEST(RlTasks, ReaderNamesFileAndLineAndRefusesAnEmptySet) {
  TempDir dir;
  const std::string ok = R"({"messages":[{"role":"user","content":"2+2?"}],"answer":"4","source":"s"})";
  auto path = write(dir, "t.jsonl",
                    ok + "\n" + R"({"messages":[{"role":"user","content":"q"}]})" + "\n" +
                        R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}],"answer":"1"})" +
                        "\n" + R"({"messages":[{"role":"user","content":"q"}],"answer":"  "})" + "\n" +
                        R"({"messages":[{"role":"user","content":"q"}],"answer":12})" + "\n");
  try {
    read_tasks(path, OnInvalid::kError, nullptr);
    FAIL();
  } catch (const aji::Error& e) {
    EXPECT_EQ(e.file(), path.string());
    EXPECT_EQ(e.line(), 2);
    EXPECT_NE(std::string(e.what()).find("answer"), std::string::npos);
  }
  InputReport rep;
  auto tasks = read_tasks(path, OnInvalid::kSkip, &rep);
  ASSERT_EQ(tasks.size(), 2u);
  EXPECT_EQ(tasks[0].answer, "4");
  EXPECT_EQ(tasks[0].source, "s");
  EXPECT_EQ(tasks[0].line, 1);
  EXPECT_EQ(tasks[1].answer, "12");  // a JSON number is kept as written
  ASSERT_EQ(rep.skipped_count(), 3);
  EXPECT_EQ(rep.skipped[0].kind, "missing_field");
  EXPECT_EQ(rep.skipped[1].kind, "wrong_role");
  EXPECT_EQ(rep.skipped[2].kind, "empty_answer");
  // Round trip.
  Task again;
  ASSERT_FALSE(parse_task_line(task_to_json_line(tasks[0]), again));
  EXPECT_EQ(task_to_json_line(again), task_to_json_line(tasks[0]));
  // Empty task sets are errors, with or without skipping.
  auto empty = write(dir, "e.jsonl", "\n\n");
  EXPECT_THROW(read_tasks(empty, OnInvalid::kSkip, nullptr), aji::Error);
  auto all_bad = write(dir, "b.jsonl", "{}\n");
  try {
    read_tasks(all_bad, OnInvalid::kSkip, nullptr);
    FAIL();
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no valid task"), std::string::npos) << e.what();
  }
}

// §5.5 / §8.3 check 23: GSM8K extraction.
TEST(Verifiers, Gsm8kNumberExtractionTable) {
  EXPECT_EQ(extract_marked_number("so 1000 + 234\n#### 1,234"), "1234");
  EXPECT_EQ(extract_marked_number("#### -5"), "-5");
  EXPECT_EQ(extract_marked_number("#### 3.50"), "3.50");
  EXPECT_EQ(extract_marked_number("#### $12."), "12");
  EXPECT_EQ(extract_marked_number("no marker 42"), std::nullopt);
  // The first marker with a number wins (nanochat) ...
  EXPECT_EQ(extract_marked_number("#### 7\n#### 8"), "7");
  EXPECT_EQ(extract_marked_number("#### none\n#### 8"), "8");
  // ... while without a marker the last number does (lm-eval flexible-extract).
  EXPECT_EQ(extract_last_number("3 + 4 = 7, so 7 apples."), "7");
  EXPECT_EQ(extract_last_number("from 2 to 1,500."), "1500");
  EXPECT_EQ(extract_last_number("it drops to -3"), "-3");
  EXPECT_EQ(extract_last_number("x-5"), "-5");
  EXPECT_EQ(extract_last_number("no digits"), std::nullopt);
  EXPECT_EQ(extract_number("7 then #### 9 and 11"), "9");
  EXPECT_EQ(extract_number("7 then 9 and 11"), "11");
  EXPECT_TRUE(numbers_equal("3.50", "3.5"));
  EXPECT_TRUE(numbers_equal("1234", "1234.0"));
  EXPECT_FALSE(numbers_equal("1234", "1235"));
  EXPECT_FALSE(numbers_equal("1.2.3", "1.2.3"));
}

TEST(Verifiers, RewardTable) {
  struct Case {
    const char* verifier;
    const char* answer;
    const char* reply;
    float want;
  };
  const Case cases[] = {
      {"exact", "Paris", "  Paris\n", 1},
      {"exact", "Paris", "paris", 0},
      {"exact", "Paris", "Paris.", 0},
      {"number", "1234", "The total is\n#### 1,234", 1},
      {"number", "#### 1,234", "#### 1234", 1},  // the answer goes through the same extraction
      {"number", "-5", "#### -5", 1},
      {"number", "3.5", "#### 3.50", 1},
      {"number", "7", "3 + 4 = 7", 1},                  // no marker: the last number
      {"number", "7", "3 + 4 = 7, no wait, 8", 0},
      {"number", "7", "#### 7\nor maybe 8", 1},       // the marker wins over the last number
      {"number", "7", "seven", 0},
      {"number", "7", "", 0},
      {"choice", "B", "B", 1},
      {"choice", "b", "The answer is (B).", 1},
      {"choice", "B", "BANANA is not B", 1},         // BANANA is a word, not a letter
      {"choice", "C", "Answer: D", 0},
      {"choice", "C", "정답은 C입니다", 1},           // Korean around the letter
      {"choice", "A", "no letter here", 0},
      {"regex:[0-9]+", "", "  42 ", 1},
      {"regex:[0-9]+", "", "42 apples", 0},            // full match only
      {"regex:.*#### {answer}", "7", "3+4=7\n#### 7", 0},  // '.' does not cross the newline
      {"regex:(?s).*#### {answer}", "7", "3+4=7\n#### 7", 1},
      {"regex:(?s).*#### {answer}", "1.5", "#### 1x5", 0},  // the answer is literal, '.' not a wildcard
      {"regex:가+", "", "가가가", 1},
  };
  for (const auto& c : cases)
    EXPECT_EQ(score(c.verifier, c.answer, c.reply), c.want)
        << c.verifier << " answer '" << c.answer << "' reply '" << c.reply << "'";
}

TEST(Verifiers, BadNamesAndPatternsAreClearErrors) {
  try {
    make_verifier("numbers");
    FAIL();
  } catch (const aji::Error& e) {
    EXPECT_NE(e.how_to_fix().find("exact, number, choice, regex:PATTERN, command:PROGRAM"), std::string::npos);
  }
  EXPECT_THROW(make_verifier("regex:(unclosed"), aji::Error);
  EXPECT_THROW(make_verifier("regex:"), aji::Error);
  EXPECT_THROW(make_verifier("command:/no/such/program"), aji::Error);
  EXPECT_THROW(make_verifier("command:"), aji::Error);
  // An answer that is not a number is a counted verifier failure, not a crash.
  VerifyStats stats;
  EXPECT_EQ(make_verifier("number")->score(task("seven"), "#### 7", &stats), 0.f);
  EXPECT_EQ(stats.failures_by_kind["bad_answer"], 1);
  EXPECT_EQ(make_verifier("choice")->score(task("F"), "F", &stats), 0.f);
  EXPECT_EQ(stats.failures_by_kind["bad_answer"], 2);
  EXPECT_EQ(stats.calls, 2);
}

// The command verifier against a program that scores, crashes, hangs, prints garbage or
// out-of-range numbers, exits non-zero, or ignores its input: each gives reward 0 and a
// counted failure with its reason, and a hang is cut at the timeout (its children too).
TEST(Verifiers, CommandVerifierSurvivesMisbehavingPrograms) {
  TempDir dir;
  auto good = write(dir, "good.sh",
                    "#!/bin/sh\n# prints 0.7 when the reply contains the answer given on stdin\n"
                    "in=$(cat)\ncase \"$in\" in *'\"reply\":\"seven'*'\"answer\":\"7\"'*) echo 0.7;; *) echo 0;; esac\n",
                    true);
  auto crash = write(dir, "crash.sh", "#!/bin/sh\ncat >/dev/null\nkill -SEGV $$\n", true);
  auto hang = write(dir, "hang.sh", "#!/bin/sh\nsleep 30 &\nsleep 30\n", true);
  auto garbage = write(dir, "garbage.sh", "#!/bin/sh\ncat >/dev/null\necho 'great joke!'\n", true);
  auto big = write(dir, "big.sh", "#!/bin/sh\ncat >/dev/null\necho 1.5\n", true);
  auto nan = write(dir, "nan.sh", "#!/bin/sh\necho nan\n", true);
  auto status = write(dir, "status.sh", "#!/bin/sh\necho 1\necho oops >&2\nexit 3\n", true);
  auto args = write(dir, "args.sh", "#!/bin/sh\ncat >/dev/null\n[ \"$1\" = a ] && [ \"$2\" = b ] && echo 1 || echo 0\n",
                    true);

  VerifierOptions opt;
  opt.command_timeout_s = 0.5;
  VerifyStats stats;
  Task t = task("7");
  EXPECT_FLOAT_EQ(make_verifier("command:" + good.string(), opt)->score(t, "seven", &stats), 0.7f);
  EXPECT_EQ(make_verifier("command:" + good.string(), opt)->score(t, "eight", &stats), 0.f);
  EXPECT_EQ(make_verifier("command:" + args.string() + " a  b", opt)->score(t, "x", &stats), 1.f);
  EXPECT_EQ(stats.failures, 0) << stats.summary();

  EXPECT_EQ(make_verifier("command:" + crash.string(), opt)->score(t, "x", &stats), 0.f);
  EXPECT_EQ(stats.failures_by_kind["crash"], 1) << stats.summary();
  EXPECT_EQ(make_verifier("command:" + garbage.string(), opt)->score(t, "x", &stats), 0.f);
  EXPECT_EQ(stats.failures_by_kind["not_a_number"], 1) << stats.summary();
  EXPECT_EQ(make_verifier("command:" + big.string(), opt)->score(t, "x", &stats), 0.f);
  EXPECT_EQ(make_verifier("command:" + nan.string(), opt)->score(t, "x", &stats), 0.f);
  EXPECT_EQ(stats.failures_by_kind["out_of_range"], 1) << stats.summary();
  EXPECT_EQ(stats.failures_by_kind["not_a_number"], 2) << stats.summary();
  EXPECT_EQ(make_verifier("command:" + status.string(), opt)->score(t, "x", &stats), 0.f);
  EXPECT_EQ(stats.failures_by_kind["exit_status"], 1) << stats.summary();
  EXPECT_NE(stats.summary().find("oops"), std::string::npos) << stats.summary();

  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(make_verifier("command:" + hang.string(), opt)->score(t, "x", &stats), 0.f);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(stats.failures_by_kind["timeout"], 1) << stats.summary();
  EXPECT_GE(secs, 0.45);
  EXPECT_LT(secs, 2.0);
  EXPECT_EQ(stats.failures, 6);
  EXPECT_EQ(stats.calls, 9);

  // Thread-safe: many concurrent calls, one shared stats.
  auto v = make_verifier("command:" + good.string(), opt);
  VerifyStats shared;
  std::vector<std::thread> threads;
  std::vector<float> got(8);
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&, i] { got[i] = v->score(t, i % 2 ? "seven" : "six", &shared); });
  for (auto& th : threads) th.join();
  for (int i = 0; i < 8; ++i) EXPECT_FLOAT_EQ(got[i], i % 2 ? 0.7f : 0.f);
  EXPECT_EQ(shared.calls, 8);
  EXPECT_EQ(shared.failures, 0);
}

TEST(RlTasks, Gsm8kTasksFromTheFixture) {
  InputReport rep;
  auto tasks = convert_gsm8k_tasks(source_path("tests/fixtures/sft/gsm8k_sample.jsonl"), OnInvalid::kError, &rep);
  ASSERT_EQ(tasks.size(), 8u);
  auto v = make_verifier("number");
  // Each task's answer is the number after "####" in the source record, read here with
  // std::regex as an independent reference.
  aji::LineReader r(source_path("tests/fixtures/sft/gsm8k_sample.jsonl"));
  std::string_view line;
  size_t i = 0;
  const std::regex marker("#### (-?[0-9.,]+)");
  while (r.next(line)) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line);
    std::smatch m;
    std::string answer = j["answer"];
    ASSERT_TRUE(std::regex_search(answer, m, marker));
    std::string want = m[1];
    want.erase(std::remove(want.begin(), want.end(), ','), want.end());
    ASSERT_LT(i, tasks.size());
    EXPECT_EQ(tasks[i].answer, want);
    EXPECT_EQ(tasks[i].messages[0].content, j["question"].get<std::string>());
    EXPECT_EQ(v->score(tasks[i], answer, nullptr), 1.f) << "the full worked answer scores 1";
    ++i;
  }
  TempDir dir;
  auto bad = write(dir, "g.jsonl", R"({"question":"q","answer":"no final line"})" "\n");
  EXPECT_THROW(convert_gsm8k_tasks(bad, OnInvalid::kError, nullptr), aji::Error);
}

TEST(Arithmetic, DeterministicWithDisjointSplitsAndCorrectAnswers) {
  ArithOptions o;
  o.train = 600;
  o.test = 120;
  o.seed = 5;
  o.sft_wrong_fraction = 0.25;
  ArithSet a = make_arithmetic(o), b = make_arithmetic(o);
  ASSERT_EQ(a.train.size(), 600u);
  ASSERT_EQ(a.test.size(), 120u);
  ASSERT_EQ(a.sft.size(), 600u);
  for (size_t i = 0; i < a.train.size(); ++i) EXPECT_EQ(task_to_json_line(a.train[i]), task_to_json_line(b.train[i]));
  for (size_t i = 0; i < a.test.size(); ++i) EXPECT_EQ(task_to_json_line(a.test[i]), task_to_json_line(b.test[i]));
  o.seed = 6;
  ArithSet c = make_arithmetic(o);
  EXPECT_NE(task_to_json_line(a.train[0]) + task_to_json_line(a.train[1]),
            task_to_json_line(c.train[0]) + task_to_json_line(c.train[1]));

  // The held-out operand pairs never occur in training (either order, either operation).
  std::set<std::pair<int, int>> train_pairs, test_pairs;
  for (const auto& t : a.train) train_pairs.insert(*arith_operands(t));
  for (const auto& t : a.test) test_pairs.insert(*arith_operands(t));
  for (const auto& p : test_pairs) EXPECT_FALSE(train_pairs.count(p)) << p.first << "," << p.second;
  EXPECT_GT(test_pairs.size(), 10u);

  // Answers recomputed from the numbers in the question text (an independent parse).
  int ko = 0, en = 0;
  const std::regex nums("([0-9]+)[^0-9]+([0-9]+)");
  for (const auto& t : a.train) {
    const std::string& q = t.messages[0].content;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(q, m, nums)) << q;
    int x = std::stoi(m[1]), y = std::stoi(m[2]);
    bool add = t.source.find(":add:") != std::string::npos;
    EXPECT_EQ(t.answer, std::to_string(add ? x + y : x - y)) << q;
    EXPECT_GT(std::stoi(t.answer), 0);
    bool korean = static_cast<unsigned char>(q[0]) >= 0x80 || q.rfind("상자", 0) == 0;
    (korean ? ko : en)++;
  }
  EXPECT_EQ(ko, 300);
  EXPECT_EQ(en, 300);

  // SFT replies end with "#### N": right for all but the deliberately wrong quarter.
  auto v = make_verifier("number");
  int right = 0;
  for (size_t i = 0; i < a.sft.size(); ++i) {
    ASSERT_FALSE(check_conversation(a.sft[i]));
    const std::string& reply = a.sft[i].messages.back().content;
    EXPECT_NE(reply.find("\n#### "), std::string::npos);
    bool ok = v->score(a.train[i], reply, nullptr) == 1.f;
    right += ok;
    EXPECT_EQ(ok, a.sft[i].source.find(":wrong") == std::string::npos) << reply;
  }
  EXPECT_EQ(a.sft_wrong, 150);
  EXPECT_EQ(right, 450);
  EXPECT_THROW(make_arithmetic(ArithOptions{.sft_wrong_fraction = 1.5}), aji::Error);
}

// The bundled files are what `aji tasks make-arithmetic` writes with the documented flags.
TEST(Arithmetic, BundledFilesMatchTheGenerator) {
  ArithOptions o;
  o.train = 3000;
  o.test = 300;
  o.seed = 1;
  o.sft_wrong_fraction = 0.3;
  ArithSet set = make_arithmetic(o);
  auto train = read_tasks(source_path("data/rl_tasks/arith_train.jsonl"), OnInvalid::kError, nullptr);
  auto test = read_tasks(source_path("data/rl_tasks/arith_test.jsonl"), OnInvalid::kError, nullptr);
  auto sft = read_conversations(source_path("data/rl_tasks/arith_sft.jsonl"), OnInvalid::kError, nullptr);
  ASSERT_EQ(train.size(), set.train.size());
  ASSERT_EQ(test.size(), set.test.size());
  ASSERT_EQ(sft.size(), set.sft.size());
  for (size_t i = 0; i < train.size(); ++i) ASSERT_EQ(task_to_json_line(train[i]), task_to_json_line(set.train[i]));
  for (size_t i = 0; i < test.size(); ++i) ASSERT_EQ(task_to_json_line(test[i]), task_to_json_line(set.test[i]));
  for (size_t i = 0; i < sft.size(); ++i)
    ASSERT_EQ(conversation_to_json_line(sft[i]), conversation_to_json_line(set.sft[i]));
}

TEST(TasksCli, MakeArithmeticThenCheckAndConvert) {
  TempDir dir;
  std::string bin = AJI_BINARY, log;
  ASSERT_EQ(aji::test::run_command(bin + " tasks make-arithmetic --lang ko --train 50 --test 10 --seed 3 --out-dir " +
                                       dir.path().string() + " --sft-wrong-fraction 0.2 2>&1",
                                   &log),
            0)
      << log;
  EXPECT_NE(log.find("(10 with a wrong answer)"), std::string::npos) << log;
  auto tasks = read_tasks(dir.path() / "arith_train.jsonl", OnInvalid::kError, nullptr);
  ASSERT_EQ(tasks.size(), 50u);
  ArithOptions o;
  o.lang = ArithLang::kKorean;
  o.train = 50;
  o.test = 10;
  o.seed = 3;
  o.sft_wrong_fraction = 0.2;
  EXPECT_EQ(task_to_json_line(tasks[17]), task_to_json_line(make_arithmetic(o).train[17]));
  auto train = (dir.path() / "arith_train.jsonl").string();
  ASSERT_EQ(aji::test::run_command(bin + " tasks check " + train + " --verifier number 2>&1", &log), 0) << log;
  EXPECT_NE(log.find("every task's answer scores 1"), std::string::npos) << log;
  // A verifier whose format the answers do not meet: every task is listed as failing.
  EXPECT_EQ(aji::test::run_command(bin + " tasks check " + train + " --verifier choice 2>&1", &log), 1) << log;
  EXPECT_NE(log.find("50 of 50 tasks"), std::string::npos) << log;
  EXPECT_EQ(aji::test::run_command(bin + " tasks check " + train + " --verifier sum 2>&1", &log), 1) << log;
  EXPECT_NE(log.find("exact, number, choice"), std::string::npos) << log;
  auto out = (dir.path() / "g.jsonl").string();
  ASSERT_EQ(aji::test::run_command(bin + " tasks convert --format gsm8k " +
                                       source_path("tests/fixtures/sft/gsm8k_sample.jsonl").string() + " --out " + out +
                                       " 2>&1",
                                   &log),
            0)
      << log;
  ASSERT_EQ(aji::test::run_command(bin + " tasks check " + out + " --verifier number 2>&1", &log), 0) << log;
  EXPECT_NE(log.find("8 tasks"), std::string::npos) << log;
}
