"""The verifying solver's sampling temperature for a 135M model: how often K sampled episodes solve a question.

SAGE accepts a generated pair when at least one of the solver's K sampled episodes answers it correctly, and the
fewest searches among the correct ones reaches the target S (paper: K=4 at temperature 1). The quickstart's
solver is the warm-started SmolLM2-135M with K=2 and S=2. Generated questions are too few and too noisy to
compare temperatures on, so this measures the same solver on held-out HotpotQA questions whose gold paragraphs
are in the index: `sage-rl eval` (the CPU recipe's episode, every question sampled `--n` times) once per
temperature, each against the same retrieval server. Printed per temperature: answered share, cover-EM per
episode, unbiased pass@K by cover-EM (the generate recipe's judge), and "accepted@K": pass@K counting only
correct episodes with at least S searches, the share of questions SAGE's rule would accept.

    python benchmarks/solver_temperature.py --index outputs/quickstart/index/idx \\
        --model "$(python -c 'import json; print(json.load(open("outputs/quickstart/warmstart/done.json"))["model"])')"

Use the quickstart's index: it holds the gold paragraphs of the first 30 HotpotQA test questions (`--questions`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from sage_rl.eval.metrics import pass_at_k


def summarize(trajectories: Path, k: int, min_searches: int) -> dict[str, float]:
    by_question: dict[str, list[dict]] = defaultdict(list)
    for line in trajectories.read_text().splitlines():
        row = json.loads(line)
        by_question[row["id"]].append(row)
    rows = [r for group in by_question.values() for r in group]
    correct = [sum(r["cover_em"] > 0 for r in g) for g in by_question.values()]
    deep = [sum(r["cover_em"] > 0 and r["num_searches"] >= min_searches for r in g) for g in by_question.values()]
    sizes = [len(g) for g in by_question.values()]
    pass_rate = sum(pass_at_k(n, c, k) for n, c in zip(sizes, correct, strict=True)) / len(sizes)
    accepted = sum(pass_at_k(n, c, k) for n, c in zip(sizes, deep, strict=True)) / len(sizes)
    return {"questions": len(by_question),
            "failed": sum("error" in r for r in rows),
            "answered": sum(r["end_reason"] == "answer" for r in rows) / len(rows),
            "cover_em": sum(r["cover_em"] > 0 for r in rows) / len(rows),
            "pass": pass_rate, "accepted": accepted}


def main() -> None:
    from sage_rl.serving import retrieval_server

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", required=True, help="a dense index of the embedded corpus (the quickstart's)")
    parser.add_argument("--model", required=True, help="the solver's model folder (the quickstart's warm-start)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.7, 0.4])
    parser.add_argument("--questions", type=int, default=30, help="the first N HotpotQA test questions")
    parser.add_argument("--n", type=int, default=4, help="sampled episodes per question")
    parser.add_argument("--k", type=int, default=2, help="K of pass@K (the quickstart's solver.num_rollouts)")
    parser.add_argument("--min-searches", type=int, default=2, help="S (the quickstart's seeds.max_steps)")
    args = parser.parse_args()
    if not 1 <= args.k <= args.n:
        parser.error("need 1 <= --k <= --n")
    with (tempfile.TemporaryDirectory() as tmp,  # the main job's retrieval server
          retrieval_server(args.index, Path(tmp) / "retrieval.log", args=["--torch-threads", "1"]) as url):
        for t in args.temperatures:
            out = Path(tmp) / f"t{t}"
            cmd = [sys.executable, "-m", "sage_rl.cli", "eval", "--config-name", "smollm2_cpu",
                   f"model.path={args.model}", "model.name=solver", f"retrieval.url={url}",
                   f"benchmarks=[{{name: hotpotqa-test, limit: {args.questions}}}]", f"sampling.temperature={t}",
                   f"sampling.n={args.n}", f"run.output_dir={out}", "run.progress=false"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"temperature {t}: the evaluation failed:\n{proc.stderr[-3000:]}")
            r = summarize(out / "trajectories.jsonl", args.k, args.min_searches)
            print(f"temperature {t}: {r['questions']} questions x {args.n} episodes ({r['failed']:.0f} failed): "
                  f"answered {r['answered']:.3f}, cover-EM {r['cover_em']:.3f}, pass@{args.k} {r['pass']:.3f}, "
                  f"accepted@{args.k} (correct with >= {args.min_searches} searches) {r['accepted']:.3f}", flush=True)


if __name__ == "__main__":
    main()
