"""The report written at the end of every `sage-rl generate` run: `report.md` plus PNG plots.

It opens with the intrinsic-evaluation table of SAGE (arXiv 2601.18202) per round: an item's state after
round r is its latest candidate up to r (accepted items keep their accepted pair). Over items that did not
fail: %corr = pass@K >= 1; %pass = correct and |S*| >= S; Avg@K = mean rollout accuracy over correct
items (lower = harder); #search = mean |S*| over correct items. Garbled items count as neither correct nor
passing. Then the same per target S, status counts, histograms, the answer-type mix, LLM calls and
tokens per pair in the final dataset, and a few full examples with their traces.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from sage_rl.generate.assemble import QAItem, states_answer
from sage_rl.generate.config import GenerateConfig
from sage_rl.generate.records import ItemRecord, RoundRecord
from sage_rl.generate.store import read_trajectories


def state_after(record: ItemRecord, r: int) -> RoundRecord | None:
    """The item's latest round <= r (None if it has none, e.g. a failed item)."""
    rounds = [x for x in record.rounds if x.round <= r]
    return rounds[-1] if rounds else None


def intrinsic_row(records: Sequence[ItemRecord], r: int) -> dict[str, float | int | None]:
    """%corr, %pass, Avg@K, #search after round r over items that did not fail."""
    states = [state_after(rec, r) for rec in records if rec.status != "failed"]
    n = len(states)
    verified = [s.verification for s in states if s is not None and s.verification is not None]
    correct = [v for v in verified if v.correct]
    passed = sum(1 for s in states if s is not None and s.passed)
    return {
        "n": n,
        "corr": 100 * len(correct) / n if n else None,
        "pass": 100 * passed / n if n else None,
        "avg_at_k": 100 * sum(v.avg_at_k for v in correct) / len(correct) if correct else None,
        "search": sum(v.min_searches or 0 for v in correct) / len(correct) if correct else None,
    }


def round_label(records: Sequence[ItemRecord], r: int, step: str) -> str:
    """The table's label for round r >= 1: `+r feedback`, and how many of its rounds were new drafts from the seed
    instead (`loop.retry_garbled` after a garbled draft), so a redraft is not read as the paper's revision."""
    redrafts = sum(1 for rec in records for x in rec.rounds if x.round == r and x.kind == "resample")
    if step == "resample" or not redrafts:
        return f"+{r} {step}"
    return f"+{r} {step} ({redrafts} redraft{'s' if redrafts > 1 else ''})"


def _fmt(x: float | int | None, digits: int = 1) -> str:
    return "–" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def _table(rows: list[tuple[str, dict]]) -> list[str]:
    out = ["| | n | %corr ↑ | %pass ↑ | Avg@K ↓ | #search ↑ |", "|---|---|---|---|---|---|"]
    for label, row in rows:
        out.append(f"| {label} | {row['n']} | {_fmt(row['corr'])} | {_fmt(row['pass'])} | {_fmt(row['avg_at_k'])} | "
                   f"{_fmt(row['search'], 2)} |")
    return out


def _plots(out_dir: Path, records: Sequence[ItemRecord], items: Sequence[QAItem], last: int) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    plot_dir = out_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    rollouts = [n for rec in records for rnd in rec.rounds if rnd.verification for n in rnd.verification.searches]
    finals = [state_after(rec, last) for rec in records]
    min_s = [v.min_searches for s in finals if s and (v := s.verification) and v.min_searches is not None]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    for ax, data, title in (
        (axes[0], rollouts, "searches per solver rollout (all rounds)"),
        (axes[1], min_s, "|S*| fewest searches, correct items (final)"),
        (axes[2], [i.min_searches for i in items], "|S*| of pairs in the dataset"),
    ):
        if data:
            ax.hist(data, bins=range(0, max(data) + 2), align="left", rwidth=0.85)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("searches")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(plot_dir / "search_histograms.png", dpi=110)
    plt.close(fig)

    by_s: dict[int, list[ItemRecord]] = defaultdict(list)
    for rec in records:
        by_s[rec.seed.target_steps].append(rec)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    xs = sorted(by_s)
    for r in range(last + 1):
        ax.plot(xs, [intrinsic_row(by_s[s], r)["pass"] or 0 for s in xs], marker="o", label=f"after round {r}")
    ax.set_xlabel("target S")
    ax.set_ylabel("%pass")
    ax.set_ylim(0, 100)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plot_dir / "pass_by_target.png", dpi=110)
    plt.close(fig)
    return ["plots/search_histograms.png", "plots/pass_by_target.png"]


