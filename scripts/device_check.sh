#!/usr/bin/env bash
# The prepared check of the CUDA backend on a lent GPU machine (docs/cuda.md; build and stage
# it here first with scripts/device_prepare.sh). Stages in order of value, each under a
# timeout, everything tee'd into $OUT/device_check.log, a summary table last:
#   0 the machine: GPU, driver, kernel, libraries; unpack the carried libraries; ldd check
#   1 op parity: every CUDA op forward and backward against the CPU op (tests CudaParity*,
#     fp32 within 1e-5 relative L2, outputs poisoned with NaN first), and the backend's own
#     tests (Backend.*); then the same again with AJI_CUDA_SYNC=1 and, where it runs,
#     under compute-sanitizer memcheck
#   2 the model on CUDA against the CPU (tests *ModelDevice*: one step's loss, hidden states
#     and every gradient within 1e-5 relative L2, 20 steps' losses within 1e-4, two CUDA runs
#     bitwise equal; GPT-2 and Llama with GQA, QK-norm, packed rows; *TrainStepDevice*: the
#     trainers' step with AdamW and clipping on the GPU, 10 steps against the CPU, two runs equal)
#   3 `aji pretrain --device cuda` end to end on the bundled corpus (tiny config, 30 steps)
#     beside the same run on the CPU: the loss curves side by side, both runs' speed
#   4 `aji bench generate --device cuda` on gpt2-124m at batch 1 and 64 (tokens/s)
#   5 `aji bench train-step --device cuda` on gpt2-124m, B=8 T=1024, fp32 and tf32 (tokens/s)
# Not yet here (docs/cuda.md lists what is left): NCCL, bf16, throughput against llm.c and
# PyTorch on GPT-2 124M.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/aji_device_out}
mkdir -p "$OUT"
LOG="$OUT/device_check.log"
exec > >(tee -a "$LOG") 2>&1
declare -A RESULT
stage() { echo; echo "=== stage $1: $2 ($(date -u +%T))"; }

