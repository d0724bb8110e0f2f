#include "aji/eval/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "aji/base/json_number.h"
#include "aji/base/error.h"
#include "aji/base/io.h"

namespace aji::eval {

namespace {
std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}
std::string xml_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}
}  // namespace

std::string results_table(const std::vector<TaskResult>& results) {
  std::ostringstream os;
  char buf[256];
  std::snprintf(buf, sizeof buf, "%-16s %-22s %5s %8s %8s %6s\n", "task", "metric", "shots", "value", "stderr", "n");
  os << buf;
  for (const auto& r : results) {
    for (const auto& m : r.metrics) {
      std::snprintf(buf, sizeof buf, "%-16s %-22s %5d %8.4f %8.4f %6lld\n", r.task.c_str(), m.name.c_str(), r.shots,
                    m.value, m.stderr_, static_cast<long long>(r.n));
      os << buf;
    }
    if (r.metrics.empty()) {
      std::snprintf(buf, sizeof buf, "%-16s %-22s %5d %8s %8s %6d\n", r.task.c_str(), "(no item scored)", r.shots,
                    "n/a", "n/a", 0);
      os << buf;
    }
  }
  return os.str();
}

std::string results_markdown(const std::string& model, const std::vector<TaskResult>& results) {
  std::ostringstream os;
  os << "## Evaluation\n\nModel: `" << model << "`\n\n";
  os << "| task | metric | shots | value | stderr | n |\n|---|---|---:|---:|---:|---:|\n";
  for (const auto& r : results) {
    for (const auto& m : r.metrics)
      os << "| " << r.task << (r.chat ? " (chat)" : "") << " | " << m.name << " | " << r.shots << " | "
         << fmt("%.4f", m.value) << " | " << fmt("%.4f", m.stderr_) << " | " << r.n << " |\n";
    if (r.metrics.empty())
      os << "| " << r.task << (r.chat ? " (chat)" : "") << " | (no item scored) | " << r.shots << " | n/a | n/a | 0 |\n";
  }
  os << "\n";
  for (const auto& r : results) {
    if (r.too_long > 0)
      os << "- " << r.task << " (" << r.shots << "-shot): " << r.too_long
         << " items longer than the model's context were left out (not truncated).\n";
  }
  for (const auto& r : results)
    os << "- " << r.task << " (" << r.shots << "-shot): " << r.n << " items, " << r.requests << " requests in "
       << fmt("%.2f", r.seconds) << " s (" << fmt("%.1f", r.items_per_s()) << " items/s)\n";
  return os.str();
}

nlohmann::json results_json(const std::string& model, const std::vector<TaskResult>& results, bool with_items) {
  nlohmann::json j = {{"model", model}, {"results", nlohmann::json::array()}};
  for (const auto& r : results) j["results"].push_back(r.to_json(with_items));
  return j;
}

RunSummary load_run_summary(const std::string& path) {
  namespace fs = std::filesystem;
  fs::path p = path;
  std::error_code ec;
  if (fs::is_directory(p, ec)) p /= "results.json";
  if (!fs::exists(p, ec))
    throw Error("no results.json at " + path).fix("give the --out directory of an `aji eval run`, or its results.json");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(p));
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("results.json is not valid JSON: ") + e.what()).at(p.string()).fix("rerun `aji eval run`");
  }
  RunSummary s;
  // The run's directory name (eval/base, eval/sft -> "base", "sft"): what the user named it.
  s.label = fs::absolute(p).parent_path().filename().string();
  if (s.label.empty()) s.label = j.value("model", path);
  if (!j.contains("results") || !j["results"].is_array())
    throw Error("results.json has no \"results\" list").at(p.string()).fix("rerun `aji eval run`");
  for (const auto& r : j["results"]) {
    for (const auto& [name, m] : r.at("metrics").items())
      s.rows.push_back({r.at("task").get<std::string>() + (r.value("chat", false) ? " (chat)" : ""), name,
                        json_int<int>(r.at("shots"), "\"shots\"", p.string()), m.at("value").get<double>(),
                        m.at("stderr").get<double>(), json_int<int64_t>(r.at("n"), "\"n\"", p.string())});
  }
  return s;
}

std::string compare_markdown(const std::vector<RunSummary>& runs) {
  std::vector<std::tuple<std::string, int, std::string>> keys;
  std::set<std::tuple<std::string, int, std::string>> seen;
  for (const auto& r : runs)
    for (const auto& row : r.rows)
      if (seen.insert({row.task, row.shots, row.metric}).second) keys.push_back({row.task, row.shots, row.metric});
  std::ostringstream os;
  os << "| task | shots | metric |";
  for (size_t i = 0; i < runs.size(); ++i) os << " " << runs[i].label << " |";
  os << "\n|---|---:|---|";
  for (size_t i = 0; i < runs.size(); ++i) os << "---:|";
  os << "\n";
  for (const auto& [task, shots, metric] : keys) {
    os << "| " << task << " | " << shots << " | " << metric << " |";
    for (const auto& r : runs) {
      auto it = std::find_if(r.rows.begin(), r.rows.end(), [&](const RunSummary::Row& x) {
        return x.task == task && x.shots == shots && x.metric == metric;
      });
      if (it == r.rows.end())
        os << " – |";
      else
        os << " " << fmt("%.4f", it->value) << " ± " << fmt("%.4f", it->stderr_) << " |";
    }
    os << "\n";
  }
  return os.str();
}

