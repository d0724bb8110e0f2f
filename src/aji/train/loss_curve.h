// A loss-curve picture for the run directory: a small hand-written SVG (train loss as a
// thin line, validation loss as dots joined by a thicker line), readable in any browser.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace aji::train {

struct CurvePoint {
  double step;
  double value;
};

// What the axes and the legend say, and an optional accuracy series (values in [0, 1])
// drawn against a second axis on the right (0..1), for classifiers.
struct CurveLabels {
  std::string y_axis = "loss (nats/token)";
  std::string train = "train loss";
  std::string val = "validation loss";
  std::vector<CurvePoint> accuracy;  // empty: no right axis
  std::string accuracy_name = "validation accuracy";
};

// Returns the SVG document. Empty series are allowed; non-finite values are skipped.
std::string loss_curve_svg(const std::vector<CurvePoint>& train, const std::vector<CurvePoint>& val,
                           const std::string& title, const CurveLabels& labels = {});

}  // namespace aji::train
