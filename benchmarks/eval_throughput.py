"""`sage-rl eval` against the box's own limit on the same work, and retrieval's share of the episodes' time.

1. The evaluator (the shipped CPU recipe `eval/smollm2_cpu`: its episode; `--concurrency` model slots) runs N
   HotpotQA test questions against a real vLLM server (`--model`, default the embedded SmolLM2; a model that
   searches, e.g. the warm-start, makes the retrieval figure mean something) and the real retrieval server over
   the embedded corpus (`--retriever dense|bm25`), both started here unless URLs are given. Every chat request
   and every `/retrieve` call it makes is recorded.
2. The same chat requests (same number in flight) and the same `/retrieve` calls are replayed at once, none
   waiting for another: the most this box gives for exactly this work. Greedy decoding with per-episode seeds,
   so the same tokens come back (the per-request token counts that match are printed as a check).
   Retrieval is replayed too because on a CPU box the retrieval server's encoder shares the cores with vLLM.
Ratio = completion tokens/s of the evaluator (first request to last answer) / of the replay (target >= 0.9:
the evaluator keeps the server busy). Retrieval share = time episodes waited for `/retrieve` / their time.

    python benchmarks/eval_throughput.py [--questions 48] [--concurrency 8 [16 ...]] [--retriever dense|bm25]
                                         [--model DIR]

With several `--concurrency` values, each is measured in turn on the same servers and the evaluator's tokens/s
are compared with the first's (how many model slots the eval recipe should open on this box).
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

from sage_rl.eval.runner import run_evaluation
from sage_rl.llm import OpenAIChatModel


class Recording:
    """Wraps the chat model: records each request and the completion tokens it produced."""

    def __init__(self, inner: OpenAIChatModel) -> None:
        self.inner, self.requests, self.tokens = inner, [], []
        self.first_sent, self.last_done = float("inf"), 0.0

    async def chat(self, messages, **kwargs):
        request = ([dict(m) for m in messages], dict(kwargs))  # as sent, before the episode moves on
        self.first_sent = min(self.first_sent, time.perf_counter())
        completion = await self.inner.chat(messages, **kwargs)
        self.last_done = time.perf_counter()
        self.requests.append(request)
        self.tokens.append(completion.completion_tokens)
        return completion


class TimedClient:
    """Wraps the retrieval client: sums the time spent waiting for `/retrieve`."""

    def __init__(self, inner) -> None:
        self.inner, self.waited, self.calls = inner, 0.0, []

    async def retrieve(self, queries, topk=None):
        self.calls.append((list(queries), topk))
        t0 = time.perf_counter()
        try:
            return await self.inner.retrieve(queries, topk=topk)
        finally:
            self.waited += time.perf_counter() - t0

    async def health(self):
        return await self.inner.health()


async def replay(llm: OpenAIChatModel, requests: list, client, calls: list,
                 concurrency: int) -> tuple[list[int], float]:
    """Send the recorded chat requests (`concurrency` in flight) and the recorded `/retrieve` calls at once,
    none waiting for another: the box's limit for exactly this work. The retrieval calls are replayed too
    because on a CPU box the retrieval server's encoder shares the cores with vLLM."""
    llm_gate, retrieval_gate = asyncio.Semaphore(concurrency), asyncio.Semaphore(concurrency)

    async def chat(messages, kwargs) -> int:
        async with llm_gate:
            return (await llm.chat(messages, **kwargs)).completion_tokens

    async def retrieve(queries, topk) -> None:
        async with retrieval_gate:
            await client.retrieve(queries, topk=topk)

    t0 = time.perf_counter()
    tokens, _ = await asyncio.gather(asyncio.gather(*(chat(m, k) for m, k in requests)),
                                     asyncio.gather(*(retrieve(q, k) for q, k in calls)))
    return list(tokens), time.perf_counter() - t0


@contextlib.contextmanager
def servers(model: str, llm_url: str | None, retrieval_url: str | None, retriever: str, tmp: Path):
    from sage_rl.assets import EMBEDDED_CORPUS
    from sage_rl.serving import CPU_SERVING_ENV, cpu_dtype, retrieval_server, vllm_server

    with contextlib.ExitStack() as stack:
        if retrieval_url is None:
            index = tmp / "idx"
            subprocess.run([sys.executable, "-m", "retrieval_server", "build", "--corpus", str(EMBEDDED_CORPUS),
                            "--out", str(index), *(["--no-dense"] if retriever == "bm25" else [])],
                           check=True, capture_output=True)
            # No query cache: the replay resends the evaluator's /retrieve calls and must redo their work.
            retrieval_url = stack.enter_context(retrieval_server(index, tmp / "retrieval.log", retriever=retriever,
                                                                 args=["--batching.cache-queries", "0"], timeout=600))
        if llm_url is None:
            # Dev mode: POST /reset_prefix_cache, so one concurrency's run does not warm the cache for the next.
            llm_url = stack.enter_context(vllm_server(
                model, "smollm2", tmp / "vllm.log", env={**CPU_SERVING_ENV, "VLLM_SERVER_DEV_MODE": "1"}, timeout=900,
                args=["--dtype", cpu_dtype(), "--enforce-eager", "--max-model-len", "4096"]))
        yield llm_url, retrieval_url


