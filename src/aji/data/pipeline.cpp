#include "aji/data/pipeline.h"

#include <omp.h>
#include <sys/stat.h>
#include <utf8proc.h>
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <memory>
#include <set>
#include <unordered_map>

#include "aji/base/json_number.h"
#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/pause_point.h"
#include "aji/base/progress.h"
#include "aji/base/threads.h"

namespace aji::data {

namespace fs = std::filesystem;

// ------------------------------------------------------------------------------------
// Config

PipelineConfig PipelineConfig::fineweb_default() {
  PipelineConfig c;
  c.quality["en"] = QualityFilterConfig::english();
  c.quality["ko"] = QualityFilterConfig::korean();
  return c;
}

const QualityFilterConfig& PipelineConfig::quality_for(const std::string& language) const {
  auto it = quality.find(language.empty() ? "default" : language);
  if (it != quality.end()) return it->second;
  static const QualityFilterConfig english = QualityFilterConfig::english();
  static const QualityFilterConfig korean = QualityFilterConfig::korean();
  static const QualityFilterConfig other = QualityFilterConfig::for_language("xx");
  if (language == "ko") return korean;
  if (language == "en" || language.empty()) return english;
  return other;
}

namespace {

void check_keys(const nlohmann::json& j, std::initializer_list<const char*> keys, const char* where) {
  if (!j.is_object()) throw Error(std::string(where) + " must be a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool ok = false;
    for (const char* k : keys) ok = ok || it.key() == k;
    if (!ok)
      throw Error("unknown key '" + it.key() + "' in " + where).fix("see `aji data config` for the valid keys");
  }
}

nlohmann::json reader_json(const ReaderOptions& r) {
  return {{"format", input_format_name(r.format)},
          {"jsonl_text_field", r.jsonl_text_field},
          {"jsonl_id_field", r.jsonl_id_field},
          {"jsonl_url_field", r.jsonl_url_field},
          {"max_document_bytes", r.max_document_bytes},
          {"warc_payload_types", r.warc_payload_types}};
}

void reader_from_json(const nlohmann::json& j, ReaderOptions& r) {
  check_keys(j, {"format", "jsonl_text_field", "jsonl_id_field", "jsonl_url_field", "max_document_bytes", "warc_payload_types"},
             "reader");
  if (j.contains("format")) r.format = parse_input_format(j["format"].get<std::string>());
  r.jsonl_text_field = j.value("jsonl_text_field", r.jsonl_text_field);
  r.jsonl_id_field = j.value("jsonl_id_field", r.jsonl_id_field);
  r.jsonl_url_field = j.value("jsonl_url_field", r.jsonl_url_field);
  r.max_document_bytes = j.value("max_document_bytes", r.max_document_bytes);
  r.warc_payload_types = j.value("warc_payload_types", r.warc_payload_types);
}

nlohmann::json repeated_lines_json(const RepeatedLinesSettings& r) {
  return {{"enabled", r.enabled},
          {"min_pages", r.filter.min_pages},
          {"min_fraction", r.filter.min_fraction},
          {"max_line_bytes", r.filter.max_line_bytes}};
}

void repeated_lines_from_json(const nlohmann::json& j, RepeatedLinesSettings& r) {
  check_keys(j, {"enabled", "min_pages", "min_fraction", "max_line_bytes"}, "extract.repeated_lines");
  r.enabled = j.value("enabled", r.enabled);
  r.filter.min_pages = j.value("min_pages", r.filter.min_pages);
  r.filter.min_fraction = j.value("min_fraction", r.filter.min_fraction);
  r.filter.max_line_bytes = j.value("max_line_bytes", r.filter.max_line_bytes);
  if (r.filter.min_pages < 1)
    throw Error("extract.repeated_lines.min_pages must be at least 1").fix("use e.g. 5 (a line on 5+ pages of a host)");
  if (!(r.filter.min_fraction >= 0.0 && r.filter.min_fraction <= 1.0))
    throw Error("extract.repeated_lines.min_fraction must be in [0, 1]").fix("use e.g. 0.5 (half of a host's pages)");
}

}  // namespace

void to_json(nlohmann::json& j, const PipelineConfig& c) {
  nlohmann::json quality = nlohmann::json::object();
  for (const auto& [lang, q] : c.quality) quality[lang] = q;
  j = nlohmann::json{
      {"reader", reader_json(c.reader)},
      {"url_filter", c.url_filter},
      {"extract", c.extract},
      {"normalize_nfc", c.normalize_nfc},
      {"language_id", c.language_id},
      {"quality_enabled", c.quality_enabled},
      {"quality", quality},
      {"pii_enabled", c.pii_enabled},
      {"pii", c.pii},
      {"output",
       {{"zstd_level", c.output.zstd_level},
        {"batch_size", c.output.batch_size},
        {"dropped_samples_per_reason", c.output.dropped_samples_per_reason},
        {"sample_max_bytes", c.output.sample_max_bytes},
        {"write_dropped_samples", c.output.write_dropped_samples}}}};
  j["extract"]["repeated_lines"] = repeated_lines_json(c.repeated_lines);
}

void from_json(const nlohmann::json& j, PipelineConfig& c) {
  c = PipelineConfig::fineweb_default();
  check_keys(j,
             {"reader", "url_filter", "extract", "normalize_nfc", "language_id", "quality_enabled", "quality",
              "pii_enabled", "pii", "output"},
             "the pipeline config");
  if (j.contains("reader")) reader_from_json(j["reader"], c.reader);
  if (j.contains("url_filter")) from_json(j["url_filter"], c.url_filter);
  if (j.contains("extract")) {
    nlohmann::json e = j["extract"];
    if (e.is_object() && e.contains("repeated_lines")) {
      repeated_lines_from_json(e["repeated_lines"], c.repeated_lines);
      e.erase("repeated_lines");
    }
    from_json(e, c.extract);
  }
  c.normalize_nfc = j.value("normalize_nfc", c.normalize_nfc);
  if (j.contains("language_id")) from_json(j["language_id"], c.language_id);
  c.quality_enabled = j.value("quality_enabled", c.quality_enabled);
  if (j.contains("quality")) {
    const auto& q = j["quality"];
    if (!q.is_object()) throw Error("quality must be an object {\"en\": {...}, \"ko\": {...}}");
    for (auto it = q.begin(); it != q.end(); ++it) {
      nlohmann::json entry = it.value();
      // A language entry starts from that language's preset unless it names another.
      if (!entry.contains("language")) entry["language"] = it.key() == "default" ? "en" : it.key();
      QualityFilterConfig qc;
      from_json(entry, qc);
      c.quality[it.key()] = qc;
    }
  }
  c.pii_enabled = j.value("pii_enabled", c.pii_enabled);
  if (j.contains("pii")) from_json(j["pii"], c.pii);
  if (j.contains("output")) {
    const auto& o = j["output"];
    check_keys(o, {"zstd_level", "batch_size", "dropped_samples_per_reason", "sample_max_bytes", "write_dropped_samples"},
               "output");
    c.output.zstd_level = o.value("zstd_level", c.output.zstd_level);
    c.output.batch_size = std::max(1, o.value("batch_size", c.output.batch_size));
    c.output.dropped_samples_per_reason = o.value("dropped_samples_per_reason", c.output.dropped_samples_per_reason);
    c.output.sample_max_bytes = o.value("sample_max_bytes", c.output.sample_max_bytes);
    c.output.write_dropped_samples = o.value("write_dropped_samples", c.output.write_dropped_samples);
  }
}

PipelineConfig load_pipeline_config(const fs::path& path) {
  std::string text = read_file(path);
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false, true);
  if (j.is_discarded()) throw Error("the pipeline config is not valid JSON").at(path.string()).fix("check it with `aji data config` as a template");
  PipelineConfig c;
  try {
    from_json(j, c);
  } catch (Error& e) {
    if (e.file().empty()) e.at(path.string());
    throw;
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("bad value in the pipeline config: ") + e.what()).at(path.string()).fix("compare with `aji data config`");
  }
  return c;
}

