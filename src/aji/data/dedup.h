// Deduplication (spec §4.9): exact (hash of normalised text) and MinHash near-duplicates
// exactly as FineWeb configures datatrove: word 5-grams of simplify_text(text), 112
// hashes = 14 bands × 8, permutations (a·x + b) mod (2^61−1) with the uint64 wrap numpy
// has, LSH on identical bands, union-find clusters, one document kept per cluster (the
// cluster root = the first document of the cluster in input order), its cluster size
// kept as metadata["minhash_cluster_size"].
//
// Multi-machine design (every step reads and writes files only; all writes atomic):
//   signatures  (per input shard)  sigs/bucket_BBB/SSSSS.minhash.sig  — records
//                                  (8 × u64 band hashes, u32 doc index), sorted
//                                  sigs/exact/SSSSS.exact — (u64,u64 text hash, u32 doc)
//                                  sorted; sigs/SSSSS.done — doc count (resume marker)
//   buckets     (per band)         buckets/BBB.dups — (u32 shard, u32 doc, u32 shard,
//                                  u32 doc) pairs found by a k-way merge of the sorted
//                                  shard files (memory: one record per shard)
//                                  band 'exact' → buckets/exact.dups
//   clusters    (one job)          clusters/SSSSS.remove — sorted u32 doc indices to drop
//                                  clusters/SSSSS.sizes — (u32 doc, u32 size) of kept
//                                  roots of clusters larger than 1
//   filter      (per input shard)  out/SSSSS.jsonl.zst — surviving documents, in order
// Input shard I of N = input files k (after expand_inputs' sorting) with k % N == I.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace aji::data {

enum class ShingleHash { kSha1, kXxh64 };

struct MinhashConfig {
  int n_grams = 5;
  int num_buckets = 14;
  int hashes_per_bucket = 8;
  uint64_t seed = 1;
  ShingleHash hash = ShingleHash::kSha1;  // FineWeb used sha1; FineWeb-2 xxhash64
  bool exact_dedup = true;  // also drop documents whose normalised text is identical
  int num_hashes() const { return num_buckets * hashes_per_bucket; }
};
void to_json(nlohmann::json& j, const MinhashConfig& c);
void from_json(const nlohmann::json& j, MinhashConfig& c);

// datatrove simplify_text (HEAD): lowercase, numbers → "0", punctuation → space,
// collapse whitespace, NFD dropping combining marks (Mn), strip.
std::string simplify_text(std::string_view text);

// 64-bit hashes of one shingle, as datatrove: sha1(utf8)[:8] little-endian / xxh64.
uint64_t sha1_hash64(std::string_view data);
uint64_t xxh64(std::string_view data, uint64_t seed = 0);
void sha1_digest(std::string_view data, uint8_t out[20]);

// The permutation parameters a_i, b_i. For seed 1 these are numpy's
// RandomState(1).randint values datatrove uses (bit-exact signatures); other seeds draw
// from aji::Rng.
struct MinhashParams {
  std::vector<uint64_t> a, b;  // (num_hashes)
};
MinhashParams minhash_params(const MinhashConfig& config);

// Shingle hashes of a text: word n-grams of simplify_text(text) joined by " ". Empty when
// the text has fewer than n words (no signature: never a near-duplicate).
std::vector<uint64_t> shingle_hashes(std::string_view text, const MinhashConfig& config);
// Signature (num_hashes) = min over shingles of (x·a + b mod 2^64) mod (2^61−1).
// Empty for an empty shingle list.
std::vector<uint64_t> minhash_signature(const std::vector<uint64_t>& shingles, const MinhashParams& params);

// Hash of the normalised text for exact dedup (128-bit: two independent 64-bit hashes of
// simplify_text(text); empty normalised text gets no hash).
struct ExactHash {
  uint64_t hi = 0, lo = 0;
  bool operator==(const ExactHash&) const = default;
  auto operator<=>(const ExactHash&) const = default;
};
bool exact_text_hash(std::string_view text, ExactHash* out);

// Probability that a pair with Jaccard similarity s shares at least one band.
double lsh_candidate_probability(double s, int num_buckets, int hashes_per_bucket);

// ---- the four steps ---------------------------------------------------------------

struct ShardSpec {
  int index = 0;  // I
  int count = 1;  // N
};
ShardSpec parse_shard(std::string_view text);  // "I/N"; throws aji::Error with a fix

struct DedupStats {
  int64_t documents = 0;       // documents read
  int64_t bad_lines = 0;       // JSONL lines that were not JSON objects with "text" (skipped)
  int64_t no_signature = 0;    // fewer than n_grams words
  int64_t duplicate_pairs = 0;
  int64_t clusters = 0;        // clusters with more than one document
  int64_t removed = 0;
  int64_t kept = 0;
  int64_t bytes_in = 0, bytes_out = 0;
  nlohmann::json to_json() const;
};

// Step 1: signatures of input shard `shard` (its files from `inputs`). Skips a shard
// whose .done marker exists (resume).
DedupStats dedup_signatures(const std::vector<std::filesystem::path>& inputs, ShardSpec shard,
                            const std::filesystem::path& sigs_dir, const MinhashConfig& config);
// Step 2: duplicate pairs of one band (0..num_buckets-1, or -1 = exact hashes), or of
// every band when band == -2.
DedupStats dedup_buckets(const std::filesystem::path& sigs_dir, const std::filesystem::path& buckets_dir,
                         const MinhashConfig& config, int band = -2);
// Step 3: union-find over all pairs → per-shard remove lists and cluster sizes.
DedupStats dedup_clusters(const std::filesystem::path& buckets_dir, const std::filesystem::path& clusters_dir);
// Step 4: copies shard `shard`'s documents minus removed ones to out_dir/SSSSS.jsonl.zst,
// adding metadata.minhash_cluster_size to kept cluster roots.
DedupStats dedup_filter(const std::vector<std::filesystem::path>& inputs, ShardSpec shard,
                        const std::filesystem::path& clusters_dir, const std::filesystem::path& out_dir);
// All four on one machine: work_dir/{sigs,buckets,clusters,out}.
DedupStats dedup_run(const std::vector<std::filesystem::path>& inputs, const std::filesystem::path& work_dir,
                     const MinhashConfig& config);

}  // namespace aji::data
