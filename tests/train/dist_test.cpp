// Data parallelism, the parts that need no second process: launch detection from the
// launcher's environment, the single-process communicator, and the loader's shard of each
// batch (checked against an unsharded loader, the reference of what N ranks must read).
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "aji/base/atomic_file.h"
#include "aji/base/dist.h"
#include "aji/base/io.h"
#include "aji/base/error.h"
#include "aji/train/loader.h"
#include "aji/train/shards.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace aji::train;
using aji::test::TempDir;

namespace {

aji::dist::Launch launch(const std::map<std::string, std::string>& env) {
  return aji::dist::launch_from_env([&](const char* k) -> const char* {
    auto it = env.find(k);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

}  // namespace

TEST(DistLaunch, DetectsMpirunSrunAndPmiOrNothing) {
  EXPECT_EQ(launch({}).size, 1);
  EXPECT_TRUE(launch({}).variable.empty());
  auto m = launch({{"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_RANK", "3"}});
  EXPECT_EQ(m.size, 4);
  EXPECT_EQ(m.rank, 3);
  EXPECT_EQ(m.launcher, "mpirun");
  auto p = launch({{"PMI_SIZE", "2"}, {"PMI_RANK", "1"}});
  EXPECT_EQ(p.size, 2);
  EXPECT_EQ(p.rank, 1);
  auto s = launch({{"SLURM_NTASKS", "8"}, {"SLURM_STEP_NUM_TASKS", "8"}, {"SLURM_PROCID", "5"}});
  EXPECT_EQ(s.size, 8);
  EXPECT_EQ(s.rank, 5);
  EXPECT_EQ(s.launcher, "srun");
  // Inside an sbatch script (no srun): the allocation's SLURM_NTASKS (and SLURM_PROCID 0) is no launch.
  EXPECT_EQ(launch({{"SLURM_NTASKS", "8"}, {"SLURM_PROCID", "0"}}).size, 1);
  // OpenMPI's variables win over Slurm's (mpirun inside an allocation).
  EXPECT_EQ(launch({{"OMPI_COMM_WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_RANK", "0"}, {"SLURM_STEP_NUM_TASKS", "8"},
                    {"SLURM_PROCID", "5"}})
                .size,
            2);
}

TEST(DistLaunch, BadLauncherVariablesAreClearErrors) {
  try {
    launch({{"OMPI_COMM_WORLD_SIZE", "two"}, {"OMPI_COMM_WORLD_RANK", "0"}});
    FAIL() << "no error";
  } catch (const aji::Error& e) {
    EXPECT_NE(std::string(e.what()).find("OMPI_COMM_WORLD_SIZE"), std::string::npos) << e.what();
  }
  EXPECT_THROW(launch({{"OMPI_COMM_WORLD_SIZE", "0"}, {"OMPI_COMM_WORLD_RANK", "0"}}), aji::Error);
  EXPECT_THROW(launch({{"OMPI_COMM_WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_RANK", "2"}}), aji::Error);
  EXPECT_THROW(launch({{"SLURM_STEP_NUM_TASKS", "2"}, {"SLURM_PROCID", "-1"}}), aji::Error);
}

TEST(DistSingleProcess, CollectivesLeaveTheDataAsItIs) {
  aji::dist::SingleProcess c;
  EXPECT_EQ(c.rank(), 0);
  EXPECT_EQ(c.size(), 1);
  std::vector<float> g = {1.5f, -2.0f, 3.25f, 1e-30f};
  const std::vector<float> before = g;
  c.allreduce_mean(g.data(), g.size());  // the mean over one rank is the value itself
  EXPECT_EQ(g, before);
  double d[2] = {7.0, -1.0};
  c.allreduce_sum(d, 2);
  EXPECT_EQ(d[0], 7.0);
  EXPECT_EQ(d[1], -1.0);
  c.broadcast(g.data(), g.size(), 0);
  EXPECT_EQ(g, before);
  std::string s = "settings";
  c.broadcast(s, 0);
  EXPECT_EQ(s, "settings");
  c.barrier();
  EXPECT_EQ(c.comm_seconds(), 0.0);
}

TEST(DistSingleProcess, WorldWithoutALauncherIsOneProcess) {
  if (aji::dist::launch_size() > 1) GTEST_SKIP() << "this test process itself runs under a launcher";
  EXPECT_EQ(aji::dist::world().size(), 1);
  EXPECT_EQ(aji::dist::world().rank(), 0);
  EXPECT_TRUE(aji::dist::is_root());
  aji::dist::abort_all_if_distributed("not distributed: returns");  // must return
}

namespace {

// Documents (BOS then ids), several shards: the same layout as shards_test's loader tests.
void make_data_dir(const fs::path& dir, int shards) {
  DataManifest m;
  m.vocab_size = 1024;
  m.bos_id = 0;
  uint32_t id = 0;
  for (int s = 0; s < shards; ++s) {
    std::vector<uint32_t> t;
    for (int len : {7, 12, 3, 30, 5, 6, 20, 9}) {
      t.push_back(0);
      for (int i = 0; i < len; ++i) t.push_back(id++ % 1000 + 1);
    }
    const std::string name = "train-" + std::to_string(s) + ".ajitok";
    write_shard(dir / name, t.data(), t.size(), m.vocab_size, m.bos_id);
    m.train.push_back({name, t.size(), 0, 0});
  }
  m.save(dir);
}

}  // namespace

TEST(DistLoaderShard, RanksReadTheSingleProcessBatchesBetweenThem) {
  TempDir dir;
  make_data_dir(dir.path(), 4);
  const int B = 3, T = 8;
  for (int N : {2, 3}) {
    DataLoader single(dir.path(), "train", B, T, 11, /*shuffle=*/true);
    std::vector<DataLoader> ranks;
    for (int r = 0; r < N; ++r) {
      ranks.emplace_back(dir.path(), "train", B, T, 11, true);
      ranks.back().set_shard(r, N);
    }
    const uint64_t epoch_windows = single.windows_per_epoch();
    std::vector<int32_t> in(B * T), tgt(B * T), rin(B * T), rtgt(B * T);
    const int rounds = static_cast<int>(2 * epoch_windows / (B * N)) + 2;  // crosses epoch boundaries
    for (int round = 0; round < rounds; ++round) {
      for (int r = 0; r < N; ++r) {
        // Global batch round*N + r of one process is rank r's batch `round`.
        single.next_batch(in.data(), tgt.data());
        ranks[r].next_batch(rin.data(), rtgt.data());
        ASSERT_EQ(rin, in) << "N " << N << " round " << round << " rank " << r;
        ASSERT_EQ(rtgt, tgt);
      }
      // After each round every rank's cursor is the single process's: a checkpoint of any
      // rank resumes on any number of ranks.
      for (int r = 0; r < N; ++r) EXPECT_EQ(ranks[r].cursor().to_json(), single.cursor().to_json());
    }
    EXPECT_GE(single.epoch(), 1u);
  }
}

TEST(DistLoaderShard, AnEpochIsCoveredOnceOverTheRanks) {
  TempDir dir;
  make_data_dir(dir.path(), 2);
  const int T = 8, N = 2;
  DataLoader probe(dir.path(), "train", 1, T, 3, true);
  const uint64_t W = probe.windows_per_epoch();
  std::multiset<std::vector<int32_t>> expect, got;
  std::vector<int32_t> in(T), tgt(T);
  for (uint64_t w = 0; w < W; ++w) {
    probe.next_batch(in.data(), tgt.data());
    expect.insert(in);
  }
  ASSERT_EQ(W % N, 0u) << "pick data whose window count the ranks divide";
  for (int r = 0; r < N; ++r) {
    DataLoader l(dir.path(), "train", 1, T, 3, true);
    l.set_shard(r, N);
    for (uint64_t w = 0; w < W / N; ++w) {
      l.next_batch(in.data(), tgt.data());
      got.insert(in);
    }
    EXPECT_EQ(l.epoch(), 0u);
  }
  EXPECT_EQ(got, expect);
  EXPECT_THROW(probe.set_shard(2, 2), aji::Error);
  EXPECT_THROW(probe.set_shard(-1, 2), aji::Error);
  EXPECT_THROW(probe.set_shard(0, 0), aji::Error);
}

// The Slurm batch script of docs/distributed.md (the README's "scale out" points there) is
// valid bash, with its #SBATCH lines and the srun line a user copies.
TEST(DistDocs, SlurmExampleIsValidBash) {
  const std::string doc = aji::read_file(aji::test::source_path("docs/distributed.md"));
  const size_t at = doc.find("#SBATCH");
  ASSERT_NE(at, std::string::npos);
  const size_t begin = doc.rfind("```bash\n", at), end = doc.find("```", at);
  ASSERT_NE(begin, std::string::npos);
  ASSERT_NE(end, std::string::npos);
  const std::string script = doc.substr(begin + 8, end - begin - 8);
  EXPECT_EQ(script.rfind("#!/bin/bash\n", 0), 0u) << script;
  EXPECT_NE(script.find("srun"), std::string::npos) << script;
  EXPECT_NE(script.find("#SBATCH --nodes="), std::string::npos) << script;
  aji::test::TempDir dir;
  const auto path = dir.path() / "job.sbatch";
  aji::write_file_atomic(path, script);
  std::string out;
  EXPECT_EQ(aji::test::run_command("bash -n " + path.string() + " 2>&1", &out), 0) << out << script;
}
