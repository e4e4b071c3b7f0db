"""The `online:` block of a training recipe: the question pool, its producers and how batches mix.

    online:
      enable: true
      mix: 1.0                  # share of each batch drawn from the pool (0.0 = the static file only)
      wait_s: 60                # how long one batch item waits for the pool before taking a static row
      num_producers: 1
      generate_recipe: sage_tiny_cpu   # the `sage-rl generate` recipe the producers run (endpoints, K, R, ...)
      generate_overrides: []
      pool: {folder: ..., retire_after: 2, controller: {band: [0.2, 0.8], step_size: 0.5, ...}}
      producer: {max_unserved: 32, poll_s: 1.0}

Every field has a default; unknown keys are errors that list the known ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from sage_rl.config import reject_unknown
from sage_rl.online.controller import ControllerConfig
from sage_rl.online.pool import PoolConfig
from sage_rl.online.producer import ProducerConfig


def _build(cls: type, block: dict, where: str, nested: dict[str, Any] | None = None):
    reject_unknown(where, block, [f.name for f in fields(cls)])
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in block.items()}
    return cls(**(values | (nested or {})))


@dataclass(frozen=True)
class OnlineConfig:
    enable: bool = False
    mix: float = 1.0
    wait_s: float = 60.0
    num_producers: int = 1
    generate_recipe: str = "sage_tiny_cpu"
    generate_overrides: tuple[str, ...] = ()
    pool: PoolConfig = field(default_factory=PoolConfig)
    producer: ProducerConfig = field(default_factory=ProducerConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.mix <= 1.0:
            raise ValueError(f"online.mix must be in [0, 1], got {self.mix}")
        if self.wait_s < 0 or self.num_producers < 0:
            raise ValueError("online: need wait_s >= 0 and num_producers >= 0")

    @classmethod
    def from_mapping(cls, block: Any) -> OnlineConfig:
        """From the recipe's `online:` block (a dict or DictConfig; None = disabled)."""
        from omegaconf import DictConfig, OmegaConf

        if block is None:
            return cls()
        block = OmegaConf.to_container(block, resolve=True) if isinstance(block, DictConfig) else dict(block)
        pool = dict(block.pop("pool", None) or {})
        producer = dict(block.pop("producer", None) or {})
        controller = _build(ControllerConfig, dict(pool.pop("controller", None) or {}), "online.pool.controller")
        return _build(cls, block, "online", {
            "pool": _build(PoolConfig, pool, "online.pool", {"controller": controller}),
            "producer": _build(ProducerConfig, producer, "online.producer"),
        })
