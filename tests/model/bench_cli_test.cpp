// `aji bench train-step` / `aji bench generate` run end to end on a small config and
// report consistent numbers (the benchmark scripts parse this JSON).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "aji/base/atomic_file.h"
#include "test_util.h"

namespace {

const char* kSmall =
    R"({"arch": "llama", "vocab_size": 300, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "d_model": 32, "d_ff": 64, "max_seq_len": 48})";

TEST(BenchCli, TrainStepReportsFloorBreakdownAndMemory) {
  aji::test::TempDir dir;
  auto cfg = dir.path() / "small.json";
  aji::write_file_atomic(cfg, kSmall);
  std::string out;
  ASSERT_EQ(aji::test::run_command(std::string(AJI_BINARY) + " --threads 1 bench train-step --config " + cfg.string() +
                                       " --batch 2 --seq 16 --steps 2 --json",
                                   &out),
            0)
      << out;
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["batch"], 2);
  EXPECT_EQ(j["seq"], 16);
  EXPECT_GT(j["tokens_per_second"].get<double>(), 0.0);
  EXPECT_GT(j["gemm_floor_seconds"].get<double>(), 0.0);
  // per layer: qkv, o, fc, proj x (forward, dX, dW) = 12, plus the LM head's 3
  EXPECT_EQ(j["gemm_count"], 2 * 12 + 3);
  EXPECT_GT(j["peak_rss_mib"].get<double>(), 1.0);
  EXPECT_TRUE(j["breakdown_cpu_seconds"].contains("attention bwd"));
  // every product of the timed steps was timed: their sum is positive and no more than the steps
  EXPECT_GT(j["gemm_in_step_seconds"].get<double>(), 0.0);
  EXPECT_LE(j["gemm_in_step_seconds"].get<double>(), j["step_seconds_median"].get<double>());
  // random tokens over 300 ids: the loss starts near log(300) = 5.70
  EXPECT_NEAR(j["loss"].get<double>(), 5.70, 0.3);

  // the text report with --gemm-detail lists the slowest products, 12 at most
  ASSERT_EQ(aji::test::run_command(std::string(AJI_BINARY) + " --threads 1 bench train-step --config " + cfg.string() +
                                       " --batch 2 --seq 16 --steps 2 --gemm-detail",
                                   &out),
            0)
      << out;
  EXPECT_THAT(out, testing::HasSubstr("the same matmuls inside the step"));
  EXPECT_THAT(out, testing::HasSubstr("matmuls slowest in the step against alone"));
  size_t listed = 0;
  for (size_t at = out.find(" in step "); at != std::string::npos; at = out.find(" in step ", at + 1)) ++listed;
  EXPECT_EQ(listed, 12u);
}

// --precision bf16: the JSON says which precision ran (fp32 where the CPU has no bf16
// products), the fp32 GEMM floor is not replayed against bf16 products, the MFU is against the
// matching measured peak (never above 100 %), and the loss is the fp32 one within bf16's error.
TEST(BenchCli, TrainStepInBf16) {
  aji::test::TempDir dir;
  auto cfg = dir.path() / "small.json";
  aji::write_file_atomic(cfg, kSmall);
  std::string out;
  const std::string cmd = std::string(AJI_BINARY) + " --threads 1 bench train-step --config " + cfg.string() +
                          " --batch 2 --seq 16 --steps 2 --json --precision ";
  ASSERT_EQ(aji::test::run_command(cmd + "fp32", &out), 0) << out;
  const auto f = nlohmann::json::parse(out);
  ASSERT_EQ(aji::test::run_command(cmd + "bf16", &out), 0) << out;
  const auto b = nlohmann::json::parse(out);
  EXPECT_EQ(f["precision"], "fp32");
  const bool bf16 = b["precision"] == "bf16";
  EXPECT_TRUE(bf16 || b["precision"] == "fp32") << b["precision"];
  if (bf16) {
    EXPECT_EQ(b["gemm_floor_seconds"].get<double>(), 0.0);
    EXPECT_GT(b["peak_gflops_measured"].get<double>(), f["peak_gflops_measured"].get<double>());
    EXPECT_TRUE(b["breakdown_cpu_seconds"].contains("bf16 gemm+adamw+zero+copies"));
  }
  EXPECT_GT(b["mfu_measured"].get<double>(), 0.0);
  EXPECT_LE(b["mfu_measured"].get<double>(), 1.0);
  EXPECT_NEAR(b["loss"].get<double>(), f["loss"].get<double>(), 0.05);
  EXPECT_NE(aji::test::run_command(cmd + "f16 2>&1", &out), 0);
  EXPECT_THAT(out, testing::HasSubstr("fp32"));
}

