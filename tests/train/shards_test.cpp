// Token shards, the data manifest and the BOS-aligned loader.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <algorithm>
#include <set>

#include "aji/base/error.h"
#include "aji/base/io.h"
#include "aji/train/loader.h"
#include "aji/train/shards.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace aji::train;
using aji::test::TempDir;

namespace {
void write_bytes(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
}

// Documents of the given lengths (each: BOS then length ids), as one token stream.
std::vector<uint32_t> make_stream(const std::vector<int>& doc_lengths, uint32_t bos, uint32_t& next_id) {
  std::vector<uint32_t> out;
  for (int len : doc_lengths) {
    out.push_back(bos);
    for (int i = 0; i < len; ++i) out.push_back(next_id++ % 1000 + 1);
  }
  return out;
}

// A data dir with one train shard per entry of `train` and one val shard.
void make_data_dir(const fs::path& dir, const std::vector<std::vector<uint32_t>>& train,
                   const std::vector<uint32_t>& val, uint32_t vocab = 1024, uint32_t bos = 0) {
  DataManifest m;
  m.vocab_size = vocab;
  m.bos_id = bos;
  for (size_t i = 0; i < train.size(); ++i) {
    std::string name = "train-" + std::to_string(i) + ".ajitok";
    write_shard(dir / name, train[i].data(), train[i].size(), vocab, bos);
    m.train.push_back({name, train[i].size(), 0, 0});
  }
  if (!val.empty()) {
    write_shard(dir / "val-0.ajitok", val.data(), val.size(), vocab, bos);
    m.val.push_back({"val-0.ajitok", val.size(), 0, 0});
  }
  m.save(dir);
}
}  // namespace

TEST(Shards, RoundTripBothWidths) {
  TempDir dir;
  std::vector<uint32_t> small = {0, 5, 65535, 7};
  write_shard(dir.path() / "a.ajitok", small.data(), small.size(), 65536, 0);
  EXPECT_EQ(fs::file_size(dir.path() / "a.ajitok"), kShardHeaderBytes + 4 * 2);
  Shard a = Shard::open(dir.path() / "a.ajitok", /*verify=*/true);
  EXPECT_EQ(a.header().token_width, 2u);
  ASSERT_EQ(a.size(), 4u);
  for (size_t i = 0; i < small.size(); ++i) EXPECT_EQ(a[i], small[i]);

  std::vector<uint32_t> big = {100000, 3, 199999};
  write_shard(dir.path() / "b.ajitok", big.data(), big.size(), 200000, 100000);
  Shard b = Shard::open(dir.path() / "b.ajitok", true);
  EXPECT_EQ(b.header().token_width, 4u);
  EXPECT_EQ(b.header().bos_id, 100000u);
  std::vector<uint32_t> got(3);
  b.read(0, 3, got.data());
  EXPECT_EQ(got, big);
  EXPECT_THROW(write_shard(dir.path() / "c.ajitok", big.data(), big.size(), 1000, 0), aji::Error);
}

// Found by fuzz/fuzz_shard: an empty width-4 shard read into an empty vector passed null
// pointers to memcpy (undefined behaviour, caught by UBSan in the sanitizer build).
TEST(Shards, EmptyShardReadsNothing) {
  TempDir dir;
  for (uint32_t vocab : {1000u, 200000u}) {  // width 2 and width 4
    const fs::path p = dir.path() / ("empty-" + std::to_string(vocab) + ".ajitok");
    write_shard(p, nullptr, 0, vocab, 0);
    Shard s = Shard::open(p, /*verify=*/true);
    EXPECT_EQ(s.size(), 0u);
    std::vector<uint32_t> out;
    s.read(0, 0, out.data());
    EXPECT_THROW(s.read(0, 1, out.data()), aji::Error);
  }
}

TEST(Shards, TruncatedCorruptAndForeignFilesAreClearErrors) {
  TempDir dir;
  std::vector<uint32_t> t(1000);
  for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<uint32_t>(i % 500);
  write_shard(dir.path() / "s.ajitok", t.data(), t.size(), 512, 0);
  std::string bytes = aji::read_file(dir.path() / "s.ajitok");

  write_bytes(dir.path() / "trunc.ajitok", bytes.substr(0, bytes.size() - 2));
  try {
    Shard::open(dir.path() / "trunc.ajitok");
    FAIL();
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos);
    EXPECT_NE(e.file().find("trunc.ajitok"), std::string::npos);
  }
  std::string corrupt = bytes;
  corrupt[kShardHeaderBytes + 10] ^= 1;
  write_bytes(dir.path() / "corrupt.ajitok", corrupt);
  EXPECT_NO_THROW(Shard::open(dir.path() / "corrupt.ajitok", false));
  EXPECT_THROW(Shard::open(dir.path() / "corrupt.ajitok", true), aji::Error);
  write_bytes(dir.path() / "text.ajitok", "hello world, this is not a shard at all.......................................");
  EXPECT_THROW(Shard::open(dir.path() / "text.ajitok"), aji::Error);
  write_bytes(dir.path() / "tiny.ajitok", "AJI");
  EXPECT_THROW(Shard::open(dir.path() / "tiny.ajitok"), aji::Error);
  EXPECT_THROW(Shard::open(dir.path() / "missing.ajitok"), aji::Error);
}

