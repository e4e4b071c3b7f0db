"""Execution feedback: which solver trace to show, and the two feedback prompts.

As in SAGE (arXiv 2601.18202) and `feedback_gen.py` in the authors' released code (google-research `sage/`).

A pair that failed verification goes back to the generator with both traces:
- T_gen: the generator's round-0 prompt and trajectory (every retrieved document), plus its latest
  revision's reply from round 2 on (our choice: the paper's code is not explicit, and re-embedding each
  earlier feedback prompt would grow the prompt without new documents);
- T_search: one solver rollout: the correct rollout with the fewest searches; if none is correct, a
  random rollout with a non-empty answer; else a random rollout.
Correct-but-too-easy pairs get the difficulty prompt, wrong ones the correctness prompt. Both allow only
facts from documents already retrieved, since the revision call cannot search.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from sage_rl.generate.generator import answer_type_phrase
from sage_rl.generate.records import QACandidate, Seed, Verification
from sage_rl.judge import Verdict
from sage_rl.protocol import truncate_tokens
from sage_rl.search_agent import Trajectory

DIFFICULTY_PROMPT = """You wrote a question meant to need at least {steps} searches, but a search agent \
answered it correctly with only {found} search(es).

Your question: {question}
Your answer: {answer}

Your earlier work (prompt, searches and the documents you read):
<generator_trace>
{gen_trace}
</generator_trace>

The search agent's fastest correct attempt:
<search_agent_trace>
{solver_trace}
</search_agent_trace>

First explain inside <reason> and </reason> why the agent needed fewer than {steps} searches (for example: \
several facts sit in one document, a detail can be searched directly, or one query found facts from \
different documents). Then plan inside <think> and </think> a revision that needs at least {steps} \
searches. You cannot search now: use only facts from documents in the two traces above. Steps that need \
no search do not count. If patching the question is hard, write a new one from those documents.

Output the revised question between <question> and </question>, its answer ({answer_type}) between \
<answer> and </answer>, and between <search steps> and </search steps> one line per step: exact search \
query | sub-answer | supporting document title. Every step must be necessary (no shortcut), and no single \
search may solve two steps: take the facts of different steps from different documents.
"""

CORRECTNESS_PROMPT = """You wrote a question that a search agent failed to answer correctly in {k} \
attempts: your answer is "{answer}", and the attempt shown below answered "{predicted}".

Your question: {question}

Your earlier work (prompt, searches and the documents you read):
<generator_trace>
{gen_trace}
</generator_trace>

One of the search agent's attempts:
<search_agent_trace>
{solver_trace}
</search_agent_trace>

First explain inside <reason> and </reason> where the disagreement comes from (for example: the question \
is ambiguous, your answer is wrong or not supported, or the agent retrieved the wrong documents). Then \
plan inside <think> and </think> how to fix the question, the answer or both, so that the answer is \
correct, unique and still needs at least {steps} searches. You cannot search now: use only facts from \
documents in the two traces above. If fixing it is hard, write a new pair from those documents.

Output the revised question between <question> and </question>, its answer ({answer_type}) between \
<answer> and </answer>, and between <search steps> and </search steps> one line per step: exact search \
query | sub-answer | supporting document title. Every step must be necessary (no shortcut), and no single \
search may solve two steps: take the facts of different steps from different documents.
"""


def choose_trace(trajectories: Sequence[Trajectory], verdicts: Sequence[Verdict], rng: random.Random) -> int:
    """Index of the solver rollout to show the generator.

    >>> t = lambda n, a: Trajectory("p", (), a, n)
    >>> v = lambda ok: Verdict(ok, float(ok), "em")
    >>> choose_trace([t(3, "a"), t(1, "a"), t(2, "b")], [v(True), v(False), v(True)], random.Random(0))
    2
    >>> choose_trace([t(1, None), t(2, "b")], [v(False), v(False)], random.Random(0))
    1
    """
    correct = [i for i, v in enumerate(verdicts) if v.correct]
    if correct:
        return min(correct, key=lambda i: (trajectories[i].num_searches, i))
    answered = [i for i, t in enumerate(trajectories) if t.answer]
    return rng.choice(answered or list(range(len(trajectories))))


def feedback_kind(verification: Verification) -> str:
    """`difficulty` for a correct but too easy pair, `correctness` for a wrong one."""
    return "difficulty" if verification.correct else "correctness"


def feedback_prompt(
    seed: Seed,
    candidate: QACandidate,
    verification: Verification,
    gen_trace: str,
    solver_trajectory: Trajectory,
    max_trace_tokens: int | None = None,
) -> str:
    """The revision prompt for a failed pair. Traces longer than `max_trace_tokens` keep their head and tail."""
    common = dict(
        steps=seed.target_steps,
        question=candidate.question,
        answer=candidate.answer,
        answer_type=answer_type_phrase(seed.answer_type),
        gen_trace=_clip(gen_trace, max_trace_tokens),
        solver_trace=_clip(solver_trajectory.transcript(), max_trace_tokens),
    )
    if feedback_kind(verification) == "difficulty":
        # a pair that states its answer needs no search, whatever the rollouts did (loop.reject_stated_answers)
        return DIFFICULTY_PROMPT.format(found=0 if verification.shortcut else verification.min_searches, **common)
    return CORRECTNESS_PROMPT.format(k=verification.k, predicted=solver_trajectory.answer or "(no answer)", **common)


def _clip(text: str, max_tokens: int | None) -> str:
    """Keep the first and last halves of a long trace (whitespace tokens): the prompt and the final output."""
    if max_tokens is None or len(text.split()) <= max_tokens:
        return text
    head = truncate_tokens(text, max_tokens // 2)
    tail = " ".join(text.split()[-(max_tokens - max_tokens // 2) :])
    return f"{head}\n[... trace shortened ...]\n{tail}"
