// `aji info`: what this build is and what it can use — handy in bug reports.
#include <cstdio>

#include "aji/base/threads.h"
#include "aji/cli/command.h"

namespace {
aji::cli::CommandRegistrar reg(1000, [](CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Show the build, threads and CPU features aji will use");
  cmd->callback([] {
    std::printf("aji %s\n", AJI_VERSION);
    std::printf("threads: %d (hardware %d; set with --threads or AJI_THREADS)\n", aji::num_threads(),
                aji::hardware_threads());
#if defined(__AVX512F__)
    std::printf("isa: avx512\n");
#elif defined(__AVX2__)
    std::printf("isa: avx2+fma (x86-64-v3)\n");
#else
    std::printf("isa: baseline\n");
#endif
  });
});
}  // namespace