TEST(BenchCli, GenerateAndBadArguments) {
  aji::test::TempDir dir;
  auto cfg = dir.path() / "small.json";
  aji::write_file_atomic(cfg, kSmall);
  std::string out;
  ASSERT_EQ(aji::test::run_command(std::string(AJI_BINARY) + " --threads 1 bench generate --config " + cfg.string() +
                                       " --batch 3 --prompt-len 10 --gen 5 --json",
                                   &out),
            0)
      << out;
  auto j = nlohmann::json::parse(out);
  EXPECT_GT(j["gen_tokens_per_second"].get<double>(), 0.0);
  EXPECT_EQ(j["kv_cache"], "fp32");
  ASSERT_EQ(aji::test::run_command(std::string(AJI_BINARY) + " --threads 1 bench generate --config " + cfg.string() +
                                       " --batch 3 --prompt-len 10 --gen 5 --json --weights bf16 --kv-cache bf16",
                                   &out),
            0)
      << out;
  j = nlohmann::json::parse(out);
  EXPECT_EQ(j["kv_cache"], "bf16");
  EXPECT_GT(j["gen_tokens_per_second"].get<double>(), 0.0);
  EXPECT_NE(aji::test::run_command(std::string(AJI_BINARY) + " bench generate --config " + cfg.string() +
                                       " --kv-cache f16 2>&1",
                                   &out),
            0);
  EXPECT_THAT(out, testing::HasSubstr("--kv-cache"));
  EXPECT_THAT(out, testing::HasSubstr("bf16"));  // the choices are named
  EXPECT_EQ(aji::test::run_command(std::string(AJI_BINARY) + " bench generate --config " + cfg.string() +
                                       " --prompt-len 40 --gen 20 2>&1",
                                   &out),
            1);
  EXPECT_THAT(out, testing::HasSubstr("exceeds the context"));
  EXPECT_EQ(aji::test::run_command(std::string(AJI_BINARY) + " bench train-step --config no-such-preset 2>&1", &out), 1);
  EXPECT_THAT(out, testing::HasSubstr("model config not found"));
}

}  // namespace

// train-step --device: an unknown name says the forms; a device that is not here (no GPU on
// this machine) is named with what is missing (a machine with a GPU runs it: scripts/device_check.sh).
TEST(BenchCli, TrainStepOnAMissingDeviceSaysWhatIsMissing) {
  aji::test::TempDir dir;
  auto cfg = dir.path() / "small.json";
  aji::write_file_atomic(cfg, kSmall);
  std::string out;
  EXPECT_NE(aji::test::run_command(std::string(AJI_BINARY) + " bench train-step --config " + cfg.string() +
                                       " --device tpu 2>&1",
                                   &out),
            0);
  EXPECT_THAT(out, testing::HasSubstr("unknown device 'tpu'"));
  const int rc = aji::test::run_command(std::string(AJI_BINARY) + " bench train-step --config " + cfg.string() +
                                            " --batch 2 --seq 16 --steps 2 --device cuda 2>&1",
                                        &out);
  if (rc == 0) GTEST_SKIP() << "a CUDA device is here: " << out;
  EXPECT_THAT(out, testing::HasSubstr("device cuda:0 is not available"));
}

// train-step on a device (cpu:separate here: the device path with the CPU's kernels) reports
// MFU against the device's GEMM ceiling measured in the same run, and against a nominal peak
// when given; neither is absurd.
TEST(BenchCli, TrainStepOnADeviceReportsMfuAgainstItsMeasuredGemmCeiling) {
  aji::test::TempDir dir;
  auto cfg = dir.path() / "small.json";
  aji::write_file_atomic(cfg, kSmall);
  std::string out;
  ASSERT_EQ(aji::test::run_command(std::string(AJI_BINARY) + " --threads 1 bench train-step --config " + cfg.string() +
                                       " --batch 2 --seq 32 --steps 2 --device cpu:separate --precision fp32"
                                       " --device-peak-tflops 1 --json 2>&1",
                                   &out),
            0)
      << out;
  const auto j = nlohmann::json::parse(out.substr(out.find('{')));
  EXPECT_GT(j.at("gemm_ceiling_gflops").get<double>(), 0.0);
  const double mfu = j.at("mfu_vs_gemm_ceiling").get<double>();
  EXPECT_GT(mfu, 0.0);
  EXPECT_LE(mfu, 1.0) << "an MFU above 100% is a bug";
  EXPECT_GT(j.at("mfu_vs_device_peak").get<double>(), 0.0);
  EXPECT_EQ(j.at("device_peak_tflops").get<double>(), 1.0);
  ASSERT_EQ(aji::test::run_command(std::string(AJI_BINARY) + " --threads 1 bench train-step --config " + cfg.string() +
                                       " --batch 2 --seq 32 --steps 1 --device cpu:separate 2>&1",
                                   &out),
            0)
      << out;
  EXPECT_THAT(out, testing::HasSubstr("of this device's GEMM ceiling"));
}
