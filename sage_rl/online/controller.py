"""The difficulty controller: which target number of searches S the producer asks the generator for next.

SAGE's S is the knob the paper shows steers difficulty (more required searches, harder questions). Online,
the controller moves S so the live policy keeps solving fresh questions sometimes but not always: GRPO
learns nothing from a group that is all correct or all wrong.

Control law (one update per training step that served at least `min_fresh` fresh questions):

    p = pass rate of the policy's rollouts on questions served for the first time in that step
    p > band_high  ->  centre += step_size     (too easy: ask for more searches)
    p < band_low   ->  centre -= step_size     (too hard: ask for fewer)
    otherwise      ->  centre stays            (inside the band nothing moves)
    centre is clamped to [min_steps, max_steps]

Targets are drawn from a discretised normal around the centre, P(S) ∝ exp(-(S - centre)^2 / (2 width^2))
for S in [min_steps, max_steps], so neighbouring S keep being produced and measured. Knobs: the band, the
step size (how fast it reacts), the width (how much it explores) and `min_fresh` (how much evidence a move
needs). Only fresh questions count: a question already trained on gets easier for the policy, which would
push S up for the wrong reason.

The state is a pure function of the per-step history, so after a resume it is rebuilt exactly by replaying
the question pool's feedback (`QuestionPool` does this); nothing else has to be saved.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ControllerConfig:
    """The `online.controller` block of an online recipe."""

    min_steps: int = 2  # the range of S, as in `sage-rl generate` (the paper's [2, 5])
    max_steps: int = 5
    band: tuple[float, float] = (0.2, 0.8)  # target pass rate of the policy on fresh questions
    step_size: float = 0.5  # centre move per out-of-band training step
    width: float = 1.0  # spread of drawn S around the centre
    min_fresh: int = 1  # fresh questions a step must have served to move the centre
    initial: float | None = None  # starting centre; None = middle of the range

    def __post_init__(self) -> None:
        low, high = self.band
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError("online.controller: need 1 <= min_steps <= max_steps")
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"online.controller.band must satisfy 0 <= low <= high <= 1, got {self.band}")
        if self.step_size < 0 or self.width <= 0 or self.min_fresh < 1:
            raise ValueError("online.controller: need step_size >= 0, width > 0, min_fresh >= 1")


@dataclass
class TargetController:
    """The current target-S distribution and how it got there."""

    config: ControllerConfig = field(default_factory=ControllerConfig)
    centre: float = 0.0
    moves: list[tuple[int, float, float]] = field(default_factory=list)  # (step, fresh pass rate, new centre)

    def __post_init__(self) -> None:
        c = self.config
        self.centre = float(c.initial if c.initial is not None else (c.min_steps + c.max_steps) / 2)
        self.centre = min(max(self.centre, c.min_steps), c.max_steps)

    def update(self, step: int, fresh_correct: int, fresh_rollouts: int, fresh_questions: int) -> float:
        """Apply one training step's outcome on fresh questions; returns the new centre.

        >>> c = TargetController(ControllerConfig(min_steps=2, max_steps=5, band=(0.2, 0.8), step_size=0.5))
        >>> c.centre, c.update(1, 8, 8, 2), c.update(2, 4, 8, 2), c.update(3, 0, 8, 2)
        (3.5, 4.0, 4.0, 3.5)
        """
        c = self.config
        if fresh_questions < c.min_fresh or fresh_rollouts == 0:
            return self.centre
        rate = fresh_correct / fresh_rollouts
        low, high = c.band
        if rate > high:
            self.centre = min(self.centre + c.step_size, c.max_steps)
        elif rate < low:
            self.centre = max(self.centre - c.step_size, c.min_steps)
        self.moves.append((step, rate, self.centre))
        return self.centre

    def distribution(self) -> dict[int, float]:
        """P(S) for every S in range (sums to 1)."""
        c = self.config
        weights = {s: math.exp(-((s - self.centre) ** 2) / (2 * c.width**2))
                   for s in range(c.min_steps, c.max_steps + 1)}
        total = sum(weights.values())
        return {s: w / total for s, w in weights.items()}

    def draw(self, rng: random.Random) -> int:
        """One target S from the current distribution."""
        dist = self.distribution()
        return rng.choices(list(dist), weights=list(dist.values()))[0]
