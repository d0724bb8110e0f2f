// Shared by the mpirun tests (tests/train and tests/align): why a run is skipped, and the
// commands that start aji under mpirun or as one process (1 thread per rank).
#pragma once

#include <cstdlib>
#include <string>

#include "aji/base/dist.h"

namespace aji::test {

inline std::string mpirun_skip_reason() {
#if defined(__SANITIZE_ADDRESS__)
  return "sanitizer build: OpenMPI's allocations trip LeakSanitizer";
#endif
  if (!aji::dist::built_with_mpi()) return "this aji was built without MPI (cmake -DAJI_MPI=ON, libopenmpi-dev)";
  if (std::system("command -v mpirun > /dev/null 2>&1") != 0) return "mpirun is not installed (openmpi-bin)";
  return "";
}

inline std::string mpirun_command(int np, int timeout_s) {
  return "timeout " + std::to_string(timeout_s) +
         " mpirun --allow-run-as-root --oversubscribe --bind-to none -np " + std::to_string(np) +
         " -x AJI_THREADS=1 " + AJI_BINARY;
}

inline std::string single_process_command() { return std::string("AJI_THREADS=1 ") + AJI_BINARY; }

}  // namespace aji::test
