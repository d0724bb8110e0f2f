// Task files, the bundled registry, validation of bad input and few-shot selection.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "aji/base/error.h"
#include "aji/eval/tasks.h"
#include "test_util.h"

namespace {

using aji::eval::TaskKind;

std::filesystem::path write(const std::filesystem::path& p, const std::string& text) {
  std::ofstream(p) << text;
  return p;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const aji::Error& e) {
    return e.describe();
  }
  return "";
}

}  // namespace

TEST(EvalTasks, EveryBundledTaskLoadsAndItsFewShotSplitIsSeparate) {
  const auto dir = aji::test::source_path("data/eval");
  ASSERT_GE(aji::eval::task_registry().size(), 13u);
  for (const auto& spec : aji::eval::task_registry()) {
    SCOPED_TRACE(spec.name);
    aji::eval::Task t = aji::eval::load_task(spec.name, dir);
    EXPECT_EQ(t.spec.kind, spec.kind);
    EXPECT_GE(t.items.size(), 40u);
    EXPECT_GE(t.fewshot.size(), 5u);
    EXPECT_FALSE(t.fewshot_is_items);
    // lm-eval's rule: the examples never include an evaluated item.
    std::set<std::string> eval_keys;
    for (const auto& it : t.items) eval_keys.insert(aji::eval::gold_context(t.spec, it) + "\x1f" + it.continuation);
    for (const auto& ex : t.fewshot)
      EXPECT_EQ(eval_keys.count(aji::eval::gold_context(t.spec, ex) + "\x1f" + ex.continuation), 0u)
          << "few-shot line " << ex.line;
  }
}

