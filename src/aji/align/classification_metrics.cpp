#include "aji/align/classification_metrics.h"

#include <algorithm>
#include <cstdio>

#include "aji/base/error.h"

namespace aji::align {

namespace {
double safe_div(double num, double den) { return den > 0 ? num / den : 0.0; }
}  // namespace

ClassificationReport classification_report(const std::vector<int>& gold, const std::vector<int>& pred, int n_classes) {
  if (gold.size() != pred.size())
    throw Error("gold and predicted label lists differ in length (" + std::to_string(gold.size()) + " vs " +
                std::to_string(pred.size()) + ")");
  if (n_classes <= 0) throw Error("a classification report needs at least one class");
  ClassificationReport r;
  r.n_classes = n_classes;
  r.n_examples = static_cast<int64_t>(gold.size());
  r.confusion.assign(size_t(n_classes) * n_classes, 0);
  for (size_t i = 0; i < gold.size(); ++i) {
    if (gold[i] < 0 || gold[i] >= n_classes || pred[i] < 0 || pred[i] >= n_classes)
      throw Error("class id out of range at example " + std::to_string(i) + ": gold " + std::to_string(gold[i]) +
                  ", predicted " + std::to_string(pred[i]) + " (classes 0.." + std::to_string(n_classes - 1) + ")");
    ++r.confusion[size_t(gold[i]) * n_classes + pred[i]];
  }
  r.per_class.resize(n_classes);
  int64_t correct = 0, largest = 0;
  for (int c = 0; c < n_classes; ++c) {
    ClassMetrics& m = r.per_class[c];
    int64_t tp = r.confusion_at(c, c);
    for (int k = 0; k < n_classes; ++k) {
      m.support += r.confusion_at(c, k);
      m.predicted += r.confusion_at(k, c);
    }
    correct += tp;
    largest = std::max(largest, m.support);
    m.precision = safe_div(double(tp), double(m.predicted));
    m.recall = safe_div(double(tp), double(m.support));
    m.f1 = safe_div(2.0 * tp, double(m.predicted + m.support));
    r.macro_precision += m.precision / n_classes;
    r.macro_recall += m.recall / n_classes;
    r.macro_f1 += m.f1 / n_classes;
    if (r.n_examples > 0) {
      double w = double(m.support) / double(r.n_examples);
      r.weighted_precision += w * m.precision;
      r.weighted_recall += w * m.recall;
      r.weighted_f1 += w * m.f1;
    }
  }
  r.accuracy = safe_div(double(correct), double(r.n_examples));
  r.majority_baseline = safe_div(double(largest), double(r.n_examples));
  return r;
}

std::string format_report(const ClassificationReport& r, const std::vector<std::string>& names) {
  AJI_CHECK(static_cast<int>(names.size()) == r.n_classes, "label names do not match the report's classes");
  size_t w = 12;
  for (const auto& n : names) w = std::max(w, n.size() + 2);
  std::string out;
  char buf[256];
  std::snprintf(buf, sizeof buf, "%*s %10s %10s %10s %10s\n", int(w), "", "precision", "recall", "f1-score", "support");
  out += buf;
  for (int c = 0; c < r.n_classes; ++c) {
    const auto& m = r.per_class[c];
    std::snprintf(buf, sizeof buf, "%*s %10.4f %10.4f %10.4f %10lld\n", int(w), names[c].c_str(), m.precision, m.recall,
                  m.f1, (long long)m.support);
    out += buf;
  }
  std::snprintf(buf, sizeof buf, "\n%*s %10s %10s %10.4f %10lld\n", int(w), "accuracy", "", "", r.accuracy,
                (long long)r.n_examples);
  out += buf;
  std::snprintf(buf, sizeof buf, "%*s %10.4f %10.4f %10.4f %10lld\n", int(w), "macro avg", r.macro_precision,
                r.macro_recall, r.macro_f1, (long long)r.n_examples);
  out += buf;
  std::snprintf(buf, sizeof buf, "%*s %10.4f %10.4f %10.4f %10lld\n", int(w), "weighted avg", r.weighted_precision,
                r.weighted_recall, r.weighted_f1, (long long)r.n_examples);
  out += buf;
  std::snprintf(buf, sizeof buf, "%*s %10.4f  (always the most frequent class)\n", int(w), "majority", r.majority_baseline);
  out += buf;

  out += "\nconfusion matrix (rows: true, columns: predicted)\n";
  size_t cw = 8;
  for (const auto& n : names) cw = std::max(cw, n.size() + 1);
  for (int64_t v : r.confusion) cw = std::max(cw, std::to_string(v).size() + 1);
  std::snprintf(buf, sizeof buf, "%*s", int(w), "");
  out += buf;
  for (const auto& n : names) {
    std::snprintf(buf, sizeof buf, " %*s", int(cw), n.c_str());
    out += buf;
  }
  out += "\n";
  for (int t = 0; t < r.n_classes; ++t) {
    std::snprintf(buf, sizeof buf, "%*s", int(w), names[t].c_str());
    out += buf;
    for (int p = 0; p < r.n_classes; ++p) {
      std::snprintf(buf, sizeof buf, " %*lld", int(cw), (long long)r.confusion_at(t, p));
      out += buf;
    }
    out += "\n";
  }
  return out;
}

nlohmann::ordered_json report_to_json(const ClassificationReport& r, const std::vector<std::string>& names) {
  AJI_CHECK(static_cast<int>(names.size()) == r.n_classes, "label names do not match the report's classes");
  nlohmann::ordered_json j;
  j["n_examples"] = r.n_examples;
  j["accuracy"] = r.accuracy;
  j["majority_baseline"] = r.majority_baseline;
  j["macro_precision"] = r.macro_precision;
  j["macro_recall"] = r.macro_recall;
  j["macro_f1"] = r.macro_f1;
  j["weighted_precision"] = r.weighted_precision;
  j["weighted_recall"] = r.weighted_recall;
  j["weighted_f1"] = r.weighted_f1;
  j["labels"] = names;
  nlohmann::ordered_json per = nlohmann::ordered_json::object();
  for (int c = 0; c < r.n_classes; ++c) {
    const auto& m = r.per_class[c];
    per[names[c]] = {{"precision", m.precision}, {"recall", m.recall}, {"f1", m.f1}, {"support", m.support},
                     {"predicted", m.predicted}};
  }
  j["per_class"] = std::move(per);
  nlohmann::ordered_json cm = nlohmann::ordered_json::array();
  for (int t = 0; t < r.n_classes; ++t) {
    nlohmann::ordered_json row = nlohmann::ordered_json::array();
    for (int p = 0; p < r.n_classes; ++p) row.push_back(r.confusion_at(t, p));
    cm.push_back(std::move(row));
  }
  j["confusion_matrix"] = std::move(cm);
  return j;
}

}  // namespace aji::align