stage 0 "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv 2>&1 | head -5
uname -r
CARRY=.devcarry
for f in "$CARRY"/lib/*.xz; do
  [ -e "$f" ] || continue
  if command -v xz > /dev/null; then xz -d -k -f "$f"; else
    python3 -c "import lzma,shutil,sys;shutil.copyfileobj(lzma.open(sys.argv[1]),open(sys.argv[2],'wb'))" "$f" "${f%.xz}"
  fi
done
CUDA_LIBS=$(find / -xdev \( -name 'libcublasLt.so.13' -o -name 'libcudnn.so.9' -o -name 'libnccl.so.2' \) 2>/dev/null \
  | xargs -r -n1 dirname | sort -u | paste -sd:)
export LD_LIBRARY_PATH="$PWD/$CARRY/lib:${CUDA_LIBS}:${LD_LIBRARY_PATH:-}"
export AJI_CUDA_PLUGIN="$PWD/$CARRY/libaji_cuda.so"
echo "CUDA libraries: $CUDA_LIBS"
missing=$(ldd "$CARRY/aji" "$CARRY/aji_tests" "$CARRY/libaji_cuda.so" 2>&1 | grep 'not found' | sort -u)
if [ -n "$missing" ]; then echo "missing libraries:"; echo "$missing"; RESULT[0]="FAIL (libraries missing)"; else RESULT[0]=ok; fi
timeout 30 "$CARRY/aji" info 2>&1 | tail -5

stage 1 "op parity, CUDA against CPU"
timeout 120 "$CARRY/aji_tests" --gtest_filter='CudaParity*:Backend.*' --gtest_color=no 2>&1 | tail -80
rc=${PIPESTATUS[0]}
RESULT[1]=$([ "$rc" = 0 ] && echo ok || echo "FAIL (rc $rc)")

stage 1b "op parity with AJI_CUDA_SYNC=1"
AJI_CUDA_SYNC=1 timeout 120 "$CARRY/aji_tests" --gtest_filter='CudaParity*' --gtest_color=no 2>&1 | tail -20
rc=${PIPESTATUS[0]}
RESULT[1b]=$([ "$rc" = 0 ] && echo ok || echo "FAIL (rc $rc)")

if command -v compute-sanitizer > /dev/null; then
  stage 1c "op parity under compute-sanitizer memcheck"
  timeout 240 compute-sanitizer --tool memcheck --error-exitcode 9 "$CARRY/aji_tests" --gtest_filter='CudaParity*' \
    --gtest_color=no 2>&1 | tail -40
  rc=${PIPESTATUS[0]}
  RESULT[1c]=$([ "$rc" = 0 ] && echo ok || echo "FAIL (rc $rc)")
else
  RESULT[1c]="not run (no compute-sanitizer)"
fi

stage 2 "the model's training path, CUDA against CPU"
timeout 240 "$CARRY/aji_tests" --gtest_filter='*ModelDevice*:*TrainStepDevice*' --gtest_color=no 2>&1 | tail -30
rc=${PIPESTATUS[0]}
RESULT[2]=$([ "$rc" = 0 ] && echo ok || echo "FAIL (rc $rc)")

stage 3 "aji pretrain --device cuda beside --device cpu"
W=$(mktemp -d)
cat data/corpus/train/*.txt > "$W/corpus.txt"
timeout 60 "$CARRY/aji" -q tokenizer train --input "$W/corpus.txt" --vocab-size 8192 --out "$W/tok.json" &&
  timeout 60 "$CARRY/aji" -q data tokenize --tokenizer "$W/tok.json" --input "$W/corpus.txt" --out "$W/shards" \
    --val-fraction 0.05 --force
for dev in cuda cpu; do
  timeout 180 "$CARRY/aji" --threads 16 pretrain --config tiny --data "$W/shards" --out "$W/run-$dev" --force \
    --device "$dev" --precision fp32 --steps 30 --batch-size 8 --seq-len 256 --lr 1e-3 --warmup 5 --eval-every 30 \
    --eval-batches 2 --sample-every 0 --save-every 30 2>&1 | tail -8
done
python3 - "$W" <<'PY'
import json, sys
w = sys.argv[1]
def losses(d):
    try:
        return [json.loads(l) for l in open(f"{w}/run-{d}/metrics.jsonl") if '"loss"' in l and '"step"' in l]
    except OSError:
        return []
a, b = losses("cuda"), losses("cpu")
for x, y in zip(a, b):
    print(f"step {x['step']:3d}  loss cuda {x['loss']:.6f}  cpu {y['loss']:.6f}  |diff| {abs(x['loss'] - y['loss']):.2e}"
          f"  tok/s cuda {x.get('tok_per_s', 0):.0f} cpu {y.get('tok_per_s', 0):.0f}")
ok = len(a) == len(b) == 30 and all(abs(x['loss'] - y['loss']) <= 1e-3 for x, y in zip(a, b))
print("pretrain cuda vs cpu:", "ok" if ok else "FAIL")
open(f"{w}/verdict", "w").write("ok" if ok else "FAIL")
PY
RESULT[3]=$(cat "$W/verdict" 2>/dev/null || echo "FAIL (no runs)")

stage 4 "generation on the GPU: aji bench generate --device cuda (gpt2-124m, random weights)"
# tokens/s at batch 1 and 64; the CPU at batch 1 beside it for scale (no PyTorch on this machine)
ok=ok
for B in 1 64; do
  timeout 120 "$CARRY/aji" bench generate --config gpt2-124m --batch "$B" --prompt-len 128 --gen 64 --device cuda \
    --json 2>&1 | tail -3 || ok="FAIL (batch $B)"
done
timeout 120 "$CARRY/aji" --threads 16 bench generate --config gpt2-124m --batch 1 --prompt-len 128 --gen 32 --json \
  2>&1 | tail -2
RESULT[4]=$ok

stage 5 "training step on the GPU: aji bench train-step --device cuda, fp32, tf32 and bf16 (gpt2-124m)"
ok=ok
# MFU against the GEMM ceiling measured in the run, and against H100/H200 SXM's dense peaks
# (fp32 67, TF32 495, bf16 989 TFLOP/s)
for PP in fp32:67 tf32:495 bf16:989; do
  P=${PP%%:*}
  timeout 150 "$CARRY/aji" bench train-step --config gpt2-124m --batch 8 --seq 1024 --steps 5 --device cuda \
    --precision "$P" --device-peak-tflops "${PP##*:}" --json 2>&1 | tail -2 || ok="FAIL ($P)"
done
RESULT[5]=$ok

echo
echo "=== summary"
for k in 0 1 1b 1c 2 3 4 5; do printf '  stage %-3s %s\n' "$k" "${RESULT[$k]:-not run}"; done
