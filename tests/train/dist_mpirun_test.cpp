// Data parallelism for real: `mpirun -np 2` runs of `aji pretrain` and `aji sft train` (B rows
// per rank, a global batch of 2B) against one process with the same global batch (as one
// batch of 2B and as 2 accumulated micro-batches of B). The reference is the single-process
// run: the final parameters must agree to kParamTol and the per-step losses to kLossTol
// (not bit for bit: the 2 ranks sum their gradients in another order than one process).
// Also: rank 0 alone writes (one metrics line per step), a checkpoint of 2 ranks resumes on
// 1 (the loader's cursor is global), and a bad setting ends both ranks with a clear error
// instead of a hang. Skipped, saying why, without mpirun, in a build without MPI, and in
// the sanitizer build (OpenMPI's own allocations trip LeakSanitizer).
#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "align/micro_base.h"
#include "aji/base/dist.h"
#include "aji/base/io.h"
#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "aji/model/model.h"
#include "aji/train/checkpoint.h"
#include "aji/train/optimizer.h"
#include "aji/train/tokenize_data.h"
#include "test_util.h"
#include "train/dist_test_util.h"

namespace fs = std::filesystem;
using aji::test::TempDir;

namespace {

// Measured here (micro models, 4-5 steps, 1 thread per process): pretrain 1.2e-7 between 2
// ranks and one batch of 2B, 2e-8 against 2 accumulated micro-batches of B; SFT 6e-8. The
// bounds leave room for other compilers and kernels while still catching a missing all-reduce
// or a wrong scale (those move parameters by > 1e-3 in one step).
constexpr double kParamTol = 1e-5;
constexpr double kLossTol = 1e-5;  // relative

std::string skip_reason() { return aji::test::mpirun_skip_reason(); }
std::string mpirun(int np) { return aji::test::mpirun_command(np, 180); }
std::string single() { return aji::test::single_process_command(); }

std::vector<float> weights(const fs::path& run) {
  aji::model::Model m = aji::train::load_model(run);
  return {m.params(), m.params() + m.num_params()};
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

// The train losses of metrics.jsonl, in order.
std::vector<double> losses(const fs::path& run) {
  std::ifstream f(run / "metrics.jsonl");
  std::vector<double> v;
  for (std::string line; std::getline(f, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) v.push_back(j["loss"].get<double>());
  }
  return v;
}

void expect_same_run(const fs::path& ref, const fs::path& run, size_t steps) {
  const std::vector<double> a = losses(ref), b = losses(run);
  ASSERT_EQ(a.size(), steps) << ref;
  ASSERT_EQ(b.size(), steps) << run << ": one metrics line per step (rank 0 alone writes)";
  for (size_t i = 0; i < steps; ++i) EXPECT_NEAR(b[i], a[i], kLossTol * std::fabs(a[i])) << "step " << i + 1;
  const double d = max_abs_diff(weights(ref), weights(run));
  EXPECT_LE(d, kParamTol) << ref << " vs " << run;
  std::printf("%s vs %s: max |parameter difference| %.3g\n", ref.filename().c_str(), run.filename().c_str(), d);
}

int count(const std::string& hay, const std::string& needle) {
  int n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}

// The pretraining fixture: a corpus of a small grammar, a 320-token BPE, the corpus
// tokenized into d/data and the micro model d/micro.json. Returns the data dir.
fs::path make_pretrain_data(const fs::path& d) {
  {
    // pretrain_test's corpus: sentences of a small grammar, in paragraphs.
    const char* subj[] = {"the cat", "a dog", "my friend", "the old king", "a small bird", "the teacher"};
    const char* verb[] = {"sees", "likes", "finds", "follows", "paints", "remembers"};
    const char* obj[] = {"the red ball", "a green tree", "the quiet river", "an open door", "the long road"};
    aji::Rng rng(5);
    std::ofstream c(d / "corpus.txt");
    for (int p = 0; p < 600; ++p) {
      const int n = 1 + static_cast<int>(rng.below(4));
      for (int i = 0; i < n; ++i)
        c << subj[rng.below(6)] << " " << verb[rng.below(6)] << " " << obj[rng.below(5)] << ". ";
      c << "\n\n";
    }
  }
  std::string out;
  EXPECT_EQ(aji::test::run_command(std::string(AJI_BINARY) + " -q tokenizer train --input " + (d / "corpus.txt").string() +
                                       " --vocab-size 320 --out " + (d / "tok.json").string() + " 2>&1",
                                   &out),
            0)
      << out;
  aji::train::TokenizeDataOptions t;
  t.tokenizer = d / "tok.json";
  t.inputs = {(d / "corpus.txt").string()};
  t.out_dir = d / "data";
  t.val_fraction = 0.1;
  t.shard_tokens = 2048;
  t.progress = false;
  aji::train::tokenize_data(t);
  std::ofstream(d / "micro.json") << R"({"arch": "llama", "vocab_size": 320, "n_layer": 2, "n_head": 2,
      "n_kv_head": 1, "d_model": 32, "d_ff": 64, "max_seq_len": 32})";
  return t.out_dir;
}