void parse_shard(const std::string& spec, int& index, int& count) {
  size_t slash = spec.find('/');
  auto bad = [&] {
    return Error("bad --shard '" + spec + "'").fix("write I/N with 0 <= I < N, e.g. --shard 0/8 or --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT");
  };
  if (slash == std::string::npos) throw bad();
  try {
    size_t p1 = 0, p2 = 0;
    index = std::stoi(spec.substr(0, slash), &p1);
    count = std::stoi(spec.substr(slash + 1), &p2);
    if (p1 != slash || p2 != spec.size() - slash - 1) throw bad();
  } catch (const std::logic_error&) {
    throw bad();
  }
  if (count < 1 || index < 0 || index >= count) throw bad();
}

std::string unit_name(const std::string& input_path) {
  std::string name = fs::path(input_path).filename().string();
  for (const char* ext : {".gz", ".zst", ".zstd", ".jsonl", ".json", ".warc", ".wet", ".html", ".htm", ".txt"}) {
    size_t n = std::strlen(ext);
    if (name.size() > n && name.compare(name.size() - n, n, ext) == 0) name.resize(name.size() - n);
  }
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
  uint64_t h = 1469598103934665603ULL;  // FNV-1a of the full path
  for (unsigned char c : input_path) h = (h ^ c) * 1099511628211ULL;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%08llx", static_cast<unsigned long long>(h & 0xffffffffULL));
  return name + "-" + hex;
}

// ------------------------------------------------------------------------------------
// Output: JSONL compressed with zstd, written atomically.

namespace {

class ZstdJsonlWriter {
 public:
  ZstdJsonlWriter(const fs::path& path, int level) : file_(path), cctx_(ZSTD_createCCtx()) {
    ZSTD_CCtx_setParameter(cctx_, ZSTD_c_compressionLevel, level);
    out_.resize(ZSTD_CStreamOutSize());
  }
  ~ZstdJsonlWriter() { ZSTD_freeCCtx(cctx_); }
  void write(std::string_view data) { compress(data, ZSTD_e_continue); }
  void commit() {
    compress({}, ZSTD_e_end);
    file_.commit();
  }

