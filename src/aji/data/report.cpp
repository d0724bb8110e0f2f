#include "aji/data/report.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>

#include "aji/base/progress.h"

namespace aji::data {

void UnitStats::add_error(const ReadError& e) {
  ++errors_total;
  ++error_kinds[e.kind];
  if (errors.size() < kMaxErrorsListed) errors.push_back(e);
}

void UnitStats::merge(const UnitStats& o, size_t max_samples) {
  inputs.insert(inputs.end(), o.inputs.begin(), o.inputs.end());
  input_bytes += o.input_bytes;
  seconds += o.seconds;
  for (const auto& [k, v] : o.stages) {
    StageCounts& s = stages[k];
    s.docs_in += v.docs_in;
    s.bytes_in += v.bytes_in;
    s.docs_out += v.docs_out;
    s.bytes_out += v.bytes_out;
  }
  for (const auto& [k, v] : o.drops) drops[k] += v;
  for (const auto& [k, v] : o.drop_bytes) drop_bytes[k] += v;
  for (const auto& [k, v] : o.kept_docs) kept_docs[k] += v;
  for (const auto& [k, v] : o.kept_bytes) kept_bytes[k] += v;
  for (const auto& [k, v] : o.dropped_languages) dropped_languages[k] += v;
  for (const auto& [k, v] : o.error_kinds) error_kinds[k] += v;
  for (const auto& e : o.errors)
    if (errors.size() < kMaxErrorsListed) errors.push_back(e);
  errors_total += o.errors_total;
  skips.warc_non_response += o.skips.warc_non_response;
  skips.warc_payload_type += o.skips.warc_payload_type;
  skips.empty += o.skips.empty;
  repeated_lines_removed += o.repeated_lines_removed;
  repeated_lines_docs += o.repeated_lines_docs;
  for (auto it = o.samples.begin(); it != o.samples.end(); ++it) {
    auto& mine = samples[it.key()];
    if (!mine.is_array()) mine = nlohmann::json::array();
    for (const auto& s : it.value()) {
      if (mine.size() >= max_samples) break;
      mine.push_back(s);
    }
  }
}

static nlohmann::json error_json(const ReadError& e) {
  return nlohmann::json{{"file", e.file}, {e.line ? "line" : "offset", e.offset}, {"kind", e.kind}, {"message", e.message}};
}

void to_json(nlohmann::json& j, const UnitStats& s) {
  nlohmann::json stages = nlohmann::json::object();
  for (const auto& [k, v] : s.stages)
    stages[k] = {{"docs_in", v.docs_in}, {"bytes_in", v.bytes_in}, {"docs_out", v.docs_out}, {"bytes_out", v.bytes_out}};
  nlohmann::json errors = nlohmann::json::array();
  for (const auto& e : s.errors) errors.push_back(error_json(e));
  j = nlohmann::json{{"inputs", s.inputs},
                     {"input_bytes", s.input_bytes},
                     {"seconds", s.seconds},
                     {"stages", stages},
                     {"drops", s.drops},
                     {"drop_bytes", s.drop_bytes},
                     {"kept_docs", s.kept_docs},
                     {"kept_bytes", s.kept_bytes},
                     {"dropped_languages", s.dropped_languages},
                     {"error_kinds", s.error_kinds},
                     {"errors_total", s.errors_total},
                     {"errors", errors},
                     {"skips",
                      {{"warc_non_response", s.skips.warc_non_response},
                       {"warc_payload_type", s.skips.warc_payload_type},
                       {"empty", s.skips.empty}}},
                     {"repeated_lines_removed", s.repeated_lines_removed},
                     {"repeated_lines_docs", s.repeated_lines_docs},
                     {"samples", s.samples}};
}

void from_json(const nlohmann::json& j, UnitStats& s) {
  s = UnitStats{};
  s.inputs = j.value("inputs", std::vector<std::string>{});
  s.input_bytes = j.value("input_bytes", uint64_t(0));
  s.seconds = j.value("seconds", 0.0);
  if (j.contains("stages"))
    for (auto it = j["stages"].begin(); it != j["stages"].end(); ++it) {
      StageCounts& c = s.stages[it.key()];
      c.docs_in = it.value().value("docs_in", uint64_t(0));
      c.bytes_in = it.value().value("bytes_in", uint64_t(0));
      c.docs_out = it.value().value("docs_out", uint64_t(0));
      c.bytes_out = it.value().value("bytes_out", uint64_t(0));
    }
  using M = std::map<std::string, uint64_t>;
  s.drops = j.value("drops", M{});
  s.drop_bytes = j.value("drop_bytes", M{});
  s.kept_docs = j.value("kept_docs", M{});
  s.kept_bytes = j.value("kept_bytes", M{});
  s.dropped_languages = j.value("dropped_languages", M{});
  s.error_kinds = j.value("error_kinds", M{});
  s.errors_total = j.value("errors_total", uint64_t(0));
  if (j.contains("errors"))
    for (const auto& e : j["errors"]) {
      ReadError r;
      r.file = e.value("file", "");
      r.line = e.contains("line");
      r.offset = r.line ? e.value("line", uint64_t(0)) : e.value("offset", uint64_t(0));
      r.kind = e.value("kind", "");
      r.message = e.value("message", "");
      s.errors.push_back(std::move(r));
    }
  if (j.contains("skips")) {
    s.skips.warc_non_response = j["skips"].value("warc_non_response", uint64_t(0));
    s.skips.warc_payload_type = j["skips"].value("warc_payload_type", uint64_t(0));
    s.skips.empty = j["skips"].value("empty", uint64_t(0));
  }
  s.repeated_lines_removed = j.value("repeated_lines_removed", uint64_t(0));
  s.repeated_lines_docs = j.value("repeated_lines_docs", uint64_t(0));
  s.samples = j.value("samples", nlohmann::json::object());
}

void to_json(nlohmann::json& j, const RunReport& r) {
  j = nlohmann::json{{"units_total", r.units_total},
                     {"units_run", r.units_run},
                     {"units_skipped", r.units_skipped},
                     {"seconds", r.seconds},
                     {"bytes_run", r.bytes_run},
                     {"threads", r.threads},
                     {"shard", r.shard},
                     {"mb_per_s", r.seconds > 0 ? r.bytes_run / 1e6 / r.seconds : 0.0},
                     {"mb_per_s_per_thread", r.seconds > 0 ? r.bytes_run / 1e6 / r.seconds / std::max(1, r.threads) : 0.0}};
  nlohmann::json total = r.total;
  total.erase("inputs");   // listed per unit in the done-markers; can be long
  total.erase("samples");  // written to dropped_samples/
  j["total"] = total;
}

namespace {
std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}
std::string count(uint64_t n) { return Progress::format_count(static_cast<double>(n), ""); }
std::string bytes(uint64_t n) { return Progress::format_count(static_cast<double>(n), "B"); }
}  // namespace

