"""`sage-rl train`: compose a recipe on top of verl's `ppo_trainer` config and run verl's PPO main.

We call the body of `verl.trainer.main_ppo.main` (auto device, config validation, v1/v0 trainer choice,
Ray start-up) rather than restating it, so behaviour tracks the pinned verl exactly.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sage_rl.config import compose, recipes_dir, resolve_own_interpolations


def train_recipes_dir() -> Path:
    return recipes_dir() / "train"


def load_train_config(config_name: str, overrides: list[str] | None = None,
                      config_dir: str | Path | None = None) -> DictConfig:
    """The fully composed training config, with sage_rl's model and data references turned into paths."""
    cfg = compose(config_dir or train_recipes_dir(), config_name, overrides)
    resolve_own_interpolations(cfg)
    return cfg


def run(cfg: DictConfig) -> None:
    """Run verl's PPO trainer on a composed config (blocks until training ends)."""
    from verl.trainer import main_ppo

    print(OmegaConf.to_yaml(cfg.trainer, resolve=False), flush=True)  # noqa: T201 - the user's record of the run
    main_ppo.main.__wrapped__(cfg)
