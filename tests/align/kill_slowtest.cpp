// kill -9 tests (issue #13): `aji sft train` and `aji classify train` are killed with
// SIGKILL at many random moments (checkpoints are written every step, so many kills land
// inside a checkpoint write), restarted each time - with --resume when the run dir holds a
// checkpoint, else afresh (the run-dir rule: a dir without a checkpoint starts over) - until
// they finish; the final weights must equal an uninterrupted run's, bit for bit (same
// thread count: the design's promise).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <csignal>
#include <fcntl.h>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "aji/base/io.h"
#include "aji/base/rng.h"
#include "aji/base/threads.h"
#include "aji/train/checkpoint.h"
#include "micro_base.h"
#include "test_util.h"

namespace fs = std::filesystem;
using aji::test::TempDir;

namespace {

// Runs argv; once armed() holds, waits kill_after_ms more and kills it with SIGKILL
// (kill_after_ms < 0: never). Returns the exit status, or -9 when it was killed.
int run_or_kill(const std::vector<std::string>& args, int kill_after_ms,
                const std::function<bool()>& armed = [] { return true; }) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 1);
    ::dup2(devnull, 2);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  std::optional<std::chrono::steady_clock::time_point> armed_at;
  int status = 0;
  while (true) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (kill_after_ms >= 0) {
      if (!armed_at && armed()) armed_at = std::chrono::steady_clock::now();
      if (armed_at && std::chrono::steady_clock::now() - *armed_at >= std::chrono::milliseconds(kill_after_ms)) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        return WIFSIGNALED(status) ? -9 : (WIFEXITED(status) ? WEXITSTATUS(status) : -1);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

int64_t newest_checkpoint(const fs::path& run) {
  const auto all = aji::train::list_checkpoints(run);
  return all.empty() ? 0 : all.back().first;
}

double run_ms(const std::vector<std::string>& args, int* rc) {
  const auto t0 = std::chrono::steady_clock::now();
  *rc = run_or_kill(args, -1);
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Kills a run `kills` times at random moments in [0, straight_ms), then lets it finish.
// fresh: the command for a new run; the same plus --resume continues one. Returns the
// number of kills that found a checkpoint to resume from.
int kill_and_finish(const std::vector<std::string>& fresh, const fs::path& run, double straight_ms, int kills,
                    uint64_t seed) {
  aji::Rng rng(seed);
  int resumed = 0;
  for (int k = 0; k <= kills; ++k) {
    std::vector<std::string> args = fresh;
    const bool has_ckpt = !aji::train::list_checkpoints(run).empty();
    if (has_ckpt) {
      args.push_back("--resume");
      ++resumed;
    }
    // Each session is killed at a random moment within the few steps after it has written
    // a checkpoint of its own (so every restart makes progress, and the kills land anywhere
    // in a step: forward, backward, update, checkpoint write).
    const int64_t from = newest_checkpoint(run);
    const int after = k < kills ? int(rng.uniform() * 0.1 * straight_ms) : -1;
    const int rc = run_or_kill(args, after, [&] { return newest_checkpoint(run) > from; });
    if (k == kills) {
      EXPECT_EQ(rc, 0) << "the last restart must finish";
    } else if (rc == 0) {
      std::printf("%d restarts (%d resumed from a checkpoint); finished before the next kill\n", k + 1, resumed);
      return resumed;  // it finished before the kill
    } else {
      EXPECT_EQ(rc, -9) << "restart " << k << " failed by itself (not killed)";
    }
  }
  std::printf("%d restarts (%d resumed from a checkpoint)\n", kills + 1, resumed);
  return resumed;
}

struct KillFixture {
  TempDir dir;
  fs::path base;
  KillFixture() {
    aji::set_num_threads(1);
    {
      std::ofstream c(dir.path() / "corpus.txt");
      for (int i = 0; i < 150; ++i)
        c << "What color is the sky? The sky is blue.\n\nSay hello. Hello! How can I help?\n\n"
          << "free cash prize now! see you at home tonight.\n\n";
    }
    aji::test::MicroBaseOptions mb;
    mb.vocab_size = 320;
    base = aji::test::build_micro_base(dir.path(), dir.path() / "corpus.txt", mb);
  }
};

}  // namespace

TEST(KillNine, SftTrainResumesToTheSameWeights) {
  KillFixture f;
  const fs::path data = f.dir.path() / "train.jsonl";
  {
    std::ofstream tr(data);
    for (int i = 0; i < 16; ++i)
      tr << R"({"messages": [{"role": "user", "content": "What color is the sky? )" << i
         << R"("}, {"role": "assistant", "content": "The sky is blue."}]})" << "\n";
  }
  auto cmd = [&](const fs::path& out) {
    return std::vector<std::string>{AJI_BINARY,      "--threads",  "1",         "-q",           "sft",
                                    "train",         "--model",    f.base.string(), "--data",   data.string(),
                                    "--out",         out.string(), "--steps",   "40",           "--batch-size",
                                    "2",             "--save-every", "1",       "--lr",         "3e-3"};
  };
  int rc = 0;
  const double ms = run_ms(cmd(f.dir.path() / "straight"), &rc);
  ASSERT_EQ(rc, 0);
  std::printf("straight run: %.0f ms\n", ms);
  const fs::path killed = f.dir.path() / "killed";
  const int resumed = kill_and_finish(cmd(killed), killed, ms, 10, 13);
  EXPECT_GE(resumed, 3) << "too few kills landed after a checkpoint to test resuming";
  const fs::path a = aji::train::resolve_model_dir(f.dir.path() / "straight"), b = aji::train::resolve_model_dir(killed);
  EXPECT_EQ(a.filename(), b.filename());
  EXPECT_TRUE(aji::read_file(a / "model.safetensors") == aji::read_file(b / "model.safetensors"))
      << "the killed and resumed run's weights differ from the straight run's";
  EXPECT_TRUE(aji::read_file(a / "optimizer.bin") == aji::read_file(b / "optimizer.bin"));
}

