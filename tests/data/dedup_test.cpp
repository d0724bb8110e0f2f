// Deduplication: bit-exact MinHash signatures against datatrove (fixture from
// tests/reference/minhash_vs_datatrove.py), the LSH detection rate against the banding
// curve 1-(1-J^8)^14 on synthetic pairs of known Jaccard similarity, and the four
// file-based steps end to end (exact duplicates always removed, shards, resume, bad input).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/base/rng.h"
#include "aji/data/dedup.h"
#include "test_util.h"

using namespace aji::data;
using nlohmann::json;

namespace {
std::string hex(const uint8_t* d, size_t n) {
  static const char* k = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s.push_back(k[d[i] >> 4]);
    s.push_back(k[d[i] & 15]);
  }
  return s;
}
std::string sha1_hex(std::string_view s) {
  uint8_t d[20];
  sha1_digest(s, d);
  return hex(d, 20);
}
}  // namespace

TEST(DedupHashes, KnownVectors) {
  EXPECT_EQ(sha1_hex("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
  EXPECT_EQ(sha1_hex(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  EXPECT_EQ(sha1_hex(std::string(1000, 'a')), "291e9a6c66994949b57ba5e650361e98fc36b1ba");
  EXPECT_EQ(sha1_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
  EXPECT_EQ(xxh64(""), 0xEF46DB3751D8E999ULL);
  EXPECT_EQ(xxh64("a"), 0xD24EC4F1A98C6E5BULL);
  EXPECT_EQ(xxh64("abc"), 0x44BC2CF5AD770999ULL);
  EXPECT_NEAR(lsh_candidate_probability(0.8, 14, 8), 0.924, 0.001);
}

TEST(DedupMinhash, SignaturesBitExactWithDatatrove) {
  MinhashConfig cfg;  // FineWeb: sha1, 5-grams, 14 x 8, seed 1
  MinhashParams params = minhash_params(cfg);
  std::map<std::string, std::string> texts;
  {
    aji::LineReader r(aji::test::source_path("tests/fixtures/data_filters/docs.jsonl"));
    std::string_view line;
    while (r.next(line)) {
      json d = json::parse(line);
      texts[d["id"]] = d["text"];
    }
  }
  aji::LineReader r(aji::test::source_path("tests/fixtures/data_filters/minhash_sigs.jsonl"));
  std::string_view line;
  int n = 0, same_sig = 0, same_simplified = 0, same_count = 0;
  while (r.next(line)) {
    json ref = json::parse(line);
    const std::string& text = texts.at(ref["id"]);
    ++n;
    if (sha1_hex(simplify_text(text)) == ref["simplified"]) ++same_simplified;
    else ADD_FAILURE() << "simplify_text differs for " << ref["id"];
    std::vector<uint64_t> sh = shingle_hashes(text, cfg);
    if (int(sh.size()) == ref["n_shingles"].get<int>()) ++same_count;
    std::vector<uint64_t> sig = minhash_signature(sh, params);
    if (!ref.contains("sig_sha1")) {
      if (sig.empty()) ++same_sig;
      continue;
    }
    std::string bytes(reinterpret_cast<const char*>(sig.data()), sig.size() * 8);
    if (sha1_hex(bytes) == ref["sig_sha1"]) ++same_sig;
    else ADD_FAILURE() << ref["id"] << ": signature differs (shingles " << sh.size() << " vs " << ref["n_shingles"] << ")";
  }
  std::printf("MinHash vs datatrove: %d docs, simplify_text %d, shingle count %d, signature %d identical\n", n,
              same_simplified, same_count, same_sig);
  EXPECT_GT(n, 300);
  // Word tokenisation of the normalised text is spaCy's there; allow 1% of documents to differ.
  EXPECT_GE(same_sig, n * 99 / 100);
}

TEST(DedupMinhash, DetectionRateFollowsBandingCurve) {
  // Pairs of shingle sets with an exact Jaccard similarity J = |A∩B| / |A∪B|.
  MinhashConfig cfg;
  MinhashParams params = minhash_params(cfg);
  aji::Rng rng(12345);
  const int trials = 300;
  for (double J : {0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9}) {
    int detected = 0;
    for (int t = 0; t < trials; ++t) {
      const int uni = 400, common = int(std::lround(J * uni)), only = (uni - common) / 2;
      std::vector<uint64_t> a, b;
      for (int i = 0; i < common; ++i) {
        uint64_t x = rng.next_u64();
        a.push_back(x);
        b.push_back(x);
      }
      for (int i = 0; i < only; ++i) a.push_back(rng.next_u64());
      for (int i = 0; i < uni - common - only; ++i) b.push_back(rng.next_u64());
      auto sa = minhash_signature(a, params), sb = minhash_signature(b, params);
      bool any_band = false;
      for (int band = 0; band < cfg.num_buckets && !any_band; ++band)
        any_band = std::equal(sa.begin() + band * 8, sa.begin() + band * 8 + 8, sb.begin() + band * 8);
      detected += any_band;
    }
    const int uni = 400;
    double j_exact = double(std::lround(J * uni)) / uni;
    double p = lsh_candidate_probability(j_exact, 14, 8);
    double rate = double(detected) / trials;
    double sigma = std::sqrt(p * (1 - p) / trials);
    std::printf("J=%.2f  detected %.3f  banding curve %.3f\n", J, rate, p);
    EXPECT_NEAR(rate, p, 4 * sigma + 0.01) << "J=" << J;
  }
}

namespace {

// Documents of random 7-letter words (letters only: MinHash maps every number to "0"):
// all 5-grams are distinct, so text-level edits give a known shingle Jaccard.
std::string random_doc(aji::Rng& rng, int words) {
  std::string s;
  for (int i = 0; i < words; ++i) {
    if (i) s += (i % 17 == 0) ? ".\n" : " ";
    for (int k = 0; k < 7; ++k) s.push_back(char('a' + rng.below(26)));
  }
  return s;
}

void write_jsonl(const std::filesystem::path& p, const std::vector<std::string>& texts) {
  std::ofstream f(p);
  for (size_t i = 0; i < texts.size(); ++i) f << json{{"id", p.filename().string() + std::to_string(i)}, {"text", texts[i]}}.dump() << "\n";
}

std::vector<json> read_out(const std::filesystem::path& dir) {
  std::vector<json> docs;
  for (const auto& f : aji::expand_inputs({dir.string()})) {
    aji::LineReader r(f);
    std::string_view line;
    while (r.next(line)) docs.push_back(json::parse(line));
  }
  return docs;
}

}  // namespace

TEST(DedupPipeline, ExactAndNearDuplicatesRemovedAcrossShards) {
  aji::test::TempDir tmp;
  aji::Rng rng(7);
  std::vector<std::string> a, b;
  std::vector<std::string> uniques;
  for (int i = 0; i < 40; ++i) uniques.push_back(random_doc(rng, 200));
  // File a: 40 unique docs. File b: exact copies of 10 of them (case/punctuation/
  // whitespace changed — same normalised text), 10 near copies (a few words changed), 10 new.
  a = uniques;
  for (int i = 0; i < 10; ++i) {
    std::string t = uniques[size_t(i)];
    for (char& c : t)
      if (c >= 'a' && c <= 'z') c = char(c - 32);
    b.push_back("  \"" + t + "\" !!");
  }
  for (int i = 10; i < 20; ++i) {
    std::string t = uniques[size_t(i)];
    size_t mid = t.find(' ', t.size() / 2) + 1;
    t.replace(mid, 7, "changed");  // one word of 200 edited: 5 of 196 shingles change, J ≈ 0.95
    b.push_back(t);
  }
  for (int i = 0; i < 10; ++i) b.push_back(random_doc(rng, 200));
  b.push_back("too short");   // no signature, unique
  b.push_back("too short");   // exact duplicate of it: exact dedup still removes it
  write_jsonl(tmp.path() / "a.jsonl", a);
  write_jsonl(tmp.path() / "b.jsonl", b);
  std::vector<std::filesystem::path> inputs = {tmp.path() / "a.jsonl", tmp.path() / "b.jsonl"};

  // Two shards (one file each), the four steps as separate calls, as on a cluster.
  MinhashConfig cfg;
  auto w = tmp.path() / "work";
  for (int s = 0; s < 2; ++s) dedup_signatures(inputs, {s, 2}, w / "sigs", cfg);
  for (int band = -1; band < cfg.num_buckets; ++band) dedup_buckets(w / "sigs", w / "buckets", cfg, band);
  DedupStats cl = dedup_clusters(w / "buckets", w / "clusters");
  DedupStats f0 = dedup_filter(inputs, {0, 2}, w / "clusters", w / "out");
  DedupStats f1 = dedup_filter(inputs, {1, 2}, w / "clusters", w / "out");
  EXPECT_EQ(f0.removed, 0);                 // the originals (first in input order) are kept
  EXPECT_EQ(f1.removed, 10 + 10 + 1);       // exact copies, near copies, the short duplicate
  EXPECT_EQ(cl.removed, 21);
  std::vector<json> out = read_out(w / "out");
  EXPECT_EQ(out.size(), a.size() + b.size() - 21);
  int size2 = 0;
  for (const json& d : out)
    if (d["metadata"]["minhash_cluster_size"] == 2) ++size2;
  EXPECT_EQ(size2, 21);

  // The one-shot run gives the same documents.
  DedupStats run = dedup_run(inputs, tmp.path() / "one", cfg);
  EXPECT_EQ(run.removed, 21);
  EXPECT_EQ(read_out(tmp.path() / "one" / "out").size(), out.size());
  // Rerunning resumes: nothing is recomputed, outputs stay.
  DedupStats again = dedup_run(inputs, tmp.path() / "one", cfg);
  EXPECT_EQ(again.kept, 0);
  EXPECT_EQ(read_out(tmp.path() / "one" / "out").size(), out.size());
}

TEST(DedupPipeline, BadLinesAreCountedAndSkippedConsistently) {
  aji::test::TempDir tmp;
  aji::Rng rng(3);
  std::string d1 = random_doc(rng, 50);
  {
    std::ofstream f(tmp.path() / "in.jsonl");
    f << json{{"text", d1}}.dump() << "\n";
    f << "{not json\n";
    f << json{{"no_text", 1}}.dump() << "\n";
    f << "\n";
    f << json{{"text", d1}, {"metadata", {{"url", "x"}}}}.dump() << "\n";
  }
  DedupStats st = dedup_run({tmp.path() / "in.jsonl"}, tmp.path() / "w", {});
  EXPECT_EQ(st.bad_lines, 2);
  EXPECT_EQ(st.documents, 2);
  EXPECT_EQ(st.removed, 1);
  auto out = read_out(tmp.path() / "w" / "out");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]["text"], d1);
  EXPECT_FALSE(out[0]["metadata"].contains("url"));  // the first copy is the one kept
}

TEST(DedupPipeline, ErrorsNameTheProblem) {
  EXPECT_THROW(parse_shard("3"), aji::Error);
  EXPECT_THROW(parse_shard("4/4"), aji::Error);
  EXPECT_THROW(parse_shard("-1/4"), aji::Error);
  EXPECT_EQ(parse_shard("3/16").index, 3);
  aji::test::TempDir tmp;
  EXPECT_THROW(dedup_filter({}, {0, 1}, tmp.path() / "nope", tmp.path() / "out"), aji::Error);
  // A truncated signature file is reported with its path.
  MinhashConfig cfg;
  std::filesystem::create_directories(tmp.path() / "sigs" / "bucket_000");
  { std::ofstream(tmp.path() / "sigs" / "bucket_000" / "00000.minhash.sig") << "short"; }
  try {
    dedup_buckets(tmp.path() / "sigs", tmp.path() / "b", cfg, 0);
    FAIL();
  } catch (const aji::Error& e) {
    EXPECT_NE(e.file().find("00000.minhash.sig"), std::string::npos);
  }
}
