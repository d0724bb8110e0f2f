#!/usr/bin/env bash
# Long fuzzing run (make fuzz): every harness for FUZZ_SECONDS (default 120), one after
# the other, with a persistent working corpus in BUILD/fuzz/corpus/<harness>/ (grows
# across runs) plus the committed seeds. Prints a table of the inputs executed per harness
# (also written to FUZZ_SUMMARY); exits 1 if any harness found a crash,
# leak or timeout (the input is saved as BUILD/fuzz/crash-<harness>-*).
#   usage: fuzz/run_long.sh [BUILD_DIR] [SECONDS_PER_HARNESS] [HARNESS...]
# Settings (environment):
#   FUZZ_RUNS=N          also stop a harness after N inputs (e.g. 1000000), whichever of
#                        time and count comes first (single-process mode only)
#   FUZZ_JOBS=N          N fuzzing processes per harness (libFuzzer -fork=N, sharing one
#                        corpus); default 1. Worth it only on idle cores.
#   FUZZ_MAX_LEN=BYTES   longest input for every harness (default: per harness, below)
#   FUZZ_MAX_LEN_<h>=B   longest input for harness <h> only, e.g. FUZZ_MAX_LEN_html=65536
#   FUZZ_NICE=N          run the fuzzers under `nice -n N` (default 0)
#   FUZZ_TIMEOUT=S       libFuzzer's per-input limit in wall seconds (default 10). libFuzzer
#                        times an input by the clock, so a fuzzer at nice 19 beside a build
#                        can be starved past 10 s on an ordinary input: raise it for such runs
#   FUZZ_SUMMARY=FILE    where the table goes (default BUILD/fuzz/long-summary.txt)
set -uo pipefail
BUILD=${1:-build-fuzz}
SECONDS_EACH=${2:-${FUZZ_SECONDS:-120}}
shift 2 2>/dev/null || shift $#
SRC=$(cd "$(dirname "$0")" && pwd)
HARNESSES=("$@")
if [ ${#HARNESSES[@]} -eq 0 ]; then
  for f in "$SRC"/fuzz_*.cpp; do h=$(basename "$f" .cpp); HARNESSES+=("${h#fuzz_}"); done
fi
JOBS=${FUZZ_JOBS:-1}
NICE=${FUZZ_NICE:-0}
TIMEOUT=${FUZZ_TIMEOUT:-10}

# Longest input per harness. The time per input grows with its length, and libFuzzer grows
# inputs up to this limit. html extraction under ASan costs about 1.5 ms per input at 4 KB,
# 3.3 ms at 16 KB and 7 ms at 64 KB, so its long run keeps inputs to 16 KB (seeds longer
# than that are cut; the make-test run reads them whole).
default_max_len() {
  case "$1" in
    html) echo 16384 ;;
    *) echo 65536 ;;
  esac
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$SRC/lsan.supp}  # see lsan.supp
failed=0
summary=${FUZZ_SUMMARY:-$BUILD/fuzz/long-summary.txt}
mkdir -p "$BUILD/fuzz"
# cpu_s: CPU seconds the harness used (user + sys, all its processes); exec/cpu_s is the
# rate on one idle core, which does not depend on what else the machine was doing.
header=$(printf '%-18s %12s %8s %8s %8s %11s %8s %8s  %s' harness executed seconds exec/s cpu_s exec/cpu_s max_len corpus result)
echo "$header" | tee "$summary"
total=0
for h in "${HARNESSES[@]}"; do
  bin="$BUILD/fuzz/fuzz_$h"
  work="$BUILD/fuzz/corpus/$h"
  log="$BUILD/fuzz/long-$h.log"
  mkdir -p "$work"
  extra=()  # seed folders read in place (see fuzz/CMakeLists.txt)
  if [ "$h" = html ]; then extra=("$SRC/../tests/fixtures/data/extract"); fi
  var="FUZZ_MAX_LEN_$h"
  max_len=${!var:-${FUZZ_MAX_LEN:-$(default_max_len "$h")}}
  mode=()
  if [ "$JOBS" -gt 1 ]; then mode=(-fork="$JOBS"); elif [ -n "${FUZZ_RUNS:-}" ]; then mode=(-runs="$FUZZ_RUNS"); fi
  start=$(date +%s)
  TIMEFORMAT='%U %S'
  { time nice -n "$NICE" "$bin" "${mode[@]}" -max_total_time="$SECONDS_EACH" -timeout="$TIMEOUT" -rss_limit_mb=2048 \
      -max_len="$max_len" -print_final_stats=1 -artifact_prefix="$BUILD/fuzz/crash-$h-" \
      "$work" "$SRC/corpus/$h" "${extra[@]}" >"$log" 2>&1; } 2>"$log.cpu"
  rc=$?
  secs=$(($(date +%s) - start))
  read -r user sys <"$log.cpu"
  cpu=$(awk -v u="${user:-0}" -v s="${sys:-0}" 'BEGIN { printf "%.1f", u + s }')
  if [ "$JOBS" -gt 1 ]; then  # fork mode: the last "#N: cov: ..." line counts every job's runs
    execs=$(grep -a -o '^#[0-9]*: cov' "$log" | grep -o '[0-9]*' | tail -1)
  else
    execs=$(grep -a -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  fi
  execs=${execs:-0}
  total=$((total + execs))
  rate=$((secs > 0 ? execs / secs : 0))
  cpu_rate=$(awk -v n="$execs" -v c="$cpu" 'BEGIN { printf "%.0f", (c > 0 ? n / c : 0) }')
  units=$(ls "$work" | wc -l)
  result=ok
  if [ $rc -ne 0 ]; then result="FAILED (rc $rc, see $log)"; failed=1; fi
  printf '%-18s %12s %8s %8s %8s %11s %8s %8s  %s\n' "$h" "$execs" "$secs" "$rate" "$cpu" "$cpu_rate" "$max_len" "$units" \
    "$result" | tee -a "$summary"
done
printf '%-18s %12s\n' total "$total" | tee -a "$summary"
exit $failed
