"""Evaluation metrics: answer scores (EM, F1, cover EM), pass@k, avg@k, histograms.

Answer scores use `sage_rl.qa_match`, the training reward's SQuAD normalisation (as in Search-R1), so eval
and reward agree on what a correct answer is. Pure Python: no verl, numpy or torch.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sage_rl.qa_match import cover_exact_match, exact_match, f1


@dataclass(frozen=True)
class AnswerScores:
    """One prediction's scores against a question's gold answers, each in [0, 1]."""

    em: float
    f1: float
    cover_em: float


def score_answer(prediction: str | None, golds: Sequence[str]) -> AnswerScores:
    """EM, token F1 and cover EM of a prediction against several gold answers (best gold for each).

    A missing answer (`None`: the episode ended without `<answer>`) scores 0 on everything.

    >>> score_answer("The Eiffel Tower!", ["Eiffel Tower"])
    AnswerScores(em=1.0, f1=1.0, cover_em=1.0)
    >>> score_answer("Paris, France", ["Paris"])
    AnswerScores(em=0.0, f1=0.6666666666666666, cover_em=1.0)
    >>> score_answer(None, ["Paris"])
    AnswerScores(em=0.0, f1=0.0, cover_em=0.0)
    """
    if isinstance(golds, str):  # a bare string would be read as one gold answer per character
        raise TypeError(f"golds must be a sequence of strings, not the string {golds!r}")
    if not golds:
        raise ValueError("no gold answers to score against")
    if prediction is None:
        return AnswerScores(em=0.0, f1=0.0, cover_em=0.0)
    return AnswerScores(em=exact_match(prediction, golds), f1=f1(prediction, golds),
                        cover_em=cover_exact_match(prediction, golds))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021).

    Computed as the product 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms the huge binomials.

    >>> pass_at_k(n=4, c=0, k=2), pass_at_k(n=4, c=4, k=2)
    (0.0, 1.0)
    >>> round(pass_at_k(n=4, c=1, k=2), 6)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    0.5
    """
    if n < 1:
        raise ValueError(f"pass@k needs at least one sample, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"the number of correct samples must be in [0, n={n}], got c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}] (cannot draw {k} of {n} samples)")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def avg_at_k(scores: Sequence[float]) -> float:
    """avg@k: the mean score over the k samples of one question (then averaged over questions).

    >>> avg_at_k([1.0, 0.0, 1.0, 0.0])
    0.5
    """
    if not scores:
        raise ValueError("avg@k of no samples")
    return mean(scores)


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean; an empty input is an error, not 0 or NaN, because a metric over nothing is a bug.

    >>> mean([1, 2, 3, 4])
    2.5
    """
    values = list(values)
    if not values:
        raise ValueError("mean of no values")
    return math.fsum(values) / len(values)


def histogram(values: Iterable[int]) -> dict[int, int]:
    """Counts per value with sorted keys, e.g. searches per episode; JSON-friendly and stable to diff.

    >>> histogram([2, 0, 2, 1, 2])
    {0: 1, 1: 1, 2: 3}
    """
    return dict(sorted(Counter(values).items()))