// Two "hosts" for the multi-host tests (tests/train/netns_hosts.sh): network namespaces TAG1
// and TAG2 on a bridge, addresses NET.2 and NET.3. `skip` says why they cannot be made here
// (the test then skips; they are opt-in, see docs/distributed.md). The destructor runs
// `cleanup` (if set), then removes them.
struct NetnsHosts {
  std::string tag, net, script, skip;
  std::vector<std::string> cleanup;  // commands run at the end, each on its own
  bool up = false;
  NetnsHosts(const std::string& prefix, const std::string& net16)
      : tag(prefix + std::to_string(getpid() % 100000)),  // interface names stay <= 15 chars
        net(net16 + "." + std::to_string(20 + getpid() % 200)),
        script(aji::test::source_path("tests/train/netns_hosts.sh").string()),
        skip(skip_reason()) {
    if (skip.empty() && geteuid() != 0) skip = "needs root to create network namespaces (ip netns, veth, bridge)";
    if (skip.empty() && std::getenv("AJI_NO_NETNS_TESTS")) skip = "AJI_NO_NETNS_TESTS is set";
    if (!skip.empty()) return;
    std::string out;
    up = aji::test::run_command("sh " + script + " up " + tag + " " + net + " 2>&1", &out) == 0;
    if (!up) {
      down();
      skip = "cannot create network namespaces here: " + out;
    }
  }
  ~NetnsHosts() {
    // (separate calls: a pkill -f of a pattern in its own command line ends the shell that runs it)
    for (const std::string& c : cleanup)
      if (std::system((c + " > /dev/null 2>&1").c_str()) == -1) std::fprintf(stderr, "could not run: %s\n", c.c_str());
    if (up) down();
  }
  void down() const {
    if (std::system(("sh " + script + " down " + tag + " > /dev/null 2>&1").c_str()) != 0)
      std::fprintf(stderr, "could not remove the test namespaces %s*\n", tag.c_str());
  }
  // `timeout` + mpirun of `binary` over the two hosts, one rank each, gradients over TCP only;
  // `env`: more "VAR=value" before it, `x`: more -x options.
  std::string mpirun(const std::string& timeout, const std::string& env, const std::string& x) const {
    return "AJI_NETNS_TAG=" + tag + " " + env + " timeout " + timeout +
           " mpirun --allow-run-as-root --oversubscribe --bind-to none --host " + net + ".2:1," + net +
           ".3:1 -np 2 --mca plm_rsh_agent 'sh " + script + " agent' --mca oob_tcp_if_include " + net +
           ".0/24 --mca btl tcp,self --mca btl_tcp_if_include " + net + ".0/24 -x AJI_THREADS=1 " + x + " " +
           AJI_BINARY;
  }
};

}  // namespace