 private:
  void compress(std::string_view data, ZSTD_EndDirective mode) {
    ZSTD_inBuffer in{data.data(), data.size(), 0};
    for (;;) {
      ZSTD_outBuffer o{out_.data(), out_.size(), 0};
      size_t left = ZSTD_compressStream2(cctx_, &o, &in, mode);
      if (ZSTD_isError(left)) throw Error(std::string("zstd compression failed: ") + ZSTD_getErrorName(left));
      if (o.pos) file_.write(out_.data(), o.pos);
      if (mode == ZSTD_e_end ? left == 0 : in.pos == in.size) break;
    }
  }
  AtomicFileWriter file_;
  ZSTD_CCtx* cctx_;
  std::string out_;
};

enum Stage { kUrl = 0, kExtract, kLangId, kQuality, kPii, kNumStages };
const char* const kStageNames[kNumStages] = {"url_filter", "extract", "language_id", "quality", "pii"};

struct DocResult {
  uint64_t entry_bytes[kNumStages + 1] = {};  // text bytes entering each stage; [kNumStages] = written
  int drop_stage = -1;  // stage that dropped it, -1 if kept
  std::string reason;
  std::string route;    // output language directory when kept
  std::string error;    // an unexpected failure while processing (counted, doc dropped)
  int repeated_lines = 0;  // lines removed by the repeated-line filter
};

bool has_non_ascii(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) return true;
  return false;
}

void normalize_nfc(std::string& text) {
  if (!has_non_ascii(text)) return;
  utf8proc_uint8_t* out = nullptr;
  utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                    static_cast<utf8proc_ssize_t>(text.size()), &out,
                                    static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n >= 0 && out) text.assign(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
  std::free(out);  // on error (invalid UTF-8) the text is kept as is
}

struct Context {
  const PipelineConfig& cfg;
  std::unique_ptr<UrlFilter> url_filter;
  std::vector<PiiScrubber> scrubbers;  // one per thread (round-robin state)
};

// Pass 1 of an input file for repeated-line removal: the per-host line counts of its
// extracted pages, and extracted pages kept for pass 2 (by document index in the file).
struct UnitPages {
  std::unique_ptr<RepeatedLineFilter> filter;
  std::unordered_map<uint64_t, ExtractResult> extracted;
};

// pages: pass 1 of this file (null when it had none); index: the document's place in the file.
void process_document(Document& doc, DocResult& r, Context& ctx, int thread, UnitPages* pages, uint64_t index) {
  const PipelineConfig& cfg = ctx.cfg;
  auto drop = [&](Stage s, std::string reason) {
    r.drop_stage = s;
    r.reason = std::move(reason);
  };
  // URL filter
  r.entry_bytes[kUrl] = doc.text.size();
  if (ctx.url_filter) {
    Verdict v = (*ctx.url_filter)(doc);
    if (!v.keep) return drop(kUrl, v.reason);
  }
  // Extraction
  r.entry_bytes[kExtract] = doc.text.size();
  if (doc.html) {
    if (cfg.extract.enabled) {
      ExtractResult ex;
      bool have = false;
      if (pages) {
        auto it = pages->extracted.find(index);  // read-only lookups: safe across threads
        if (it != pages->extracted.end()) {
          ex = std::move(it->second);  // each index belongs to one thread
          have = true;
        }
      }
      if (!have) ex = extract_main_text(doc.text, cfg.extract);
      if (!ex.skip_reason.empty()) return drop(kExtract, ex.skip_reason);
      doc.text = std::move(ex.text);
      doc.html = false;
      if (!ex.title.empty()) doc.metadata["title"] = ex.title;
      if (pages && pages->filter) doc.text = pages->filter->filter(url_host(doc.url), doc.text, &r.repeated_lines);
      if (static_cast<int64_t>(doc.text.size()) < cfg.extract.min_text_bytes) return drop(kExtract, "extract_too_short");
    }
  }
  if (cfg.normalize_nfc) normalize_nfc(doc.text);
  // Language ID and routing
  r.entry_bytes[kLangId] = doc.text.size();
  std::string route = "all";
  if (cfg.language_id.enabled) {
    LangIdResult lid = identify_language(doc.text, cfg.language_id.max_bytes);
    doc.language = lid.language;
    doc.language_score = lid.score;
    auto it = cfg.language_id.languages.find(lid.language);
    if (it == cfg.language_id.languages.end()) {
      if (!cfg.language_id.keep_other_languages) return drop(kLangId, "language_not_kept");
      route = "other/" + lid.language;
    } else if (lid.score < it->second) {
      return drop(kLangId, "language_score_low");
    } else {
      route = lid.language;
    }
  }
  // Quality filters, with this language's settings
  r.entry_bytes[kQuality] = doc.text.size();
  bool other = route.rfind("other/", 0) == 0;
  if (cfg.quality_enabled && !other) {
    std::string failed;
    Verdict v = apply_quality_filters(doc, cfg.quality_for(doc.language), &failed);
    if (!v.keep) return drop(kQuality, failed.empty() ? v.reason : failed + ":" + v.reason);
  }
  // PII
  r.entry_bytes[kPii] = doc.text.size();
  if (cfg.pii_enabled) ctx.scrubbers[static_cast<size_t>(thread)].scrub(doc);
  r.entry_bytes[kNumStages] = doc.text.size();
  r.route = route;
}

