// Shared pieces of the libFuzzer harnesses (fuzz/README.md).
//
// Most aji readers take a path, so a harness writes the input to a file in a private
// temp directory and calls the reader exactly as the program does. The contract checked
// on every input: the reader returns normally or throws aji::Error that names the file
// (file() set, or the path in the message). Any other exception escapes
// LLVMFuzzerTestOneInput, std::terminate aborts, and libFuzzer records the input as a
// crash; ASan/UBSan findings abort the same way.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <unistd.h>

#include "aji/base/error.h"

namespace aji::fuzz {

// A per-process scratch directory (removed at exit), so parallel fuzzers never share files.
// In $TMPDIR if set, else in /dev/shm when it is there (memory: writing the input file for
// every run costs a few microseconds there, several times that on a disk's /tmp), else /tmp.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string base = tmp && *tmp ? tmp : "/tmp";
    if (!(tmp && *tmp) && access("/dev/shm", W_OK | X_OK) == 0) base = "/dev/shm";
    std::string tmpl = base + "/aji-fuzz-XXXXXX";
    if (!mkdtemp(tmpl.data())) {
      std::perror("mkdtemp");
      std::abort();
    }
    static std::filesystem::path keep = tmpl;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(keep, ec);
    });
    return std::filesystem::path(tmpl);
  }();
  return dir;
}

// Writes bytes to scratch_dir()/name and returns the path.
inline std::filesystem::path write_input(const std::string& name, std::string_view bytes) {
  std::filesystem::path p = scratch_dir() / name;
  std::FILE* f = std::fopen(p.c_str(), "wb");
  if (!f || (bytes.size() && std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) || std::fclose(f) != 0) {
    std::perror("write fuzz input");
    std::abort();
  }
  return p;
}

// An aji::Error from reading `path` must say which file: a finding otherwise.
inline void require_names_file(const aji::Error& e, const std::filesystem::path& path) {
  const std::string file = path.string();
  const std::string name = path.filename().string();
  if (e.file().find(name) != std::string::npos) return;
  if (std::string_view(e.what()).find(name) != std::string_view::npos) return;
  if (e.context_text().find(name) != std::string::npos) return;
  std::fprintf(stderr, "aji::Error that does not name the file %s:\n%s\n", file.c_str(), e.describe().c_str());
  std::abort();
}

// Runs f(); an aji::Error is an accepted outcome (checked to name path), anything else
// propagates and is a finding.
template <class F>
void run_reader(const std::filesystem::path& path, F&& f) {
  try {
    f();
  } catch (const aji::Error& e) {
    require_names_file(e, path);
  }
}

// Splits the input at the first "\n" into a small option line and the payload, so one
// harness can drive several formats / settings from the input itself.
inline std::pair<std::string_view, std::string_view> split_first_line(const uint8_t* data, size_t size,
                                                                     size_t max_head = 64) {
  std::string_view all(reinterpret_cast<const char*>(data), size);
  size_t nl = all.substr(0, max_head).find('\n');
  if (nl == std::string_view::npos) return {std::string_view(), all};
  return {all.substr(0, nl), all.substr(nl + 1)};
}

}  // namespace aji::fuzz
