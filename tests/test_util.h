// Helpers shared by the test suites.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <sys/wait.h>
#include <unistd.h>
#include <filesystem>
#include <string>

#include "aji/base/rng.h"

namespace aji::test {

// A fresh directory under the system temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    static uint64_t counter = 0;
    uint64_t seed = reinterpret_cast<uintptr_t>(this) ^ (++counter * 0x9E3779B97F4A7C15ULL);
    path_ = std::filesystem::temp_directory_path() /
            ("aji-test-" + std::to_string(::getpid()) + "-" + std::to_string(splitmix64(seed) % 1000000007));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Path of a file in the source tree (tests ship their fixtures in the repo).
inline std::filesystem::path source_path(const std::string& rel) { return std::filesystem::path(AJI_SOURCE_DIR) / rel; }

// Runs a shell command, returns its exit status and captures stdout.
inline int run_command(const std::string& cmd, std::string* out) {
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  size_t n;
  if (out) out->clear();
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0)
    if (out) out->append(buf, n);
  int status = ::pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace aji::test
