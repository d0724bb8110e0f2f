// `aji pretrain --device`: a device that is not there is refused before any work, with what is
// missing and the fix, and nothing is written; an unknown name says the accepted forms.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "kernels/backend_parity.h"
#include "test_util.h"

namespace {

TEST(PretrainDevice, AMissingDeviceIsRefusedBeforeAnyWork) {
  std::string reason;
  if (aji::test::cuda_backend(&reason)) GTEST_SKIP() << "a CUDA device is here: the refusal cannot be shown";
  aji::test::TempDir dir;
  const auto out_dir = dir.path() / "run";
  std::string out;
  const int rc = aji::test::run_command(std::string(AJI_BINARY) + " pretrain --config tiny --device cuda --data " +
                                            (dir.path() / "no-data").string() + " --out " + out_dir.string() + " 2>&1",
                                        &out);
  EXPECT_NE(rc, 0) << out;
  EXPECT_NE(out.find("device cuda:0 is not available"), std::string::npos) << out;
  EXPECT_NE(out.find("--device cpu"), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(out_dir)) << "a refused run wrote " << out_dir;

  const int rc2 = aji::test::run_command(std::string(AJI_BINARY) + " pretrain --config tiny --device tpu --data " +
                                             (dir.path() / "no-data").string() + " --out " + out_dir.string() +
                                             " 2>&1",
                                         &out);
  EXPECT_NE(rc2, 0);
  EXPECT_NE(out.find("unknown device 'tpu'"), std::string::npos) << out;
  EXPECT_NE(out.find("cuda:N"), std::string::npos) << out;
}

}  // namespace