std::string format_report(const RunReport& r) {
  const UnitStats& t = r.total;
  std::string out;
  out += fmt("Data pipeline report%s%s\n", r.shard.empty() ? "" : " — shard ", r.shard.c_str());
  out += fmt("  input files: %d (%d processed now, %d already done)\n", r.units_total, r.units_run, r.units_skipped);
  out += "\n  stage          docs in    bytes in   docs out   bytes out   kept\n";
  for (const auto& name : pipeline_stage_names()) {
    auto it = t.stages.find(name);
    if (it == t.stages.end()) continue;
    const StageCounts& c = it->second;
    double pct = c.docs_in ? 100.0 * c.docs_out / c.docs_in : 0.0;
    out += fmt("  %-12s %9s %11s %10s %11s %5.1f%%\n", name.c_str(), count(c.docs_in).c_str(), bytes(c.bytes_in).c_str(),
               count(c.docs_out).c_str(), bytes(c.bytes_out).c_str(), pct);
  }
  if (!t.drops.empty()) {
    std::vector<std::pair<std::string, uint64_t>> d(t.drops.begin(), t.drops.end());
    std::sort(d.begin(), d.end(), [](auto& a, auto& b) { return a.second > b.second; });
    out += "\n  dropped, by reason                                   docs       bytes\n";
    for (const auto& [k, v] : d) {
      auto b = t.drop_bytes.find(k);
      out += fmt("  %-48s %9s %11s\n", k.c_str(), count(v).c_str(), bytes(b == t.drop_bytes.end() ? 0 : b->second).c_str());
    }
  }
  if (!t.dropped_languages.empty()) {
    out += "\n  languages dropped by language ID:";
    std::vector<std::pair<std::string, uint64_t>> d(t.dropped_languages.begin(), t.dropped_languages.end());
    std::sort(d.begin(), d.end(), [](auto& a, auto& b) { return a.second > b.second; });
    size_t shown = 0;
    for (const auto& [k, v] : d) {
      if (++shown > 12) break;
      out += fmt(" %s=%llu", k.c_str(), static_cast<unsigned long long>(v));
    }
    out += "\n";
  }
  if (!t.kept_docs.empty()) {
    out += "\n  written, by language                                 docs       bytes\n";
    for (const auto& [k, v] : t.kept_docs) {
      auto b = t.kept_bytes.find(k);
      out += fmt("  %-48s %9s %11s\n", k.c_str(), count(v).c_str(), bytes(b == t.kept_bytes.end() ? 0 : b->second).c_str());
    }
  }
  out += fmt("\n  skipped records: %llu non-response WARC records, %llu non-HTML payloads, %llu empty\n",
             static_cast<unsigned long long>(t.skips.warc_non_response),
             static_cast<unsigned long long>(t.skips.warc_payload_type), static_cast<unsigned long long>(t.skips.empty));
  if (t.repeated_lines_removed)
    out += fmt("  repeated site lines removed: %llu lines from %llu documents\n",
               static_cast<unsigned long long>(t.repeated_lines_removed),
               static_cast<unsigned long long>(t.repeated_lines_docs));
  out += fmt("  errors: %llu", static_cast<unsigned long long>(t.errors_total));
  if (!t.error_kinds.empty()) {
    out += " (";
    bool first = true;
    for (const auto& [k, v] : t.error_kinds) {
      out += fmt("%s%s=%llu", first ? "" : ", ", k.c_str(), static_cast<unsigned long long>(v));
      first = false;
    }
    out += ")";
  }
  out += "\n";
  size_t shown = 0;
  for (const auto& e : t.errors) {
    if (++shown > 10) {
      out += fmt("    ... %llu more in report.json\n", static_cast<unsigned long long>(t.errors_total - 10));
      break;
    }
    out += fmt("    %s%s%llu: %s (%s)\n", e.file.c_str(), e.line ? ":" : "@", static_cast<unsigned long long>(e.offset),
               e.message.c_str(), e.kind.c_str());
  }
  double mbps = r.seconds > 0 ? r.bytes_run / 1e6 / r.seconds : 0;
  out += fmt("\n  throughput: %s of input in %s = %.2f MB/s with %d threads (%.2f MB/s per thread)\n",
             bytes(r.bytes_run).c_str(), Progress::format_duration(r.seconds).c_str(), mbps, r.threads,
             mbps / std::max(1, r.threads));
  return out;
}

}  // namespace aji::data
