#include <gtest/gtest.h>
#include <zlib.h>
#include <zstd.h>

#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <string>

#include "aji/base/aligned.h"
#include "aji/base/atomic_file.h"
#include "aji/base/error.h"
#include "aji/base/interrupt.h"
#include "aji/base/io.h"
#include "aji/base/options.h"
#include "aji/base/progress.h"
#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "test_util.h"

namespace fs = std::filesystem;
using aji::test::TempDir;

TEST(Error, DescribeNamesFileLineAndFix) {
  aji::Error e = aji::Error("bad merge line").at("tok.json", 12).fix("each merge is 'A B'");
  EXPECT_EQ(e.location(), "tok.json:12");
  EXPECT_EQ(e.describe(), "error: bad merge line\n  at:  tok.json:12\n  fix: each merge is 'A B'");
  aji::Error off = aji::Error("bad record").at_offset("x.warc.gz", 4096);
  EXPECT_EQ(off.location(), "x.warc.gz (byte offset 4096)");
}

// Small buffers 64-byte aligned; from 8 MiB on 2 MiB aligned and marked for huge pages: where
// the kernel offers transparent huge pages (not "never"), /proc/self/smaps shows the buffer's
// mapping eligible (THPeligible: 1). The contents survive growth and copies as any vector's.
TEST(Aligned, LargeBuffersAreHugePageAlignedAndEligible) {
  aji::AlignedFloats small(1000, 1.5f);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(small.data()) % 64, 0u);
  aji::AlignedVector<uint16_t> large((size_t(9) << 20) / 2, 7);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(large.data()) % (size_t(2) << 20), 0u);
  large.resize(large.size() * 2, 9);  // reallocates
  EXPECT_EQ(reinterpret_cast<uintptr_t>(large.data()) % (size_t(2) << 20), 0u);
  EXPECT_EQ(large.front(), 7);
  EXPECT_EQ(large.back(), 9);
  std::string mode;
  std::ifstream thp("/sys/kernel/mm/transparent_hugepage/enabled");
  std::getline(thp, mode);
  if (mode.empty() || mode.find("[never]") != std::string::npos) {
    GTEST_SKIP() << "transparent huge pages are off on this machine (" << mode << "): alignment checked only";
  }
  std::ifstream smaps("/proc/self/smaps");
  const uintptr_t at = reinterpret_cast<uintptr_t>(large.data());
  std::string line;
  bool inside = false, found = false;
  while (std::getline(smaps, line)) {
    uintptr_t lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(' ') != std::string::npos &&
        line.find(':') > line.find(' ')) {
      inside = at >= lo && at < hi;
      continue;
    }
    if (inside && line.rfind("THPeligible:", 0) == 0) {
      EXPECT_NE(line.find('1'), std::string::npos) << line;
      found = true;
    }
  }
  EXPECT_TRUE(found) << "no THPeligible line for the buffer's mapping in /proc/self/smaps";
}

TEST(AtomicFile, CommitReplacesAndAbortLeavesOldFile) {
  TempDir dir;
  fs::path p = dir.path() / "sub" / "f.txt";
  aji::write_file_atomic(p, "first");
  EXPECT_EQ(aji::read_file(p), "first");
  {
    aji::AtomicFileWriter w(p);
    w.write("second, never committed");
  }  // destroyed without commit: e.g. an exception midway
  EXPECT_EQ(aji::read_file(p), "first");
  for (auto& e : fs::directory_iterator(p.parent_path())) EXPECT_EQ(e.path().filename(), "f.txt");
  aji::write_file_atomic(p, "third");
  EXPECT_EQ(aji::read_file(p), "third");
}

TEST(Rng, DeterministicAndUniform) {
  aji::Rng a(42), b(42), c(43);
  for (int i = 0; i < 100; ++i) {
    uint64_t x = a.next_u64();
    EXPECT_EQ(x, b.next_u64());
    EXPECT_NE(x, c.next_u64());
  }
  // Mean of uniform() over many draws is close to 1/2; normal() has mean ~0, var ~1.
  aji::Rng r(7);
  double sum = 0, s1 = 0, s2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    double u = r.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    double z = r.normal();
    s1 += z;
    s2 += z * z;
  }
  EXPECT_NEAR(sum / n, 0.5, 0.005);
  EXPECT_NEAR(s1 / n, 0.0, 0.01);
  EXPECT_NEAR(s2 / n, 1.0, 0.02);
  for (int i = 0; i < 1000; ++i) EXPECT_LT(r.below(7), 7u);
}