std::string output_record(const Document& doc) {
  nlohmann::json meta = doc.metadata;
  if (!doc.url.empty()) meta["url"] = doc.url;
  if (!doc.language.empty()) {
    meta["language"] = doc.language;
    meta["language_score"] = std::round(doc.language_score * 10000.0) / 10000.0;
  }
  meta["source"] = doc.source_file;
  meta["source_offset"] = doc.source_offset;
  nlohmann::json j = {{"id", doc.id}, {"text", doc.text}, {"metadata", std::move(meta)}};
  std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line += '\n';
  return line;
}

nlohmann::json sample_record(const Document& doc, const std::string& reason, size_t max_bytes) {
  std::string text = doc.text.substr(0, max_bytes);
  // Do not cut a UTF-8 sequence in half.
  while (!text.empty() && (static_cast<unsigned char>(text.back()) & 0xC0) == 0x80) text.pop_back();
  if (!text.empty() && static_cast<unsigned char>(text.back()) >= 0xC0) text.pop_back();
  return {{"reason", reason},
          {"id", doc.id},
          {"url", doc.url},
          {"source", doc.source_file},
          {"source_offset", doc.source_offset},
          {"language", doc.language},
          {"language_score", doc.language_score},
          {"truncated", doc.text.size() > max_bytes},
          {"text", text},
          {"metadata", doc.metadata}};
}

uint64_t file_size_or_zero(const std::string& p) {
  std::error_code ec;
  auto n = fs::file_size(p, ec);
  return ec ? 0 : static_cast<uint64_t>(n);
}

// Progress of one input file in bytes, each byte counted once: with two passes over the
// file, each pass moves half of it.
struct UnitProgress {
  Progress* progress = nullptr;
  uint64_t total = 0;
  bool two_passes = false;
  uint64_t reported = 0;
  void at(uint64_t consumed, int pass) {
    uint64_t t = !two_passes ? consumed : pass == 1 ? consumed / 2 : total / 2 + consumed / 2;
    t = std::min(t, total);
    if (progress && t > reported) progress->add(static_cast<int64_t>(t - reported));
    reported = std::max(reported, t);
  }
  void finish() {
    if (progress && total > reported) progress->add(static_cast<int64_t>(total - reported));
    reported = std::max(reported, total);
  }
};

// Pass 1 of repeated-line removal: URL filter and extraction of the file's HTML pages (in
// parallel batches, as pass 2), their lines counted per host; extracted pages are kept up to
// cache_bytes. Null when the file holds no HTML page. Read errors and failures are left to
// pass 2, which counts them.
std::unique_ptr<UnitPages> scan_pages(const std::string& input, Context& ctx, size_t cache_bytes, UnitProgress& prog) {
  const PipelineConfig& cfg = ctx.cfg;
  DocumentReader reader(input, cfg.reader);
  auto pages = std::make_unique<UnitPages>();
  pages->filter = std::make_unique<RepeatedLineFilter>(cfg.repeated_lines.filter);
  const size_t batch_size = static_cast<size_t>(cfg.output.batch_size);
  std::vector<Document> batch(batch_size);
  std::vector<ExtractResult> ex(batch_size);
  std::vector<char> ok(batch_size);
  uint64_t index = 0, n_pages = 0;
  size_t cached = 0;
  bool more = true;
  while (more) {
    size_t n = 0;
    while (n < batch_size && (more = reader.next(batch[n]))) ++n;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) {
      const size_t k = static_cast<size_t>(i);
      ok[k] = 0;
      const Document& doc = batch[k];
      if (!doc.html) continue;
      try {
        if (ctx.url_filter && !(*ctx.url_filter)(doc).keep) continue;
        ex[k] = extract_main_text(doc.text, cfg.extract);
        ok[k] = 1;
      } catch (...) {
        // pass 2 meets it again and counts it
      }
    }
    for (size_t i = 0; i < n; ++i) {
      if (!ok[i]) continue;
      ++n_pages;
      if (ex[i].skip_reason.empty()) pages->filter->add(url_host(batch[i].url), ex[i].text);
      const size_t bytes = ex[i].text.size() + ex[i].title.size() + sizeof(ExtractResult);
      if (cached + bytes <= cache_bytes) {
        cached += bytes;
        pages->extracted.emplace(index + i, std::move(ex[i]));
      }
    }
    index += n;
    prog.at(reader.bytes_consumed(), 1);
  }
  if (n_pages == 0) return nullptr;
  return pages;
}

