// The memorization probe (`aji eval memorize`): does the model reproduce its training
// documents, and does that grow with how often a document was in the training data?
//
// For each probed document: take prefix_tokens tokens starting at token `offset` of the
// document (encoded as `aji data tokenize` encodes it: special-token text as plain text,
// the model's BOS in front when offset == 0, as the document was trained on), decode
// suffix_tokens tokens greedily, and compare with the document's true next suffix_tokens
// tokens: "exact" when all of them match, and the match length (tokens equal before the
// first difference). Greedy decodes of all documents run batched (infer::rollout at
// temperature 0).
//
// Duplication counts come from the same MinHash near-duplicate clustering `aji data dedup`
// runs (data::dedup_run: word 5-gram MinHash LSH + exact normalised-text hashes, union-find
// clusters): each cluster is probed once, through its first document, and its count is the
// cluster size (how many times the document or a near-duplicate of it occurs).
//
// Documents are bucketed by count into powers of two: [1], [2,3], [4,7], [8,15], ...
// The extraction rate of a bucket is exact / n with the binomial standard error
// sqrt(p (1 - p) / n).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aji/data/dedup.h"
#include "aji/model/model.h"
#include "aji/tokenizer/tokenizer.h"

namespace aji::eval {

struct ProbeDocument {
  std::string text;
  int64_t copies = 1;  // times the document or a near-duplicate occurs in the training data
};

// Clusters the JSONL inputs (field "text") with data::dedup_run in work_dir (which must
// not hold an earlier run: dedup steps resume from what they find) and returns one
// ProbeDocument per cluster, in input order: the cluster's first document and its size.
std::vector<ProbeDocument> count_duplicates(const std::vector<std::filesystem::path>& inputs,
                                            const std::filesystem::path& work_dir,
                                            const data::MinhashConfig& config = {});

struct MemorizeOptions {
  int prefix_tokens = 32;
  int suffix_tokens = 32;
  int offset = 0;              // token position of the prefix in each document
  int64_t max_per_bucket = 0;  // probe at most this many documents per bucket (0 = all), chosen by seed
  uint64_t seed = 0;
  int max_batch = 64;          // greedy decodes run together
  std::optional<int32_t> bos;  // prepended to the prefix when offset == 0
};

// Bucket b holds counts [2^b, 2^(b+1) - 1]; count must be >= 1.
int duplication_bucket(int64_t copies);
std::string bucket_label(int bucket);  // "1", "2-3", "4-7", ...

// Tokens equal at the start of both sequences (before the first difference).
int match_length(const std::vector<int32_t>& a, const std::vector<int32_t>& b);

struct DocResult {
  int64_t document = 0;  // index into the probed document list
  int64_t copies = 1;
  bool exact = false;
  int match_tokens = 0;
};

struct BucketResult {
  int bucket = 0;
  int64_t lo = 1, hi = 1;  // counts in this bucket
  int64_t documents = 0;   // probed
  int64_t exact = 0;
  double rate = 0.0, stderr_ = 0.0;  // extraction rate and its binomial standard error
  double mean_match = 0.0;           // mean match length (tokens)
};

struct MemorizeResult {
  MemorizeOptions options;
  int64_t documents = 0;  // documents (clusters) given
  int64_t too_short = 0;  // fewer than offset + prefix + suffix tokens: not probed
  int64_t not_sampled = 0;  // left out by max_per_bucket
  std::vector<DocResult> docs;
  std::vector<BucketResult> buckets;  // non-empty buckets, ascending
};

// Rates per bucket from per-document results (pure; unit-tested).
std::vector<BucketResult> bucket_results(const std::vector<DocResult>& docs);

// The probe on already-encoded documents (what memorize_probe runs after encoding).
MemorizeResult memorize_probe_tokens(model::Model& model, const std::vector<std::vector<int32_t>>& doc_tokens,
                                     const std::vector<int64_t>& copies, const MemorizeOptions& options);
MemorizeResult memorize_probe(model::Model& model, const tokenizer::Tokenizer& tok,
                              const std::vector<ProbeDocument>& docs, const MemorizeOptions& options);

std::string memorize_table(const MemorizeResult& r);  // plain-text table, one row per bucket
nlohmann::json memorize_json(const MemorizeResult& r);
// Bar chart of the extraction rate per bucket with ±1 stderr whiskers.
std::string memorize_svg(const MemorizeResult& r, const std::string& title);

}  // namespace aji::eval