TEST(DistMpirun, PretrainOnTwoRanksMatchesOneProcessAndResumesOnOne) {
  if (const std::string why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
  TempDir dir;
  const fs::path d = dir.path();
  const fs::path data = make_pretrain_data(d);
  const std::string common = " pretrain --config " + (d / "micro.json").string() + " --data " + data.string() +
                             " --steps 4 --seq-len 16 --eval-every 2 --sample-every 0 --save-every 0 --peak-gflops 1";
  auto run = [&](const std::string& prefix, const std::string& args, std::string* o = nullptr) {
    std::string text;
    const int rc = aji::test::run_command(prefix + common + " " + args + " 2>&1", &text);
    EXPECT_EQ(rc, 0) << prefix << common << " " << args << "\n" << text;
    if (o) *o = text;
  };
  run(single(), "-q --batch-size 4 --out " + (d / "one").string());
  run(single(), "-q --batch-size 2 --total-batch-tokens 64 --out " + (d / "accum").string());
  std::string shown;
  run(mpirun(2), "--batch-size 2 --total-batch-tokens 64 --out " + (d / "two").string(), &shown);
  expect_same_run(d / "one", d / "two", 4);
  expect_same_run(d / "accum", d / "two", 4);
  // Rank 0 alone prints: one progress line per step, one summary.
  EXPECT_EQ(count(shown, "step     1/4 | loss"), 1) << shown;
  EXPECT_EQ(count(shown, "done: 4 steps"), 1) << shown;
  EXPECT_EQ(count(shown, "data parallel: 2 ranks"), 1) << shown;
  EXPECT_EQ(count(shown, "averaged through the host"), 0) << shown;  // the devices' collective

  // Elastic resume: 2 ranks stop after 2 steps; one process continues the same run.
  run(mpirun(2), "-q --batch-size 2 --total-batch-tokens 64 --stop-after 2 --out " + (d / "elastic").string());
  std::string resumed;
  ASSERT_EQ(aji::test::run_command(single() + " -q pretrain --resume --out " + (d / "elastic").string() + " 2>&1",
                                   &resumed),
            0)
      << resumed;
  expect_same_run(d / "one", d / "elastic", 4);

  // N = 4 (1 row each, oversubscribed on this machine): the same run; and a checkpoint written
  // by 2 ranks continued on 4.
  run(mpirun(4), "-q --batch-size 1 --total-batch-tokens 64 --out " + (d / "four").string());
  expect_same_run(d / "one", d / "four", 4);
  run(mpirun(2), "-q --batch-size 2 --total-batch-tokens 64 --stop-after 2 --out " + (d / "two-then-four").string());
  ASSERT_EQ(aji::test::run_command(mpirun(4) + " -q pretrain --resume --batch-size 1 --out " + (d / "two-then-four").string() + " 2>&1",
                                   &resumed),
            0)
      << resumed;
  expect_same_run(d / "one", d / "two-then-four", 4);

  // A total batch the ranks cannot split: a clear error on every rank, no hang.
  std::string bad;
  EXPECT_NE(aji::test::run_command(mpirun(2) + common + " -q --batch-size 2 --total-batch-tokens 32 --out " +
                                       (d / "bad").string() + " 2>&1",
                                   &bad),
            0);
  EXPECT_NE(bad.find("batch*seq_len*ranks"), std::string::npos) << bad;
  EXPECT_NE(bad.find("MPI_Abort"), std::string::npos) << bad;
}

// Data parallelism with a device: two ranks, each training on a device with memory of its
// own (--device cpu:separate: the device path with the CPU's kernels), their gradients
// averaged on the devices (the devices' collective: MPI over cpu:separate's memory in place,
// where GPUs use NCCL; train_step's device branch). The run is the two host ranks' run bit
// for bit, and a device run stopped after 2 steps resumes in one process on the host.
TEST(DistMpirun, PretrainOnTwoRanksWithADeviceIsTheHostRunBitForBit) {
  if (const std::string why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
  TempDir dir;
  const fs::path d = dir.path();
  const fs::path data = make_pretrain_data(d);
  const std::string common = " pretrain --config " + (d / "micro.json").string() + " --data " + data.string() +
                             " --steps 4 --seq-len 16 --eval-every 2 --sample-every 0 --save-every 0 --peak-gflops 1" +
                             " --precision fp32 --batch-size 2 --total-batch-tokens 64";
  auto run = [&](const std::string& prefix, const std::string& args) {
    std::string text;
    const int rc = aji::test::run_command(prefix + common + " " + args + " 2>&1", &text);
    EXPECT_EQ(rc, 0) << prefix << common << " " << args << "\n" << text;
    return text;
  };
  run(mpirun(2), "-q --out " + (d / "host").string());
  const std::string shown = run(mpirun(2), "--device cpu:separate --out " + (d / "dev").string());
  EXPECT_EQ(count(shown, "data parallel: 2 ranks"), 1) << shown;
  const std::vector<double> a = losses(d / "host"), b = losses(d / "dev");
  ASSERT_EQ(a.size(), 4u);
  EXPECT_EQ(a, b);
  EXPECT_EQ(max_abs_diff(weights(d / "host"), weights(d / "dev")), 0.0);
  // The same through the host (download, MPI, upload), as where the devices have no collective
  // (no NCCL; AJI_DEVICE_COLLECTIVE=0): said once, the same run.
  std::string through_host = mpirun(2);
  const size_t at = through_host.find(" -x AJI_THREADS=1");
  ASSERT_NE(at, std::string::npos) << through_host;
  through_host.insert(at, " -x AJI_DEVICE_COLLECTIVE=0");
  const std::string said = run(through_host, "--device cpu:separate --out " + (d / "via-host").string());
  EXPECT_EQ(count(said, "averaged through the host (MPI): AJI_DEVICE_COLLECTIVE=0"), 1) << said;
  EXPECT_EQ(losses(d / "via-host"), a);
  EXPECT_EQ(max_abs_diff(weights(d / "host"), weights(d / "via-host")), 0.0);

  run(mpirun(2), "-q --device cpu:separate --stop-after 2 --out " + (d / "elastic").string());
  std::string resumed;
  ASSERT_EQ(aji::test::run_command(single() + " -q pretrain --resume --device cpu --out " + (d / "elastic").string() +
                                       " 2>&1",
                                   &resumed),
            0)
      << resumed;
  expect_same_run(d / "host", d / "elastic", 4);
}

// Several hosts for real: two network namespaces joined by a bridge (tests/train/netns_hosts.sh),
// one rank in each, mpirun starting its daemons inside them through OpenMPI's rsh launcher hook,
// and the ranks exchanging gradients over TCP only (--mca btl tcp,self: no shared memory), the
// path a cluster takes between machines. The run matches one process as on one host. Skipped,
// saying why, where this process cannot create network namespaces (not root, or a container
// without CAP_NET_ADMIN).
TEST(DistMpirun, PretrainAcrossTwoNetworkNamespacesOverTcp) {
  TempDir dir;
  const fs::path d = dir.path();
  NetnsHosts hosts("ajn", "10.231");
  if (!hosts.skip.empty()) GTEST_SKIP() << hosts.skip;
  std::string out;
  const fs::path data = make_pretrain_data(d);
  const std::string common = " pretrain --config " + (d / "micro.json").string() + " --data " + data.string() +
                             " --steps 4 --seq-len 16 --eval-every 2 --sample-every 0 --save-every 0 --peak-gflops 1 -q";
  ASSERT_EQ(aji::test::run_command(single() + common + " --batch-size 4 --out " + (d / "one").string() + " 2>&1", &out), 0)
      << out;
  const fs::path log = d / "launches.txt";
  // (The two daemons need their own TMPDIR, netns_hosts.sh's agent: with one shared, OpenMPI's
  // session directories collided in 1 launch out of ~8, "mkdir ... File exists", or hung.)
  ASSERT_EQ(aji::test::run_command(hosts.mpirun("180", "AJI_NETNS_LOG=" + log.string(), "") + common +
                                       " --batch-size 2 --total-batch-tokens 64 --out " +
                                       (d / "hosts").string() + " 2>&1",
                                   &out),
            0)
      << out;
  const std::string launched = aji::read_file(log);
  EXPECT_NE(launched.find("in " + hosts.tag + "1"), std::string::npos) << launched;
  EXPECT_NE(launched.find("in " + hosts.tag + "2"), std::string::npos) << launched;
  expect_same_run(d / "one", d / "hosts", 4);
}

// A network that drops between the hosts mid-run: TCP alone would wait (the job hung with the
// link down, before every collective got a deadline, base/dist.cpp). With AJI_COMM_TIMEOUT=3 the
// ranks end with an error that says what happened and what to do, and the last checkpoint
// resumes (one process here). Skipped like the test above.
TEST(DistMpirun, ANetworkDropEndsTheRanksWithAClearErrorAndTheCheckpointResumes) {
  TempDir dir;
  const fs::path d = dir.path();
  const fs::path run_dir = d / "dropped", log = d / "job.txt";
  NetnsHosts hosts("ajd", "10.232");
  if (!hosts.skip.empty()) GTEST_SKIP() << hosts.skip;
  // the ranks and mpirun name the run directory; the daemon on the host cut off names mpirun's
  // address (tcp://NET.1:port) and would linger
  std::string hnp = hosts.net + ".1:";  // as a pattern that does not match its own command line
  for (size_t at = hnp.find('.'); at != std::string::npos; at = hnp.find('.', at + 3)) hnp.replace(at, 1, "[.]");
  hosts.cleanup = {"pkill -9 -f '" + run_dir.string() + "'", "pkill -9 -f 'orted.*tcp://" + hnp + "'"};
  std::string out;
  const fs::path data = make_pretrain_data(d);
  const std::string job = hosts.mpirun("-s KILL 120", "", "-x AJI_COMM_TIMEOUT=3") + " pretrain --config " + (d / "micro.json").string() + " --data " + data.string() +
                          " --steps 100000 --seq-len 16 --batch-size 2 --total-batch-tokens 64 --save-every 5" +
                          " --eval-every 0 --sample-every 0 --peak-gflops 1 -q --out " + run_dir.string();
  ASSERT_EQ(std::system(("(" + job + ") < /dev/null > " + log.string() + " 2>&1 &").c_str()), 0);
  auto wait_for = [](const std::function<bool()>& ok, double seconds) {
    const auto t0 = std::chrono::steady_clock::now();
    while (!ok()) {
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > seconds) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return true;
  };
  // Wait for a first checkpoint (`latest`: checkpoints are pruned to the last 3, and on an idle
  // machine the micro model passes any one checkpoint within a poll interval; the test waited
  // for "ckpt-10", missed it, and reported a stalled launch while the job was at step 16,000).
  if (!wait_for([&] { return fs::exists(run_dir / "latest"); }, 90)) {
    // What the job was doing.
    std::string ps, stacks;
    aji::test::run_command("ps -eo pid,stat,pcpu,etime,args | grep -E 'mpirun|orted|aji' | grep -v grep 2>&1", &ps);
    const std::string dump = "ls " + run_dir.string() + "; for p in $(pgrep -f '^" + std::string(AJI_BINARY) + " pretrain.*" +
                             run_dir.string() + "'); do echo \"== $p\"; timeout 20 gdb -p $p -batch -ex 'bt 30' 2>/dev/null | "
                             "grep -E '^#' | grep -v -E 'libevent|libopen-pal|clone3|start_thread'; done 2>&1";
    aji::test::run_command(dump, &stacks);
    FAIL() << "no checkpoint after 90 s\nlog:\n" << aji::read_file(log) << "\nprocesses:\n" << ps << "\nstacks:\n" << stacks;
  }
  ASSERT_EQ(std::system(("ip link set " + hosts.tag + "v2 down").c_str()), 0);
  const auto t_down = std::chrono::steady_clock::now();
  const bool told = wait_for([&] { return aji::read_file(log).find("no answer from the other ranks") != std::string::npos; }, 60);
  const double after = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_down).count();
  const std::string text = aji::read_file(log);
  EXPECT_TRUE(told) << text;
  EXPECT_LT(after, 30.0) << text;
  EXPECT_NE(text.find("--resume"), std::string::npos) << text;
  // the ranks themselves end (mpirun may still wait for the daemon it cannot reach)
  const std::string ranks = "pgrep -f '^" + std::string(AJI_BINARY) + " pretrain.*" + run_dir.string() + "' > /dev/null";
  EXPECT_TRUE(wait_for([&] { return std::system(ranks.c_str()) != 0; }, 30)) << "a rank is still running";
  std::string ignored;
  for (const std::string& c : hosts.cleanup) aji::test::run_command(c + " 2>&1", &ignored);  // mpirun, if it still waits
  // Nothing is lost beyond the last checkpoint: it resumes (5 steps past it).
  std::string latest = aji::read_file(run_dir / "latest");
  while (!latest.empty() && std::isspace(static_cast<unsigned char>(latest.back()))) latest.pop_back();
  ASSERT_EQ(latest.rfind("ckpt-", 0), 0u) << latest;
  const std::string target = std::to_string(std::stol(latest.substr(5)) + 5);
  ASSERT_EQ(aji::test::run_command(single() + " -q pretrain --resume --steps " + target + " --out " + run_dir.string() + " 2>&1",
                                   &out),
            0)
      << out;
  EXPECT_TRUE(fs::exists(run_dir / ("ckpt-" + target))) << out;
}

TEST(DistMpirun, SftOnTwoRanksMatchesOneProcess) {
  if (const std::string why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
  aji::set_num_threads(1);
  TempDir dir;
  const fs::path d = dir.path();
  const char* qa[][2] = {{"What color is the sky?", "The sky is blue."},
                         {"How many legs does a cat have?", "A cat has four legs."},
                         {"Say hello.", "Hello! How can I help you today?"},
                         {"Name a fruit.", "An apple is a fruit."}};
  {
    std::ofstream c(d / "corpus.txt");
    for (int i = 0; i < 200; ++i)
      for (auto& p : qa) c << p[0] << " " << p[1] << "\n\n";
  }
  const fs::path base = aji::test::build_micro_base(d, d / "corpus.txt");
  {
    std::ofstream tr(d / "train.jsonl"), va(d / "val.jsonl");
    for (int i = 0; i < 14; ++i)
      (i < 11 ? tr : va) << R"({"messages": [{"role": "user", "content": ")" << qa[i % 4][0]
                         << R"("}, {"role": "assistant", "content": ")" << qa[i % 4][1] << R"("}]})" << "\n";
  }
  // 11 conversations, 2 x 2 rows a step: the 3rd step crosses the epoch (a short micro-batch).
  const std::string common = " sft train --model " + base.string() + " --data " + (d / "train.jsonl").string() +
                             " --val " + (d / "val.jsonl").string() + " --steps 5 --lr 3e-3 --batch-size 2";
  std::string out;
  ASSERT_EQ(aji::test::run_command(single() + " -q" + common + " --grad-accum 2 --out " + (d / "one").string() + " 2>&1",
                                   &out),
            0)
      << out;
  ASSERT_EQ(aji::test::run_command(mpirun(2) + common + " --grad-accum 2 --out " + (d / "two").string() + " 2>&1",
                                   &out),
            0)
      << out;
  EXPECT_EQ(count(out, "done: 5 steps"), 1) << out;
  expect_same_run(d / "one", d / "two", 5);

  // --grad-accum 1 cannot be split over 2 ranks: a clear error, both ranks end.
  EXPECT_NE(aji::test::run_command(mpirun(2) + " -q" + common + " --grad-accum 1 --out " + (d / "bad").string() + " 2>&1",
                                   &out),
            0);
  EXPECT_NE(out.find("--grad-accum 1 does not split over 2 ranks"), std::string::npos) << out;
}

