// What a pipeline run did, counted per stage: documents and bytes in and out, drop
// reasons, errors with file and offset, throughput, and a few dropped documents per
// reason. Each finished input file ("unit") keeps its own stats in its done-marker, so
// a resumed or sharded run still reports on everything (aji data report merges them).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/data/readers.h"

namespace aji::data {

// Stage names in pipeline order; "read" counts records in → documents out.
inline const std::vector<std::string>& pipeline_stage_names() {
  static const std::vector<std::string> names = {"read", "url_filter", "extract", "language_id",
                                                 "quality", "pii", "output"};
  return names;
}

struct StageCounts {
  uint64_t docs_in = 0, bytes_in = 0, docs_out = 0, bytes_out = 0;
};

struct UnitStats {
  std::vector<std::string> inputs;  // input files covered
  uint64_t input_bytes = 0;         // size of the input files on disk
  double seconds = 0;               // wall time spent processing them
  std::map<std::string, StageCounts> stages;
  std::map<std::string, uint64_t> drops;       // reason → documents
  std::map<std::string, uint64_t> drop_bytes;  // reason → bytes of text at the drop
  std::map<std::string, uint64_t> kept_docs;   // output language → documents written
  std::map<std::string, uint64_t> kept_bytes;
  std::map<std::string, uint64_t> dropped_languages;  // detected language of LID drops
  std::map<std::string, uint64_t> error_kinds;
  std::vector<ReadError> errors;  // the first max_errors_listed of them
  uint64_t errors_total = 0;
  ReadSkips skips;
  // Cross-page repeated-line removal (extract.repeated_lines): lines removed, and from how
  // many documents.
  uint64_t repeated_lines_removed = 0;
  uint64_t repeated_lines_docs = 0;
  nlohmann::json samples = nlohmann::json::object();  // reason → [dropped documents]

  static constexpr size_t kMaxErrorsListed = 1000;
  void add_error(const ReadError& e);
  // Adds other into this (samples: keeps the first `max_samples` per reason).
  void merge(const UnitStats& other, size_t max_samples);
};

void to_json(nlohmann::json& j, const UnitStats& s);
void from_json(const nlohmann::json& j, UnitStats& s);

struct RunReport {
  UnitStats total;
  int units_total = 0;     // input files of this shard (or of the whole run for `report`)
  int units_run = 0;       // processed now
  int units_skipped = 0;   // already done (resume)
  double seconds = 0;      // wall time of this run
  uint64_t bytes_run = 0;  // input bytes processed now
  int threads = 1;
  std::string shard;       // "I/N"
};
void to_json(nlohmann::json& j, const RunReport& r);

// The readable table: stages, drop reasons, languages, errors, throughput.
std::string format_report(const RunReport& report);

}  // namespace aji::data