namespace {
const char* const kColors[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f"};

// One headline metric per (task, shots): acc_norm when present, else the first metric;
// groups in order of first appearance.
void headline_metrics(const std::vector<RunSummary>& runs, std::vector<std::pair<std::string, int>>& groups,
                      std::map<std::pair<std::string, int>, std::string>& headline) {
  for (const auto& r : runs)
    for (const auto& row : r.rows) {
      auto key = std::make_pair(row.task, row.shots);
      auto h = headline.find(key);
      if (h == headline.end()) {
        groups.push_back(key);
        headline[key] = row.metric;
      } else if (row.metric == "acc_norm") {
        h->second = "acc_norm";
      }
    }
}

const RunSummary::Row* find_row(const RunSummary& r, const std::string& task, int shots, const std::string& metric) {
  auto it = std::find_if(r.rows.begin(), r.rows.end(), [&](const RunSummary::Row& x) {
    return x.task == task && x.shots == shots && x.metric == metric;
  });
  return it == r.rows.end() ? nullptr : &*it;
}
}  // namespace

std::string compare_svg(const std::vector<RunSummary>& runs) {
  std::vector<std::pair<std::string, int>> groups;
  std::map<std::pair<std::string, int>, std::string> headline;
  headline_metrics(runs, groups, headline);
  const char* const* colors = kColors;
  const double bar = 14, gap = 18, left = 60, top = 40, plot_h = 260;
  const double group_w = bar * double(std::max<size_t>(runs.size(), 1)) + gap;
  const double width = left + group_w * double(groups.size()) + 20 + 200;
  const double height = top + plot_h + 120;
  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
     << "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  os << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  os << "<text x=\"" << left << "\" y=\"20\" font-size=\"14\">Evaluation: score per task (acc_norm for multiple "
        "choice), ±1 stderr</text>\n";
  for (int t = 0; t <= 4; ++t) {
    double v = t / 4.0, y = top + plot_h * (1 - v);
    os << "<line x1=\"" << left << "\" y1=\"" << y << "\" x2=\"" << left + group_w * double(groups.size())
       << "\" y2=\"" << y << "\" stroke=\"#ddd\"/>\n";
    os << "<text x=\"" << left - 6 << "\" y=\"" << y + 4 << "\" text-anchor=\"end\">" << fmt("%.2f", v) << "</text>\n";
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    const double x0 = left + group_w * double(g) + gap / 2;
    for (size_t r = 0; r < runs.size(); ++r) {
      const RunSummary::Row* it = find_row(runs[r], groups[g].first, groups[g].second, headline[groups[g]]);
      if (!it || !std::isfinite(it->value)) continue;
      const double v = std::clamp(it->value, 0.0, 1.0);
      const double x = x0 + bar * double(r), y = top + plot_h * (1 - v);
      os << "<rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << bar - 2 << "\" height=\"" << top + plot_h - y
         << "\" fill=\"" << colors[r % 8] << "\"><title>" << xml_escape(runs[r].label) << ": "
         << fmt("%.4f", it->value) << "</title></rect>\n";
      const double lo = std::clamp(it->value - it->stderr_, 0.0, 1.0), hi = std::clamp(it->value + it->stderr_, 0.0, 1.0);
      const double xc = x + (bar - 2) / 2;
      os << "<line x1=\"" << xc << "\" x2=\"" << xc << "\" y1=\"" << top + plot_h * (1 - lo) << "\" y2=\""
         << top + plot_h * (1 - hi) << "\" stroke=\"black\"/>\n";
    }
    const double xl = x0 + bar * double(runs.size()) / 2;
    os << "<text transform=\"translate(" << xl << "," << top + plot_h + 10 << ") rotate(45)\">"
       << xml_escape(groups[g].first) << " " << groups[g].second << "-shot</text>\n";
  }
  const double lx = left + group_w * double(groups.size()) + 20;
  for (size_t r = 0; r < runs.size(); ++r) {
    os << "<rect x=\"" << lx << "\" y=\"" << top + 16.0 * double(r) << "\" width=\"10\" height=\"10\" fill=\""
       << colors[r % 8] << "\"/>\n";
    os << "<text x=\"" << lx + 14 << "\" y=\"" << top + 16.0 * double(r) + 9 << "\">" << xml_escape(runs[r].label)
       << "</text>\n";
  }
  os << "</svg>\n";
  return os.str();
}

std::string steps_markdown(const std::vector<StepSummary>& steps) {
  std::vector<RunSummary> runs;
  for (const auto& s : steps) runs.push_back(s.run);
  std::vector<std::pair<std::string, int>> groups;
  std::map<std::pair<std::string, int>, std::string> headline;
  headline_metrics(runs, groups, headline);
  std::ostringstream os;
  os << "| step |";
  for (const auto& g : groups) os << " " << g.first << " " << g.second << "-shot " << headline[g] << " |";
  os << "\n|---:|";
  for (size_t i = 0; i < groups.size(); ++i) os << "---:|";
  os << "\n";
  for (const auto& s : steps) {
    os << "| " << s.step << " |";
    for (const auto& g : groups) {
      const RunSummary::Row* row = find_row(s.run, g.first, g.second, headline[g]);
      if (row)
        os << " " << fmt("%.4f", row->value) << " ± " << fmt("%.4f", row->stderr_) << " |";
      else
        os << " – |";
    }
    os << "\n";
  }
  return os.str();
}

std::string steps_svg(const std::vector<StepSummary>& steps) {
  std::vector<RunSummary> runs;
  for (const auto& s : steps) runs.push_back(s.run);
  std::vector<std::pair<std::string, int>> groups;
  std::map<std::pair<std::string, int>, std::string> headline;
  headline_metrics(runs, groups, headline);
  double s0 = 0, s1 = 1;
  if (!steps.empty()) {
    s0 = double(steps.front().step);
    s1 = double(steps.back().step);
    for (const auto& s : steps) s0 = std::min(s0, double(s.step)), s1 = std::max(s1, double(s.step));
  }
  if (s1 <= s0) s1 = s0 + 1;
  const double left = 60, top = 40, plot_w = 480, plot_h = 260;
  const double width = left + plot_w + 20 + 220, height = top + plot_h + 60;
  auto X = [&](double step) { return left + plot_w * (step - s0) / (s1 - s0); };
  auto Y = [&](double v) { return top + plot_h * (1 - std::clamp(v, 0.0, 1.0)); };
  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
     << "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  os << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  os << "<text x=\"" << left << "\" y=\"20\" font-size=\"14\">Evaluation against training step (acc_norm for "
        "multiple choice), ±1 stderr</text>\n";
  for (int t = 0; t <= 4; ++t) {
    const double v = t / 4.0;
    os << "<line x1=\"" << left << "\" y1=\"" << Y(v) << "\" x2=\"" << left + plot_w << "\" y2=\"" << Y(v)
       << "\" stroke=\"#ddd\"/>\n";
    os << "<text x=\"" << left - 6 << "\" y=\"" << Y(v) + 4 << "\" text-anchor=\"end\">" << fmt("%.2f", v)
       << "</text>\n";
  }
  for (const auto& s : steps)
    os << "<text x=\"" << X(double(s.step)) << "\" y=\"" << top + plot_h + 16 << "\" text-anchor=\"middle\">"
       << s.step << "</text>\n";
  os << "<text x=\"" << left + plot_w / 2 << "\" y=\"" << top + plot_h + 36 << "\" text-anchor=\"middle\">"
     << "training step</text>\n";
  for (size_t g = 0; g < groups.size(); ++g) {
    const char* color = kColors[g % 8];
    std::string points;
    for (const auto& s : steps) {
      const RunSummary::Row* row = find_row(s.run, groups[g].first, groups[g].second, headline[groups[g]]);
      if (!row || !std::isfinite(row->value)) continue;
      const double x = X(double(s.step)), y = Y(row->value);
      points += fmt("%.1f", x) + "," + fmt("%.1f", y) + " ";
      os << "<circle cx=\"" << x << "\" cy=\"" << y << "\" r=\"3\" fill=\"" << color << "\"><title>"
         << xml_escape(groups[g].first) << " " << groups[g].second << "-shot, step " << s.step << ": "
         << fmt("%.4f", row->value) << "</title></circle>\n";
      os << "<line x1=\"" << x << "\" x2=\"" << x << "\" y1=\"" << Y(row->value - row->stderr_) << "\" y2=\""
         << Y(row->value + row->stderr_) << "\" stroke=\"" << color << "\"/>\n";
    }
    if (!points.empty())
      os << "<polyline points=\"" << points << "\" fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\"/>\n";
    const double ly = top + 16.0 * double(g);
    os << "<rect x=\"" << left + plot_w + 20 << "\" y=\"" << ly << "\" width=\"10\" height=\"10\" fill=\"" << color
       << "\"/>\n";
    os << "<text x=\"" << left + plot_w + 34 << "\" y=\"" << ly + 9 << "\">" << xml_escape(groups[g].first) << " "
       << groups[g].second << "-shot " << xml_escape(headline[groups[g]]) << "</text>\n";
  }
  os << "</svg>\n";
  return os.str();
}

}  // namespace aji::eval
