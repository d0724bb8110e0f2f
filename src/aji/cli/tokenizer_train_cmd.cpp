// `aji tokenizer train` and `aji tokenizer stats`: learning a byte-level BPE vocabulary
// from a corpus, and measuring how well a tokenizer compresses text (bytes per token) and
// how fast it encodes.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/progress.h"
#include "aji/base/threads.h"
#include "aji/cli/command.h"
#include "aji/data/pipeline.h"
#include "aji/tokenizer/tokenizer.h"
#include "aji/tokenizer/tokenizer_files.h"
#include "aji/tokenizer/trainer.h"

namespace {

using aji::Error;
using namespace aji::tokenizer;
namespace fs = std::filesystem;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

SplitPattern pattern_or_throw(const std::string& name) {
  auto p = parse_split_pattern(name);
  if (!p)
    throw Error("unknown split pattern \"" + name + "\"")
        .fix("use --pattern cl100k (GPT-4), o200k (GPT-4o) or gpt2");
  return *p;
}

struct TrainArgs {
  std::vector<std::string> inputs;
  std::string jsonl_field;
  bool skip_bad_lines = false;
  size_t vocab_size = 0;
  std::string pattern = "cl100k";
  std::vector<std::string> specials;
  std::string out;
  std::string format = "aji";
  std::string hf_out;
};

void run_train(const TrainArgs& a) {
  TrainOptions opt;
  opt.pattern = pattern_or_throw(a.pattern);
  opt.vocab_size = a.vocab_size;
  if (!a.specials.empty()) opt.specials = a.specials;
  opt.skip_bad_lines = a.skip_bad_lines;
  opt.progress = !aji::cli::global_options().quiet;
  if (a.format != "aji" && a.format != "hf")
    throw Error("unknown --format \"" + a.format + "\"").fix("use --format aji (default) or --format hf");
  validate_train_options(opt);  // before reading gigabytes
  // Fail on an unwritable output before training, not after.
  for (const std::string& out : {a.out, a.hf_out}) {
    if (out.empty()) continue;
    const fs::path dir = fs::path(out).parent_path();
    if (!dir.empty() && !fs::is_directory(dir))
      throw Error("the output directory does not exist").at(dir.string()).fix("create it first (mkdir -p)");
  }
  // An `aji data run` output folder gives its kept documents only (JSONL field "text").
  const aji::data::TextInputs in = aji::data::resolve_text_inputs(a.inputs, a.jsonl_field);
  const std::vector<fs::path>& files = in.files;
  opt.jsonl_field = in.jsonl_field;
  const auto t0 = std::chrono::steady_clock::now();
  TrainStats stats;
  Tokenizer tok = train_tokenizer(files, opt, &stats);
  const double secs = seconds_since(t0);
  if (a.format == "hf")
    save_hf_tokenizer_json(tok, a.out);
  else
    save_aji_tokenizer_file(tok, a.out);
  if (!a.hf_out.empty()) save_hf_tokenizer_json(tok, a.hf_out);

  std::fprintf(stderr,
               "trained %s: %zu tokens (%zu ordinary + %zu special), pattern %s\n"
               "  input: %zu file(s), %s, %lld pieces (%lld unique)%s\n"
               "  %lld merges in %.1f s (%d threads)%s\n",
               a.out.c_str(), tok.vocab_size(), tok.n_ranks(), tok.specials().size(),
               std::string(split_pattern_name(opt.pattern)).c_str(), files.size(),
               aji::Progress::format_count(static_cast<double>(stats.input_bytes), "B").c_str(),
               static_cast<long long>(stats.total_pieces), static_cast<long long>(stats.unique_pieces),
               stats.skipped_lines ? (", " + std::to_string(stats.skipped_lines) + " malformed lines skipped").c_str()
                                   : "",
               static_cast<long long>(stats.merges), secs, aji::num_threads(),
               stats.stopped_early ? "\n  note: the corpus ran out of pairs before the requested vocabulary size "
                                     "(use more text or a smaller --vocab-size)"
                                   : "");
}

// --- stats -------------------------------------------------------------------------

struct StatsArgs {
  std::string tokenizer;
  std::vector<std::string> inputs;
  std::string jsonl_field;
  bool json_out = false;
};

struct FileStats {
  std::string name;
  int64_t bytes = 0;
  int64_t tokens = 0;
  double seconds = 0;
};

// Encodes a batch of texts in parallel (special-token text counts as ordinary text).
int64_t count_tokens(const Tokenizer& tok, const std::vector<std::string>& texts) {
  std::vector<std::string_view> views(texts.begin(), texts.end());
  int64_t n = 0;
  for (const auto& ids : tok.encode_batch(views, SpecialPolicy::kAsText)) n += static_cast<int64_t>(ids.size());
  return n;
}

FileStats stats_for_file(const Tokenizer& tok, const fs::path& path, const std::string& jsonl_field,
                         aji::Progress& progress) {
  FileStats fs_;
  fs_.name = path.string();
  const size_t batch_limit = size_t(4) << 20;
  std::vector<std::string> batch;
  size_t batch_bytes = 0;
  const auto t0 = std::chrono::steady_clock::now();
  auto flush = [&] {
    if (batch.empty()) return;
    fs_.tokens += count_tokens(tok, batch);
    batch.clear();
    batch_bytes = 0;
  };
  if (jsonl_field.empty()) {
    // Stream in ~1 MB chunks cut where splitting is unaffected (same ids as the whole file).
    aji::InputStream in(path);
    uint64_t reported = 0;
    std::string buf;
    std::vector<char> block(size_t(1) << 20);
    while (true) {
      const size_t got = in.read(block.data(), block.size());
      buf.append(block.data(), got);
      fs_.bytes += static_cast<int64_t>(got);
      // Progress counts on-disk bytes (the total is the files' sizes, compressed or not).
      progress.add(static_cast<int64_t>(in.compressed_offset() - reported));
      reported = in.compressed_offset();
      size_t cut = got == 0 ? buf.size() : detail::last_safe_cut(buf);
      if (got != 0 && cut == 0 && buf.size() > (size_t(64) << 20)) cut = buf.size();  // pathological: one piece
      if (cut > 0) {
        batch.emplace_back(buf, 0, cut);
        batch_bytes += cut;
        buf.erase(0, cut);
      }
      if (batch_bytes >= batch_limit * static_cast<size_t>(aji::num_threads()) || got == 0) flush();
      if (got == 0) break;
    }
  } else {
    aji::LineReader reader(path);
    std::string_view line;
    uint64_t reported = 0;
    while (reader.next(line)) {
      progress.add(static_cast<int64_t>(reader.compressed_offset() - reported));
      reported = reader.compressed_offset();
      if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains(jsonl_field) || !j[jsonl_field].is_string())
        throw Error("malformed JSONL line (not an object with a string field \"" + jsonl_field + "\")")
            .at(path.string(), reader.line_number())
            .fix("fix the line or pick the right field with --jsonl-field");
      batch.push_back(j[jsonl_field].get<std::string>());
      fs_.bytes += static_cast<int64_t>(batch.back().size());
      batch_bytes += batch.back().size();
      if (batch_bytes >= batch_limit) flush();
    }
    flush();
  }
  fs_.seconds = seconds_since(t0);
  return fs_;
}

