// The data pipeline runner: raw inputs in, clean JSONL.zst per language out.
//
//   read → URL filter → HTML extraction → repeated site lines → NFC → language ID → quality filters → PII → write
//
// Repeated site lines (config extract.repeated_lines): site chrome that survives extraction
// (a "Skip to content" line, a newsletter blurb, a copyright line) repeats on many pages of
// one host. For an input that can hold HTML (WARC, HTML), a first pass reads the file,
// extracts its HTML pages and counts their lines per host (RepeatedLineFilter, extract.h);
// the second pass removes the lines found on >= min_pages pages and >= min_fraction of that
// host's pages in this file, right after extraction. The unit is one input file, so resume
// and sharding stay per file and deterministic. Extracted pages are kept in memory between
// the passes up to RunOptions::extract_cache_bytes; beyond that they are extracted again.
// JSONL and text inputs (no HTML) have no first pass.
//
// Work is split by input file ("unit"). --shard I/N takes the units whose index in the
// sorted input list is ≡ I (mod N), so N machines (a Slurm array, mpirun ranks) split a
// crawl with no coordination. Inside a unit, documents are read in batches and each batch
// is processed over the configured threads, then written in input order (the output is
// the same for any thread count).
//
// Output layout of DIR:
//   DIR/<lang>/<unit>.jsonl.zst      kept documents ({"id","text","metadata":{url,language,...}})
//   DIR/.done/<unit>.json            done-marker with the unit's stats and resume key
//                                    (size, mtime, head/tail hash of the input, config hash):
//                                    a rerun skips the unit only while the key matches,
//                                    else it redoes it and says why
//   DIR/report.json, report.txt      (report.shard-I-of-N.* when sharded; `aji data report DIR` merges all)
//   DIR/dropped_samples/<reason>.jsonl   a few dropped documents per reason
// Every file is written atomically: a crash leaves whole files or none.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/data/extract.h"
#include "aji/data/langid.h"
#include "aji/data/pii.h"
#include "aji/data/quality_filters.h"
#include "aji/data/readers.h"
#include "aji/data/report.h"
#include "aji/data/url_filter.h"

namespace aji::data {

struct OutputConfig {
  int zstd_level = 3;
  int batch_size = 512;                // documents per parallel batch
  size_t dropped_samples_per_reason = 5;
  size_t sample_max_bytes = 20000;     // text of a dropped sample is cut here
  bool write_dropped_samples = true;
};

// JSON: "extract": {..., "repeated_lines": {"enabled", "min_pages", "min_fraction", "max_line_bytes"}}.
struct RepeatedLinesSettings {
  bool enabled = true;
  RepeatedLineConfig filter;
};

struct PipelineConfig {
  ReaderOptions reader;
  UrlFilterConfig url_filter;
  ExtractConfig extract;
  RepeatedLinesSettings repeated_lines;  // lives under "extract" in the JSON
  bool normalize_nfc = true;  // Korean arrives precomposed and decomposed (macOS): unify
  LangIdConfig language_id;
  bool quality_enabled = true;
  // Per-language quality settings; a kept language without an entry uses
  // QualityFilterConfig::for_language(lang); "default" is used when language ID is off.
  std::map<std::string, QualityFilterConfig> quality;
  bool pii_enabled = true;
  PiiConfig pii;
  OutputConfig output;

  // FineWeb's defaults keeping English and Korean, each with its own settings
  // (English: FineWeb; Korean: FineWeb-2 kor_Hang).
  static PipelineConfig fineweb_default();
  // The quality settings for a document of this language.
  const QualityFilterConfig& quality_for(const std::string& language) const;
};
void to_json(nlohmann::json& j, const PipelineConfig& c);
// Starts from fineweb_default() and applies the keys present; unknown keys throw.
void from_json(const nlohmann::json& j, PipelineConfig& c);
PipelineConfig load_pipeline_config(const std::filesystem::path& path);

struct RunOptions {
  std::vector<std::string> inputs;  // files, directories, globs
  std::filesystem::path out_dir;
  int shard_index = 0;
  int shard_count = 1;
  bool progress = true;
  bool write_report = true;
  bool notes = true;  // say on stderr when a finished input file is redone (and why)
  // Extracted text kept between the two passes of repeated-line removal, per input file;
  // pages past it are extracted again in the second pass (same output, more time).
  size_t extract_cache_bytes = size_t(256) << 20;
};

// Parses "I/N" (0 <= I < N); throws aji::Error with a fix otherwise.
void parse_shard(const std::string& spec, int& index, int& count);

// Runs the pipeline over this shard's units; finished units (done-marker present) are
// skipped. Returns the report of this shard (finished units included).
RunReport run_pipeline(const PipelineConfig& config, const RunOptions& options);

// Merges every done-marker in DIR into one report (after sharded runs) and writes
// DIR/report.json, report.txt and dropped_samples/.
RunReport merge_reports(const std::filesystem::path& out_dir, size_t samples_per_reason = 5);

// ---- The output of `aji data run` as the input of the next stages ----

// True if dir is an output folder of `aji data run` (it holds a .done/ folder).
bool is_run_output(const std::filesystem::path& dir);

// The kept-document files of a data-run output folder: DIR/<route>/<unit>.jsonl.zst for
// every unit with a done-marker (JSONL, the text in field "text"), sorted. Only what the
// markers name is listed: never dropped_samples/ (the rejected documents), reports,
// markers, temp files of a killed run, or the files of an unfinished input. Throws
// aji::Error when no input file is finished yet or a named file is missing.
std::vector<std::filesystem::path> run_output_files(const std::filesystem::path& dir);

// Inputs of a text consumer (`aji tokenizer train`, `aji data tokenize`).
struct TextInputs {
  std::vector<std::filesystem::path> files;
  std::string jsonl_field;       // empty: plain text
  bool from_run_output = false;  // some argument was a data-run output (or a folder in one)
};
// Expands --input arguments: a data-run output folder (or a folder inside one, such as
// DIR/en) gives its kept files only, read as JSONL field "text"; anything else goes
// through expand_inputs. Mixing a data-run output with plain-text inputs is an error
// (they would need two different readers); with --jsonl-field text it is allowed.
TextInputs resolve_text_inputs(const std::vector<std::string>& args, const std::string& jsonl_field);

// Output file name stem of an input file: its name without extensions + a short hash
// of the full path, so two "part-0000.warc.gz" in different folders do not collide.
std::string unit_name(const std::string& input_path);

}  // namespace aji::data
