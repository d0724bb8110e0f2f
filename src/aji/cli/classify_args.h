// What the `aji classify` commands share: their group, and the options of every one that
// reads labeled text (classify_data.h).
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "aji/align/classify_data.h"
#include "aji/cli/command.h"

namespace aji::cli {

// The `aji classify` group, which classify_cmd.cpp and classify_data_cmd.cpp both fill.
inline CLI::App* classify_group(CLI::App& app) {
  return subcommand_group(app, "classify",
                          "Text classification: fine-tune a class head on a pretrained model, predict, evaluate; "
                          "split data, score predictions");
}

// Which file format and columns hold the text and the label; how bad rows are handled.
struct ReadArgs {
  std::string format = "auto", text_col = "text", label_col = "label", label_map;
  bool no_header = false, skip_invalid = false, skip_unmapped = false;

  void add_to(CLI::App* cmd) {
    cmd->add_option("--format", format, "auto (from the extension), jsonl, csv or tsv")
        ->check(CLI::IsMember({"auto", "jsonl", "csv", "tsv"}));
    cmd->add_option("--text-col", text_col, "Text column: header name / JSON key, or 0-based index with --no-header");
    cmd->add_option("--label-col", label_col, "Label column: header name / JSON key, or 0-based index");
    cmd->add_flag("--no-header", no_header, "CSV/TSV without a header row (columns by index)");
    cmd->add_option("--label-map", label_map, "Rename raw labels: '1=negative,2=negative,9=positive,10=positive'");
    cmd->add_flag("--skip-unmapped", skip_unmapped, "With --label-map: leave rows whose label is not in the map out "
                                                    "(counted) instead of stopping");
    cmd->add_flag("--skip-invalid", skip_invalid, "Skip malformed rows (missing text/label) and list them");
  }
  aji::align::LabeledDataOptions options(bool require_label = true) const {
    aji::align::LabeledDataOptions o;
    o.format = format == "jsonl" ? aji::align::LabeledFormat::kJsonl
               : format == "csv" ? aji::align::LabeledFormat::kCsv
               : format == "tsv" ? aji::align::LabeledFormat::kTsv
                                 : aji::align::LabeledFormat::kAuto;
    o.header = !no_header;
    o.text_column = text_col;
    o.label_column = label_col;
    o.require_label = require_label;
    if (!label_map.empty()) o.label_map = aji::align::parse_label_map(label_map);
    o.skip_unmapped = skip_unmapped;
    o.on_invalid = skip_invalid ? aji::align::OnInvalid::kSkip : aji::align::OnInvalid::kError;
    return o;
  }
};

}  // namespace aji::cli