void run_stats(const StatsArgs& a) {
  const Tokenizer tok = Tokenizer::load(a.tokenizer);
  const std::vector<fs::path> files = aji::expand_inputs(a.inputs);
  int64_t total_size = 0;
  for (const fs::path& f : files) {
    std::error_code ec;
    total_size += static_cast<int64_t>(fs::file_size(f, ec));
  }
  aji::Progress progress("encode", total_size, "B", !aji::cli::global_options().quiet && !a.json_out);
  std::vector<FileStats> per_file;
  FileStats total;
  total.name = "total";
  for (const fs::path& f : files) {
    per_file.push_back(stats_for_file(tok, f, a.jsonl_field, progress));
    total.bytes += per_file.back().bytes;
    total.tokens += per_file.back().tokens;
    total.seconds += per_file.back().seconds;
  }
  progress.finish();
  auto bpt = [](const FileStats& s) { return s.tokens ? double(s.bytes) / double(s.tokens) : 0.0; };
  auto mbs = [](const FileStats& s) { return s.seconds > 0 ? double(s.bytes) / 1e6 / s.seconds : 0.0; };
  if (a.json_out) {
    nlohmann::ordered_json out = nlohmann::ordered_json::array();
    for (const FileStats& s : per_file)
      out.push_back({{"file", s.name}, {"bytes", s.bytes}, {"tokens", s.tokens}, {"bytes_per_token", bpt(s)},
                     {"seconds", s.seconds}, {"mb_per_s", mbs(s)}});
    std::printf("%s\n", nlohmann::ordered_json({{"tokenizer", a.tokenizer},
                                                {"vocab_size", tok.vocab_size()},
                                                {"threads", aji::num_threads()},
                                                {"files", out},
                                                {"total", {{"bytes", total.bytes},
                                                           {"tokens", total.tokens},
                                                           {"bytes_per_token", bpt(total)},
                                                           {"seconds", total.seconds},
                                                           {"mb_per_s", mbs(total)}}}})
                            .dump(1)
                            .c_str());
    return;
  }
  std::printf("tokenizer %s: vocab %zu, pattern %s, %d threads\n", a.tokenizer.c_str(), tok.vocab_size(),
              std::string(split_pattern_name(tok.pattern())).c_str(), aji::num_threads());
  std::printf("%12s %12s %8s %9s  %s\n", "bytes", "tokens", "B/token", "MB/s", "file");
  auto row = [&](const FileStats& s) {
    std::printf("%12lld %12lld %8.3f %9.2f  %s\n", static_cast<long long>(s.bytes), static_cast<long long>(s.tokens),
                bpt(s), mbs(s), s.name.c_str());
  };
  for (const FileStats& s : per_file) row(s);
  if (per_file.size() > 1) row(total);
}

