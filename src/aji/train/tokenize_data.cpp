#include "aji/train/tokenize_data.h"

#include <chrono>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/progress.h"
#include "aji/tokenizer/sha256.h"
#include "aji/tokenizer/tokenizer.h"
#include "aji/tokenizer/tokenizer_files.h"

namespace aji::train {

namespace fs = std::filesystem;

namespace {

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
    else return false;
    if (i + len > n) return false;
    for (int k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
      return false;
    i += len;
  }
  return true;
}

// Accumulates one split's tokens and cuts shards at document boundaries.
struct SplitWriter {
  std::string prefix;  // "train" or "val"
  fs::path dir;
  uint64_t shard_tokens;
  uint32_t vocab, bos;
  std::vector<uint32_t> buf;
  ShardInfo pending;
  std::vector<ShardInfo> shards;

  void add(const std::vector<tokenizer::TokenId>& ids, uint64_t bytes) {
    buf.push_back(bos);
    buf.insert(buf.end(), ids.begin(), ids.end());
    pending.documents += 1;
    pending.bytes += bytes;
    if (buf.size() >= shard_tokens) flush();
  }
  void flush() {
    if (buf.empty()) return;
    char name[64];
    std::snprintf(name, sizeof name, "%s-%05zu.ajitok", prefix.c_str(), shards.size());
    write_shard(dir / name, buf.data(), buf.size(), vocab, bos);
    pending.file = name;
    pending.tokens = buf.size();
    shards.push_back(pending);
    pending = ShardInfo{};
    buf.clear();
  }
};

}  // namespace

