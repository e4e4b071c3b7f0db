"""Verification: K solver rollouts, judged; pass@K and difficulty.

As in SAGE (arXiv 2601.18202) and `aggregate_bon_results` in the authors' released code (google-research
`sage/`):

correct   = at least one of the K rollouts is judged correct (pass@K);
|S*|      = the fewest searches among the correct rollouts;
difficult = correct and |S*| >= S (the target number of searches).
Avg@K is the fraction of correct rollouts (the paper reports it on correct items; lower = harder).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sage_rl.generate.records import Verification
from sage_rl.judge import Judge, Verdict
from sage_rl.search_agent import SearchAgent, Trajectory


def summarize(trajectories: Sequence[Trajectory], verdicts: Sequence[Verdict], target_steps: int) -> Verification:
    """Aggregate judged rollouts into the paper's decision.

    >>> from sage_rl.search_agent import Trajectory
    >>> t = lambda n, a: Trajectory("p", (), a, n)
    >>> v = lambda ok: Verdict(ok, float(ok), "em")
    >>> s = summarize([t(1, "x"), t(3, "y"), t(4, "y")], [v(False), v(True), v(True)], target_steps=3)
    >>> s.correct, s.min_searches, s.difficult, round(s.avg_at_k, 2)
    (True, 3, True, 0.67)
    """
    correct_searches = [t.num_searches for t, v in zip(trajectories, verdicts, strict=True) if v.correct]
    min_searches = min(correct_searches) if correct_searches else None
    k = len(verdicts)
    return Verification(
        k=k,
        num_correct=len(correct_searches),
        correct=bool(correct_searches),
        difficult=min_searches is not None and min_searches >= target_steps,
        avg_at_k=len(correct_searches) / k if k else 0.0,
        min_searches=min_searches,
        searches=tuple(t.num_searches for t in trajectories),
        answers=tuple(t.answer for t in trajectories),
        judge_garbled=sum(v.garbled for v in verdicts),
    )


async def verify(
    question: str, golds: Sequence[str], target_steps: int, solver: SearchAgent, judge: Judge, k: int
) -> tuple[Verification, list[Trajectory], list[Verdict]]:
    """Run K independent solver rollouts concurrently, judge each, and summarize."""
    trajectories = list(await asyncio.gather(*(solver.solve(question) for _ in range(k))))
    verdicts = list(await asyncio.gather(*(judge(question, t.answer, golds) for t in trajectories)))
    return summarize(trajectories, verdicts, target_steps), trajectories, verdicts