aji::cli::CommandRegistrar reg(11, [](CLI::App& app) {
  CLI::App* group = aji::cli::subcommand_group(app, "tokenizer", "Train, inspect and use byte-level BPE tokenizers");

  auto ta = std::make_shared<TrainArgs>();
  CLI::App* train = group->add_subcommand(
      "train",
      "Learn a byte-level BPE vocabulary from text (GPT-4 style).\n"
      "Example: aji tokenizer train --input data/corpus/train --vocab-size 8192 --out tok.json");
  train->add_option("--input", ta->inputs,
                    "Text files, directories or globs (.gz/.zst read transparently); the --out folder of `aji data "
                    "run` gives its kept documents only")
      ->required();
  train->add_option("--jsonl-field", ta->jsonl_field,
                    "Inputs are JSONL; train on this string field of each line (e.g. text)");
  train->add_flag("--skip-bad-lines", ta->skip_bad_lines,
                  "JSONL: count and skip malformed lines instead of stopping at the first one");
  train->add_option("--vocab-size", ta->vocab_size,
                    "Total vocabulary: 256 byte tokens + merges + special tokens (256 .. 1,000,000)")
      ->required();
  train->add_option("--pattern", ta->pattern, "Split pattern: cl100k (GPT-4), o200k (GPT-4o) or gpt2")
      ->capture_default_str();
  train->add_option("--special", ta->specials,
                    "Special tokens, in id order after the ordinary tokens (repeatable; replaces the default "
                    "<|endoftext|> <|im_start|> <|im_end|>)");
  train->add_option("--out", ta->out, "Output tokenizer file (written atomically)")->required();
  train->add_option("--format", ta->format, "Format of --out: aji (default) or hf (tokenizer.json)")
      ->capture_default_str();
  train->add_option("--hf-out", ta->hf_out, "Also write a Hugging Face tokenizer.json here");
  train->callback([ta] { run_train(*ta); });

  auto sa = std::make_shared<StatsArgs>();
  CLI::App* stats = group->add_subcommand(
      "stats", "Bytes per token and encode throughput of a tokenizer on text files (special-token text counts as text)");
  stats->add_option("--tokenizer", sa->tokenizer, "Tokenizer file (aji, .tiktoken or tokenizer.json)")->required();
  stats->add_option("--input", sa->inputs, "Text files, directories or globs")->required();
  stats->add_option("--jsonl-field", sa->jsonl_field, "Inputs are JSONL; measure this string field");
  stats->add_flag("--json", sa->json_out, "Print the figures as JSON");
  stats->callback([sa] { run_stats(*sa); });
});

}  // namespace
