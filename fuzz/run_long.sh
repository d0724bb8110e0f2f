#!/usr/bin/env bash
# Long fuzzing run (make fuzz): every harness for FUZZ_SECONDS (default 120), one after
# the other, with a persistent working corpus in BUILD/corpus/<harness>/ (grows across
# runs) plus the committed seeds. Prints the inputs executed per harness; exits 1 if
# any harness found a crash, leak or timeout (the input is saved as BUILD/crash-*).
#   usage: fuzz/run_long.sh [BUILD_DIR] [SECONDS_PER_HARNESS] [HARNESS...]
set -uo pipefail
BUILD=${1:-build-fuzz}
SECONDS_EACH=${2:-${FUZZ_SECONDS:-120}}
shift 2 2>/dev/null || shift $#
SRC=$(cd "$(dirname "$0")" && pwd)
HARNESSES=("$@")
if [ ${#HARNESSES[@]} -eq 0 ]; then
  for f in "$SRC"/fuzz_*.cpp; do h=$(basename "$f" .cpp); HARNESSES+=("${h#fuzz_}"); done
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$SRC/lsan.supp}  # see lsan.supp
failed=0
printf '%-18s %12s %8s %10s %s\n' harness executed exec/s corpus result
for h in "${HARNESSES[@]}"; do
  bin="$BUILD/fuzz/fuzz_$h"
  work="$BUILD/fuzz/corpus/$h"
  log="$BUILD/fuzz/long-$h.log"
  mkdir -p "$work"
  extra=()  # seed folders read in place (see fuzz/CMakeLists.txt)
  if [ "$h" = html ]; then extra=("$SRC/../tests/fixtures/data/extract"); fi
  "$bin" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="$BUILD/fuzz/crash-$h-" "$work" "$SRC/corpus/$h" "${extra[@]}" >"$log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  units=$(ls "$work" | wc -l)
  result=ok
  if [ $rc -ne 0 ]; then result="FAILED (rc $rc, see $log)"; failed=1; fi
  printf '%-18s %12s %8s %10s %s\n' "$h" "${execs:-?}" "${rate:-?}" "$units" "$result"
done
exit $failed
