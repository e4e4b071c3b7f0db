"""`sage-rl train`: compose a recipe on top of verl's `ppo_trainer` config and run verl's PPO main.

We call verl's own `main_ppo` functions (auto device, config validation, Ray start-up) rather than
restating them, so behaviour tracks the pinned verl; sage_rl only chooses the task runner.
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
    """Run verl's PPO trainer on a composed config (blocks until training ends).

    With `trainer.v1.trainer_mode=sage` (sage_rl's recipes) the body of verl's `main_ppo.main` runs with
    `SageTaskRunner`, the task runner whose process knows the `sage` trainer; any other mode is verl's own
    `main` unchanged.
    """
    from verl.trainer import main_ppo

    print(OmegaConf.to_yaml(cfg.trainer, resolve=False), flush=True)  # noqa: T201 - the user's record of the run
    if not (cfg.trainer.get("use_v1", True) and cfg.trainer.v1.trainer_mode == "sage"):
        main_ppo.main.__wrapped__(cfg)
        return
    from sage_rl.online.config import OnlineConfig
    from sage_rl.train.guard import RewardGuard
    from sage_rl.train.trainer import SageTaskRunner

    RewardGuard.from_trainer_config(cfg)  # a typo in reward_guard or online fails here, not in the Ray driver
    OnlineConfig.from_mapping(cfg.get("online"))
    main_ppo.auto_set_device(cfg)
    main_ppo.validate_config(config=cfg, use_reference_policy=main_ppo.need_reference_policy(cfg),
                             use_critic=main_ppo.need_critic(cfg))
    main_ppo.run_ppo(cfg, task_runner_class=SageTaskRunner)