TokenizeDataResult tokenize_data(const TokenizeDataOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.val_fraction < 0 || o.val_fraction >= 1)
    throw Error("--val-fraction must be in [0, 1)").fix("use e.g. --val-fraction 0.01");
  if (o.shard_tokens < 1024) throw Error("--shard-tokens must be at least 1024").fix("use e.g. --shard-tokens 100000000");
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(o.tokenizer);
  const auto bos = tok.special_id("<|endoftext|>");
  if (!bos)
    throw Error("the tokenizer has no <|endoftext|> special token (aji separates documents with it)")
        .at(o.tokenizer.string())
        .fix("train the tokenizer with `--special '<|endoftext|>'` (aji tokenizer train adds it by default)");
  const auto files = o.files.empty() ? expand_inputs(o.inputs) : o.files;

  // The output directory: never silently mixed with an older data set.
  std::error_code ec;
  if (fs::exists(o.out_dir / "manifest.json")) {
    if (!o.force)
      throw Error("the output directory already holds token shards")
          .at(o.out_dir.string())
          .fix("choose another --out, or pass --force to replace them");
    for (const auto& e : fs::directory_iterator(o.out_dir))
      if (e.path().extension() == ".ajitok") fs::remove(e.path(), ec);
    fs::remove(o.out_dir / "manifest.json", ec);
  }
  fs::create_directories(o.out_dir);

  TokenizeDataResult r;
  DataManifest& m = r.manifest;
  m.vocab_size = static_cast<uint32_t>(tok.vocab_size());
  m.bos_id = *bos;
  m.val_fraction = o.val_fraction;
  m.seed = o.seed;
  m.tokenizer_hash = tokenizer::sha256_hex(read_file(o.tokenizer));
  SplitWriter train{"train", o.out_dir, o.shard_tokens, m.vocab_size, m.bos_id, {}, {}, {}};
  SplitWriter val{"val", o.out_dir, o.shard_tokens, m.vocab_size, m.bos_id, {}, {}, {}};
  // A run that fails (bad input, full disk) removes the shards it wrote: without a
  // manifest they are no data set, and a later run would leave them mixed with its own.
  struct RemoveShardsOnFailure {
    const SplitWriter &a, &b;
    bool done = false;
    ~RemoveShardsOnFailure() {
      if (done) return;
      std::error_code ec;
      for (const SplitWriter* w : {&a, &b})
        for (const ShardInfo& s : w->shards) fs::remove(w->dir / s.file, ec);
    }
  } cleanup{train, val};

  uint64_t total_bytes = 0;
  for (const auto& f : files) total_bytes += fs::file_size(f, ec);
  Progress progress("tokenize", static_cast<int64_t>(total_bytes), "B", o.progress);

  // Documents are gathered in blocks, encoded in parallel, then written in input order.
  constexpr size_t kBlockBytes = 8 << 20;
  std::vector<std::string> block;
  size_t block_bytes = 0;
  uint64_t doc_index = 0;
  auto encode_block = [&]() {
    if (block.empty()) return;
    std::vector<std::string_view> views(block.begin(), block.end());
    auto ids = tok.encode_batch(views, tokenizer::SpecialPolicy::kAsText);
    for (size_t i = 0; i < block.size(); ++i) {
      const bool to_val = document_goes_to_val(doc_index++, o.seed, o.val_fraction);
      (to_val ? val : train).add(ids[i], block[i].size());
      r.tokens += ids[i].size() + 1;
      r.bytes += block[i].size();
    }
    r.documents += block.size();
    block.clear();
    block_bytes = 0;
  };
  // Where the first skipped document of each kind was (for the error when nothing is left).
  std::string cur_file;
  int64_t cur_line = 0;
  std::string first_bad_utf8_file, first_bad_line_file, first_bad_line_why;
  int64_t first_bad_utf8_line = 0, first_bad_line_line = 0;
  auto add_doc = [&](std::string doc) {
    if (doc.empty()) {
      ++r.skipped_empty;
      return;
    }
    if (!valid_utf8(doc)) {
      if (r.skipped_invalid_utf8++ == 0) first_bad_utf8_file = cur_file, first_bad_utf8_line = cur_line;
      return;
    }
    block_bytes += doc.size();
    block.push_back(std::move(doc));
    if (block_bytes >= kBlockBytes) encode_block();
  };

  for (const auto& file : files) {
    LineReader reader(file);
    std::string_view line;
    const std::string name = file.string();
    cur_file = name;
    // Progress counts on-disk bytes: the total is the files' sizes, compressed or not.
    uint64_t reported = 0;
    auto report_progress = [&] {
      const uint64_t off = reader.compressed_offset();
      if (off > reported) progress.add(static_cast<int64_t>(off - reported));
      reported = off;
    };
    if (!o.jsonl_field.empty()) {
      while (reader.next(line)) {
        report_progress();
        cur_line = reader.line_number();
        if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
        std::string problem;
        try {
          auto j = nlohmann::json::parse(line);
          if (!j.is_object() || !j.contains(o.jsonl_field))
            problem = "the line has no \"" + o.jsonl_field + "\" field";
          else if (!j[o.jsonl_field].is_string())
            problem = "field \"" + o.jsonl_field + "\" is not a string";
          else
            add_doc(j[o.jsonl_field].get<std::string>());
        } catch (const nlohmann::json::exception& e) {
          problem = std::string(e.what()).find("UTF-8") != std::string::npos
                        ? "not valid UTF-8 inside a JSON string"
                        : std::string("not valid JSON (") + e.what() + ")";
        }
        if (!problem.empty()) {
          if (!o.skip_bad_lines)
            throw Error("malformed JSONL line: " + problem)
                .at(name, reader.line_number())
                .fix(problem.find("UTF-8") != std::string::npos
                         ? "convert the input to UTF-8 (e.g. `iconv -f cp949 -t utf-8`), or pass --skip-bad-lines to "
                           "count and skip such lines"
                         : "fix the line, choose the right --jsonl-field, or pass --skip-bad-lines to count and skip "
                           "such lines");
          if (r.skipped_bad_lines++ == 0)
            first_bad_line_file = name, first_bad_line_line = reader.line_number(), first_bad_line_why = problem;
        }
      }
      continue;
    }
    // Plain text: the first 4 MB decide the document rule (blank lines seen -> paragraphs,
    // else lines); then the file streams through.
    std::vector<std::string> head;
    size_t head_bytes = 0;
    bool has_blank = false, more = true;
    auto next_line = [&](std::string& l) {
      if (!reader.next(line)) return false;
      report_progress();
      l.assign(line);
      if (!l.empty() && l.back() == '\r') l.pop_back();
      if (l.find_first_not_of(" \t") == std::string::npos) l.clear();
      return true;
    };
    while (head_bytes < (4u << 20)) {
      std::string l;
      if (!next_line(l)) {
        more = false;
        break;
      }
      has_blank |= l.empty();
      head_bytes += l.size() + 1;
      head.push_back(std::move(l));
    }
    std::string doc;
    int64_t head_line = 0;  // line number of the line `take` is given
    int64_t doc_line = 0;   // first line of the paragraph being gathered
    auto take = [&](std::string& l) {
      const int64_t ln = head_line > 0 ? head_line : reader.line_number();
      if (!has_blank) {
        cur_line = ln;
        if (!l.empty()) add_doc(std::move(l));
      } else if (l.empty()) {
        cur_line = doc_line;
        if (!doc.empty()) add_doc(std::move(doc));
        doc.clear();
      } else {
        if (doc.empty()) doc_line = ln;
        if (!doc.empty()) doc += '\n';
        doc += l;
      }
    };
    for (auto& l : head) {
      ++head_line;
      take(l);
    }
    head.clear();
    head_line = 0;
    std::string l;
    while (more && next_line(l)) take(l);
    cur_line = doc_line;
    if (!doc.empty()) add_doc(std::move(doc));
  }
  encode_block();
  train.flush();
  val.flush();
  progress.finish();
  m.train = train.shards;
  m.val = val.shards;
  m.skipped_documents = r.skipped_empty + r.skipped_invalid_utf8 + r.skipped_bad_lines;
  if (r.documents == 0) {
    // Nothing usable: name the real cause, where it was first seen.
    const std::string counts = std::to_string(r.skipped_invalid_utf8) + " not valid UTF-8, " +
                               std::to_string(r.skipped_bad_lines) + " malformed JSONL lines, " +
                               std::to_string(r.skipped_empty) + " empty";
    if (r.skipped_invalid_utf8 > 0 && r.skipped_invalid_utf8 >= r.skipped_bad_lines)
      throw Error("no usable documents: every non-empty document is not valid UTF-8 (" + counts + ")")
          .at(first_bad_utf8_file, first_bad_utf8_line)
          .fix("convert the input to UTF-8 first (e.g. `iconv -f cp949 -t utf-8` for old Korean text), or run it "
               "through `aji data run`, which detects and decodes legacy charsets");
    if (r.skipped_bad_lines > 0)
      throw Error("no usable documents: every line was skipped as malformed JSONL (" + counts +
                  "); the first: " + first_bad_line_why)
          .at(first_bad_line_file, first_bad_line_line)
          .fix(first_bad_line_why.find("UTF-8") != std::string::npos
                   ? "JSON text must be UTF-8: convert the input first (e.g. `iconv -f cp949 -t utf-8`)"
                   : "check --jsonl-field (the field that holds the text) and the file format");
    throw Error("no usable documents: the inputs hold no text (" + counts + ")")
        .at(files.empty() ? std::string() : files.front().string())
        .fix("check the --input paths");
  }
  if (m.train.empty())
    throw Error("no training documents: all " + std::to_string(r.documents) + " documents went to val")
        .fix("give more input, or lower --val-fraction");
  tokenizer::save_aji_tokenizer_file(tok, o.out_dir / m.tokenizer_file);
  m.save(o.out_dir);
  cleanup.done = true;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace aji::train
