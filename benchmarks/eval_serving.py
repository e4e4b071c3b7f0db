"""The main job's eval stage serving: its three vLLM servers one at a time vs all started at once.

The eval stage of `sage-rl pipeline` evaluates three models in turn. One at a time, each model's server starts
(~30 s of imports in three processes, mostly single-threaded), serves its episodes and stops; started at once,
the start-ups overlap on the cores and the servers that wait for their turn hold their memory (and ~1% of a core
each, sampled). This measures both ways in one run, on the same fixed load per model: `--requests` chat
requests (the search prompt of HotpotQA test questions, greedy, the eval recipe's turn length), `--concurrency`
in flight, i.e. the load of an evaluation's first turns. Modes alternate for `--reps` rounds, so a shared box's
drift falls on both. Servers are started as the eval recipe `eval/smollm2_cpu` serves models (its `model.serve`
args and env).

    python benchmarks/eval_serving.py [--models DIR DIR DIR] [--reps 2] [--requests 64] [--concurrency 32]

Prints, per mode and round: wall time, start-up (first server launched to last one ready, summed over the
servers when one at a time), load time per model; then the together/one-at-a-time ratio of the mean wall times.
The loads are short (~15 s): a slowdown the waiting servers cause to the serving one weighs more in a real
evaluation (~90-160 s per model), which is why the main job, measured both ways, serves one at a time (README).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from sage_rl import protocol
from sage_rl.assets import embedded_questions
from sage_rl.eval.config import load_eval_config
from sage_rl.llm import OpenAIChatModel
from sage_rl.serving import vllm_servers


async def load(url: str, name: str, prompts: list[str], concurrency: int, max_tokens: int) -> float:
    """Seconds to answer every prompt, `concurrency` in flight."""
    llm = OpenAIChatModel(url, name, max_concurrency=concurrency, temperature=0.0, max_tokens=max_tokens)
    started = time.perf_counter()
    try:
        await asyncio.gather(*(llm.chat([{"role": "user", "content": p}]) for p in prompts))
    finally:
        await llm.aclose()
    return time.perf_counter() - started


def run(mode: str, models: dict[str, str], prompts: list[str], args: argparse.Namespace, folder: Path) -> dict:
    recipe = load_eval_config("smollm2_cpu")
    serve, max_tokens = recipe.model.serve, recipe.sampling.max_tokens
    logs = {name: folder / f"{mode}_{name}.log" for name in models}
    groups = [models] if mode == "together" else [{name: path} for name, path in models.items()]
    started, startup, loads = time.perf_counter(), 0.0, {}
    for group in groups:
        launched = time.perf_counter()
        with vllm_servers(group, logs, args=serve.args, env=serve.env, timeout=serve.startup_timeout_s) as urls:
            startup += time.perf_counter() - launched
            for name, url in urls.items():
                loads[name] = asyncio.run(load(url, name, prompts, args.concurrency, max_tokens))
    return {"wall": time.perf_counter() - started, "startup": startup, "loads": loads}


def main() -> None:
    from sage_rl.models import smollm2_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs=3, default=None, help="three model folders (default: the embedded "
                        "SmolLM2 three times)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    paths = args.models or [str(smollm2_path())] * 3
    models = dict(zip(["base", "warmstart", "trained"], paths, strict=True))
    questions = embedded_questions("test")
    prompts = [protocol.search_prompt(questions[i % len(questions)]["question"]) for i in range(args.requests)]
    walls: dict[str, list[float]] = {"one at a time": [], "together": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            order = ["one at a time", "together"] if rep % 2 == 0 else ["together", "one at a time"]
            for mode in order:
                r = run(mode.replace(" ", "_"), models, prompts, args, Path(tmp))
                walls[mode].append(r["wall"])
                print(f"round {rep + 1} {mode:>13}: wall {r['wall']:6.1f} s, start-up {r['startup']:5.1f} s, load "
                      + ", ".join(f"{n} {s:.1f} s" for n, s in r["loads"].items()), flush=True)
    one, together = statistics.mean(walls["one at a time"]), statistics.mean(walls["together"])
    print(f"together / one at a time (mean wall): {together / one:.3f} ({together:.1f} vs {one:.1f} s)")


if __name__ == "__main__":
    main()
