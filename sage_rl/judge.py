"""Judges: is a predicted answer correct for a question with gold answers?

- `LLMJudge`: LLM-as-a-judge in the BrowseComp/HLE grader style (the paper's choice): extract the final
  answer, explain, conclude `correct: yes|no`; a list variant accepts any of several gold answers.
  Parsed with `correct:\\s*(yes|no)`; a reply without that line counts as incorrect and is flagged
  `garbled` so runs can report how often the judge itself failed.
- `exact_match`, `f1` (>= threshold) and `cover_exact_match` with SQuAD normalisation: free and
  deterministic alternatives, chosen by `judge.kind` in config.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sage_rl import qa_match
from sage_rl.llm import ChatModel


@dataclass(frozen=True)
class Verdict:
    """One judgement. `score` is 1/0 for binary judges and the F1 value for `f1`."""

    correct: bool
    score: float
    method: str
    raw: str | None = None
    garbled: bool = False


Judge = Callable[[str, str | None, Sequence[str]], Awaitable[Verdict]]

# Our own wording of the BrowseComp/HLE-style grader in the authors' released code
# (google-research `sage/`, `prompt_gemini_llm_as_a_judge.py`).
JUDGE_PROMPT = """You are grading an answer to a question against the correct answer.

Question: {question}

Response: {response}

Correct answer: {gold}

First write `extracted_final_answer:` followed by the final answer taken from the response (or None).
Then write `reasoning:` and explain briefly whether the extracted answer means the same as the correct
answer. Judge meaning, not wording: ignore capitalization and formatting, accept a small margin for
numbers, and do not add your own opinion about which answer is right.
Finally write `correct: yes` if they match and `correct: no` otherwise, then `confidence:` as a percentage.
"""

JUDGE_LIST_PROMPT = """You are grading an answer to a question against a list of acceptable answers.

Question: {question}

Response: {response}

Acceptable answers (any one is correct): {gold}

First write `extracted_final_answer:` followed by the final answer taken from the response (or None).
Then write `reasoning:` and explain briefly whether the extracted answer means the same as any acceptable
answer. Judge meaning, not wording: ignore capitalization and formatting, accept a small margin for
numbers, and do not add your own opinion about which answer is right.
Finally write `correct: yes` if it matches one of them and `correct: no` otherwise, then `confidence:` as a
percentage.
"""

_CORRECT_RE = re.compile(r"correct:\s*\**\s*(yes|no)", re.IGNORECASE)


def parse_correct(text: str) -> bool | None:
    """The grader's decision: True/False from the last `correct: yes|no`, None if absent.

    >>> parse_correct("reasoning: same city\\ncorrect: yes\\nconfidence: 90%")
    True
    >>> parse_correct("I think so") is None
    True
    """
    found = _CORRECT_RE.findall(text)
    return found[-1].lower() == "yes" if found else None


@dataclass
class LLMJudge:
    """The paper's judge (temperature 0, 512 output tokens by default)."""

    llm: ChatModel
    max_tokens: int = 512
    temperature: float = 0.0

    async def __call__(self, question: str, prediction: str | None, golds: Sequence[str]) -> Verdict:
        if not prediction:
            return Verdict(False, 0.0, "llm", raw=None)
        template = JUDGE_LIST_PROMPT if len(golds) > 1 else JUDGE_PROMPT
        gold = ", ".join(golds) if len(golds) > 1 else golds[0]
        prompt = template.format(question=question, response=prediction, gold=gold)
        completion = await self.llm.chat(
            [{"role": "user", "content": prompt}], max_tokens=self.max_tokens, temperature=self.temperature
        )
        decision = parse_correct(completion.text)
        return Verdict(bool(decision), float(bool(decision)), "llm", raw=completion.text, garbled=decision is None)


def _cheap(method: str, fn: Callable[[str, Sequence[str]], float], threshold: float) -> Judge:
    async def judge(question: str, prediction: str | None, golds: Sequence[str]) -> Verdict:
        score = fn(prediction, golds) if prediction else 0.0
        return Verdict(score >= threshold, score, method)

    return judge


def make_judge(kind: str, llm: ChatModel | None = None, *, f1_threshold: float = 0.8, max_tokens: int = 512) -> Judge:
    """The judge named by config: `llm`, `em`, `f1` or `cover_em`.

    >>> import asyncio
    >>> asyncio.run(make_judge("em")("Q?", "the Paris", ["Paris"])).correct
    True
    """
    if kind == "llm":
        if llm is None:
            raise ValueError("judge.kind=llm needs a judge LLM")
        return LLMJudge(llm, max_tokens=max_tokens)
    cheap = {
        "em": (qa_match.exact_match, 1.0),
        "cover_em": (qa_match.cover_exact_match, 1.0),
        "f1": (qa_match.f1, f1_threshold),
    }
    if kind not in cheap:
        raise ValueError(f"unknown judge kind {kind!r}; expected llm, em, f1 or cover_em")
    fn, threshold = cheap[kind]
    return _cheap(kind, fn, threshold)