TEST(Shards, ValSplitIsDeterministicAndNearTheFraction) {
  int val = 0;
  for (uint64_t i = 0; i < 20000; ++i) {
    bool v = document_goes_to_val(i, 7, 0.1);
    EXPECT_EQ(v, document_goes_to_val(i, 7, 0.1));
    val += v;
  }
  EXPECT_NEAR(val / 20000.0, 0.1, 0.01);
  EXPECT_FALSE(document_goes_to_val(3, 7, 0.0));
}

TEST(Loader, DirectoryWithoutShardsIsAClearError) {
  TempDir dir;
  try {
    DataLoader l(dir.path(), "train", 1, 8, 0, true);
    FAIL();
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no token shards"), std::string::npos) << e.describe();
    EXPECT_NE(e.how_to_fix().find("aji data tokenize"), std::string::npos);
  }
  EXPECT_THROW(DataLoader(dir.path() / "nope", "train", 1, 8, 0, true), aji::Error);
  write_bytes(dir.path() / "manifest.json", "{not json");
  EXPECT_THROW(DataLoader(dir.path(), "train", 1, 8, 0, true), aji::Error);
}

// Counts in a manifest that are negative, fractional or past 2^64 are errors naming the
// manifest (fuzz_checkpoint_state: a float went through get<uint64_t>(), a negative "bytes"
// was reported without the file).
TEST(Shards, ManifestCountsMustBeWholeNumbersAndErrorsNameTheFile) {
  TempDir dir;
  for (const char* bad : {R"("bytes": -9)", R"("tokens": 2.5)", R"("documents": 1e30)"}) {
    const std::string m = std::string(R"({"format": "aji-token-shards", "vocab_size": 4096, "bos_id": 0, )") +
                          R"("train": [{"file": "train-00000.ajitok", "tokens": 8, )" + bad + "}]}";
    write_bytes(dir.path() / "manifest.json", m);
    try {
      DataManifest::load(dir.path());
      FAIL() << "accepted " << bad;
    } catch (const aji::Error& e) {
      EXPECT_NE(e.file().find("manifest.json"), std::string::npos) << bad << ": " << e.describe();
      EXPECT_NE(std::string(e.what()).find("whole number"), std::string::npos) << e.describe();
    }
  }
}

TEST(Loader, WindowsAreBosAlignedAndTargetsAreShiftedInputs) {
  TempDir dir;
  uint32_t id = 0;
  // Short docs (start every row at a BOS) and one long doc (continued mid-document).
  auto s0 = make_stream({5, 3, 9, 2, 40, 4, 4, 6, 11}, 0, id);
  make_data_dir(dir.path(), {s0}, {});
  const uint64_t T = 8;
  // The rule of loader.h, written out independently: a BOS within T/4 of the cursor
  // wins, else the cursor; the cursor then moves to start+T.
  std::vector<uint64_t> expect;
  for (uint64_t pos = 0;;) {
    uint64_t start = pos;
    for (uint64_t i = pos; i < s0.size() && i - pos <= T / 4; ++i)
      if (s0[i] == 0) {
        start = i;
        break;
      }
    if (start + T + 1 > s0.size()) break;
    expect.push_back(start);
    pos = start + T;
  }
  ASSERT_GT(expect.size(), 8u);
  auto find_start = [&](const std::vector<int32_t>& in) {
    for (uint64_t st = 0; st + T <= s0.size(); ++st)
      if (std::equal(in.begin(), in.end(), s0.begin() + static_cast<std::ptrdiff_t>(st),
                     [](int32_t a, uint32_t b) { return static_cast<uint32_t>(a) == b; }))
        return st;
    return ~uint64_t(0);
  };
  std::vector<int32_t> in(T), tgt(T);
  DataLoader seq(dir.path(), "train", 1, T, 42, /*shuffle=*/false);
  EXPECT_EQ(seq.windows_per_epoch(), expect.size());
  for (size_t w = 0; w < expect.size(); ++w) {
    seq.next_batch(in.data(), tgt.data());
    EXPECT_EQ(find_start(in), expect[w]) << "window " << w;
    for (uint64_t t = 0; t < T; ++t) EXPECT_EQ(tgt[t], static_cast<int32_t>(s0[expect[w] + t + 1]));
  }
  seq.next_batch(in.data(), tgt.data());  // wraps to the next epoch
  EXPECT_EQ(find_start(in), expect[0]);
  // Shuffled: the same windows, each once per epoch, in another order.
  DataLoader shuf(dir.path(), "train", 1, T, 42, /*shuffle=*/true);
  std::vector<uint64_t> got;
  for (size_t w = 0; w < expect.size(); ++w) {
    shuf.next_batch(in.data(), tgt.data());
    got.push_back(find_start(in));
  }
  EXPECT_NE(got, expect);
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, expect);
}

