#include "aji/align/classify_data.h"

#include <algorithm>
#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

#include "aji/align/delimited.h"
#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/rng.h"

namespace aji::align {

namespace {

std::string trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  size_t e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

// A column index: digits only, and at most 9 of them so std::stoi cannot overflow (a
// longer number is no column of any real file; it is then treated as a name).
bool all_digits(const std::string& s) {
  return !s.empty() && s.size() <= 9 && s.find_first_not_of("0123456789") == std::string::npos;
}

std::string lower_ext(const std::filesystem::path& path) {
  std::filesystem::path p = path;
  std::string ext = p.extension().string();
  if (ext == ".gz" || ext == ".zst") ext = p.stem().extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext;
}

// Applies trimming and the label map; returns false (after rejecting) when unmapped.
bool finish_label(std::string& label, const LabeledDataOptions& opt, InputReport& rep, const std::string& file,
                  int64_t line) {
  label = trim(label);
  if (opt.label_map.empty() || label.empty()) return true;
  auto it = opt.label_map.find(label);
  if (it == opt.label_map.end()) {
    if (opt.skip_unmapped) {
      rep.reject(OnInvalid::kSkip, file, line, "unmapped_label", "label '" + label + "' is not in the label map", "");
    } else {
      rep.reject(opt.on_invalid, file, line, "unmapped_label", "label '" + label + "' is not in the label map",
                 "add it to --label-map, or pass --skip-unmapped to leave such rows out");
    }
    return false;
  }
  label = it->second;
  return true;
}

}  // namespace

LabeledFormat detect_labeled_format(const std::filesystem::path& path) {
  std::string ext = lower_ext(path);
  if (ext == ".jsonl" || ext == ".json" || ext == ".ndjson") return LabeledFormat::kJsonl;
  if (ext == ".csv") return LabeledFormat::kCsv;
  if (ext == ".tsv" || ext == ".tab") return LabeledFormat::kTsv;
  throw Error("cannot tell the format of '" + path.string() + "' from its extension")
      .fix("name it .jsonl, .csv or .tsv, or pass --format jsonl|csv|tsv");
}

std::map<std::string, std::string> parse_label_map(const std::string& spec) {
  std::map<std::string, std::string> out;
  size_t start = 0;
  while (start <= spec.size()) {
    size_t comma = spec.find(',', start);
    std::string item = spec.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!trim(item).empty()) {
      size_t eq = item.find('=');
      if (eq == std::string::npos || trim(item.substr(0, eq)).empty() || trim(item.substr(eq + 1)).empty())
        throw Error("bad label map entry '" + item + "'").fix("write the map as RAW=NAME pairs: 1=negative,10=positive");
      out[trim(item.substr(0, eq))] = trim(item.substr(eq + 1));
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

std::vector<LabeledExample> read_labeled(const std::filesystem::path& path, const LabeledDataOptions& opt,
                                         InputReport* report) {
  InputReport local;
  InputReport& rep = report ? *report : local;
  const std::string file = path.string();
  LabeledFormat format = opt.format == LabeledFormat::kAuto ? detect_labeled_format(path) : opt.format;
  std::vector<LabeledExample> out;

  if (format == LabeledFormat::kJsonl) {
    LineReader reader(path, size_t(256) << 20);
    std::string_view line;
    const std::string fix = "each line must be {\"" + opt.text_column + "\": \"...\", \"" + opt.label_column + "\": ...}";
    while (reader.next(line)) {
      if (trim(line).empty()) continue;
      ++rep.records_read;
      int64_t ln = reader.line_number();
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line.begin(), line.end());
      } catch (const nlohmann::json::exception& e) {
        rep.reject(opt.on_invalid, file, ln, "malformed_json", std::string("malformed JSON: ") + e.what(), fix);
        continue;
      }
      if (!j.is_object()) {
        rep.reject(opt.on_invalid, file, ln, "malformed_json", "the line is JSON but not an object", fix);
        continue;
      }
      auto t = j.find(opt.text_column);
      if (t == j.end() || !t->is_string() || trim(t->get_ref<const std::string&>()).empty()) {
        rep.reject(opt.on_invalid, file, ln, "missing_text", "no non-empty string \"" + opt.text_column + "\"", fix);
        continue;
      }
      LabeledExample ex{t->get<std::string>(), "", ln};
      auto l = j.find(opt.label_column);
      if (l != j.end() && !l->is_null()) {
        if (l->is_string()) ex.label = l->get<std::string>();
        else if (l->is_number_integer() || l->is_boolean()) ex.label = l->dump();
        else {
          rep.reject(opt.on_invalid, file, ln, "bad_label",
                     "\"" + opt.label_column + "\" must be a string, an integer or a boolean", fix);
          continue;
        }
      }
      if (!finish_label(ex.label, opt, rep, file, ln)) continue;
      if (opt.require_label && ex.label.empty()) {
        rep.reject(opt.on_invalid, file, ln, "missing_label", "the example has no label (\"" + opt.label_column + "\")",
                   fix);
        continue;
      }
      ++rep.records_kept;
      out.push_back(std::move(ex));
    }
    return out;
  }

  DelimitedReader reader(path, format == LabeledFormat::kCsv ? TableFormat::kCsv : TableFormat::kTsv);
  std::vector<std::string> f;
  int text_idx = -1, label_idx = -1;
  if (opt.header) {
    if (!reader.next(f)) return out;  // empty file: no examples
    for (size_t i = 0; i < f.size(); ++i) {
      std::string name = trim(f[i]);
      if (name == opt.text_column && text_idx < 0) text_idx = static_cast<int>(i);
      if (name == opt.label_column && label_idx < 0) label_idx = static_cast<int>(i);
    }
    std::string cols;
    for (auto& c : f) cols += (cols.empty() ? "" : ", ") + trim(c);
    if (text_idx < 0 && all_digits(opt.text_column)) text_idx = std::stoi(opt.text_column);
    if (label_idx < 0 && all_digits(opt.label_column)) label_idx = std::stoi(opt.label_column);
    if (text_idx < 0)
      throw Error("the header has no column '" + opt.text_column + "' (columns: " + cols + ")")
          .at(file, reader.record_line())
          .fix("choose the text column with --text-col NAME");
    if (label_idx < 0 && opt.require_label)
      throw Error("the header has no column '" + opt.label_column + "' (columns: " + cols + ")")
          .at(file, reader.record_line())
          .fix("choose the label column with --label-col NAME");
  } else {
    if (!all_digits(opt.text_column) || (opt.require_label && !all_digits(opt.label_column)))
      throw Error("without a header row, columns are chosen by 0-based index")
          .at(file)
          .fix("pass --text-col N --label-col M (e.g. --label-col 0 --text-col 1 for SMSSpamCollection)");
    text_idx = std::stoi(opt.text_column);
    label_idx = all_digits(opt.label_column) ? std::stoi(opt.label_column) : -1;
  }
  const std::string fix = "each row needs the text (column " + std::to_string(text_idx) + ") and the label (column " +
                          std::to_string(label_idx) + ")";
  while (reader.next(f)) {
    ++rep.records_read;
    int64_t ln = reader.record_line();
    if (static_cast<int>(f.size()) <= text_idx || trim(f[text_idx]).empty()) {
      rep.reject(opt.on_invalid, file, ln, "missing_text",
                 "row has " + std::to_string(f.size()) + " field(s) and no text in column " + std::to_string(text_idx),
                 fix);
      continue;
    }
    LabeledExample ex{f[text_idx], "", ln};
    if (label_idx >= 0 && label_idx < static_cast<int>(f.size())) ex.label = f[label_idx];
    if (!finish_label(ex.label, opt, rep, file, ln)) continue;
    if (opt.require_label && ex.label.empty()) {
      rep.reject(opt.on_invalid, file, ln, "missing_label", "row has no label in column " + std::to_string(label_idx),
                 fix);
      continue;
    }
    if (size_t bad = find_invalid_utf8(ex.text + ex.label); bad != std::string_view::npos) {
      rep.reject(opt.on_invalid, file, ln, "invalid_utf8", "the row has invalid UTF-8 (byte " + std::to_string(bad) + " of text+label)",
                 "convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)");
      continue;
    }
    ++rep.records_kept;
    out.push_back(std::move(ex));
  }
  return out;
}

LabelSet LabelSet::from_examples(const std::vector<LabeledExample>& examples) {
  std::set<std::string> names;
  for (const auto& e : examples)
    if (!e.label.empty()) names.insert(e.label);
  return LabelSet{{names.begin(), names.end()}};
}

int LabelSet::index_of(const std::string& label) const {
  auto it = std::lower_bound(names.begin(), names.end(), label);
  return (it != names.end() && *it == label) ? static_cast<int>(it - names.begin()) : -1;
}

std::string LabelSet::joined() const {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

void LabelSet::save(const std::filesystem::path& path) const {
  nlohmann::ordered_json j;
  j["format"] = "aji-labels";
  j["version"] = 1;
  j["labels"] = names;
  write_file_atomic(path, j.dump(2) + "\n");
}

LabelSet LabelSet::load(const std::filesystem::path& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("label file is not valid JSON: ") + e.what()).at(path.string())
        .fix("it is written by `aji classify` as {\"format\":\"aji-labels\",\"labels\":[...]}");
  }
  if (!j.is_object() || j.value("format", nlohmann::json()) != "aji-labels" || !j.contains("labels") || !j["labels"].is_array())
    throw Error("not an aji label file").at(path.string())
        .fix("expected {\"format\":\"aji-labels\",\"version\":1,\"labels\":[...]}");
  LabelSet set;
  for (const auto& l : j["labels"]) {
    if (!l.is_string()) throw Error("labels must be strings").at(path.string());
    set.names.push_back(l.get<std::string>());
  }
  if (!std::is_sorted(set.names.begin(), set.names.end()) ||
      std::adjacent_find(set.names.begin(), set.names.end()) != set.names.end())
    throw Error("the labels in the label file are not sorted and unique").at(path.string())
        .fix("do not edit the label file by hand; it fixes the class ids of the model");
  return set;
}