TEST(Threads, ParallelForVisitsEveryIndexOnceAndRethrows) {
  aji::set_num_threads(2);
  std::vector<int> seen(1000, 0);
  aji::parallel_for(1000, [&](int64_t i) { seen[i]++; });
  for (int v : seen) EXPECT_EQ(v, 1);
  EXPECT_THROW(aji::parallel_for(10, [](int64_t i) { if (i == 3) throw aji::Error("boom"); }), aji::Error);
  aji::set_num_threads(0);
}

TEST(Threads, CountsAreValidatedAndCappedToTheMachine) {
  EXPECT_EQ(aji::parse_thread_count("0", "--threads"), 0);
  EXPECT_EQ(aji::parse_thread_count("3", "--threads"), 3);
  EXPECT_EQ(aji::parse_thread_count("100000", "AJI_THREADS"), 100000);  // valid, capped when applied
  for (const char* bad : {"-1", "abc", "4x", "", "1e3", "99999999999999999999"}) {
    try {
      aji::parse_thread_count(bad, "AJI_THREADS");
      ADD_FAILURE() << "accepted \"" << bad << "\"";
    } catch (const aji::Error& e) {
      EXPECT_NE(std::string(e.what()).find("AJI_THREADS"), std::string::npos) << e.describe();
      EXPECT_NE(e.how_to_fix().find("AJI_THREADS"), std::string::npos);
    }
  }
  // 100000 threads crashed inside the OpenMP runtime: now capped to the cores.
  EXPECT_EQ(aji::set_num_threads(100000), aji::max_threads());
  EXPECT_EQ(aji::num_threads(), aji::max_threads());
  EXPECT_EQ(aji::max_threads(), aji::hardware_threads());
  std::vector<int> seen(100, 0);
  aji::parallel_for(100, [&](int64_t i) { seen[i]++; });
  for (int v : seen) EXPECT_EQ(v, 1);
  EXPECT_EQ(aji::set_num_threads(1), 1);
  aji::set_num_threads(0);
}

TEST(Interrupt, SigtermIsCaughtLikeCtrlCWhileAGuardLives) {
  for (int sig : {SIGINT, SIGTERM}) {
    {
      aji::InterruptGuard guard;
      EXPECT_FALSE(aji::interrupt_requested());
      std::raise(sig);  // without the guard this ends the process
      EXPECT_TRUE(aji::interrupt_requested());
      EXPECT_EQ(aji::interrupt_signal(), sig);
    }
    // The guard restores the previous handlers (gtest's defaults here).
    EXPECT_EQ(std::signal(sig, SIG_DFL), SIG_DFL);
  }
}

namespace {
// A settings struct declared the base/options.h way.
struct Opts {
  int64_t steps = 0;
  float lr = 2e-3f;
  std::optional<int64_t> warmup;
  std::string decay = "cosine";
  int save_every = 500;
  int64_t stop_after = 0;
  template <class V>
  void for_each_option(V&& v) {
    v(steps, aji::OptionInfo{"steps", "Steps", aji::Range::at_least(0), aji::OnResume::kChange});
    v(lr, aji::OptionInfo{"lr", "Peak learning rate", aji::Range::above(0), aji::OnResume::kKeep});
    v(warmup, aji::OptionInfo{"warmup", "Warmup", aji::Range::at_least(0), aji::OnResume::kKeep});
    v(decay, aji::OptionInfo{"decay", "Decay", aji::Range::any(), aji::OnResume::kKeep});
    v(save_every, aji::OptionInfo{"save-every", "Save", aji::Range::at_least(0), aji::OnResume::kChange});
    v(stop_after, aji::OptionInfo{"stop-after", "Stop", aji::Range::at_least(0), aji::OnResume::kNotSaved});
  }
};
}  // namespace

