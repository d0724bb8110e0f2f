// When a kernel's loop is worth an OpenMP team: below this many elements of work a team
// costs more than it saves (a wake-up of the other threads is microseconds; on a busy
// machine much more). One threshold for every kernel in this folder.
#pragma once

#include <cstdint>

namespace aji::kernels::cpu {

inline bool parallel_worth(int64_t work) { return work >= 32768; }

}  // namespace aji::kernels::cpu