TEST(KillNine, ClassifyTrainResumesToTheSameClassifier) {
  KillFixture f;
  const fs::path data = f.dir.path() / "data.tsv";
  {
    std::ofstream d(data);
    aji::Rng rng(3);
    const char* spam[] = {"free", "cash", "prize", "now"};
    const char* ham[] = {"see", "you", "at", "home"};
    for (int i = 0; i < 90; ++i) {
      const bool s = i % 3 == 0;
      d << (s ? "spam" : "ham") << "\t";
      for (int w = 0; w < 4; ++w) d << (s ? spam : ham)[rng.below(4)] << " ";
      d << (s ? "prize!" : "tonight.") << "\n";
    }
  }
  auto cmd = [&](const fs::path& out) {
    return std::vector<std::string>{AJI_BINARY,  "--threads",   "1",         "-q",          "classify",
                                    "train",     "--model",     f.base.string(), "--data",  data.string(),
                                    "--format",  "tsv",         "--no-header", "--label-col", "0",
                                    "--text-col", "1",          "--out",     out.string(), "--epochs",
                                    "4",         "--batch-size", "8",        "--trainable", "last:1",
                                    "--keep-best", "--eval-every", "5",      "--save-every", "1",
                                    "--lr",      "1e-2"};
  };
  int rc = 0;
  const double ms = run_ms(cmd(f.dir.path() / "straight"), &rc);
  ASSERT_EQ(rc, 0);
  std::printf("straight run: %.0f ms\n", ms);
  const fs::path killed = f.dir.path() / "killed";
  const int resumed = kill_and_finish(cmd(killed), killed, ms, 10, 17);
  EXPECT_GE(resumed, 3) << "too few kills landed after a checkpoint to test resuming";
  for (const char* file : {"classifier/model.safetensors", "classifier/class_head.safetensors", "classifier/labels.json"})
    EXPECT_TRUE(aji::read_file(f.dir.path() / "straight" / file) == aji::read_file(killed / file)) << file;
  EXPECT_TRUE(aji::read_file(f.dir.path() / "straight" / "report.txt") == aji::read_file(killed / "report.txt"));
}