// Runs one input file through the pipeline; returns its stats. Outputs are committed
// only when the whole file went through.
UnitStats run_unit(const std::string& input, const fs::path& out_dir, Context& ctx, Progress* progress,
                   size_t extract_cache_bytes) {
  const PipelineConfig& cfg = ctx.cfg;
  auto t0 = std::chrono::steady_clock::now();
  UnitStats st;
  st.inputs = {input};
  st.input_bytes = file_size_or_zero(input);
  const std::string name = unit_name(input);
  std::map<std::string, std::unique_ptr<ZstdJsonlWriter>> writers;

  DocumentReader reader(input, cfg.reader);
  UnitProgress prog{progress, st.input_bytes};
  // Repeated-line removal needs a first pass over inputs that can hold HTML pages.
  std::unique_ptr<UnitPages> pages;
  if (cfg.repeated_lines.enabled && cfg.extract.enabled &&
      (reader.format() == InputFormat::kWarc || reader.format() == InputFormat::kHtml)) {
    prog.two_passes = true;
    pages = scan_pages(input, ctx, extract_cache_bytes, prog);
  }
  StageCounts& read_stage = st.stages["read"];
  read_stage.bytes_in = st.input_bytes;
  std::vector<StageCounts*> stage(kNumStages);
  for (int s = 0; s < kNumStages; ++s) stage[s] = &st.stages[kStageNames[s]];
  StageCounts& written = st.stages["output"];

  const size_t batch_size = static_cast<size_t>(cfg.output.batch_size);
  std::vector<Document> batch(batch_size);
  std::vector<DocResult> results(batch_size);
  uint64_t first_index = 0;  // index in the file of batch[0]
  bool more = true;
  while (more) {
    size_t n = 0;
    while (n < batch_size && (more = reader.next(batch[n]))) ++n;
    for (size_t i = 0; i < n; ++i) results[i] = DocResult{};
    // (B docs) processed over the threads; each touches only its own slot.
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) {
      DocResult& r = results[static_cast<size_t>(i)];
      try {
        process_document(batch[static_cast<size_t>(i)], r, ctx, omp_get_thread_num(), pages.get(),
                         first_index + static_cast<uint64_t>(i));
      } catch (const std::exception& e) {
        r.error = e.what();
      }
    }
    // Serial: counts, samples, writing in input order.
    for (size_t i = 0; i < n; ++i) {
      pause_point("data_doc");  // kill tests
      Document& doc = batch[i];
      DocResult& r = results[i];
      ++read_stage.docs_out;
      read_stage.bytes_out += r.entry_bytes[kUrl];
      if (r.repeated_lines > 0) {
        st.repeated_lines_removed += static_cast<uint64_t>(r.repeated_lines);
        ++st.repeated_lines_docs;
      }
      if (!r.error.empty()) {
        st.add_error(ReadError{doc.source_file, doc.source_offset, reader.format() == InputFormat::kJsonl,
                               "processing_failed", r.error});
        continue;
      }
      int last = r.drop_stage < 0 ? kNumStages - 1 : r.drop_stage;
      for (int s = 0; s <= last; ++s) {
        ++stage[s]->docs_in;
        stage[s]->bytes_in += r.entry_bytes[s];
        if (s < last || r.drop_stage < 0) {
          ++stage[s]->docs_out;
          stage[s]->bytes_out += r.entry_bytes[s + 1];
        }
      }
      if (r.drop_stage >= 0) {
        ++st.drops[r.reason];
        st.drop_bytes[r.reason] += doc.text.size();
        if (r.drop_stage == kLangId) ++st.dropped_languages[doc.language.empty() ? "un" : doc.language];
        auto& samples = st.samples[r.reason];
        if (!samples.is_array()) samples = nlohmann::json::array();
        if (cfg.output.write_dropped_samples && samples.size() < cfg.output.dropped_samples_per_reason)
          samples.push_back(sample_record(doc, r.reason, cfg.output.sample_max_bytes));
        continue;
      }
      auto& w = writers[r.route];
      if (!w) {
        fs::path dir = out_dir / r.route;
        fs::create_directories(dir);
        w = std::make_unique<ZstdJsonlWriter>(dir / (name + ".jsonl.zst"), cfg.output.zstd_level);
      }
      w->write(output_record(doc));
      ++written.docs_in;
      ++written.docs_out;
      written.bytes_in += doc.text.size();
      written.bytes_out += doc.text.size();
      ++st.kept_docs[r.route];
      st.kept_bytes[r.route] += doc.text.size();
    }
    first_index += n;
    prog.at(reader.bytes_consumed(), 2);
  }
  prog.finish();
  for (const auto& e : reader.errors()) st.add_error(e);
  st.skips = reader.skips();
  read_stage.docs_in = read_stage.docs_out + st.skips.warc_non_response + st.skips.warc_payload_type + st.skips.empty +
                       reader.errors().size();
  for (auto& [route, w] : writers) w->commit();
  pause_point("data_unit_outputs");  // kill tests: outputs in place, no done-marker yet
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return st;
}

fs::path marker_path(const fs::path& out_dir, const std::string& input) {
  return out_dir / ".done" / (unit_name(input) + ".json");
}

// ---- Resume keys: a done-marker holds what the input file and the settings were when
// the file was done; a rerun skips it only when both still match.

