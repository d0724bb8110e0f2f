#!/usr/bin/env bash
# Data parallelism on one machine, side by side in one run (docs/distributed.md):
#   - 2 ranks x 1 thread: the blocking gradient all-reduce (AJI_OVERLAP=0) against the
#     all-reduce overlapped with the backward pass (the default), and with ZeRO-1 (AJI_ZERO=1);
#   - 1 rank x 1 thread and 1 rank x 2 threads on the same global batch;
#   - peak RSS per rank (GNU time's %M) with and without ZeRO-1 for N = 1, 2, 4.
# Reports, per run, the medians over steps 2.. of tok/s, step wall time, rank 0's CPU seconds
# and rank 0's wall time in MPI calls (comm_s): what the overlap hides is the blocking run's
# comm_s minus the overlapped run's.
#
#   bench/dist_overlap.sh [CONFIG=configs/tiny.json] [STEPS=4]
# Needs build/aji (built with MPI), mpirun and python3; makes its data under $WORK
# (default /tmp/aji-dist-bench): an 8192-token BPE of tinyshakespeare, tokenized.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
AJI=${AJI:-$ROOT/build/aji}
CONFIG=${1:-$ROOT/configs/tiny.json}
STEPS=${2:-4}
WORK=${WORK:-/tmp/aji-dist-bench}
CORPUS=${CORPUS:-$ROOT/../shared/data/tinyshakespeare/input.txt}
MPIRUN="mpirun --allow-run-as-root --oversubscribe --bind-to none"
mkdir -p "$WORK"
if [ ! -f "$WORK/data/.done" ]; then
  "$AJI" -q tokenizer train --input "$CORPUS" --vocab-size 8192 --out "$WORK/tok.json"
  "$AJI" -q data tokenize --tokenizer "$WORK/tok.json" --input "$CORPUS" --out "$WORK/data"
  touch "$WORK/data/.done"
fi
COMMON="pretrain --config $CONFIG --data $WORK/data --steps $STEPS --seq-len 256 --eval-every 0 --sample-every 0
        --save-every 0 --force -q --total-batch-tokens 1024"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
# REUSE=1 keeps the runs already in $WORK (e.g. after adding one).
done_already() { [ "${REUSE:-0}" = 1 ] && [ -s "$WORK/$1/metrics.jsonl" ]; }
run() {  # name, launcher prefix
  local name=$1
  shift
  done_already "$name" && return
  /usr/bin/time -f "%M" -o "$WORK/$name.rss0" "$@" $COMMON --batch-size 2 --out "$WORK/$name" > "$WORK/$name.log" 2>&1 ||
    { echo "$name failed:"; tail -20 "$WORK/$name.log"; exit 1; }
}
run t11 env AJI_THREADS=1 "$AJI"
run t12 env AJI_THREADS=2 "$AJI"
run_mpi() {  # name, np, env... (micro-batches of 1024 / np tokens: one per rank and step)
  local name=$1 np=$2
  shift 2
  done_already "$name" && return
  $MPIRUN -np "$np" -x AJI_THREADS=1 "$@" sh -c "exec /usr/bin/time -f %M -o $WORK/$name.rss.\$OMPI_COMM_WORLD_RANK $AJI \"\$@\"" aji \
    $COMMON --batch-size $((4 / np)) --out "$WORK/$name" > "$WORK/$name.log" 2>&1 || { echo "$name failed:"; tail -20 "$WORK/$name.log"; exit 1; }
}
run_mpi r2_blocking 2 -x AJI_OVERLAP=0
run_mpi r2_overlap 2
run_mpi r2_zero 2 -x AJI_ZERO=1
run_mpi r4_plain 4
run_mpi r4_zero 4 -x AJI_ZERO=1
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$WORK" <<'EOF'
import json, os, statistics, sys, glob
work = sys.argv[1]
def med(run, key):
    vals = [json.loads(l).get(key) for l in open(os.path.join(work, run, "metrics.jsonl"))]
    vals = [v for v in vals[1:] if v is not None]  # step 1 pays for first-touch allocation
    return statistics.median(vals) if vals else float("nan")
def rss(run):
    files = sorted(glob.glob(os.path.join(work, run + ".rss*")))
    return ", ".join("%.0f" % (int(open(f).read().split()[-1]) / 1024) for f in files)
print("| run | tok/s | step wall s | rank-0 CPU s/step | rank-0 comm s/step | peak RSS MiB per rank |")
print("|---|---|---|---|---|---|")
for run, label in [("t11", "1 rank x 1 thread"), ("t12", "1 rank x 2 threads"),
                   ("r2_blocking", "2 ranks x 1, blocking all-reduce"), ("r2_overlap", "2 ranks x 1, overlapped"),
                   ("r2_zero", "2 ranks x 1, overlapped + ZeRO-1"), ("r4_plain", "4 ranks x 1, overlapped"),
                   ("r4_zero", "4 ranks x 1, overlapped + ZeRO-1")]:
    comm = med(run, "comm_s")
    print("| %s | %.0f | %.2f | %.2f | %s | %s |" % (label, med(run, "tok_per_s"), med(run, "step_s"), med(run, "cpu_s"),
          "-" if comm != comm else "%.3f" % comm, rss(run)))
b, o = med("r2_blocking", "comm_s"), med("r2_overlap", "comm_s")
print("hidden by the overlap (2 ranks): %.3f s of %.3f s per step (%.0f%%)" % (b - o, b, 100 * (b - o) / b if b else 0))
EOF
