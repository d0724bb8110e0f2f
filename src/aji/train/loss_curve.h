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

// Returns the SVG document. Empty series are allowed; non-finite values are skipped.
std::string loss_curve_svg(const std::vector<CurvePoint>& train, const std::vector<CurvePoint>& val,
                           const std::string& title);

}  // namespace aji::train
