#!/usr/bin/env python3
"""scikit-learn reference for aji::align::classification_report (tests/align/classification_metrics_test.cpp).

Writes tests/fixtures/classify/metrics_cases.json: for several (gold, pred) cases — random,
skewed like SMS spam, a class never predicted, a class absent from gold, perfect, all
wrong — sklearn's accuracy, per-class precision/recall/F1/support, macro and weighted
averages (zero_division=0) and confusion matrix.
Needs: pip install scikit-learn numpy. Usage: python3 tests/reference/classification_metrics.py
"""
import json
import os

import numpy as np
import sklearn
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "classify", "metrics_cases.json")
rng = np.random.default_rng(20261123)


def case(name, gold, pred, n_classes):
    labels = list(range(n_classes))
    p, r, f, s = precision_recall_fscore_support(gold, pred, labels=labels, zero_division=0)
    mp, mr, mf, _ = precision_recall_fscore_support(gold, pred, labels=labels, average="macro", zero_division=0)
    wp, wr, wf, _ = precision_recall_fscore_support(gold, pred, labels=labels, average="weighted", zero_division=0)
    return {
        "name": name, "n_classes": n_classes, "gold": [int(x) for x in gold], "pred": [int(x) for x in pred],
        "accuracy": float(accuracy_score(gold, pred)),
        "precision": [float(x) for x in p], "recall": [float(x) for x in r], "f1": [float(x) for x in f],
        "support": [int(x) for x in s],
        "macro_precision": float(mp), "macro_recall": float(mr), "macro_f1": float(mf),
        "weighted_precision": float(wp), "weighted_recall": float(wr), "weighted_f1": float(wf),
        "confusion_matrix": confusion_matrix(gold, pred, labels=labels).tolist(),
    }


cases = []
for c, n in [(2, 50), (3, 120), (5, 300)]:
    g = rng.integers(0, c, n)
    noisy = np.where(rng.random(n) < 0.7, g, rng.integers(0, c, n))
    cases.append(case(f"random_{c}class", g, noisy, c))
# Skewed like SMS spam: 87% ham; the classifier misses some spam and flags a little ham.
g = (rng.random(400) < 0.13).astype(int)
pr = np.where(g == 1, (rng.random(400) < 0.85).astype(int), (rng.random(400) < 0.02).astype(int))
cases.append(case("skewed_spam", g, pr, 2))
g = rng.integers(0, 3, 60)
cases.append(case("class_never_predicted", g, np.where(g == 2, 0, g), 3))
g = rng.integers(0, 3, 40)
cases.append(case("class_absent_from_gold", g, np.where(rng.random(40) < 0.3, 3, g), 4))
g = rng.integers(0, 4, 30)
cases.append(case("perfect", g, g, 4))
cases.append(case("all_wrong", g, (g + 1) % 4, 4))
with open(OUT, "w") as f:
    json.dump({"generator": "tests/reference/classification_metrics.py", "sklearn": sklearn.__version__,
               "cases": cases}, f)
print("wrote", len(cases), "cases to", os.path.normpath(OUT))
