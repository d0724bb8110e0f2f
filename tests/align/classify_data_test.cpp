#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "aji/align/classify_data.h"
#include "aji/base/atomic_file.h"
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
}  // namespace

TEST(ClassifyData, ReadsJsonlCsvAndTsv) {
  TempDir dir;
  auto j = write(dir, "d.jsonl",
                 "{\"text\":\"free prize\",\"label\":\"spam\"}\n{\"text\":\"see you\",\"label\":\"ham\"}\n"
                 "{\"text\":\"num\",\"label\":1}\n{\"text\":\"flag\",\"label\":true}\n");
  auto ex = read_labeled(j, {}, nullptr);
  ASSERT_EQ(ex.size(), 4u);
  EXPECT_EQ(ex[0].label, "spam");
  EXPECT_EQ(ex[2].label, "1");
  EXPECT_EQ(ex[3].label, "true");
  EXPECT_EQ(ex[3].line, 4);

  auto c = write(dir, "d.csv", "id,label,text\n1, ham ,\"hello, world\"\n2,spam,\"multi\nline\"\n");
  ex = read_labeled(c, {}, nullptr);
  ASSERT_EQ(ex.size(), 2u);
  EXPECT_EQ(ex[0].label, "ham");  // trimmed
  EXPECT_EQ(ex[0].text, "hello, world");
  EXPECT_EQ(ex[1].text, "multi\nline");
  EXPECT_EQ(ex[1].line, 3);

  // The SMSSpamCollection shape: no header, label then text, quotes are data.
  auto t = write(dir, "sms.tsv", "ham\tOk \"lar\"...\nspam\tWIN now\n");
  LabeledDataOptions o;
  o.header = false;
  o.label_column = "0";
  o.text_column = "1";
  ex = read_labeled(t, o, nullptr);
  ASSERT_EQ(ex.size(), 2u);
  EXPECT_EQ(ex[0].text, "Ok \"lar\"...");
  EXPECT_EQ(ex[1].label, "spam");
  // A column number too large for an int is a clear aji::Error (std::stoi threw
  // std::out_of_range before), with a header row or without.
  o.text_column = "99999999999999999999";
  EXPECT_THROW(read_labeled(t, o, nullptr), aji::Error);
  LabeledDataOptions h;
  h.text_column = "99999999999999999999";
  EXPECT_THROW(read_labeled(c, h, nullptr), aji::Error);
}

TEST(ClassifyData, MissingLabelsAndTextAreErrorsWithLine) {
  TempDir dir;
  auto t = write(dir, "d.tsv", "text\tlabel\nfine\tham\nno label here\t\nshort\n");
  try {
    read_labeled(t, {}, nullptr);
    FAIL();
  } catch (const aji::Error& e) {
    EXPECT_EQ(e.line(), 3);
    EXPECT_EQ(e.file(), t.string());
    EXPECT_NE(std::string(e.what()).find("no label"), std::string::npos) << e.what();
  }
  LabeledDataOptions skip;
  skip.on_invalid = OnInvalid::kSkip;
  InputReport rep;
  auto ex = read_labeled(t, skip, &rep);
  EXPECT_EQ(ex.size(), 1u);
  EXPECT_EQ(rep.records_read, 3);
  ASSERT_EQ(rep.skipped_count(), 2);
  EXPECT_EQ(rep.skipped[0].kind, "missing_label");
  EXPECT_EQ(rep.skipped[1].line, 4);

  auto j = write(dir, "d.jsonl", "{\"text\":\"a\",\"label\":\"x\"}\n{\"text\":\"\",\"label\":\"x\"}\n");
  try {
    read_labeled(j, {}, nullptr);
    FAIL();
  } catch (const aji::Error& e) {
    EXPECT_EQ(e.line(), 2);
  }
  auto nohdr = write(dir, "n.csv", "text,label\na,b\n");
  LabeledDataOptions wrong;
  wrong.text_column = "body";
  EXPECT_THROW(read_labeled(nohdr, wrong, nullptr), aji::Error);
  // Predict input: no label column needed.
  LabeledDataOptions predict;
  predict.require_label = false;
  auto p = write(dir, "p.csv", "text\nhello\n");
  EXPECT_EQ(read_labeled(p, predict, nullptr).size(), 1u);
  EXPECT_THROW(read_labeled(dir.path() / "x.txt", {}, nullptr), aji::Error);
  auto bad = write(dir, "bad.tsv", "text\tlabel\n\xff\xfe\tham\n");
  EXPECT_THROW(read_labeled(bad, {}, nullptr), aji::Error);
}

