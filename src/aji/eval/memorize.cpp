#include "aji/eval/memorize.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/rng.h"
#include "aji/infer/rollout.h"

namespace aji::eval {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<ProbeDocument> count_duplicates(const std::vector<fs::path>& inputs, const fs::path& work_dir,
                                            const data::MinhashConfig& config) {
  if (fs::exists(work_dir / "out") || fs::exists(work_dir / "sigs"))
    throw Error("the dedup work folder " + work_dir.string() + " already holds a run")
        .fix("remove it or pass another --out (dedup steps resume from what they find)");
  data::dedup_run(inputs, work_dir, config);
  std::vector<ProbeDocument> docs;
  std::vector<fs::path> outs;
  for (const auto& e : fs::directory_iterator(work_dir / "out"))
    if (e.path().string().ends_with(".jsonl.zst")) outs.push_back(e.path());
  std::sort(outs.begin(), outs.end());
  for (const fs::path& f : outs) {
    LineReader reader(f);
    std::string_view line;
    while (reader.next(line)) {
      json j = json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.contains("text"))
        throw Error("dedup output line is not a JSON document").at(f.string() + ":" + std::to_string(reader.line_number()));
      ProbeDocument d;
      d.text = j["text"].get<std::string>();
      if (auto m = j.find("metadata"); m != j.end() && m->is_object()) d.copies = m->value("minhash_cluster_size", int64_t{1});
      docs.push_back(std::move(d));
    }
  }
  return docs;
}

int duplication_bucket(int64_t copies) {
  if (copies < 1) throw Error("a document count must be >= 1, got " + std::to_string(copies));
  int b = 0;
  while ((copies >> (b + 1)) > 0) ++b;
  return b;
}

std::string bucket_label(int bucket) {
  const int64_t lo = int64_t{1} << bucket, hi = (int64_t{1} << (bucket + 1)) - 1;
  return lo == hi ? std::to_string(lo) : std::to_string(lo) + "-" + std::to_string(hi);
}

int match_length(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return static_cast<int>(i);
}

std::vector<BucketResult> bucket_results(const std::vector<DocResult>& docs) {
  std::map<int, BucketResult> by;
  std::map<int, double> match_sum;
  for (const DocResult& d : docs) {
    const int b = duplication_bucket(d.copies);
    BucketResult& r = by[b];
    r.bucket = b;
    r.documents++;
    r.exact += d.exact ? 1 : 0;
    match_sum[b] += d.match_tokens;
  }
  std::vector<BucketResult> out;
  for (auto& [b, r] : by) {
    r.lo = int64_t{1} << b;
    r.hi = (int64_t{1} << (b + 1)) - 1;
    const double n = static_cast<double>(r.documents);
    r.rate = static_cast<double>(r.exact) / n;
    r.stderr_ = std::sqrt(r.rate * (1.0 - r.rate) / n);
    r.mean_match = match_sum[b] / n;
    out.push_back(r);
  }
  return out;
}