uint64_t fnv1a(std::string_view data, uint64_t h = 1469598103934665603ULL) {
  for (unsigned char c : data) h = (h ^ c) * 1099511628211ULL;
  return h;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// Bump when a code change alters what the pipeline writes for the same input and config.
constexpr int kResumeKeyVersion = 2;  // 2: repeated-line removal in WARC/HTML inputs
constexpr size_t kSampleBytes = size_t(64) << 10;

// Size, modification time and a hash of the first and last 64 KiB (on-disk bytes) of the
// input: a replaced, truncated or re-downloaded file changes at least one of them, and
// checking it costs 128 KiB of reading per file, not the whole file.
nlohmann::json input_key(const std::string& path) {
  struct stat sb {};
  if (::stat(path.c_str(), &sb) != 0) return nullptr;
  std::string head, tail;
  if (std::FILE* f = std::fopen(path.c_str(), "rb")) {
    head.resize(kSampleBytes);
    head.resize(std::fread(head.data(), 1, head.size(), f));
    auto size = static_cast<uint64_t>(sb.st_size);
    if (size > kSampleBytes && std::fseek(f, -static_cast<long>(kSampleBytes), SEEK_END) == 0) {
      tail.resize(kSampleBytes);
      tail.resize(std::fread(tail.data(), 1, tail.size(), f));
    }
    std::fclose(f);
  }
  return {{"size", static_cast<uint64_t>(sb.st_size)},
          {"mtime_ns", static_cast<int64_t>(sb.st_mtim.tv_sec) * 1000000000LL + sb.st_mtim.tv_nsec},
          {"sample_hash", hex64(fnv1a(tail, fnv1a(head)))}};
}

std::string config_hash(const PipelineConfig& config) {
  nlohmann::json j = config;
  return hex64(fnv1a(j.dump()));
}

nlohmann::json resume_key(const std::string& input, const std::string& cfg_hash) {
  return {{"version", kResumeKeyVersion}, {"input", input_key(input)}, {"config_hash", cfg_hash}};
}

// Why a done-marker no longer covers the input; empty if it does.
std::string marker_mismatch(const nlohmann::json& marker, const nlohmann::json& key) {
  if (!marker.contains("resume_key")) return "its done-marker has no resume key (written by an older aji)";
  const nlohmann::json& old = marker["resume_key"];
  if (old.value("version", nlohmann::json()) != key["version"]) return "its done-marker was written by another aji version";
  if (old.value("config_hash", nlohmann::json()) != key["config_hash"]) return "the pipeline config changed";
  if (!old.contains("input") || old["input"] != key["input"]) {
    if (key["input"].is_null()) return "the input file cannot be read";
    const nlohmann::json& a = old.contains("input") ? old["input"] : nlohmann::json();
    if (!a.is_object()) return "the input file changed";
    if (a.value("size", nlohmann::json()) != key["input"]["size"]) return "the input file changed size";
    if (a.value("sample_hash", nlohmann::json()) != key["input"]["sample_hash"])
      return "the input file's content changed";
    return "the input file's modification time changed";
  }
  return "";
}

// The output folders that can hold kept files: DIR/<lang> and DIR/other/<lang>.
std::vector<fs::path> route_dirs(const fs::path& out_dir) {
  std::vector<fs::path> dirs;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(out_dir, ec)) {
    if (!e.is_directory()) continue;
    const std::string n = e.path().filename().string();
    if (n == ".done" || n == "dropped_samples") continue;
    if (n == "other") {
      for (const auto& o : fs::directory_iterator(e.path(), ec))
        if (o.is_directory()) dirs.push_back(o.path());
    } else {
      dirs.push_back(e.path());
    }
  }
  return dirs;
}

// A unit is redone from scratch: its kept files from an earlier run go first (a changed
// input or config may route documents elsewhere).
void remove_unit_outputs(const fs::path& out_dir, const std::string& name) {
  std::error_code ec;
  for (const auto& d : route_dirs(out_dir)) fs::remove(d / (name + ".jsonl.zst"), ec);
}

// Temp files ("<file>.tmp.<pid>") left by a killed run, for this shard's units and report
// files only (another shard may be writing its own right now).
void remove_stale_temp_files(const fs::path& out_dir, const std::set<std::string>& units, const std::string& suffix) {
  std::error_code ec;
  auto unit_of_temp = [](const std::string& file, const char* ext) -> std::string {
    const std::string tag = std::string(ext) + ".tmp.";
    size_t p = file.rfind(tag);
    return p == std::string::npos ? std::string() : file.substr(0, p);
  };
  std::vector<fs::path> dirs = route_dirs(out_dir);
  for (const auto& d : dirs)
    for (const auto& e : fs::directory_iterator(d, ec)) {
      std::string u = unit_of_temp(e.path().filename().string(), ".jsonl.zst");
      if (!u.empty() && units.count(u)) fs::remove(e.path(), ec);
    }
  for (const auto& e : fs::directory_iterator(out_dir / ".done", ec)) {
    std::string u = unit_of_temp(e.path().filename().string(), ".json");
    if (!u.empty() && units.count(u)) fs::remove(e.path(), ec);
  }
  for (const fs::path& d : {out_dir, out_dir / "dropped_samples"})
    for (const auto& e : fs::directory_iterator(d, ec)) {
      const std::string f = e.path().filename().string();
      size_t p = f.rfind(".tmp.");
      if (p == std::string::npos) continue;
      const std::string base = f.substr(0, p);  // report<suffix>.json, <reason><suffix>.jsonl
      auto ends = [&](const std::string& tail) {
        return base.size() >= tail.size() && base.compare(base.size() - tail.size(), tail.size(), tail) == 0;
      };
      bool mine = d == out_dir ? (base == "report" + suffix + ".json" || base == "report" + suffix + ".txt")
                               : (ends(suffix + ".jsonl") && (!suffix.empty() || base.find(".shard-") == std::string::npos));
      if (mine) fs::remove(e.path(), ec);
    }
}

