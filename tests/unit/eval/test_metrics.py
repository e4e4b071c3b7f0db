"""Evaluation metrics on hand-checked cases: answer scores, pass@k against brute force, avg@k, histograms."""

import itertools
import math
from fractions import Fraction

import pytest

from sage_rl.eval.metrics import AnswerScores, avg_at_k, histogram, mean, pass_at_k, score_answer
from sage_rl.qa_match import cover_exact_match, exact_match, f1

# --- score_answer ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("prediction", "gold"), [
    ("The Beatles", "Beatles"),          # leading article
    ("an apple", "Apple"),               # article + case
    ("PARIS", "paris"),                  # case
    ("  New   York \n", "New York"),     # whitespace collapses
    ("U.S.A.", "USA"),                   # punctuation is deleted, not replaced by a space
    ("Eiffel Tower!", "the Eiffel tower"),
])
def test_normalisation_makes_these_equal(prediction, gold):
    assert score_answer(prediction, [gold]) == AnswerScores(em=1.0, f1=1.0, cover_em=1.0)


def test_articles_are_removed_only_as_whole_words():
    assert score_answer("Anthem", ["them"]).em == 0.0  # "them" inside "Anthem" is not an article match
    assert score_answer("Theater", ["Theater"]).em == 1.0


def test_best_of_several_gold_answers():
    scores = score_answer("Stanley Hall", ["G. Stanley Hall", "Stanley Hall"])
    assert scores == AnswerScores(em=1.0, f1=1.0, cover_em=1.0)
    # No exact gold: F1 is the best over golds (2 of 3 tokens of "g stanley hall" -> P=1, R=2/3 -> 0.8).
    assert score_answer("Stanley Hall", ["G. Stanley Hall", "Hall of fame"]).f1 == pytest.approx(0.8)


def test_list_like_answers():
    # A longer prediction that contains the gold: EM fails, cover EM passes, F1 is partial (P=1/2, R=1).
    assert score_answer("Paris, France", ["Paris"]) == AnswerScores(em=0.0, f1=pytest.approx(2 / 3), cover_em=1.0)
    # The reverse (gold is the longer one): cover EM needs the whole gold inside the prediction, so 0.
    assert score_answer("Paris", ["Paris, France"]) == AnswerScores(em=0.0, f1=pytest.approx(2 / 3), cover_em=0.0)
    # Cover EM matches whole words only: "Paris" does not cover "Parisian".
    assert score_answer("Parisian cafes", ["Paris"]).cover_em == 0.0


def test_numbers():
    # Punctuation is deleted, so the thousands separator disappears: "1,000" == "1000".
    assert score_answer("1,000", ["1000"]).em == 1.0
    # The same rule also merges a decimal point: "1.5" == "15" (a known false positive of SQuAD normalisation).
    assert score_answer("1.5", ["15"]).em == 1.0
    # No number-word normalisation: "3" and "three" differ on every metric.
    assert score_answer("3", ["three"]) == AnswerScores(em=0.0, f1=0.0, cover_em=0.0)


@pytest.mark.parametrize("prediction", [None, "", "   ", "the"])
def test_missing_or_empty_prediction_scores_zero(prediction):
    # None: no <answer> at all. "", whitespace and a lone article normalise to "" and match no real gold.
    assert score_answer(prediction, ["Paris", "City of Light"]) == AnswerScores(em=0.0, f1=0.0, cover_em=0.0)


@pytest.mark.parametrize(("prediction", "golds"), [
    ("it was in Tulsa, Oklahoma", ["Tulsa"]), ("Tulsa Oklahoma", ["tulsa", "oklahoma city"]), ("no", ["yes"]),
])
def test_score_answer_is_the_training_reward_matching(prediction, golds):
    # Eval and the reward must agree on what is correct: score_answer adds nothing to qa_match.
    assert score_answer(prediction, golds) == AnswerScores(
        em=exact_match(prediction, golds), f1=f1(prediction, golds), cover_em=cover_exact_match(prediction, golds))


def test_golds_must_be_a_non_empty_sequence_of_strings():
    with pytest.raises(TypeError, match="not the string"):
        score_answer("P", "Paris")  # would otherwise be golds P, a, r, i, s and score EM 1
    with pytest.raises(ValueError, match="no gold answers"):
        score_answer("Paris", [])


# --- pass@k / avg@k -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (4, 1, 2, 1 - 3 / 6),        # 1 - C(3,2)/C(4,2)
    (5, 2, 2, 1 - 3 / 10),       # 1 - C(3,2)/C(5,2) = 0.7
    (10, 3, 5, 1 - 21 / 252),    # 1 - C(7,5)/C(10,5)
    (8, 4, 4, 1 - 1 / 70),       # 1 - C(4,4)/C(8,4)
    (3, 1, 3, 1.0),              # k = n: any correct sample is drawn
])
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_1_is_the_fraction_correct_and_the_extremes_are_0_and_1(n):
    for c in range(n + 1):
        assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-12)
    for k in range(1, n + 1):
        assert pass_at_k(n, 0, k) == 0.0
        assert pass_at_k(n, n, k) == 1.0


def test_pass_at_k_equals_brute_force_over_all_k_subsets():
    for n in range(1, 8):
        for c in range(n + 1):
            samples = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(samples, k))
                brute = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (n, c, k)


def test_pass_at_k_is_stable_for_large_n():
    # C(1000, 500) has ~300 digits; the product form never builds it. Check against exact rational arithmetic.
    n, c, k = 1000, 37, 500
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-12)
    assert 0.0 <= pass_at_k(200, 1, 100) <= 1.0 and pass_at_k(200, 1, 100) == pytest.approx(0.5)


@pytest.mark.parametrize(("n", "c", "k", "message"), [
    (4, 1, 5, "k must be in"),
    (4, 1, 0, "k must be in"),
    (4, 5, 2, "correct samples must be in"),
    (4, -1, 2, "correct samples must be in"),
    (0, 0, 1, "at least one sample"),
])
def test_pass_at_k_rejects_impossible_arguments(n, c, k, message):
    with pytest.raises(ValueError, match=message):
        pass_at_k(n, c, k)


def test_avg_at_k_is_the_mean_over_samples():
    assert avg_at_k([1.0, 0.0, 1.0, 0.0]) == 0.5
    assert avg_at_k([0.2, 0.4, 0.9]) == pytest.approx(0.5)
    # avg@k of 0/1 scores equals pass@1 with n = k, c = number correct.
    assert avg_at_k([1, 0, 0, 1, 1]) == pytest.approx(pass_at_k(5, 3, 1))
    with pytest.raises(ValueError, match="no samples"):
        avg_at_k([])


# --- histogram / mean ---------------------------------------------------------------------------------------------


def test_histogram_counts_with_sorted_keys():
    hist = histogram(x for x in [3, 0, 1, 3, 3, 0])
    assert hist == {0: 2, 1: 1, 3: 3}
    assert list(hist) == [0, 1, 3]
    assert histogram([]) == {}


def test_mean():
    assert mean([1, 2, 3, 4]) == 2.5
    assert mean([0.1] * 10) == 0.1  # fsum: no drift from repeated float addition
    with pytest.raises(ValueError, match="no values"):
        mean([])
