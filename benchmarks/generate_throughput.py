"""Pipeline throughput of `sage-rl generate` against its concurrency bound.

A stand-in OpenAI-compatible server (benchmark fixture only, not a product feature) answers every chat
request after a fixed latency, playing generator, solver and judge with scripted text; retrieval is an
in-process fake. With C requests allowed in flight and latency L, no client can exceed C / L requests
per second: the bound. The pipeline is efficient if it keeps the server saturated, i.e. achieved
requests/s >= 90% of C / L. Items in flight are set high enough that C, not the item pool, limits.

    python benchmarks/generate_throughput.py [--latency 0.2] [--concurrency 32] [--items 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
import time
from pathlib import Path

from aiohttp import web

from sage_rl.generate.config import GenerateConfig
from sage_rl.generate.loop import Pipeline, run_generation
from sage_rl.llm import OpenAIChatModel


def reply(prompt: str, turns: int) -> str:
    """Scripted text per role: generator searches twice then writes a pair; solver searches 3x then answers."""
    if prompt.startswith("You write hard research questions"):
        if turns < 2:
            return f"<think>collect</think><search> fact {turns} </search>"
        title = re.search(r"Doc 0\(Title: (.*?)\)", prompt).group(1)
        return (f"<question>Which number is tied to {title}?</question><answer>{len(title)}</answer>"
                "<answering steps>a\nb\nc</answering steps>")
    if "<generator_trace>" in prompt:
        return "<reason>r</reason><question>Revised?</question><answer>1</answer><search steps>a</search steps>"
    if prompt.startswith("Answer the question below."):
        if turns < 3:
            return f"<think>t</think><search> step {turns} </search>"
        n = re.search(r"tied to (.*?)\?", prompt)
        return f"<answer> {len(n.group(1)) if n else 0} </answer>"
    return "extracted_final_answer: x\nreasoning: same\ncorrect: yes"


class StandInServer:
    """Fixed-latency /v1/chat/completions; counts requests and the peak number in flight."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.requests = 0
        self.in_flight = self.peak = 0
        self.first = self.last = 0.0

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests += 1
        self.first = self.first or time.perf_counter()
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.latency)
            messages = body["messages"]
            text = reply(messages[0]["content"], sum(m["role"] == "assistant" for m in messages))
            for stop in body.get("stop") or ():
                text = text.split(stop)[0]
            return web.json_response({"choices": [{"message": {"role": "assistant", "content": text},
                                                   "finish_reason": "stop"}],
                                      "usage": {"prompt_tokens": 100, "completion_tokens": len(text.split())}})
        finally:
            self.in_flight -= 1
            self.last = time.perf_counter()


class InstantRetriever:
    async def retrieve(self, queries, topk=None):
        from retrieval_server.client import Hit

        return [[Hit(f"{q}#{i}", f'"{q}"\nPassage {i}.', 1.0) for i in range(topk or 3)] for q in queries]


async def main(latency: float, concurrency: int, items: int) -> float:
    server = StandInServer(latency)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    llm = OpenAIChatModel(f"http://127.0.0.1:{port}/v1", "stand-in", max_concurrency=concurrency, timeout=30)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = GenerateConfig()
        cfg.seeds.num_items = items
        cfg.run.output_dir, cfg.run.progress = str(Path(tmp) / "run"), False
        # Enough items in flight that the LLM concurrency bound, not the item pool, is the limit: an item
        # has 1 request in flight while its generator works and K while its solver rollouts run.
        cfg.run.max_concurrent_items = 4 * concurrency
        t0 = time.perf_counter()
        paths = await run_generation(cfg, Pipeline(llm, llm, InstantRetriever(), llm))
        elapsed = time.perf_counter() - t0
        summary = json.loads((paths["report"].parent / "summary.json").read_text())
    await llm.aclose()
    await runner.cleanup()
    # Throughput while the pipeline runs (first request to last response); the end-to-end figure also
    # pays for seeding (a pass over the corpus), assembly and the report (matplotlib import, plots).
    achieved = server.requests / (server.last - server.first)
    bound = concurrency / latency
    ratio = achieved / bound
    generation = server.last - server.first
    print(f"items={items} pairs={summary['pairs']} requests={server.requests} generation={generation:.2f}s "
          f"end_to_end={elapsed:.2f}s ({server.requests / elapsed:.1f} req/s incl. seeding, assembly, report)")
    print(f"latency={latency}s concurrency={concurrency} peak_in_flight={server.peak}")
    print(f"throughput={achieved:.1f} req/s  bound=concurrency/latency={bound:.1f} req/s  ratio={ratio:.3f} "
          f"({'PASS' if ratio >= 0.9 else 'FAIL'}: target >= 0.90)")
    return ratio


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per request at the stand-in server")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight allowed by the client")
    parser.add_argument("--items", type=int, default=256, help="seeds to process")
    args = parser.parse_args()
    asyncio.run(main(args.latency, args.concurrency, args.items))