void write_report_files(const fs::path& out_dir, const RunReport& report, const std::string& suffix, bool samples,
                        size_t samples_per_reason) {
  nlohmann::json j = report;
  write_file_atomic(out_dir / ("report" + suffix + ".json"), j.dump(2) + "\n");
  write_file_atomic(out_dir / ("report" + suffix + ".txt"), format_report(report));
  if (!samples) return;
  fs::path dir = out_dir / "dropped_samples";
  fs::create_directories(dir);
  for (auto it = report.total.samples.begin(); it != report.total.samples.end(); ++it) {
    std::string body;
    size_t k = 0;
    for (const auto& s : it.value()) {
      if (k++ >= samples_per_reason) break;
      body += s.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      body += '\n';
    }
    std::string file = it.key();
    for (char& c : file)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') c = '_';
    write_file_atomic(dir / (file + suffix + ".jsonl"), body);
  }
}

UnitStats load_marker(const fs::path& p) {
  nlohmann::json j = nlohmann::json::parse(read_file(p), nullptr, false);
  if (j.is_discarded()) throw Error("damaged done-marker").at(p.string()).fix("delete it to redo that input file");
  UnitStats s;
  from_json(j, s);
  return s;
}

}  // namespace

RunReport run_pipeline(const PipelineConfig& config, const RunOptions& options) {
  if (options.out_dir.empty()) throw Error("no output directory").fix("pass --out DIR");
  if (options.inputs.empty()) throw Error("no input").fix("pass --input FILE|DIR|GLOB (repeatable)");
  std::vector<fs::path> all = expand_inputs(options.inputs);
  std::vector<std::string> files;
  for (const auto& p : all) files.push_back(p.string());
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  std::vector<std::string> mine;
  for (size_t i = 0; i < files.size(); ++i)
    if (static_cast<int>(i % static_cast<size_t>(options.shard_count)) == options.shard_index) mine.push_back(files[i]);

  fs::create_directories(options.out_dir / ".done");
  RunReport report;
  report.units_total = static_cast<int>(mine.size());
  report.threads = num_threads();
  report.shard = std::to_string(options.shard_index) + "/" + std::to_string(options.shard_count);

  Context ctx{config, nullptr, {}};
  if (config.url_filter.enabled) ctx.url_filter = std::make_unique<UrlFilter>(config.url_filter);
  int slots = std::max({1, num_threads(), omp_get_max_threads()});
  for (int t = 0; t < slots; ++t) ctx.scrubbers.emplace_back(config.pii);

  const std::string suffix = options.shard_count > 1 ? ".shard-" + std::to_string(options.shard_index) + "-of-" +
                                                           std::to_string(options.shard_count)
                                                     : "";
  {
    std::set<std::string> units;
    for (const auto& f : mine) units.insert(unit_name(f));
    remove_stale_temp_files(options.out_dir, units, suffix);
  }
  const std::string cfg_hash = config_hash(config);
  std::vector<std::string> todo;
  std::vector<nlohmann::json> todo_keys;
  uint64_t todo_bytes = 0;
  for (const auto& f : mine) {
    fs::path m = marker_path(options.out_dir, f);
    nlohmann::json key = resume_key(f, cfg_hash);
    if (fs::exists(m)) {
      nlohmann::json j = nlohmann::json::parse(read_file(m), nullptr, false);
      if (j.is_discarded() || !j.is_object())
        throw Error("damaged done-marker").at(m.string()).fix("delete it to redo that input file");
      std::string why = marker_mismatch(j, key);
      if (why.empty()) {
        UnitStats done;
        from_json(j, done);
        report.total.merge(done, config.output.dropped_samples_per_reason);
        ++report.units_skipped;
        continue;
      }
      if (options.notes) std::fprintf(stderr, "data run: redoing %s: %s since it was done\n", f.c_str(), why.c_str());
      // Marker first: a crash from here on leaves the unit not done, never half-replaced.
      std::error_code ec;
      fs::remove(m, ec);
    }
    remove_unit_outputs(options.out_dir, unit_name(f));
    todo.push_back(f);
    todo_keys.push_back(std::move(key));
    todo_bytes += file_size_or_zero(f);
  }
  auto t0 = std::chrono::steady_clock::now();
  Progress progress("data run", static_cast<int64_t>(todo_bytes), "B", options.progress);
  for (size_t u = 0; u < todo.size(); ++u) {
    const std::string& f = todo[u];
    UnitStats st;
    try {
      st = run_unit(f, options.out_dir, ctx, options.progress ? &progress : nullptr, options.extract_cache_bytes);
    } catch (const Error& e) {
      if (e.file() != f) throw;  // not about this input (e.g. the output disk is full): stop
      // The input cannot be read at all (vanished, unreadable): count it, go on, and leave
      // no done-marker so that a rerun tries it again.
      UnitStats failed;
      failed.inputs = {f};
      failed.add_error(ReadError{f, 0, false, "input_unreadable", e.what()});
      report.total.merge(failed, config.output.dropped_samples_per_reason);
      continue;
    }
    nlohmann::json j = st;
    j["resume_key"] = todo_keys[u];
    write_file_atomic(marker_path(options.out_dir, f), j.dump(1) + "\n");
    report.total.merge(st, config.output.dropped_samples_per_reason);
    ++report.units_run;
    report.bytes_run += st.input_bytes;
  }
  progress.finish();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (options.write_report) {
    write_report_files(options.out_dir, report, suffix, config.output.write_dropped_samples,
                       config.output.dropped_samples_per_reason);
  }
  return report;
}

