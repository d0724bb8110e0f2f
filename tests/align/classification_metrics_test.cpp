#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/align/classification_metrics.h"
#include "test_util.h"

using namespace aji::align;

// Every case of tests/fixtures/classify/metrics_cases.json was computed by scikit-learn
// (tests/reference/classification_metrics.py): accuracy_score, precision_recall_fscore_support
// (per class, macro, weighted; zero_division=0) and confusion_matrix.
TEST(ClassificationMetrics, MatchScikitLearn) {
  auto fixture = nlohmann::json::parse(
      aji::read_file(aji::test::source_path("tests/fixtures/classify/metrics_cases.json")));
  ASSERT_GE(fixture["cases"].size(), 8u);
  for (const auto& c : fixture["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    auto gold = c["gold"].get<std::vector<int>>();
    auto pred = c["pred"].get<std::vector<int>>();
    int n = c["n_classes"].get<int>();
    auto r = classification_report(gold, pred, n);
    EXPECT_NEAR(r.accuracy, c["accuracy"].get<double>(), 1e-12);
    for (int k = 0; k < n; ++k) {
      EXPECT_NEAR(r.per_class[k].precision, c["precision"][k].get<double>(), 1e-12);
      EXPECT_NEAR(r.per_class[k].recall, c["recall"][k].get<double>(), 1e-12);
      EXPECT_NEAR(r.per_class[k].f1, c["f1"][k].get<double>(), 1e-12);
      EXPECT_EQ(r.per_class[k].support, c["support"][k].get<int64_t>());
      for (int p = 0; p < n; ++p) EXPECT_EQ(r.confusion_at(k, p), c["confusion_matrix"][k][p].get<int64_t>());
    }
    EXPECT_NEAR(r.macro_precision, c["macro_precision"].get<double>(), 1e-12);
    EXPECT_NEAR(r.macro_recall, c["macro_recall"].get<double>(), 1e-12);
    EXPECT_NEAR(r.macro_f1, c["macro_f1"].get<double>(), 1e-12);
    EXPECT_NEAR(r.weighted_precision, c["weighted_precision"].get<double>(), 1e-12);
    EXPECT_NEAR(r.weighted_recall, c["weighted_recall"].get<double>(), 1e-12);
    EXPECT_NEAR(r.weighted_f1, c["weighted_f1"].get<double>(), 1e-12);
  }
}

TEST(ClassificationMetrics, HandComputedBinaryCase) {
  // gold: 3 spam (1), 5 ham (0). pred: 2 spam caught, 1 missed, 1 ham flagged.
  std::vector<int> gold{1, 1, 1, 0, 0, 0, 0, 0};
  std::vector<int> pred{1, 1, 0, 1, 0, 0, 0, 0};
  auto r = classification_report(gold, pred, 2);
  EXPECT_DOUBLE_EQ(r.accuracy, 6.0 / 8);
  EXPECT_DOUBLE_EQ(r.per_class[1].precision, 2.0 / 3);
  EXPECT_DOUBLE_EQ(r.per_class[1].recall, 2.0 / 3);
  EXPECT_DOUBLE_EQ(r.per_class[0].precision, 4.0 / 5);
  EXPECT_DOUBLE_EQ(r.per_class[0].recall, 4.0 / 5);
  EXPECT_DOUBLE_EQ(r.macro_f1, (2.0 / 3 + 4.0 / 5) / 2);
  EXPECT_DOUBLE_EQ(r.majority_baseline, 5.0 / 8);
  EXPECT_EQ(r.confusion_at(1, 0), 1);
  EXPECT_EQ(r.confusion_at(0, 1), 1);

  std::string table = format_report(r, {"ham", "spam"});
  EXPECT_NE(table.find("spam"), std::string::npos);
  EXPECT_NE(table.find("0.7500"), std::string::npos) << table;
  EXPECT_NE(table.find("confusion matrix"), std::string::npos);
  auto j = report_to_json(r, {"ham", "spam"});
  EXPECT_EQ(j["confusion_matrix"], nlohmann::json::parse("[[4,1],[1,2]]"));
  EXPECT_DOUBLE_EQ(j["per_class"]["spam"]["recall"].get<double>(), 2.0 / 3);
  EXPECT_EQ(j["labels"][1], "spam");
}

TEST(ClassificationMetrics, BadInputIsAnError) {
  EXPECT_THROW(classification_report({0, 1}, {0}, 2), aji::Error);
  EXPECT_THROW(classification_report({0, 2}, {0, 1}, 2), aji::Error);
  EXPECT_THROW(classification_report({0}, {-1}, 2), aji::Error);
  EXPECT_THROW(classification_report({}, {}, 0), aji::Error);
  auto empty = classification_report({}, {}, 2);
  EXPECT_EQ(empty.accuracy, 0.0);
}
