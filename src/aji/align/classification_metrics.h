// Classification metrics with scikit-learn's definitions (classification_report,
// confusion_matrix, accuracy_score; zero_division=0):
//   precision_c = TP_c / (TP_c + FP_c), recall_c = TP_c / (TP_c + FN_c),
//   F1_c = 2·P·R / (P + R) (0 when P + R = 0 — sklearn computes 2TP/(2TP+FP+FN), the same),
//   macro = unweighted mean over all classes of the label set (present or not),
//   weighted = mean weighted by support (true count).
// The confusion matrix has true classes as rows and predictions as columns.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace aji::align {

struct ClassMetrics {
  double precision = 0, recall = 0, f1 = 0;
  int64_t support = 0;    // examples whose true class is this one
  int64_t predicted = 0;  // examples predicted as this one
};

struct ClassificationReport {
  int n_classes = 0;
  int64_t n_examples = 0;
  double accuracy = 0;
  std::vector<ClassMetrics> per_class;
  double macro_precision = 0, macro_recall = 0, macro_f1 = 0;
  double weighted_precision = 0, weighted_recall = 0, weighted_f1 = 0;
  double majority_baseline = 0;  // accuracy of always predicting the most frequent true class
  std::vector<int64_t> confusion;  // (C,C) row-major: confusion[true * C + pred]

  int64_t confusion_at(int truth, int pred) const { return confusion[size_t(truth) * n_classes + pred]; }
};

// gold and pred hold class ids in [0, n_classes); throws aji::Error when they differ in
// length or an id is out of range.
ClassificationReport classification_report(const std::vector<int>& gold, const std::vector<int>& pred, int n_classes);

// A text table like sklearn's classification_report, then the confusion matrix.
std::string format_report(const ClassificationReport& report, const std::vector<std::string>& label_names);
// {"accuracy", "macro_f1", ..., "per_class": {name: {...}}, "labels": [...], "confusion_matrix": [[...]]}
nlohmann::ordered_json report_to_json(const ClassificationReport& report, const std::vector<std::string>& label_names);

}  // namespace aji::align