TEST(Options, DeclaredOnceValidatedSavedAndRestored) {
  EXPECT_TRUE(aji::Range::above(0).contains(1e-9));
  EXPECT_FALSE(aji::Range::above(0).contains(0));
  EXPECT_FALSE(aji::Range::at_least(0).contains(NAN));
  EXPECT_FALSE(aji::Range::at_least(0).contains(INFINITY));
  EXPECT_FALSE(aji::Range::from_below(0, 1).contains(1));
  EXPECT_EQ(aji::Range::from_below(0, 1).describe(), "in [0, 1)");
  Opts o;
  aji::validate_options(o);  // the defaults are valid
  for (float bad : {-1.0f, 0.0f, NAN, INFINITY}) {
    o.lr = bad;
    try {
      aji::validate_options(o);
      ADD_FAILURE() << "lr " << bad << " accepted";
    } catch (const aji::Error& e) {
      EXPECT_NE(std::string(e.what()).find("--lr must be > 0"), std::string::npos) << e.describe();
    }
  }
  o.lr = 0.01f;
  o.warmup = -5;
  EXPECT_THROW(aji::validate_options(o), aji::Error);
  o.warmup = 7;
  o.stop_after = 3;
  const nlohmann::json j = aji::options_to_json(o);
  EXPECT_EQ(j.at("warmup"), 7);
  EXPECT_EQ(j.at("save_every"), 500);
  EXPECT_FALSE(j.contains("stop_after"));  // one session's setting
  EXPECT_EQ(j.at("lr").get<float>(), 0.01f);
  // Resuming: not given -> the saved value; a safe change -> taken and reported; a run
  // setting given differently -> refused (and the saved value kept).
  Opts r;
  r.save_every = 100;
  r.lr = 0.5f;
  auto rep = aji::apply_saved_options(r, j, {"save-every", "lr"}, "state.json");
  EXPECT_EQ(r.save_every, 100);
  EXPECT_EQ(r.lr, 0.01f);
  ASSERT_EQ(rep.changed.size(), 1u);
  EXPECT_EQ(rep.changed[0], "--save-every 500 -> 100");
  ASSERT_EQ(rep.refused.size(), 1u);
  EXPECT_NE(rep.refused[0].find("--lr"), std::string::npos);
  Opts q;
  q.lr = 0.01f;
  rep = aji::apply_saved_options(q, j, {"lr"}, "state.json");  // given, but the same value as saved: fine
  EXPECT_TRUE(rep.refused.empty());
  EXPECT_EQ(q.warmup, std::optional<int64_t>(7));
  nlohmann::json wrong = j;
  wrong["steps"] = "many";
  EXPECT_THROW(aji::apply_saved_options(q, wrong, {}, "state.json"), aji::Error);
}

TEST(Progress, FormatsCountsAndDurations) {
  EXPECT_EQ(aji::Progress::format_count(999, "docs"), "999 docs");
  EXPECT_EQ(aji::Progress::format_count(1234567, "tok"), "1.23M tok");
  EXPECT_EQ(aji::Progress::format_count(2.5e9, "B"), "2.50GB");
  EXPECT_EQ(aji::Progress::format_duration(5), "5s");
  EXPECT_EQ(aji::Progress::format_duration(185), "3m05s");
  EXPECT_EQ(aji::Progress::format_duration(3725), "1h02m");
  aji::Progress p("work", 100, "items", /*enabled=*/false);
  p.add(50);
  std::string line = p.render_line();
  EXPECT_NE(line.find("50 items / 100 (50.0%)"), std::string::npos) << line;
}