MemorizeResult memorize_probe_tokens(model::Model& model, const std::vector<std::vector<int32_t>>& doc_tokens,
                                     const std::vector<int64_t>& copies, const MemorizeOptions& o) {
  if (doc_tokens.size() != copies.size()) throw Error("memorize_probe_tokens: one count per document");
  if (o.prefix_tokens < 1) throw Error("--prefix-tokens must be >= 1").fix("pass e.g. --prefix-tokens 32");
  if (o.suffix_tokens < 1) throw Error("--suffix-tokens must be >= 1").fix("pass e.g. --suffix-tokens 32");
  if (o.offset < 0) throw Error("--offset must be >= 0").fix("pass a token position, e.g. --offset 0");
  const bool with_bos = o.bos && o.offset == 0;
  const int ctx = model.config().max_seq_len;
  if (o.prefix_tokens + o.suffix_tokens + (with_bos ? 1 : 0) > ctx)
    throw Error("prefix + suffix tokens (" + std::to_string(o.prefix_tokens + o.suffix_tokens) +
                (with_bos ? " + BOS" : "") + ") do not fit the model's context of " + std::to_string(ctx))
        .fix("lower --prefix-tokens / --suffix-tokens");
  MemorizeResult r;
  r.options = o;
  r.documents = static_cast<int64_t>(doc_tokens.size());

  // Keep the long-enough documents, per bucket; sample max_per_bucket of each.
  const size_t need = static_cast<size_t>(o.offset) + o.prefix_tokens + o.suffix_tokens;
  std::map<int, std::vector<int64_t>> candidates;
  for (size_t i = 0; i < doc_tokens.size(); ++i) {
    const int b = duplication_bucket(copies[i]);  // validates the count
    if (doc_tokens[i].size() < need) {
      r.too_short++;
      continue;
    }
    candidates[b].push_back(static_cast<int64_t>(i));
  }
  std::vector<int64_t> chosen;
  for (auto& [b, idx] : candidates) {
    if (o.max_per_bucket > 0 && static_cast<int64_t>(idx.size()) > o.max_per_bucket) {
      Rng rng(o.seed * 1000003ULL + static_cast<uint64_t>(b));
      for (size_t i = idx.size() - 1; i > 0; --i) std::swap(idx[i], idx[rng.next_u64() % (i + 1)]);
      r.not_sampled += static_cast<int64_t>(idx.size()) - o.max_per_bucket;
      idx.resize(static_cast<size_t>(o.max_per_bucket));
    }
    chosen.insert(chosen.end(), idx.begin(), idx.end());
  }
  std::sort(chosen.begin(), chosen.end());

  std::vector<std::vector<int32_t>> prompts, truths;
  for (int64_t i : chosen) {
    const auto& ids = doc_tokens[static_cast<size_t>(i)];
    std::vector<int32_t> p;
    if (with_bos) p.push_back(*o.bos);
    p.insert(p.end(), ids.begin() + o.offset, ids.begin() + o.offset + o.prefix_tokens);
    prompts.push_back(std::move(p));
    truths.emplace_back(ids.begin() + o.offset + o.prefix_tokens,
                        ids.begin() + o.offset + o.prefix_tokens + o.suffix_tokens);
  }
  infer::RolloutOptions ro;
  ro.group_size = 1;
  ro.max_new_tokens = o.suffix_tokens;
  ro.temperature = 0.0f;  // greedy; no stop tokens: the true suffix may hold none
  ro.max_batch = o.max_batch;
  ro.seed = o.seed;
  const std::vector<infer::Rollout> outs = infer::rollout(model, prompts, ro);
  for (size_t k = 0; k < chosen.size(); ++k) {
    DocResult d;
    d.document = chosen[k];
    d.copies = copies[static_cast<size_t>(chosen[k])];
    d.match_tokens = match_length(outs[k].tokens, truths[k]);
    d.exact = d.match_tokens == o.suffix_tokens;
    r.docs.push_back(d);
  }
  r.buckets = bucket_results(r.docs);
  return r;
}

MemorizeResult memorize_probe(model::Model& model, const tokenizer::Tokenizer& tok,
                              const std::vector<ProbeDocument>& docs, const MemorizeOptions& o) {
  std::vector<std::string_view> texts;
  std::vector<int64_t> copies;
  texts.reserve(docs.size());
  for (const ProbeDocument& d : docs) {
    texts.push_back(d.text);
    copies.push_back(d.copies);
  }
  const auto encoded = tok.encode_batch(texts, tokenizer::SpecialPolicy::kAsText);
  std::vector<std::vector<int32_t>> ids(encoded.size());
  for (size_t i = 0; i < encoded.size(); ++i) ids[i].assign(encoded[i].begin(), encoded[i].end());
  return memorize_probe_tokens(model, ids, copies, o);
}

std::string memorize_table(const MemorizeResult& r) {
  std::string s;
  char line[256];
  std::snprintf(line, sizeof line, "%-10s %8s %8s %10s %8s %12s\n", "copies", "n", "exact", "rate", "stderr",
                "mean_match");
  s += line;
  for (const BucketResult& b : r.buckets) {
    std::snprintf(line, sizeof line, "%-10s %8lld %8lld %10.4f %8.4f %12.2f\n", bucket_label(b.bucket).c_str(),
                  static_cast<long long>(b.documents), static_cast<long long>(b.exact), b.rate, b.stderr_,
                  b.mean_match);
    s += line;
  }
  std::snprintf(line, sizeof line,
                "(%lld documents after clustering, %lld too short for %d+%d tokens at offset %d, %lld not sampled)\n",
                static_cast<long long>(r.documents), static_cast<long long>(r.too_short), r.options.prefix_tokens,
                r.options.suffix_tokens, r.options.offset, static_cast<long long>(r.not_sampled));
  s += line;
  return s;
}