// The overlapped all-reduce (the default) against the blocking one (AJI_OVERLAP=0), and ZeRO-1
// (AJI_ZERO=1: AdamW's state sharded over the ranks, the parameters all-gathered) against
// plain data parallelism: with 2 ranks the sums are the same (a + b either way round) and
// the per-element AdamW arithmetic is the same, so the final weights must be bit-identical.
// A ZeRO-1 checkpoint holds the whole optimizer state: it resumes on one process.
TEST(DistMpirun, OverlapAndZero1MatchTheBlockingUnshardedRun) {
  if (const std::string why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
  TempDir dir;
  const fs::path d = dir.path();
  const fs::path data = make_pretrain_data(d);
  const std::string common = " pretrain --config " + (d / "micro.json").string() + " --data " + data.string() +
                             " --steps 4 --seq-len 16 --eval-every 0 --sample-every 0 --save-every 0 --peak-gflops 1"
                             " -q --batch-size 2 --total-batch-tokens 64";
  auto run = [&](const std::string& env, const std::string& args) {
    std::string text;
    const std::string cmd = "timeout 120 mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 -x AJI_THREADS=1 " +
                            env + " " + AJI_BINARY + common + " " + args + " 2>&1";
    EXPECT_EQ(aji::test::run_command(cmd, &text), 0) << cmd << "\n" << text;
  };
  run("-x AJI_OVERLAP=0", "--out " + (d / "blocking").string());
  run("", "--out " + (d / "overlap").string());
  run("-x AJI_ZERO=1", "--out " + (d / "zero").string());
  const std::vector<float> blocking = weights(d / "blocking");
  EXPECT_EQ(max_abs_diff(blocking, weights(d / "overlap")), 0.0) << "overlapped all-reduce";
  EXPECT_EQ(max_abs_diff(blocking, weights(d / "zero")), 0.0) << "ZeRO-1";
  EXPECT_EQ(losses(d / "blocking"), losses(d / "zero"));
  // The ZeRO-1 checkpoint is unsharded: the same optimizer.bin as the plain run's.
  aji::train::AdamW a(weights(d / "blocking").size(), {}), b(a.size(), {});
  a.load(aji::train::list_checkpoints(d / "blocking").back().second / "optimizer.bin");
  b.load(aji::train::list_checkpoints(d / "zero").back().second / "optimizer.bin");
  EXPECT_EQ(a.m(), b.m());
  EXPECT_EQ(a.v(), b.v());
  EXPECT_EQ(a.step_count(), b.step_count());

  // Elastic: 2 ZeRO-1 ranks stop after 2 steps, one process finishes the run.
  run("-x AJI_ZERO=1", "--stop-after 2 --out " + (d / "elastic").string());
  std::string resumed;
  ASSERT_EQ(aji::test::run_command(single() + " -q pretrain --resume --out " + (d / "elastic").string() + " 2>&1",
                                   &resumed),
            0)
      << resumed;
  expect_same_run(d / "blocking", d / "elastic", 4);
}

// A rank killed outright (kill -9) mid-run: the other rank and mpirun end within seconds
// with a message naming the killed rank, nothing hangs, and the last checkpoint is intact:
// one process resumes from it and finishes the run.
TEST(DistMpirun, KillNineOfOneRankEndsTheJobAndTheCheckpointResumes) {
  if (const std::string why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
  TempDir dir;
  const fs::path d = dir.path();
  const fs::path data = make_pretrain_data(d);
  const fs::path out = d / "victim";
  const std::string cmd = "timeout 120 mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 -x AJI_THREADS=1 " +
                          std::string(AJI_BINARY) + " pretrain --config " + (d / "micro.json").string() + " --data " +
                          data.string() + " --steps 100000 --seq-len 16 --eval-every 0 --sample-every 0 --save-every 2"
                          " --keep 2 --peak-gflops 1 -q --batch-size 2 --total-batch-tokens 64 --out " + out.string();
  ASSERT_EQ(std::system(("(" + cmd + " > " + (d / "log").string() + " 2>&1; echo $? > " + (d / "rc").string() + ") &").c_str()),
            0);
  // Rank 1: the aji process of this run whose environment says OMPI_COMM_WORLD_RANK=1.
  auto find_rank1 = [&]() -> int {
    for (const auto& e : fs::directory_iterator("/proc")) {
      const std::string name = e.path().filename();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::ifstream c(e.path() / "cmdline"), env(e.path() / "environ");
      const std::string cl((std::istreambuf_iterator<char>(c)), {}), en((std::istreambuf_iterator<char>(env)), {});
      if (cl.find(out.string()) != std::string::npos && cl.find("mpirun") == std::string::npos &&
          en.find(std::string("OMPI_COMM_WORLD_RANK=1") + '\0') != std::string::npos)
        return std::stoi(name);
    }
    return 0;
  };
  // Wait for 2 checkpoints (step 4 at least), then kill rank 1.
  int pid = 0;
  // (--keep 2 deletes ckpt-4 again a few steps later on a fast machine: wait for any
  // checkpoint at step 4 or later, not for that one name.)
  auto saved_twice = [&]() {
    if (!fs::exists(out)) return false;
    try {
      const auto cks = aji::train::list_checkpoints(out);
      return !cks.empty() && cks.back().first >= 4;
    } catch (const std::exception&) {
      return false;  // a checkpoint being renamed into place
    }
  };
  for (int i = 0; i < 600 && !saved_twice(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_TRUE(saved_twice()) << "no checkpoint at step >= 4 after 60 s";
  pid = find_rank1();
  ASSERT_GT(pid, 0) << "rank 1 not found";
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  for (int i = 0; i < 600 && !fs::exists(d / "rc"); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(fs::exists(d / "rc")) << "the job still runs 30 s after rank 1 was killed";
  std::printf("kill -9 of rank 1: the job ended %.2f s later\n", seconds);
  EXPECT_LT(seconds, 15.0);
  std::ifstream rc(d / "rc"), lg(d / "log");
  int code = 0;
  rc >> code;
  EXPECT_NE(code, 0);
  const std::string log((std::istreambuf_iterator<char>(lg)), {});
  EXPECT_NE(log.find("rank 1"), std::string::npos) << log;
  EXPECT_NE(log.find("signal 9"), std::string::npos) << log;
  // The newest checkpoint loads and the run resumes from it on one process.
  const auto cks = aji::train::list_checkpoints(out);
  ASSERT_FALSE(cks.empty());
  EXPECT_NO_THROW(aji::train::load_model(cks.back().second));
  std::string resumed;
  EXPECT_EQ(aji::test::run_command(single() + " -q pretrain --resume --steps " + std::to_string(cks.back().first + 2) +
                                       " --out " + out.string() + " 2>&1",
                                   &resumed),
            0)
      << resumed;
}
