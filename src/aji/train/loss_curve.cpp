#include "aji/train/loss_curve.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace aji::train {

namespace {
std::string num(double v, const char* fmt = "%.1f") {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}
std::string escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else o += c;
  }
  return o;
}
}  // namespace

std::string loss_curve_svg(const std::vector<CurvePoint>& train, const std::vector<CurvePoint>& val,
                           const std::string& title, const CurveLabels& labels) {
  const bool acc = !labels.accuracy.empty();
  const double W = 720, H = 420, left = 60, top = 40, bottom = 50;
  const double right = !labels.accuracy.empty() ? 60 : 20;
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (const auto* series : {&train, &val})  // the accuracy has its own axis (0..1)
    for (const auto& p : *series)
      if (std::isfinite(p.value) && std::isfinite(p.step)) {
        xmin = std::min(xmin, p.step);
        xmax = std::max(xmax, p.step);
        ymin = std::min(ymin, p.value);
        ymax = std::max(ymax, p.value);
      }
  if (!std::isfinite(xmin)) xmin = 0, xmax = 1, ymin = 0, ymax = 1;
  if (xmax <= xmin) xmax = xmin + 1;
  if (ymax <= ymin) ymax = ymin + 1;
  const double pad = 0.05 * (ymax - ymin);
  ymin -= pad;
  ymax += pad;
  auto X = [&](double s) { return left + (s - xmin) / (xmax - xmin) * (W - left - right); };
  auto Y = [&](double v) { return top + (ymax - v) / (ymax - ymin) * (H - top - bottom); };
  std::string s;
  s += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(W, "%.0f") + "\" height=\"" + num(H, "%.0f") +
       "\" viewBox=\"0 0 " + num(W, "%.0f") + " " + num(H, "%.0f") + "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s += "<text x=\"" + num(W / 2) + "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" + escape(title) + "</text>\n";
  // Axes, ticks and grid.
  s += "<g stroke=\"#ccc\" stroke-width=\"1\">\n";
  for (int i = 0; i <= 5; ++i) {
    const double v = ymin + (ymax - ymin) * i / 5.0, y = Y(v);
    s += "<line x1=\"" + num(left) + "\" y1=\"" + num(y) + "\" x2=\"" + num(W - right) + "\" y2=\"" + num(y) + "\"/>\n";
  }
  s += "</g>\n<g fill=\"#333\">\n";
  for (int i = 0; i <= 5; ++i) {
    const double v = ymin + (ymax - ymin) * i / 5.0;
    s += "<text x=\"" + num(left - 6) + "\" y=\"" + num(Y(v) + 4) + "\" text-anchor=\"end\">" + num(v, "%.2f") +
         "</text>\n";
    const double st = xmin + (xmax - xmin) * i / 5.0;
    s += "<text x=\"" + num(X(st)) + "\" y=\"" + num(H - bottom + 18) + "\" text-anchor=\"middle\">" + num(st, "%.0f") +
         "</text>\n";
  }
  s += "<text x=\"" + num((left + W - right) / 2) + "\" y=\"" + num(H - 12) + "\" text-anchor=\"middle\">step</text>\n";
  s += "<text x=\"16\" y=\"" + num((top + H - bottom) / 2) + "\" transform=\"rotate(-90 16 " +
       num((top + H - bottom) / 2) + ")\" text-anchor=\"middle\">" + escape(labels.y_axis) + "</text>\n</g>\n";
  auto YA = [&](double a) { return top + (1.0 - a) * (H - top - bottom); };
  if (acc) {  // right axis: accuracy 0..1
    s += "<g fill=\"#2ca02c\">\n";
    for (int i = 0; i <= 5; ++i)
      s += "<text x=\"" + num(W - right + 6) + "\" y=\"" + num(YA(i / 5.0) + 4) + "\">" + num(i / 5.0, "%.1f") +
           "</text>\n";
    const double yc = (top + H - bottom) / 2, xc = W - 12;
    s += "<text x=\"" + num(xc) + "\" y=\"" + num(yc) + "\" transform=\"rotate(90 " + num(xc) + " " + num(yc) +
         ")\" text-anchor=\"middle\">" + escape(labels.accuracy_name) + "</text>\n</g>\n";
  }
  s += "<rect x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" + num(W - left - right) + "\" height=\"" +
       num(H - top - bottom) + "\" fill=\"none\" stroke=\"#333\"/>\n";
  auto polyline = [&](const std::vector<CurvePoint>& pts, const char* color, double width) {
    std::string o = "<polyline fill=\"none\" stroke=\"" + std::string(color) + "\" stroke-width=\"" + num(width) +
                    "\" points=\"";
    for (const auto& p : pts)
      if (std::isfinite(p.value)) o += num(X(p.step)) + "," + num(Y(p.value)) + " ";
    return o + "\"/>\n";
  };
  s += polyline(train, "#1f77b4", 1.0);
  s += polyline(val, "#d62728", 2.0);
  if (acc) {
    std::string o = "<polyline fill=\"none\" stroke=\"#2ca02c\" stroke-width=\"2\" stroke-dasharray=\"6 3\" points=\"";
    for (const auto& p : labels.accuracy)
      if (std::isfinite(p.value) && std::isfinite(p.step)) o += num(X(p.step)) + "," + num(YA(p.value)) + " ";
    s += o + "\"/>\n";
    for (const auto& p : labels.accuracy)
      if (std::isfinite(p.value) && std::isfinite(p.step))
        s += "<rect x=\"" + num(X(p.step) - 3) + "\" y=\"" + num(YA(p.value) - 3) +
             "\" width=\"6\" height=\"6\" fill=\"#2ca02c\"/>\n";
  }
  for (const auto& p : val)
    if (std::isfinite(p.value))
      s += "<circle cx=\"" + num(X(p.step)) + "\" cy=\"" + num(Y(p.value)) + "\" r=\"3\" fill=\"#d62728\"/>\n";
  // Legend.
  const double lx = W - right - 170, ly = top + 14;
  s += "<line x1=\"" + num(lx) + "\" y1=\"" + num(ly) + "\" x2=\"" + num(lx + 24) + "\" y2=\"" + num(ly) +
       "\" stroke=\"#1f77b4\" stroke-width=\"2\"/><text x=\"" + num(lx + 30) + "\" y=\"" + num(ly + 4) +
       "\">" + escape(labels.train) + "</text>\n";
  s += "<line x1=\"" + num(lx) + "\" y1=\"" + num(ly + 18) + "\" x2=\"" + num(lx + 24) + "\" y2=\"" + num(ly + 18) +
       "\" stroke=\"#d62728\" stroke-width=\"2\"/><text x=\"" + num(lx + 30) + "\" y=\"" + num(ly + 22) +
       "\">" + escape(labels.val) + "</text>\n";
  if (acc)
    s += "<line x1=\"" + num(lx) + "\" y1=\"" + num(ly + 36) + "\" x2=\"" + num(lx + 24) + "\" y2=\"" + num(ly + 36) +
         "\" stroke=\"#2ca02c\" stroke-width=\"2\" stroke-dasharray=\"6 3\"/><text x=\"" + num(lx + 30) + "\" y=\"" +
         num(ly + 40) + "\">" + escape(labels.accuracy_name) + " (right axis)</text>\n";
  s += "</svg>\n";
  return s;
}

}  // namespace aji::train