json memorize_json(const MemorizeResult& r) {
  json j;
  j["prefix_tokens"] = r.options.prefix_tokens;
  j["suffix_tokens"] = r.options.suffix_tokens;
  j["offset"] = r.options.offset;
  j["max_per_bucket"] = r.options.max_per_bucket;
  j["seed"] = r.options.seed;
  j["documents"] = r.documents;
  j["too_short"] = r.too_short;
  j["not_sampled"] = r.not_sampled;
  json buckets = json::array();
  for (const BucketResult& b : r.buckets)
    buckets.push_back({{"copies", bucket_label(b.bucket)}, {"lo", b.lo}, {"hi", b.hi}, {"n", b.documents},
                       {"exact", b.exact}, {"rate", b.rate}, {"stderr", b.stderr_}, {"mean_match", b.mean_match}});
  j["buckets"] = buckets;
  json docs = json::array();
  for (const DocResult& d : r.docs)
    docs.push_back({{"document", d.document}, {"copies", d.copies}, {"exact", d.exact}, {"match", d.match_tokens}});
  j["docs"] = docs;
  return j;
}

std::string memorize_svg(const MemorizeResult& r, const std::string& title) {
  const int W = 560, H = 340, L = 60, R = 20, T = 40, B = 60;
  const int pw = W - L - R, ph = H - T - B;
  std::string s;
  char buf[1024];
  std::snprintf(buf, sizeof buf,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                W, H, W, H);
  s += buf;
  std::string esc;
  for (char c : title) {
    if (c == '<') esc += "&lt;";
    else if (c == '>') esc += "&gt;";
    else if (c == '&') esc += "&amp;";
    else esc += c;
  }
  std::snprintf(buf, sizeof buf, "<text x=\"%d\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">%s</text>\n", W / 2,
                esc.c_str());
  s += buf;
  auto y_of = [&](double v) { return T + ph * (1.0 - v); };
  for (int k = 0; k <= 4; ++k) {
    const double v = k / 4.0;
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                  "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.2f</text>\n",
                  L, y_of(v), L + pw, y_of(v), L - 6, y_of(v) + 4, v);
    s += buf;
  }
  const size_t n = r.buckets.size();
  const double slot = n ? static_cast<double>(pw) / static_cast<double>(n) : pw;
  for (size_t i = 0; i < n; ++i) {
    const BucketResult& b = r.buckets[i];
    const double x = L + slot * static_cast<double>(i) + slot * 0.2, w = slot * 0.6;
    std::snprintf(buf, sizeof buf, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#4a7ab5\"/>\n", x,
                  y_of(b.rate), w, ph * b.rate);
    s += buf;
    const double lo = std::max(0.0, b.rate - b.stderr_), hi = std::min(1.0, b.rate + b.stderr_);
    const double cx = x + w / 2;
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>"
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>"
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n",
                  cx, y_of(lo), cx, y_of(hi), cx - 5, y_of(lo), cx + 5, y_of(lo), cx - 5, y_of(hi), cx + 5, y_of(hi));
    s += buf;
    std::snprintf(buf, sizeof buf,
                  "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>"
                  "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" fill=\"#666\">n=%lld</text>\n",
                  cx, T + ph + 16, bucket_label(b.bucket).c_str(), cx, T + ph + 30,
                  static_cast<long long>(b.documents));
    s += buf;
  }
  std::snprintf(buf, sizeof buf,
                "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>"
                "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n"
                "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">copies in the training data (document or near-duplicate)</text>\n"
                "<text x=\"16\" y=\"%d\" text-anchor=\"middle\" transform=\"rotate(-90 16 %d)\">extraction rate (%d-token suffix exact)</text>\n"
                "</svg>\n",
                L, T + ph, L + pw, T + ph, L, T, L, T + ph, L + pw / 2, H - 10, T + ph / 2, T + ph / 2,
                r.options.suffix_tokens);
  s += buf;
  return s;
}

}  // namespace aji::eval