RunReport merge_reports(const fs::path& out_dir, size_t samples_per_reason) {
  fs::path done = out_dir / ".done";
  if (!fs::is_directory(done))
    throw Error("no finished pipeline output here (no .done/ folder)").at(out_dir.string()).fix("run `aji data run --out DIR` first");
  std::vector<fs::path> markers;
  for (const auto& e : fs::directory_iterator(done))
    if (e.is_regular_file() && e.path().extension() == ".json") markers.push_back(e.path());
  std::sort(markers.begin(), markers.end());
  RunReport report;
  for (const auto& m : markers) {
    UnitStats s = load_marker(m);
    report.total.merge(s, samples_per_reason);
    report.seconds += s.seconds;
    report.bytes_run += s.input_bytes;
  }
  report.units_total = static_cast<int>(markers.size());
  report.units_run = 0;
  report.units_skipped = static_cast<int>(markers.size());
  report.threads = 1;  // seconds here is the sum over units, i.e. per-thread-ish time
  write_report_files(out_dir, report, "", true, samples_per_reason);
  return report;
}

bool is_run_output(const fs::path& dir) {
  std::error_code ec;
  return fs::is_directory(dir / ".done", ec);
}

std::vector<fs::path> run_output_files(const fs::path& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir / ".done", ec)) {
    const fs::path& m = e.path();
    if (!e.is_regular_file() || m.extension() != ".json") continue;  // skips "<unit>.json.tmp.<pid>"
    nlohmann::json j = nlohmann::json::parse(read_file(m), nullptr, false);
    if (j.is_discarded() || !j.is_object())
      throw Error("damaged done-marker").at(m.string()).fix("delete it and rerun `aji data run` to redo that input file");
    const std::string unit = m.stem().string();
    if (j.contains("kept_docs") && j["kept_docs"].is_object())
      for (auto it = j["kept_docs"].begin(); it != j["kept_docs"].end(); ++it) {
        if (!json_int_fits<uint64_t>(it.value()) || it.value().get<uint64_t>() == 0) continue;
        fs::path f = dir / it.key() / (unit + ".jsonl.zst");
        if (!fs::is_regular_file(f, ec))
          throw Error("the data-run output is incomplete: the done-marker names a file that is missing")
              .at(f.string())
              .fix("delete " + m.string() + " and rerun `aji data run` on the same inputs to redo it");
        files.push_back(f);
      }
  }
  if (!fs::is_directory(dir / ".done", ec))
    throw Error("not an `aji data run` output folder (no .done/)").at(dir.string()).fix("pass the --out folder of `aji data run`");
  std::sort(files.begin(), files.end());
  return files;
}

TextInputs resolve_text_inputs(const std::vector<std::string>& args, const std::string& jsonl_field) {
  TextInputs in;
  bool plain = false;
  std::string first_run;
  for (const auto& arg : args) {
    std::error_code ec;
    fs::path p(arg);
    // The data-run folder itself, or a folder inside it (DIR/en, DIR/other/fr).
    fs::path root;
    if (fs::is_directory(p, ec)) {
      fs::path q = fs::absolute(p, ec).lexically_normal();
      if (!q.has_filename()) q = q.parent_path();
      for (int up = 0; up < 3 && !q.empty(); ++up, q = q.parent_path()) {
        if (is_run_output(q)) {
          root = q;
          break;
        }
        if (q == q.parent_path()) break;
      }
    }
    if (root.empty()) {
      auto files = expand_inputs({arg});
      in.files.insert(in.files.end(), files.begin(), files.end());
      plain = true;
      continue;
    }
    fs::path sub = fs::absolute(p, ec).lexically_normal();
    if (!sub.has_filename()) sub = sub.parent_path();
    const std::string prefix = (sub / "").string();
    size_t n = 0;
    for (const fs::path& f : run_output_files(root)) {
      if (sub != root && f.string().rfind(prefix, 0) != 0) continue;
      in.files.push_back(f);
      ++n;
    }
    if (n == 0)
      throw Error("this `aji data run` output holds no kept documents (yet)")
          .at(arg)
          .fix("let `aji data run` finish at least one input file, or check its report.txt for why all were dropped");
    in.from_run_output = true;
    if (first_run.empty()) first_run = arg;
  }
  in.jsonl_field = jsonl_field;
  if (in.from_run_output) {
    if (jsonl_field.empty()) {
      if (plain)
        throw Error("an `aji data run` output (JSONL) is mixed with other inputs read as plain text")
            .at(first_run)
            .fix("pass them in separate runs, or add --jsonl-field text if the other inputs are JSONL with a \"text\" field");
      in.jsonl_field = "text";
    } else if (jsonl_field != "text") {
      throw Error("an `aji data run` output keeps its documents in field \"text\", not \"" + jsonl_field + "\"")
          .at(first_run)
          .fix("drop --jsonl-field or pass --jsonl-field text");
    }
  }
  return in;
}

}  // namespace aji::data