def _clip(text: str, n: int = 1500) -> str:
    return text if len(text) <= n else text[: n // 2] + "\n[...]\n" + text[-n // 2 :]


def _example(rec: ItemRecord, traj: dict | None) -> list[str]:
    out = [f"### Item {rec.item_id}: status {rec.status}, target S={rec.seed.target_steps}, "
           f"answer type {rec.seed.answer_type}", "", f"Seed doc {rec.seed.doc_id} ({rec.seed.title}).", ""]
    for rnd in rec.rounds:
        c, v = rnd.candidate, rnd.verification
        if c is None:
            out.append(f"- round {rnd.round} ({rnd.kind}): garbled generator output")
            continue
        out.append(f"- round {rnd.round} ({rnd.kind}): **Q:** {c.question} **A:** {c.answer}")
        if v is not None:
            out.append(f"  - solver answers {list(v.answers)}, searches {list(v.searches)}, "
                       f"correct {v.num_correct}/{v.k}, |S*|={v.min_searches}")
    for t in (traj or {}).get("rounds", []):
        out += ["", f"<details><summary>round {t['round']} generator trace</summary>", "", "```",
                _clip(t["generator"]["prompt"] + "".join(x["text"] + x["observation"]
                                                         for x in t["generator"]["turns"])),
                "```", "</details>"]
        idx = t.get("feedback_trace_index")
        if idx is not None and t["solver"]:
            s = t["solver"][idx]
            out += [f"<details><summary>round {t['round']} solver trace #{idx}</summary>", "", "```",
                    _clip("".join(x["text"] + x["observation"] for x in s["turns"])), "```", "</details>"]
    return out + [""]


def write_report(out_dir: Path, records: Sequence[ItemRecord], items: Sequence[QAItem], cfg: GenerateConfig) -> Path:
    """Write `report.md` (and plots) for the run's records and its assembled dataset."""
    last = cfg.loop.rounds
    step = "resample" if cfg.loop.mode == "resample" else "feedback"
    rows = [("round 0 (A_gen with S)", intrinsic_row(records, 0))]
    rows += [(round_label(records, r, step), intrinsic_row(records, r)) for r in range(1, last + 1)]
    status = Counter(r.status for r in records)
    lines = [
        "# SAGE generation report", "",
        f"Run folder `{out_dir}`; {len(records)} items; K={cfg.solver.num_rollouts} solver rollouts, "
        f"R={last} {step} rounds, S in [{cfg.seeds.min_steps}, {cfg.seeds.max_steps}], judge `{cfg.judge.kind}`, "
        f"generator `{cfg.generator.llm.model}`, solver `{cfg.solver.llm.model}`.", "",
        "## Intrinsic evaluation (paper Table: %corr, %pass, Avg@K, #search)", "", *_table(rows), "",
        "## Per target S (after the last round)", "",
        *_table([(f"S={s}", intrinsic_row([r for r in records if r.seed.target_steps == s], last))
                 for s in sorted({r.seed.target_steps for r in records})]), "",
    ]
    garbled = Counter(rnd.round for rec in records for rnd in rec.rounds if rnd.garbled)
    judge_garbled = sum(rnd.verification.judge_garbled for rec in records for rnd in rec.rounds if rnd.verification)
    budget = sum(rnd.budget_exhausted for rec in records for rnd in rec.rounds)
    shortcuts = sum(rnd.verification.shortcut for rec in records for rnd in rec.rounds if rnd.verification)
    lines += [
        "## Outcomes", "",
        f"- items: {dict(sorted(status.items()))}; pairs in the final dataset: **{len(items)}**",
        f"- garbled generator outputs per round: {dict(sorted(garbled.items())) or 0}; "
        f"judge replies without `correct: yes|no`: {judge_garbled}; generator budget exhausted: {budget}",
        f"- answer types (seeds): {dict(Counter(r.seed.answer_type for r in records))}; "
        f"(dataset): {dict(Counter(i.answer_type for i in items))}",
        f"- rounds the dataset's pairs come from: {dict(sorted(Counter(i.round for i in items).items()))}",
        f"- pairs whose question states their answer (a solver that copies it is correct): "
        f"{sum(states_answer(i.question, i.answer) for i in items)} of {len(items)} in the dataset; rounds whose pair "
        f"did, made not difficult by `loop.reject_stated_answers`: {shortcuts}", "",
    ]
    failed = [r for r in records if r.status == "failed"]
    if failed:
        lines += [f"- failed items (errors after retries): {len(failed)}; first: `{failed[0].error}`", ""]
    totals: dict[str, Counter] = defaultdict(Counter)
    for rec in records:
        for role, u in rec.usage.items():
            totals[role].update(u)
    lines += ["## LLM cost", "", "| role | calls | prompt tokens | completion tokens | calls / pair | tokens / pair |",
              "|---|---|---|---|---|---|"]
    for role in sorted(totals):
        u = totals[role]
        tok = u["prompt_tokens"] + u["completion_tokens"]
        per = (lambda x: f"{x / len(items):.1f}") if items else (lambda x: "– (no pairs)")
        lines.append(f"| {role} | {u['calls']} | {u['prompt_tokens']} | {u['completion_tokens']} | "
                     f"{per(u['calls'])} | {per(tok)} |")
    all_calls = sum(u["calls"] for u in totals.values())
    all_tok = sum(u["prompt_tokens"] + u["completion_tokens"] for u in totals.values())
    lines += [f"| **all** | {all_calls} | | | {all_calls / len(items):.1f} | {all_tok / len(items):.0f} |"
              if items else f"| **all** | {all_calls} | | | – | – |", ""]
    plots = _plots(out_dir, records, items, last)
    lines += ["## Plots", "", *[f"![{p}]({p})" for p in plots], ""]
    # Examples: pairs in the dataset first; if there are none, whatever happened, so a reader sees why.
    ids = [i.item_id for i in items][: cfg.run.report_examples]
    if len(ids) < cfg.run.report_examples:
        ids += [r.item_id for r in records if r.item_id not in ids and r.rounds][: cfg.run.report_examples - len(ids)]
    by_id = {r.item_id: r for r in records}
    trajs = read_trajectories(out_dir / "trajectories.jsonl", set(ids))
    lines += ["## Examples", ""]
    for i in ids:
        lines += _example(by_id[i], trajs.get(i))
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    (out_dir / "summary.json").write_text(json.dumps(
        {"items": len(records), "status": status, "pairs": len(items),
         "intrinsic": {label: row for label, row in rows}, "llm_calls": all_calls, "llm_tokens": all_tok}, indent=1))
    return path