TEST(Loader, CursorRestoreReplaysTheSameBatchesAcrossEpochs) {
  TempDir dir;
  uint32_t id = 0;
  std::vector<std::vector<uint32_t>> shards;
  for (int s = 0; s < 4; ++s) shards.push_back(make_stream({7, 12, 3, 30, 5, 6, 20}, 0, id));
  make_data_dir(dir.path(), shards, make_stream({10, 10, 10}, 0, id));
  const int B = 3, T = 10;
  DataLoader a(dir.path(), "train", B, T, 5, true);
  std::vector<int32_t> in(B * T), tgt(B * T), in2(B * T), tgt2(B * T);
  for (int i = 0; i < 7; ++i) a.next_batch(in.data(), tgt.data());
  const LoaderCursor c = LoaderCursor::from_json(nlohmann::json::parse(a.cursor().to_json().dump()));
  std::vector<std::vector<int32_t>> expected;
  for (int i = 0; i < 20; ++i) {  // crosses at least one epoch boundary
    a.next_batch(in.data(), tgt.data());
    expected.push_back(in);
  }
  EXPECT_GE(a.epoch(), 1u);
  DataLoader b(dir.path(), "train", B, T, 5, true);
  b.set_cursor(c);
  for (int i = 0; i < 20; ++i) {
    b.next_batch(in2.data(), tgt2.data());
    EXPECT_EQ(in2, expected[i]) << "batch " << i;
  }
  // Same seed from scratch: same stream; another seed: another shard order.
  DataLoader c1(dir.path(), "train", B, T, 5, true), c2(dir.path(), "train", B, T, 6, true);
  bool differs = false;
  a.reset();
  for (int i = 0; i < 12; ++i) {
    a.next_batch(in.data(), tgt.data());
    c1.next_batch(in2.data(), tgt2.data());
    EXPECT_EQ(in, in2);
    c2.next_batch(in2.data(), tgt2.data());
    differs |= in != in2;
  }
  EXPECT_TRUE(differs);
  DataLoader val(dir.path(), "val", 1, T, 0, false);
  val.next_batch(in.data(), tgt.data());
  EXPECT_EQ(in[0], 0);  // val starts at its first document's BOS
}

// fuzz_checkpoint_state: an "epoch" of 8.9e39 reached get<uint64_t>(), a float-to-integer
// conversion out of range (undefined behaviour); a negative count wrapped around. Both are
// now aji::Errors naming the field; the fuzz input is fuzz/corpus/checkpoint_state/.
TEST(Loader, CursorCountsOutOfRangeAreClearErrors) {
  const std::string input =
      aji::read_file(aji::test::source_path("fuzz/corpus/checkpoint_state/ubsan-loader-epoch-float-overflow"));
  ASSERT_FALSE(input.empty());
  const nlohmann::json fuzzed = nlohmann::json::parse(input.substr(1));  // byte 0 picks the harness's format
  LoaderCursor good;
  good.epoch = 3;
  good.shard_index = 1;
  good.position = 17;
  const nlohmann::json ok = good.to_json();
  std::vector<std::pair<std::string, nlohmann::json>> bad = {{"epoch", fuzzed}};
  for (const char* key : {"epoch", "shard_index", "position"})
    for (const nlohmann::json& v : {nlohmann::json(-5), nlohmann::json(2.5), nlohmann::json(1e300), nlohmann::json("7")}) {
      nlohmann::json j = ok;
      j[key] = v;
      bad.emplace_back(key, j);
    }
  for (const auto& [key, j] : bad) {
    SCOPED_TRACE(j.dump());
    try {
      (void)LoaderCursor::from_json(j);
      ADD_FAILURE() << "expected an error";
    } catch (const aji::Error& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  }
  const LoaderCursor back = LoaderCursor::from_json(ok);  // in-range counts still load
  EXPECT_EQ(back.epoch, 3u);
  EXPECT_EQ(back.shard_index, 1u);
  EXPECT_EQ(back.position, 17u);
}

TEST(Loader, SequenceLongerThanEveryShardIsAClearError) {
  TempDir dir;
  uint32_t id = 0;
  make_data_dir(dir.path(), {make_stream({5, 5}, 0, id)}, {});
  try {
    DataLoader l(dir.path(), "train", 1, 64, 0, true);
    FAIL();
  } catch (const aji::Error& e) {
    EXPECT_NE(e.how_to_fix().find("--seq-len"), std::string::npos);
  }
  EXPECT_THROW(DataLoader(dir.path(), "val", 1, 4, 0, false), aji::Error);  // no val shards
}
