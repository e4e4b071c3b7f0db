"""The difficulty controller: direction of moves on scripted outcomes, nothing inside the band, clamping,
and a distribution that follows the centre."""

from __future__ import annotations

import random

import pytest

from sage_rl.online.controller import ControllerConfig, TargetController


def _controller(**kw) -> TargetController:
    return TargetController(ControllerConfig(**({"min_steps": 2, "max_steps": 5, "band": (0.2, 0.8)} | kw)))


def test_too_easy_raises_s_and_too_hard_lowers_it():
    c = _controller(step_size=0.5)
    start = c.centre
    assert c.update(1, fresh_correct=8, fresh_rollouts=8, fresh_questions=2) == start + 0.5
    assert c.update(2, fresh_correct=0, fresh_rollouts=8, fresh_questions=2) == start


@pytest.mark.parametrize("correct", [2, 4, 6])  # 0.25, 0.5, 0.75 of 8: inside [0.2, 0.8]
def test_inside_the_band_nothing_moves(correct):
    c = _controller()
    before = c.centre
    for step in range(1, 6):
        c.update(step, correct, 8, 2)
    assert c.centre == before and len(c.moves) == 5


def test_the_centre_is_clamped_and_the_distribution_follows_it():
    c = _controller(step_size=1.0, width=0.7)
    for step in range(10):
        c.update(step, 8, 8, 2)
    assert c.centre == 5
    dist = c.distribution()
    assert sum(dist.values()) == pytest.approx(1.0) and max(dist, key=dist.get) == 5
    rng = random.Random(0)
    draws = [c.draw(rng) for _ in range(2000)]
    assert draws.count(5) > draws.count(4) > draws.count(3) > draws.count(2)
    for step in range(10):
        c.update(step, 0, 8, 2)
    assert c.centre == 2 and max(c.distribution(), key=c.distribution().get) == 2


def test_a_step_without_enough_fresh_questions_does_not_move():
    c = _controller(min_fresh=3)
    before = c.centre
    assert c.update(1, 8, 8, fresh_questions=2) == before and c.moves == []
    assert c.update(2, 0, 0, fresh_questions=5) == before  # no rollouts: no evidence


@pytest.mark.parametrize(("kw", "message"), [({"band": (0.9, 0.1)}, "band"), ({"min_steps": 6}, "min_steps"),
                                             ({"width": 0}, "width")])
def test_bad_settings_are_rejected_with_the_key(kw, message):
    with pytest.raises(ValueError, match=message):
        _controller(**kw)
