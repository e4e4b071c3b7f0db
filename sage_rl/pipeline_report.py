"""The main job's one report (`<run>/report.md` with plots): index, warm-start, generation, training curves, and the
three-model evaluation table with 95% intervals, each stage's wall time beside it. Built only from the stages'
own records (`<run>/<stage>/done.json` and the files they name), so it can be rebuilt at any time."""

from __future__ import annotations

import json
import math
from pathlib import Path

from sage_rl.files import atomic_write_text
from sage_rl.pipeline import STAGES, Job


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion.

    >>> [round(x, 3) for x in wilson(5, 10)]
    [0.237, 0.763]
    >>> wilson(0, 0)
    (0.0, 1.0)
    """
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def verdict(bench: str, warm: tuple[float, float, float], trained: tuple[float, float, float]) -> str:
    """Whether training beat the warm-start on one benchmark, said plainly (EM, 95% interval).

    >>> verdict("b", (0.1, 0.03, 0.25), (0.1, 0.03, 0.25))
    '- b: the trained model does not beat its warm-start (EM 0.100 vs 0.100; the 95% intervals overlap).'
    """
    if trained[0] > warm[0] and trained[1] > warm[2]:
        outcome = "beats its warm-start"
    elif trained[0] > warm[0]:
        outcome = "scores above its warm-start, within noise"
    else:
        outcome = "does not beat its warm-start"
    overlap = "overlap" if trained[1] <= warm[2] and warm[1] <= trained[2] else "do not overlap"
    return (f"- {bench}: the trained model {outcome} (EM {trained[0]:.3f} vs {warm[0]:.3f}; "
            f"the 95% intervals {overlap}).")


def _section(markdown: str, title: str) -> list[str]:
    """The lines of one `## title` section of another report (without its heading)."""
    lines, out, inside = markdown.splitlines(), [], False
    for line in lines:
        if line.startswith("## "):
            inside = line[3:].startswith(title)
            continue
        if inside:
            out.append(line)
    return out


def _plot(path: Path, series: dict[str, list[tuple[float, float]]], title: str, xlabel: str) -> Path | None:
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(series), figsize=(3.2 * len(series), 2.8), squeeze=False)
    for ax, (name, points) in zip(axes[0], series.items(), strict=True):
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o")
        ax.set_title(name)
        ax.set_xlabel(xlabel)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(job: Job) -> Path:
    out = job.out
    records = {s: job.done(s) for s in STAGES}
    lines = ["# sage_rl main job", "", f"Run folder: `{out}`. Logs of every process: `{out / 'logs'}`.", "",
             "## Stages", "", "| stage | wall time (s) | result |", "|---|---|---|"]
    for stage in STAGES[:-1]:
        r = records[stage]
        lines.append(f"| {stage} | {r['seconds']:.0f} | {r.get('summary', '')} |" if r
                     else f"| {stage} | - | not run |")
    total = sum(r["seconds"] for r in records.values() if r)
    lines += [f"| **total** | {total:.0f} | |", ""]

    if r := records["index"]:
        lines += ["## Index", "", f"{r['docs']} passages of the embedded HotpotQA corpus (every supporting paragraph "
                  f"of the job's questions plus distractors), retriever `{r['retriever']}`, built in "
                  f"{r['seconds']:.0f} s.", ""]

    if r := records["warmstart"]:
        ws = json.loads(Path(r["report"]).read_text())
        gold, training = ws["gold_stats"], ws["training"]
        curve = _plot(out / "warmstart_loss.png", {"SFT loss": list(enumerate(training["losses"], 1))},
                      "warm-start", "step")
        lines += ["## Warm-start", "",
                  f"Gold trajectories: {gold['solver_kept']} solver ({gold['solver_dropped']} questions dropped as "
                  f"unanswerable from the index; {gold['mean_searches']:.2f} searches each), "
                  f"{gold['generator_kept']} generator, {gold.get('revision_kept', 0)} revision "
                  f"({gold.get('too_long', 0)} rows over the length limit left "
                  f"out). verl SFT: {training['steps']} steps on {training['rows']} "
                  f"rows in {training['seconds']:.0f} s, loss {training['losses'][0]:.3f} -> "
                  f"{training['losses'][-1]:.3f}{' (cached model)' if ws['cached'] else ''}. Model: `{ws['model']}`.",
                  ""]
        lines += [f"![SFT loss]({curve.name})", ""] if curve else []

    if r := records["generate"]:
        gen_md = Path(r["report"]).read_text() if Path(r["report"]).is_file() else ""
        lines += ["## SAGE generation (warm-started model as generator and solver)", "",
                  f"{r['items']} seeds: " + ", ".join(f"{k} {v}" for k, v in r["statuses"].items()) + "."
                  + (f" {r['pairs']} pairs in the training set, {r['stated_answers']} of them with the answer stated "
                     "in the question." if "pairs" in r else ""), "",
                  *_section(gen_md, "Intrinsic evaluation"), f"Full generation report: `{r['report']}`.", ""]

    if r := records["train"]:
        steps = r["steps"]
        keys = [k for k in ("reward", "acc", "searches", "answered") if any(k in s for s in steps)]
        curve = _plot(out / "training.png", {k: [(s["step"], s[k]) for s in steps if k in s] for k in keys},
                      "GRPO training", "step")
        data = ", ".join(f"`{Path(f).name}`" for f in r["train_files"])
        if r.get("online"):
            data = (f"online: part of each batch from the question pool a SAGE producer (the warm-started model) "
                    f"filled during training (`{r.get('pool')}`), the rest from {data}")
        columns = ["reward", "acc", "searches", "answered", "step_s"] + (["pool"] if r.get("online") else [])
        lines += ["## Training", "", f"Data: {data}. One row per step (reward: the step-aware score; acc: exact "
                  "match; answered: share of trajectories that ended in an answer"
                  + ("; pool: questions in the pool" if r.get("online") else "") + ").", "",
                  "| step | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for s in steps:
            lines.append(f"| {s['step']} | " + " | ".join(f"{s[k]:.3g}" if k in s else "-" for k in columns) + " |")
        lines += ["", f"![training curves]({curve.name})", ""] if curve else [""]

    if r := records["eval"]:
        lines += ["## Evaluation", "", "Greedy, the training episode policy, exact match; 95% Wilson intervals.", "",
                  "| model | benchmark | questions | EM | 95% interval | searches | answered | invalid turns |",
                  "|---|---|---|---|---|---|---|---|"]
        scores: dict[tuple[str, str], tuple[float, float, float]] = {}
        for label, path in r["results"].items():
            for bench, s in json.loads(Path(path).read_text())["benchmarks"].items():
                n = s["episodes"] - s["failed_episodes"]
                lo, hi = wilson(s["em"] * n, n)
                scores[label, bench] = (s["em"], lo, hi)
                lines.append(f"| {label} | {bench} | {n} | {s['em']:.3f} | [{lo:.3f}, {hi:.3f}] | "
                             f"{s['searches_mean']:.2f} | {s['answered']:.2f} | {s['invalid_turn_rate']:.2f} |")
        lines.append("")
        lines += [verdict(bench, scores[("warmstart", bench)], scores[("trained", bench)])
                  for (label, bench) in scores if label == "trained" and ("warmstart", bench) in scores]
        lines.append("")
    return atomic_write_text(out / "report.md", "\n".join(lines))
