#!/usr/bin/env bash
# `make bench`: aji's benchmarks on this machine, and each peer comparison whose peer is
# installed (a missing peer is named and skipped, never faked). Numbers are only
# comparable on an otherwise idle machine; bench/README.md says how each was taken.
#
# Environment: AJI (default build/aji), BENCH_THREADS (default "1 2"),
#   LLAMA_BENCH + GGUF_PY (llama.cpp's llama-bench binary and gguf-py directory) for the
#   generation comparison.
set -u
cd "$(dirname "$0")/.."
AJI=${AJI:-build/aji}
THREADS=${BENCH_THREADS:-1 2}
PY=/usr/bin/python3
failed=0
run() {  # run TITLE CMD...: a header, the command, and its status
  echo
  echo "== $1"
  shift
  echo "\$ $*"
  if ! "$@"; then
    echo "!! failed: $*"
    failed=1
  fi
}
skip() { echo; echo "== $1"; echo "   skipped: $2"; }
has_module() { "$PY" -c "import $1" 2>/dev/null; }

for t in $THREADS; do
  run "training step, tiny, $t thread(s)" "$AJI" --threads "$t" bench train-step --config tiny --batch 8 --seq 256 --steps 3
done
run "generation, 17M Llama, batch 1" "$AJI" --threads 1 bench generate --config bench/configs/llama-17m.json --batch 1 --prompt-len 128 --gen 64
run "generation, 17M Llama, batch 16" "$AJI" --threads 1 bench generate --config bench/configs/llama-17m.json --batch 16 --prompt-len 128 --gen 64
run "engine ops (1 thread)" env AJI_THREADS=1 build/bench/engine_ops_bench --benchmark_min_time=0.2
run "tokenizer encode" build/bench/tokenizer_encode_bench --benchmark_min_time=0.2

if has_module torch; then
  run "training step against PyTorch" "$PY" bench/train_step_vs_torch.py --threads $THREADS --cases tiny:8:256 tiny-gpt2:8:256
else
  skip "training step against PyTorch" "python3-torch is not installed (apt-get install python3-torch)"
fi
if [ -n "${LLAMA_BENCH:-}" ] && [ -n "${GGUF_PY:-}" ]; then
  run "generation against llama.cpp" "$PY" bench/generate_vs_llamacpp.py --llama-bench "$LLAMA_BENCH" --gguf-py "$GGUF_PY" --threads $THREADS
else
  skip "generation against llama.cpp" "set LLAMA_BENCH and GGUF_PY (see bench/generate_vs_llamacpp.py)"
fi
if has_module tiktoken; then
  run "tokenizer encode against tiktoken" "$PY" bench/tokenizer_encode_vs_tiktoken.py
else
  skip "tokenizer encode against tiktoken" "tiktoken is not installed (pip install tiktoken)"
fi
if has_module datatrove; then
  run "data filters against datatrove" "$PY" bench/data_filters_vs_datatrove.py
else
  skip "data filters against datatrove" "datatrove is not installed (pip install datatrove)"
fi
exit $failed