TEST(ClassifyData, LabelMapForNsmcRatings) {
  TempDir dir;
  auto t = write(dir, "nsmc.tsv", "review_id\tmovie_id\tdate\trating\treview\n1\t9\td\t10\tgreat\n2\t9\td\t5\tmeh\n3\t9\td\t2\tbad\n");
  LabeledDataOptions o;
  o.text_column = "review";
  o.label_column = "rating";
  o.label_map = parse_label_map("1=negative,2=negative,3=negative,4=negative,9=positive,10=positive");
  EXPECT_THROW(read_labeled(t, o, nullptr), aji::Error);  // rating 5 unmapped
  o.skip_unmapped = true;
  InputReport rep;
  auto ex = read_labeled(t, o, &rep);
  ASSERT_EQ(ex.size(), 2u);
  EXPECT_EQ(ex[0].label, "positive");
  EXPECT_EQ(ex[1].label, "negative");
  EXPECT_EQ(rep.skipped_by_kind.at("unmapped_label"), 1);
  EXPECT_THROW(parse_label_map("1negative"), aji::Error);
}

TEST(ClassifyData, LabelSetSaveLoadAndMismatch) {
  TempDir dir;
  std::vector<LabeledExample> train{{"a", "spam", 1}, {"b", "ham", 2}, {"c", "spam", 3}};
  auto set = LabelSet::from_examples(train);
  EXPECT_EQ(set.names, (std::vector<std::string>{"ham", "spam"}));
  auto path = dir.path() / "labels.json";
  set.save(path);
  auto back = LabelSet::load(path);
  EXPECT_EQ(back.names, set.names);

  std::vector<LabeledExample> other{{"x", "ham", 1}, {"y", "promo", 7}};
  try {
    encode_labels(other, back, "eval.jsonl", OnInvalid::kError, nullptr);
    FAIL();
  } catch (const aji::Error& e) {
    EXPECT_EQ(e.line(), 7);
    EXPECT_NE(std::string(e.what()).find("'promo' is not one of the model's labels [ham, spam]"), std::string::npos)
        << e.what();
  }
  InputReport rep;
  auto ids = encode_labels(other, back, "eval.jsonl", OnInvalid::kSkip, &rep);
  EXPECT_EQ(ids, (std::vector<int>{0, -1}));
  EXPECT_THROW(check_label_sets(back, LabelSet::from_examples(other), "eval.jsonl", true), aji::Error);
  LabelSet only_ham{{"ham"}};
  EXPECT_NO_THROW(check_label_sets(back, only_ham, "eval.jsonl", true));
  EXPECT_THROW(check_label_sets(back, only_ham, "eval.jsonl", false), aji::Error);

  aji::write_file_atomic(path, "{\"format\":\"aji-labels\",\"labels\":[\"b\",\"a\"]}");
  EXPECT_THROW(LabelSet::load(path), aji::Error);
  aji::write_file_atomic(path, "not json");
  EXPECT_THROW(LabelSet::load(path), aji::Error);
  // A "format" of the wrong type threw nlohmann's type_error past the reader (fuzz_checkpoint_state).
  aji::write_file_atomic(path, "{\"format\": 77}");
  EXPECT_THROW(LabelSet::load(path), aji::Error);
}

