"""Scores of an evaluation run: `results.json`, `results.md` (one row per benchmark) and plots.

Per benchmark and overall (over all questions; `macro` averages the benchmarks): EM, F1 and cover-EM
averaged over every sample (avg@n), the LLM judge's accuracy when one ran, pass@k for the recipe's k
(correct = the judge's verdict when a judge ran, else EM), searches (mean and histogram), the invalid-turn
rate (turns answered with the invalid-action message / turns; a last turn that ends the episode at the
budget without a valid action is not among them: it shows as `end_reason: budget` in the trajectory),
retrieval errors, turns, completion tokens, wall time, failed episodes, and
accuracy by number of searches. The record also names what makes a number reproducible: the model, the
judge model and prompt version, the episode policy, and the retrieval server's own description (corpus,
index, encoder).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from sage_rl.eval.config import EvalConfig
from sage_rl.eval.metrics import histogram, mean, pass_at_k
from sage_rl.files import atomic_write_text
from sage_rl.judge import JUDGE_LIST_PROMPT, JUDGE_PROMPT

JUDGE_PROMPT_VERSION = hashlib.sha256((JUDGE_PROMPT + JUDGE_LIST_PROMPT).encode()).hexdigest()[:12]


def _correct(row: dict, use_judge: bool) -> float:
    return float(row.get("judge_correct") or 0.0) if use_judge else float(row.get("em", 0.0))


def summarize(rows: Sequence[dict], pass_k: Sequence[int], use_judge: bool) -> dict:
    """The scores of one set of episode rows (a benchmark's, or all of them)."""
    ok = [r for r in rows if "error" not in r]
    questions: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        questions[(r["benchmark"], r["id"])].append(r)
    turns = sum(r.get("turns", 0) for r in ok)
    out: dict = {
        "questions": len(questions),
        "episodes": len(rows),
        "failed_episodes": len(rows) - len(ok),
        "em": mean([r.get("em", 0.0) for r in rows]),  # a failed episode scores 0: nothing is dropped
        "f1": mean([r.get("f1", 0.0) for r in rows]),
        "cover_em": mean([r.get("cover_em", 0.0) for r in rows]),
        "searches_mean": mean([r["num_searches"] for r in ok]) if ok else 0.0,
        "searches_histogram": histogram(r["num_searches"] for r in ok),
        "invalid_turn_rate": sum(r.get("invalid_turns", 0) for r in ok) / turns if turns else 0.0,
        "retrieval_errors": sum(r.get("retrieval_errors", 0) for r in ok),
        "turns_mean": mean([r["turns"] for r in ok]) if ok else 0.0,
        "completion_tokens_mean": mean([r.get("completion_tokens", 0) for r in ok]) if ok else 0.0,
        "wall_s_mean": mean([r.get("wall_s", 0.0) for r in rows]),
        "answered": mean([float(r.get("answer") is not None) for r in rows]),
    }
    if use_judge:
        judged = [r for r in rows if r.get("judge_correct") is not None]
        # Over the episodes the judge graded, plus failed episodes as wrong; a judge outage is counted apart.
        graded = [r["judge_correct"] for r in judged] + [0.0 for r in rows if "error" in r]
        out["judge_acc"] = mean(graded) if graded else 0.0
        out["judge_errors"] = sum(1 for r in ok if "judge_error" in r)
        out["judge_garbled"] = sum(1 for r in judged if r.get("judge_garbled"))
    for k in pass_k:
        out[f"pass@{k}"] = mean([pass_at_k(len(s), int(sum(_correct(r, use_judge) for r in s)), k)
                                 for s in questions.values()])
    by_searches: dict[int, list[float]] = defaultdict(list)
    for r in ok:
        by_searches[r["num_searches"]].append(_correct(r, use_judge))
    out["accuracy_by_searches"] = {n: mean(v) for n, v in sorted(by_searches.items())}
    return out


def _fmt(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown(results: dict, pass_k: Sequence[int], use_judge: bool) -> str:
    """The per-benchmark table (percentages), with the overall rows."""
    head = ["benchmark", "questions", "EM", "F1", "cover-EM"] + (["judge"] if use_judge else [])
    head += [f"pass@{k}" for k in pass_k] + ["searches", "invalid %", "retrieval errors", "turns", "failed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = [*results["benchmarks"].items(), ("**overall**", results["overall"])]
    for name, s in rows:
        cells = [name, str(s["questions"]), _fmt(s["em"]), _fmt(s["f1"]), _fmt(s["cover_em"])]
        cells += [_fmt(s["judge_acc"])] if use_judge else []
        cells += [_fmt(s[f"pass@{k}"]) for k in pass_k]
        cells += [f"{s['searches_mean']:.2f}", _fmt(s["invalid_turn_rate"]), str(s["retrieval_errors"]),
                  f"{s['turns_mean']:.2f}", str(s["failed_episodes"])]
        lines.append("| " + " | ".join(cells) + " |")
    macro = results["macro_em"]
    return "\n".join(lines) + f"\n\nMacro EM (mean over benchmarks): {_fmt(macro)}\n"


def _plots(out_dir: Path, results: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = results["benchmarks"]
    paths = []
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(benches)), 3))
    ax.bar(list(benches), [100 * s["em"] for s in benches.values()])
    ax.set_ylabel("EM (%)")
    ax.set_title("Accuracy per benchmark")
    paths.append(out_dir / "accuracy.png")
    fig.tight_layout()
    fig.savefig(paths[-1])
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    hist = results["overall"]["searches_histogram"]
    axes[0].bar([str(k) for k in hist], list(hist.values()))
    axes[0].set_xlabel("searches per episode")
    axes[0].set_ylabel("episodes")
    by = results["overall"]["accuracy_by_searches"]
    axes[1].bar([str(k) for k in by], [100 * v for v in by.values()])
    axes[1].set_xlabel("searches per episode")
    axes[1].set_ylabel("accuracy (%)")
    paths.append(out_dir / "searches.png")
    fig.tight_layout()
    fig.savefig(paths[-1])
    plt.close(fig)
    return paths


def write_results(out_dir: Path, rows: Sequence[dict], cfg: EvalConfig, retrieval: dict | None = None
                  ) -> dict[str, Path]:
    """Write results.json, results.md and the plots for the rows of a finished run (in task order)."""
    use_judge = cfg.judge.kind == "llm"
    by_bench: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_bench[r["benchmark"]].append(r)
    benches = {name: summarize(b, cfg.run.pass_k, use_judge) for name, b in by_bench.items()}
    results = {
        "model": cfg.model.name,
        "model_path": cfg.model.path,
        "sampling": asdict(cfg.sampling),
        "episode": asdict(cfg.policy),
        "judge": {"kind": cfg.judge.kind, "model": cfg.judge.llm.model if use_judge else None,
                  "prompt_version": JUDGE_PROMPT_VERSION if use_judge else None},
        "retrieval": {"url": cfg.retrieval.url, "server": retrieval or {}},
        "benchmarks": benches,
        "overall": summarize(rows, cfg.run.pass_k, use_judge),
        "macro_em": sum(s["em"] for s in benches.values()) / len(benches) if benches else 0.0,
    }
    paths = {"results_json": atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2, default=str))}
    paths["results_md"] = atomic_write_text(out_dir / "results.md", markdown(results, cfg.run.pass_k, use_judge))
    for p in _plots(out_dir, results):
        paths[p.stem] = p
    return paths
