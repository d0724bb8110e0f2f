// Test-only pause points, for kill tests that must interrupt a process at an exact place.
//
// With AJI_TEST_PAUSE_AT=<point>:<n> in the environment, the n-th call (1-based, counted
// over all threads) of pause_point("<point>") prints "aji: paused at <point>:<n>" to
// stderr and stops the process with SIGSTOP. The test sees the stop (waitpid with
// WUNTRACED) and sends SIGKILL, so the kill lands exactly there however fast the machine
// is. Without the variable (every normal run) a call costs one check of a static flag.
//
// Points: "atomic_commit" (AtomicFileWriter::commit: the temp file is complete and
// fsync'ed, not yet renamed), "data_doc" (`aji data run`: after each document is counted
// or written), "data_unit_outputs" (an input file's outputs are committed, its done-marker
// is not written yet), "tokenizer_count" (`aji tokenizer train`: after each batch of text
// is counted), "tokenizer_merge" (after each merge).
#pragma once

namespace aji {

void pause_point(const char* point);

}  // namespace aji