TEST(ClassifyData, StratifiedSplitKeepsClassProportions) {
  // 870 of class 0, 130 of class 1 (like SMS spam's 87/13).
  std::vector<int> labels;
  for (int i = 0; i < 1000; ++i) labels.push_back(i % 100 < 13 ? 1 : 0);
  auto s = stratified_split(labels, 2, 0.1, 0.2, 42);
  EXPECT_EQ(s.train.size() + s.val.size() + s.test.size(), 1000u);
  auto count1 = [&](const std::vector<int64_t>& idx) {
    int n = 0;
    for (auto i : idx) n += labels[i];
    return n;
  };
  EXPECT_EQ(s.test.size(), 200u);
  EXPECT_EQ(count1(s.test), 26);  // round(130 * 0.2)
  EXPECT_EQ(count1(s.val), 13);
  EXPECT_EQ(count1(s.train), 91);
  std::set<int64_t> all(s.train.begin(), s.train.end());
  all.insert(s.val.begin(), s.val.end());
  all.insert(s.test.begin(), s.test.end());
  EXPECT_EQ(all.size(), 1000u);
  EXPECT_TRUE(std::is_sorted(s.train.begin(), s.train.end()));
  auto again = stratified_split(labels, 2, 0.1, 0.2, 42);
  EXPECT_EQ(again.test, s.test);
  EXPECT_NE(stratified_split(labels, 2, 0.1, 0.2, 43).test, s.test);
  // A tiny class still reaches every split.
  std::vector<int> tiny{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1};
  auto t = stratified_split(tiny, 2, 0.1, 0.1, 1);
  EXPECT_EQ(t.train.size() + t.val.size() + t.test.size(), tiny.size());
  for (auto* part : {&t.train, &t.val, &t.test}) {
    int ones = 0;
    for (auto i : *part) ones += tiny[i];
    EXPECT_EQ(ones, 1);
  }
  EXPECT_THROW(stratified_split(labels, 2, 0.5, 0.5, 1), aji::Error);

  auto bal = balance_classes(labels, 2, 3);
  EXPECT_EQ(bal.size(), 260u);
  EXPECT_EQ([&] { int n = 0; for (auto i : bal) n += labels[i]; return n; }(), 130);
}

TEST(ClassifyData, WriteJsonlRoundTrip) {
  TempDir dir;
  std::vector<LabeledExample> ex{{"안녕 \"hi\"", "pos", 1}, {"bye\nnow", "neg", 2}};
  auto p = dir.path() / "out.jsonl";
  write_labeled_jsonl(p, ex, {1, 0});
  auto back = read_labeled(p, {}, nullptr);
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].text, "bye\nnow");
  EXPECT_EQ(back[1].text, "안녕 \"hi\"");
  EXPECT_EQ(back[1].label, "pos");
}

TEST(ClassifyCli, SplitThenMetrics) {
  TempDir dir;
  std::string data = "label\ttext\n";
  for (int i = 0; i < 40; ++i) data += std::string(i % 4 == 0 ? "spam" : "ham") + "\tmessage " + std::to_string(i) + "\n";
  auto in = write(dir, "d.tsv", data);
  std::string out;
  std::string cmd = std::string(AJI_BINARY) + " classify split --input " + in.string() + " --out-dir " +
                    (dir.path() / "s").string() + " --val 0.1 --test 0.2 2>&1";
  ASSERT_EQ(aji::test::run_command(cmd, &out), 0) << out;
  auto test = read_labeled(dir.path() / "s" / "test.jsonl", {}, nullptr);
  EXPECT_EQ(test.size(), 8u);  // round(30 * 0.2) ham + round(10 * 0.2) spam
  EXPECT_EQ(LabelSet::load(dir.path() / "s" / "labels.json").names, (std::vector<std::string>{"ham", "spam"}));

  // Predictions: flip the first test example's label.
  std::string pred;
  for (size_t i = 0; i < test.size(); ++i)
    pred += "{\"text\":\"x\",\"label\":\"" + std::string((i == 0) == (test[i].label == "ham") ? "spam" : "ham") + "\"}\n";
  auto pred_path = write(dir, "pred.jsonl", pred);
  cmd = std::string(AJI_BINARY) + " classify metrics --gold " + (dir.path() / "s" / "test.jsonl").string() +
        " --pred " + pred_path.string() + " --json " + (dir.path() / "m.json").string() + " 2>&1";
  ASSERT_EQ(aji::test::run_command(cmd, &out), 0) << out;
  EXPECT_NE(out.find("0.8750"), std::string::npos) << out;  // 7 of 8
  EXPECT_NE(out.find("confusion matrix"), std::string::npos);
  auto j = nlohmann::json::parse(aji::read_file(dir.path() / "m.json"));
  EXPECT_DOUBLE_EQ(j["accuracy"].get<double>(), 7.0 / 8);

  auto bad = write(dir, "bad.jsonl", "{\"text\":\"x\",\"label\":\"promo\"}\n" + pred.substr(pred.find('\n') + 1));
  cmd = std::string(AJI_BINARY) + " classify metrics --gold " + (dir.path() / "s" / "test.jsonl").string() +
        " --pred " + bad.string() + " 2>&1";
  EXPECT_EQ(aji::test::run_command(cmd, &out), 1);
  EXPECT_NE(out.find(bad.string() + ":1"), std::string::npos) << out;
  EXPECT_NE(out.find("'promo'"), std::string::npos) << out;
}