std::vector<int> encode_labels(const std::vector<LabeledExample>& examples, const LabelSet& labels,
                               const std::string& file, OnInvalid policy, InputReport* report) {
  InputReport local;
  InputReport& rep = report ? *report : local;
  std::vector<int> ids(examples.size(), -1);
  for (size_t i = 0; i < examples.size(); ++i) {
    const auto& e = examples[i];
    if (e.label.empty()) {
      rep.reject(policy, file, e.line, "missing_label", "the example has no label", "every example needs a label");
      continue;
    }
    ids[i] = labels.index_of(e.label);
    if (ids[i] < 0)
      rep.reject(policy, file, e.line, "unknown_label",
                 "label '" + e.label + "' is not one of the model's labels [" + labels.joined() + "]",
                 "use the labels the model was trained with, or train a new model on this label set");
  }
  return ids;
}

void check_label_sets(const LabelSet& model, const LabelSet& data, const std::string& file, bool allow_subset) {
  std::vector<std::string> extra, missing;
  for (const auto& n : data.names)
    if (model.index_of(n) < 0) extra.push_back(n);
  for (const auto& n : model.names)
    if (data.index_of(n) < 0) missing.push_back(n);
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
  };
  if (!extra.empty() || (!allow_subset && !missing.empty())) {
    std::string what = "the data's label set [" + data.joined() + "] differs from the model's [" + model.joined() + "]";
    if (!extra.empty()) what += "; unknown to the model: " + join(extra);
    if (!missing.empty()) what += "; absent from the data: " + join(missing);
    throw Error(what).at(file).fix("evaluate with data labeled like the training set, or retrain on these labels");
  }
}