TEST(EvalTasks, KindIsDetectedFromTheFieldsOfAFile) {
  aji::test::TempDir tmp;
  TaskKind k;
  aji::eval::read_task_file(write(tmp.path() / "a.jsonl", R"({"context":"Q","choices":["a","b"],"gold":1})"
                                                              "\n\n"),
                            std::nullopt, &k);
  EXPECT_EQ(k, TaskKind::kMultipleChoice);
  auto items = aji::eval::read_task_file(
      write(tmp.path() / "b.jsonl", R"({"contexts":["x a","x b"],"continuation":"y","gold":0})"), std::nullopt, &k);
  EXPECT_EQ(k, TaskKind::kSchema);
  EXPECT_EQ(items[0].choices.size(), 2u);
  aji::eval::read_task_file(write(tmp.path() / "c.jsonl", R"({"context":"x","target":"y"})"), std::nullopt, &k);
  EXPECT_EQ(k, TaskKind::kLanguageModel);
  aji::eval::read_task_file(write(tmp.path() / "d.jsonl", R"({"context":"x","target":"#### 4","answer":"4"})"),
                            std::nullopt, &k);
  EXPECT_EQ(k, TaskKind::kGenerative);
}

TEST(EvalTasks, BadTaskFilesAreClearErrorsWithFileAndLine) {
  aji::test::TempDir tmp;
  auto read = [&](const std::string& name, const std::string& text) {
    return error_of([&] { aji::eval::read_task_file(write(tmp.path() / name, text), std::nullopt); });
  };
  const std::string ok = R"({"context":"Q","choices":["a","b"],"gold":0})";
  std::string e = read("gold.jsonl", ok + "\n" + R"({"context":"Q","choices":["a","b"],"gold":2})" + "\n");
  EXPECT_NE(e.find("gold index 2 is out of range for 2 choices"), std::string::npos) << e;
  EXPECT_NE(e.find("gold.jsonl:2"), std::string::npos) << e;
  e = read("neg.jsonl", R"({"context":"Q","choices":["a","b"],"gold":-1})");
  EXPECT_NE(e.find("out of range"), std::string::npos) << e;
  e = read("nochoices.jsonl", R"({"context":"Q","choices":[],"gold":0})");
  EXPECT_NE(e.find("missing or empty \"choices\""), std::string::npos) << e;
  e = read("one.jsonl", R"({"context":"Q","choices":["a"],"gold":0})");
  EXPECT_NE(e.find("only one entry"), std::string::npos) << e;
  e = read("emptychoice.jsonl", R"({"context":"Q","choices":["a",""],"gold":0})");
  EXPECT_NE(e.find("empty or not a string"), std::string::npos) << e;
  e = read("empty.jsonl", "\n  \n");
  EXPECT_NE(e.find("no items"), std::string::npos) << e;
  e = read("mixed.jsonl", ok + "\n" + R"({"context":"x","target":"y"})" + "\n");
  EXPECT_NE(e.find("\"lm\" item but the task is \"mc\""), std::string::npos) << e;
  e = read("json.jsonl", "{not json}\n");
  EXPECT_NE(e.find("not valid JSON"), std::string::npos) << e;
  e = read("nogold.jsonl", R"({"context":"Q","choices":["a","b"]})");
  EXPECT_NE(e.find("\"gold\""), std::string::npos) << e;
}

TEST(EvalTasks, UnknownTaskNameListsTheKnownOnes) {
  std::string e = error_of([] { aji::eval::load_task("arc_eazy", aji::test::source_path("data/eval")); });
  EXPECT_NE(e.find("unknown task \"arc_eazy\""), std::string::npos) << e;
  for (const char* name : {"arc_easy", "hellaswag", "winogrande", "lambada", "klue_nli", "kornli", "gsm8k"})
    EXPECT_NE(e.find(name), std::string::npos) << e;
}

TEST(EvalTasks, FewShotExamplesNeverIncludeTheItemAndAreSeededAndDistinct) {
  for (size_t item = 0; item < 30; ++item) {
    auto a = aji::eval::fewshot_indices(30, 5, item, /*same_split=*/true, 1234);
    ASSERT_EQ(a.size(), 5u);
    EXPECT_EQ(std::set<size_t>(a.begin(), a.end()).size(), 5u);
    for (size_t i : a) {
      EXPECT_NE(i, item);
      EXPECT_LT(i, 30u);
    }
    EXPECT_EQ(a, aji::eval::fewshot_indices(30, 5, item, true, 1234));  // deterministic
  }
  // The whole pool but the item: every other index exactly once.
  auto all = aji::eval::fewshot_indices(6, 5, 2, true, 7);
  EXPECT_EQ(std::set<size_t>(all.begin(), all.end()), (std::set<size_t>{0, 1, 3, 4, 5}));
  EXPECT_NE(aji::eval::fewshot_indices(100, 5, 0, false, 1), aji::eval::fewshot_indices(100, 5, 0, false, 2));
  EXPECT_THROW(aji::eval::fewshot_indices(6, 6, 2, true, 7), aji::Error);
  EXPECT_TRUE(aji::eval::fewshot_indices(6, 0, 2, true, 7).empty());
}

TEST(EvalTasks, FileTaskWithoutFewShotSplitDrawsFromItselfButNeverTheItem) {
  aji::test::TempDir tmp;
  std::string text;
  for (int i = 0; i < 4; ++i)
    text += R"({"context":"Q)" + std::to_string(i) + R"(:","choices":["a","b"],"gold":)" + std::to_string(i % 2) + "}\n";
  auto path = write(tmp.path() / "mine.jsonl", text);
  aji::eval::Task t = aji::eval::load_task(path.string(), tmp.path());
  EXPECT_TRUE(t.fewshot_is_items);
  EXPECT_EQ(t.spec.name, "mine");
  auto ex = aji::eval::fewshot_indices(t.fewshot.size(), 3, 1, t.fewshot_is_items, 1234);
  std::string prefix = aji::eval::fewshot_prefix(t, ex);
  EXPECT_EQ(prefix.find("Q1:"), std::string::npos);
  for (size_t i : ex)
    EXPECT_NE(prefix.find("Q" + std::to_string(i) + ": " + (i % 2 ? "b" : "a") + "\n\n"), std::string::npos) << prefix;
  // With a .fewshot.jsonl beside it, that file is the pool.
  write(tmp.path() / "mine.fewshot.jsonl", R"({"context":"E:","choices":["x","y"],"gold":1})");
  t = aji::eval::load_task(path.string(), tmp.path());
  EXPECT_FALSE(t.fewshot_is_items);
  EXPECT_EQ(aji::eval::fewshot_prefix(t, {0}), "E: y\n\n");
}