async def measure(model: str, llm_url: str, retrieval_url: str, questions: int, concurrency: int,
                  out_dir: Path) -> float:
    """Evaluate, replay, print the figures; the evaluator's completion tokens per second."""
    import json

    import httpx
    from transformers import AutoTokenizer

    from retrieval_server.client import AsyncRetrievalClient
    from sage_rl.eval.config import load_eval_config

    # The shipped CPU eval recipe (its episode is the CPU training episode), pointed at these servers.
    cfg = load_eval_config("smollm2_cpu", [
        "model.path=null", f"model.base_url={llm_url}", f"retrieval.url={retrieval_url}",
        f"sampling.max_concurrency={concurrency}", f"benchmarks=[{{name: hotpotqa-test, limit: {questions}}}]",
        f"run.output_dir={out_dir}", "run.progress=false"])
    tokenizer = AutoTokenizer.from_pretrained(model)
    async with httpx.AsyncClient() as http:  # a server started elsewhere may not have the dev endpoint: fine
        reset = await http.post(llm_url.removesuffix("/v1") + "/reset_prefix_cache")
        print(f"prefix cache reset: HTTP {reset.status_code}")
    llm = OpenAIChatModel(llm_url, "smollm2", max_concurrency=concurrency, timeout=600,
                          temperature=cfg.sampling.temperature, max_tokens=cfg.sampling.max_tokens)
    recording = Recording(llm)
    client = TimedClient(AsyncRetrievalClient(retrieval_url))
    paths = await run_evaluation(cfg, recording, client, tokenizer=tokenizer)
    eval_s = recording.last_done - recording.first_sent  # first request to last answer: no set-up, no report
    rows = [json.loads(x) for x in paths["trajectories"].read_text().splitlines()]
    episode_s = sum(r["wall_s"] for r in rows)
    tokens, replay_s = await replay(llm, recording.requests, client.inner, client.calls, concurrency)
    await llm.aclose()
    await client.inner.aclose()
    ours, limit = sum(recording.tokens) / eval_s, sum(tokens) / replay_s
    same = sum(a == b for a, b in zip(recording.tokens, tokens, strict=True))
    searches, em = (sum(r.get(k, 0) for r in rows) / len(rows) for k in ("num_searches", "em"))
    print(f"model={model} questions={questions} concurrency={concurrency} max_tokens/turn={cfg.sampling.max_tokens} "
          f"requests={len(recording.requests)} searches/question={searches:.2f} EM={em:.3f}")
    print(f"evaluator: {sum(recording.tokens)} completion tokens in {eval_s:.1f}s = {ours:.1f} tok/s "
          "(first request to last answer)")
    print(f"replay of the same requests and {len(client.calls)} /retrieve calls: {sum(tokens)} tokens in "
          f"{replay_s:.1f}s = {limit:.1f} tok/s (the box's limit); {same}/{len(tokens)} requests produced the same "
          "number of tokens")
    print(f"ratio={ours / limit:.3f} ({'PASS' if ours / limit >= 0.9 else 'FAIL'}: target >= 0.90)")
    print(f"retrieval share of episode time: {client.waited / episode_s:.3f} "
          f"({client.waited:.1f}s waiting for /retrieve over {episode_s:.1f}s of episodes)")
    return ours


def main() -> None:
    from sage_rl.models import smollm2_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=48)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8],
                        help="model slots (sampling.max_concurrency); several: each measured on the same servers, "
                             "tokens/s compared with the first's")
    parser.add_argument("--model", default=None, help="HF folder to serve (default: the embedded SmolLM2)")
    parser.add_argument("--retriever", choices=["dense", "bm25"], default="dense")
    parser.add_argument("--llm-url", default=None, help="a running endpoint serving --model as `smollm2`")
    parser.add_argument("--retrieval-url", default=None, help="a running retrieval server on the embedded corpus")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = args.model or str(smollm2_path())
    with tempfile.TemporaryDirectory() as tmp, \
            servers(model, args.llm_url, args.retrieval_url, args.retriever, Path(tmp)) as (llm, ret):
        rates = {c: asyncio.run(measure(model, llm, ret, args.questions, c, Path(tmp) / f"run{c}"))
                 for c in args.concurrency}
    first = args.concurrency[0]
    for c, rate in rates.items():
        print(f"concurrency {c}: evaluator {rate:.1f} tok/s = {rate / rates[first]:.3f}x concurrency {first}")


if __name__ == "__main__":
    main()