static std::string gzip(const std::string& s) {
  z_stream zs{};
  deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(compressBound(s.size()) + 64, '\0');
  zs.next_in = (Bytef*)s.data();
  zs.avail_in = s.size();
  zs.next_out = (Bytef*)out.data();
  zs.avail_out = out.size();
  deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

TEST(Io, LineReaderPlainGzipMultiMemberAndZstd) {
  TempDir dir;
  std::string text = "alpha\nbeta\r\n\nlast-no-newline";
  std::ofstream(dir.path() / "a.txt", std::ios::binary) << text;
  // Two gzip members back to back, as Common Crawl writes WARC files.
  std::ofstream(dir.path() / "a.gz", std::ios::binary) << gzip("alpha\nbeta\r\n") << gzip("\nlast-no-newline");
  std::string z(ZSTD_compressBound(text.size()), '\0');
  z.resize(ZSTD_compress(z.data(), z.size(), text.data(), text.size(), 3));
  std::ofstream(dir.path() / "a.zst", std::ios::binary) << z;
  for (const char* name : {"a.txt", "a.gz", "a.zst"}) {
    aji::LineReader r(dir.path() / name);
    std::vector<std::string> lines;
    std::string_view line;
    while (r.next(line)) lines.emplace_back(line);
    ASSERT_EQ(lines.size(), 4u) << name;
    EXPECT_EQ(lines[0], "alpha");
    EXPECT_EQ(lines[1], "beta\r");
    EXPECT_EQ(lines[2], "");
    EXPECT_EQ(lines[3], "last-no-newline");
    EXPECT_EQ(r.line_number(), 4);
    EXPECT_EQ(aji::read_file(dir.path() / name), text) << name;
  }
}

// Readers size their buffers with read_size_hint: the rest of a plain file plus one, a
// guess for compressed data. A guess far below the real size (text that compresses 100x)
// must still read everything, line by line and whole.
TEST(Io, ReadSizeHintFollowsTheFileAndUnderestimatesAreHarmless) {
  TempDir dir;
  std::ofstream(dir.path() / "small.txt", std::ios::binary) << "0123456789";
  aji::InputStream small(dir.path() / "small.txt");
  EXPECT_EQ(small.read_size_hint(size_t(1) << 20), 11u);
  char buf[16];
  EXPECT_EQ(small.read(buf, 11), 10u);
  EXPECT_EQ(small.read_size_hint(size_t(1) << 20), 1u);
  EXPECT_EQ(small.read(buf, 1), 0u);

  std::string big;
  for (int i = 0; big.size() < (size_t(3) << 20); ++i) big += "row " + std::to_string(i % 10) + " aaaaaaaaaaaaaaaa\n";
  std::ofstream(dir.path() / "big.txt", std::ios::binary) << big;
  aji::InputStream plain(dir.path() / "big.txt");
  EXPECT_EQ(plain.read_size_hint(size_t(1) << 20), size_t(1) << 20);  // capped
  const std::string gz = gzip(big);
  ASSERT_LT(gz.size() * 20, big.size());  // the guess (4x compressed) is far too small
  std::ofstream(dir.path() / "big.gz", std::ios::binary) << gz;
  aji::InputStream packed(dir.path() / "big.gz");
  // A few times the compressed bytes, at least 64 KiB: far under the 3 MiB it holds.
  EXPECT_EQ(packed.read_size_hint(size_t(1) << 20), std::max<size_t>(size_t(1) << 16, 4 * gz.size()));
  for (const char* name : {"big.txt", "big.gz"}) {
    SCOPED_TRACE(name);
    EXPECT_EQ(aji::read_file(dir.path() / name), big);
    aji::LineReader r(dir.path() / name);
    std::string joined;
    std::string_view line;
    while (r.next(line)) joined.append(line).push_back('\n');
    EXPECT_EQ(joined, big);
  }
}

TEST(Io, TruncatedGzipIsAnErrorNamingTheFile) {
  TempDir dir;
  std::string big;
  for (int i = 0; i < 20000; ++i) big += "line " + std::to_string(i * 7919) + "\n";
  std::string gz = gzip(big);
  std::ofstream(dir.path() / "cut.gz", std::ios::binary) << gz.substr(0, gz.size() / 2);
  try {
    aji::read_file(dir.path() / "cut.gz");
    FAIL() << "expected an error";
  } catch (const aji::Error& e) {
    EXPECT_NE(e.file().find("cut.gz"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
}

TEST(Io, ExpandInputsGlobsDirectoriesAndMissing) {
  TempDir dir;
  fs::create_directories(dir.path() / "d" / "e");
  std::ofstream(dir.path() / "d" / "b.txt") << "b";
  std::ofstream(dir.path() / "d" / "a.txt") << "a";
  std::ofstream(dir.path() / "d" / "e" / "c.jsonl") << "c";
  auto all = aji::expand_inputs({(dir.path() / "d").string()});
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].filename(), "a.txt");
  auto txt = aji::expand_inputs({(dir.path() / "d" / "*.txt").string()});
  ASSERT_EQ(txt.size(), 2u);
  EXPECT_THROW(aji::expand_inputs({(dir.path() / "nope.txt").string()}), aji::Error);
  EXPECT_THROW(aji::expand_inputs({(dir.path() / "*.none").string()}), aji::Error);
}

TEST(Io, ReadErrorIsAnErrorNotEndOfFile) {
  // /proc/self/mem fails with EIO when read at offset 0: an I/O error must not look
  // like an empty file (that would silently drop the input).
  EXPECT_THROW(aji::read_file("/proc/self/mem"), aji::Error);
  EXPECT_THROW(
      {
        aji::LineReader r("/proc/self/mem");
        std::string_view line;
        while (r.next(line)) {
        }
      },
      aji::Error);
}