DataSplit stratified_split(const std::vector<int>& label_ids, int n_classes, double val_fraction,
                           double test_fraction, uint64_t seed) {
  if (!(val_fraction >= 0 && test_fraction >= 0 && val_fraction + test_fraction < 1.0))
    throw Error("split fractions must be >= 0 and leave room for training (val " + std::to_string(val_fraction) +
                ", test " + std::to_string(test_fraction) + ")");
  std::vector<std::vector<int64_t>> by_class(n_classes);
  for (size_t i = 0; i < label_ids.size(); ++i) {
    int c = label_ids[i];
    if (c < 0) continue;  // skipped example
    AJI_CHECK(c < n_classes, "label id out of range");
    by_class[c].push_back(static_cast<int64_t>(i));
  }
  DataSplit split;
  for (int c = 0; c < n_classes; ++c) {
    auto& idx = by_class[c];
    Rng rng(seed ^ (0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(c + 1)));
    for (size_t i = idx.size(); i > 1; --i) std::swap(idx[i - 1], idx[rng.below(i)]);
    const int64_t n = static_cast<int64_t>(idx.size());
    int64_t n_test = std::llround(test_fraction * n), n_val = std::llround(val_fraction * n);
    if (n >= 3) {
      if (test_fraction > 0 && n_test == 0) n_test = 1;
      if (val_fraction > 0 && n_val == 0) n_val = 1;
    }
    n_test = std::min(n_test, n);
    n_val = std::min(n_val, n - n_test);
    split.test.insert(split.test.end(), idx.begin(), idx.begin() + n_test);
    split.val.insert(split.val.end(), idx.begin() + n_test, idx.begin() + n_test + n_val);
    split.train.insert(split.train.end(), idx.begin() + n_test + n_val, idx.end());
  }
  std::sort(split.train.begin(), split.train.end());
  std::sort(split.val.begin(), split.val.end());
  std::sort(split.test.begin(), split.test.end());
  return split;
}

std::vector<int64_t> balance_classes(const std::vector<int>& label_ids, int n_classes, uint64_t seed) {
  std::vector<std::vector<int64_t>> by_class(n_classes);
  for (size_t i = 0; i < label_ids.size(); ++i)
    if (label_ids[i] >= 0) by_class[label_ids[i]].push_back(static_cast<int64_t>(i));
  size_t smallest = SIZE_MAX;
  for (auto& v : by_class)
    if (!v.empty()) smallest = std::min(smallest, v.size());
  std::vector<int64_t> out;
  if (smallest == SIZE_MAX) return out;
  Rng rng(seed);
  for (auto& v : by_class) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
    out.insert(out.end(), v.begin(), v.begin() + std::min(smallest, v.size()));
  }
  std::sort(out.begin(), out.end());
  return out;
}

void write_labeled_jsonl(const std::filesystem::path& path, const std::vector<LabeledExample>& examples,
                         const std::vector<int64_t>& indices) {
  AtomicFileWriter w(path);
  for (int64_t i : indices) {
    nlohmann::ordered_json j;
    j["text"] = examples.at(i).text;
    j["label"] = examples.at(i).label;
    w.write(j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::strict));
    w.write("\n");
  }
  w.commit();
}

}  // namespace aji::align
