// `aji generate` from the command line: the prompt from --prompt, --prompt-file or stdin,
// --stop strings, the printed random seed, the notes on why it stopped, and sampling
// options checked before anything runs.
#include <gtest/gtest.h>

#include <fstream>

#include "aji/base/io.h"
#include "byte_model.h"
#include "test_util.h"

namespace {

struct CliRun {
  int rc;
  std::string out, err;
};

CliRun aji_run(const aji::test::TempDir& tmp, const std::string& args, const std::string& stdin_text = "") {
  const auto in = tmp.path() / "stdin.txt";
  const auto err = tmp.path() / "stderr.txt";
  { std::ofstream(in, std::ios::binary) << stdin_text; }
  CliRun r;
  r.rc = aji::test::run_command(std::string(AJI_BINARY) + " " + args + " < " + in.string() + " 2> " + err.string(),
                                &r.out);
  r.err = aji::read_file(err);
  return r;
}

}  // namespace

// Before: `--temperature nan` printed nothing and exited 0; other values were not checked.
TEST(GenerateCli, BadSamplingOptionsFailBeforeLoadingWithTheFlagNamed) {
  aji::test::TempDir tmp;
  const std::string model = " --model " + tmp.path().string() + "/does-not-exist --prompt hi ";
  for (std::string bad : {"--temperature nan", "--temperature -1", "--top-p 0", "--top-p 1.5", "--min-p 2",
                          "--repetition-penalty 0", "--top-k -3", "--max-tokens -1", "--repeat-window -2"}) {
    SCOPED_TRACE(bad);
    CliRun r = aji_run(tmp, "generate" + model + bad);
    EXPECT_NE(r.rc, 0);
    EXPECT_EQ(r.out, "");
    EXPECT_NE(r.err.find(bad.substr(0, bad.find(' '))), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("does-not-exist"), std::string::npos) << r.err;  // checked before the model
    CliRun c = aji_run(tmp, "chat" + model + bad);
    EXPECT_NE(c.rc, 0);
    EXPECT_NE(c.err.find(bad.substr(0, bad.find(' '))), std::string::npos) << c.err;
  }
}

// --device on the generating commands: a device that is not there, and weight or KV-cache types
// the device does not run yet, are refused before the model loads (the model path is bad on
// purpose: it must not be what is reported).
TEST(GenerateCli, ADeviceIsCheckedBeforeTheModelLoads) {
  aji::test::TempDir tmp;
  const std::string model = " --model " + tmp.path().string() + "/does-not-exist ";
  for (const std::string cmd : {"generate --prompt hi", "chat --prompt hi", "score --input x.txt"}) {
    SCOPED_TRACE(cmd);
    CliRun r = aji_run(tmp, cmd + model + "--device tpu");
    EXPECT_NE(r.rc, 0);
    EXPECT_NE(r.err.find("unknown device 'tpu'"), std::string::npos) << r.err;
    r = aji_run(tmp, cmd + model + "--device cuda");
    if (r.rc == 0 || r.err.find("does-not-exist") != std::string::npos) continue;  // a GPU is here
    EXPECT_NE(r.err.find("device cuda:0 is not available"), std::string::npos) << r.err;
  }
  for (const std::string flag : {"--weights q8_0", "--kv-cache bf16"}) {
    CliRun r = aji_run(tmp, "generate --prompt hi" + model + "--device cuda " + flag);
    EXPECT_NE(r.rc, 0);
    EXPECT_NE(r.err.find(flag + " is not built for --device cuda"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("fp32"), std::string::npos) << r.err;
  }
}

TEST(GenerateCli, PromptFromFileOrStdinSeedPrintedStopStringsAndNotes) {
  aji::test::TempDir tmp;
  const auto dir = aji::test::make_byte_model_dir(tmp.path(), "m", 24, 5);
  const std::string base = "generate --model " + dir.string() + " --temperature 0 --max-tokens 12 ";
  CliRun a = aji_run(tmp, base + "--prompt 'The cat'");
  ASSERT_EQ(a.rc, 0) << a.err;
  ASSERT_EQ(a.out.rfind("The cat", 0), 0u) << a.out;
  EXPECT_EQ(a.err.find("seed"), std::string::npos) << a.err;  // greedy: the seed does not matter
  // The same text from a file and from stdin.
  { std::ofstream(tmp.path() / "p.txt") << "The cat"; }
  CliRun f = aji_run(tmp, base + "--prompt-file " + (tmp.path() / "p.txt").string());
  EXPECT_EQ(f.rc, 0) << f.err;
  EXPECT_EQ(f.out, a.out);
  CliRun s = aji_run(tmp, base, "The cat");
  EXPECT_EQ(s.rc, 0) << s.err;
  EXPECT_EQ(s.out, a.out);
  CliRun both = aji_run(tmp, base + "--prompt x --prompt-file " + (tmp.path() / "p.txt").string());
  EXPECT_NE(both.rc, 0);

  // --stop: the output ends right before the first occurrence of the stop string.
  const std::string gen = a.out.substr(7, a.out.size() - 8);  // without the prompt and the final newline
  size_t k = 1;
  while (k < gen.size() && !std::isalnum(static_cast<unsigned char>(gen[k]))) ++k;
  ASSERT_LT(k, gen.size()) << "no letter or digit to stop at in: " << gen;
  const std::string stop(1, gen[k]);
  CliRun st = aji_run(tmp, base + "--prompt 'The cat' --stop " + stop);
  EXPECT_EQ(st.rc, 0) << st.err;
  EXPECT_EQ(st.out, "The cat" + gen.substr(0, gen.find(stop)) + "\n");
  EXPECT_NE(st.err.find("[stopped at --stop \"" + stop + "\""), std::string::npos) << st.err;

  // The context (24 tokens) ends before --max-tokens: a note says so.
  CliRun ctx = aji_run(tmp, "generate --model " + dir.string() + " --temperature 0 --max-tokens 100 --prompt 'The cat'");
  EXPECT_EQ(ctx.rc, 0) << ctx.err;
  EXPECT_NE(ctx.err.find("context limit of 24 tokens"), std::string::npos) << ctx.err;
  EXPECT_EQ(a.err.find("context limit"), std::string::npos) << a.err;

  // No --seed: a random one, printed; --seed with it repeats the sample.
  const std::string sampled = "generate --model " + dir.string() + " --temperature 1.5 --max-tokens 10 --prompt hi ";
  CliRun r1 = aji_run(tmp, sampled);
  ASSERT_EQ(r1.rc, 0) << r1.err;
  // The seed: the digits after "seed " (std::regex draws GCC 12 -Wmaybe-uninitialized noise).
  const size_t at = r1.err.find("seed ");
  ASSERT_NE(at, std::string::npos) << r1.err;
  const size_t digits = at + 5, end = r1.err.find_first_not_of("0123456789", digits);
  const std::string seed = r1.err.substr(digits, end == std::string::npos ? std::string::npos : end - digits);
  ASSERT_FALSE(seed.empty()) << r1.err;
  CliRun r2 = aji_run(tmp, sampled + "--seed " + seed);
  EXPECT_EQ(r2.out, r1.out);
  EXPECT_EQ(r2.err.find("seed"), std::string::npos) << r2.err;  // a given seed is not announced
}
