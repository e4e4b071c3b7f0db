"""A scripted evaluation world: a benchmark file, a model that searches once then answers, a fake retriever.

The model answers the question's gold answer when its id number is even and "wrong" otherwise, so a run's
exact-match score is known in advance (half the questions, rounded up).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from retrieval_server.client import Hit
from sage_rl.eval.config import BenchmarkConfig, EvalConfig, ModelConfig, RunConfig, SamplingConfig


def write_benchmark(path: Path, n: int) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            row = {"id": f"q{i}", "question": f"What is item {i}", "golden_answers": [f"answer {i}"]}
            f.write(json.dumps(row) + "\n")
    return path


def respond(messages: list[dict]) -> str:
    """Search first; answer once an observation is in the transcript (inline or as a message)."""
    transcript = "".join(m["content"] for m in messages)
    found = re.search(r"What is item (\d+)", transcript)
    i = int(found.group(1)) if found else -1  # another benchmark's question: searched, answered wrong
    if "<information>Doc" not in transcript:
        return f"<think>look it up</think><search> item {i} </search>"
    return f"<answer> {'answer ' + str(i) if i >= 0 and i % 2 == 0 else 'wrong'} </answer>"


class FakeClient:
    def __init__(self) -> None:
        self.queries: list[str] = []

    async def retrieve(self, queries, topk=None):
        self.queries.extend(queries)
        return [[Hit(f"{q}#{j}", f'"{q} {j}"\nPassage {j} about {q}.', 1.0) for j in range(topk or 3)] for q in queries]

    async def health(self):
        return {"status": "ok", "index": "fake"}


def config(out_dir: str, bench: Path, n: int = 1, concurrency: int = 4, limit: int | None = None) -> EvalConfig:
    return EvalConfig(
        model=ModelConfig(name="scripted", base_url="http://unused"),
        sampling=SamplingConfig(n=n, max_concurrency=concurrency),
        benchmarks=[BenchmarkConfig(name=str(bench), limit=limit), BenchmarkConfig(name="bamboogle", limit=2)],
        run=RunConfig(output_dir=out_dir, progress=False, pass_k=[1]),
        episode={"max_searches": 2},
    )
