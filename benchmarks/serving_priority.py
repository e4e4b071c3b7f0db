"""`sage-rl eval` at the pipeline's priority: its vLLM server at the stage's niceness vs at 0 (before the fix).

The pipeline runs each stage at `run.nice` (the quickstart: 19) below the job's retrieval server. A stage that
starts a server gives it a session of its own, and a new session starts at niceness 0: `sage-rl eval`'s vLLM
server outranked its own client until `sage_rl.serving.lower_priority` added the starter's niceness. This runs the
same evaluation both ways in one run, modes alternating for `--reps` rounds: a child `sage-rl eval` (the eval
recipe `smollm2_cpu`, the quickstart's 30 HotpotQA test + 20 Bamboogle questions) in a session at niceness
`--nice`, serving `--model`, against a retrieval server at niceness 0 on `--index`; "server at 0" reproduces the
old behaviour by making the child believe its own session is at 0. Every LLM and `/retrieve` call is timed in the
client.

    python benchmarks/serving_priority.py --index outputs/quickstart/index/idx \\
        --model "$(python -c 'import json; print(json.load(open("outputs/quickstart/warmstart/done.json"))["model"])')"

Prints, per mode and round: the episodes' wall time (first call to last), the median LLM and `/retrieve` call as
the client saw it, EM; then the ratio of the mean episode times. Needs Linux's autogroup scheduling to show the
effect (without it, niceness is inherited and both modes are the same).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = {"server at the stage's niceness": "stage", "server at 0": "zero"}


def child(mode: str, model: str, url: str, out: Path) -> None:
    """One evaluation in this process (already in its lowered session), every call timed."""
    from retrieval_server import client as retrieval_client
    from sage_rl import llm, serving
    from sage_rl.eval import runner
    from sage_rl.eval.config import load_eval_config

    if mode == "zero":
        serving.session_nice = lambda: 0  # lower_priority as it was: the server's new session stays at 0
    started = time.monotonic()
    calls: list[tuple[str, float, float]] = []

    def timed(kind: str, fn):
        async def wrapper(*args, **kwargs):
            t = time.monotonic() - started
            try:
                return await fn(*args, **kwargs)
            finally:
                calls.append((kind, t, time.monotonic() - started))
        return wrapper

    llm.OpenAIChatModel.chat = timed("llm", llm.OpenAIChatModel.chat)
    retrieval_client.AsyncRetrievalClient._request = timed("retrieve", retrieval_client.AsyncRetrievalClient._request)
    cfg = load_eval_config("smollm2_cpu", [f"model.path={model}", "model.name=bench", f"retrieval.url={url}",
                                           "benchmarks=[{name: hotpotqa-test, limit: 30},{name: bamboogle, limit: 20}]",
                                           f"run.output_dir={out}", "run.progress=false"])
    asyncio.run(runner.evaluate(cfg))
    (out / "calls.json").write_text(json.dumps(calls))


def summarize(out: Path) -> dict:
    calls = json.loads((out / "calls.json").read_text())
    llm = [e - s for k, s, e in calls if k == "llm"]
    retrieve = [e - s for k, s, e in calls if k == "retrieve" and e - s]
    results = json.loads((out / "results.json").read_text())
    return {"episodes_s": max(e for _, _, e in calls) - min(s for k, s, _ in calls if k == "llm"),
            "llm_median_s": statistics.median(llm),
            "retrieve_median_s": statistics.median(retrieve) if retrieve else 0.0,
            "em": results["benchmarks"]["hotpotqa-test"]["em"]}


def main() -> None:
    from sage_rl.serving import lower_priority, retrieval_server

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", required=True, help="a dense index of the embedded corpus (the quickstart's)")
    parser.add_argument("--model", required=True, help="the model folder to evaluate (the quickstart's warm-start)")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--nice", type=int, default=19, help="the client's session niceness (the pipeline's run.nice)")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "URL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.model, args.child[1], Path(args.child[2]))
        return
    episodes: dict[str, list[float]] = {m: [] for m in MODES}
    with (tempfile.TemporaryDirectory() as tmp,  # the main job's retrieval server
          retrieval_server(args.index, Path(tmp) / "retrieval.log", args=["--torch-threads", "1"]) as url):
        for rep in range(args.reps):
            for label in list(MODES) if rep % 2 == 0 else list(MODES)[::-1]:
                out = Path(tmp) / f"{MODES[label]}{rep}"
                cmd = [sys.executable, __file__, "--index", args.index, "--model", args.model,
                       "--child", MODES[label], url, str(out)]
                with open(Path(tmp) / f"{MODES[label]}{rep}.log", "w") as log:
                    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                    lower_priority(proc.pid, args.nice)  # before its imports are done: it starts no server sooner
                    if proc.wait() != 0:
                        raise SystemExit(f"{label}: the evaluation failed, see {log.name}:\n"
                                         f"{Path(log.name).read_text()[-3000:]}")
                r = summarize(out)
                episodes[label].append(r["episodes_s"])
                print(f"round {rep + 1} {label}: episodes {r['episodes_s']:6.1f} s, median call: LLM "
                      f"{r['llm_median_s']:.2f} s, /retrieve {r['retrieve_median_s']:.2f} s; EM {r['em']:.3f}",
                      flush=True)
    stage, zero = (statistics.mean(episodes[m]) for m in MODES)
    print(f"episodes, server at the stage's niceness / at 0 (mean): {stage / zero:.3f} ({stage:.1f} vs {zero:.1f} s)")


if __name__ == "__main__":
    main()
