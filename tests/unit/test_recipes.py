"""Every shipped recipe composes, opens with its launch command, and (for training) passes verl's validation."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sage_rl.config import compose, recipes_dir

RECIPES = sorted(p for p in recipes_dir().glob("*/*.yaml"))
TRAIN_RECIPES = [p for p in RECIPES if p.parent.name == "train"]


def test_recipes_are_found():
    assert TRAIN_RECIPES, f"no training recipes under {recipes_dir()}"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_composes_and_opens_with_its_launch_command(recipe: Path):
    first = recipe.read_text().splitlines()[0]
    assert first.startswith("# Launch:") and f"--config-name {recipe.stem}" in first, first
    cfg = compose(recipe.parent, recipe.stem)
    assert len(cfg) > 0


@pytest.mark.parametrize("recipe", TRAIN_RECIPES, ids=lambda p: p.stem)
def test_train_recipe_extends_verl_and_passes_its_validation(recipe: Path):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from sage_rl.models import tiny_model_path
    from sage_rl.train.launch import load_train_config

    # GPU recipes name hub models, which cannot be fetched here: validate them with the tiny model's files.
    overrides = [] if "cpu" in recipe.stem else [f"actor_rollout_ref.model.path={tiny_model_path()}"]
    cfg = load_train_config(recipe.stem, overrides, config_dir=recipe.parent)
    # verl's defaults are inherited, not restated: a key only ppo_trainer.yaml sets is present.
    assert "rollout_correction" in cfg.algorithm
    if "cpu" in recipe.stem:  # CPU recipes run here, so everything they name must exist offline
        assert Path(cfg.actor_rollout_ref.model.path, "config.json").is_file()
        assert Path(cfg.data.train_files).is_file()
    if cfg.actor_rollout_ref.rollout.agent.agent_loop_config_path:
        assert Path(cfg.actor_rollout_ref.rollout.agent.agent_loop_config_path).is_absolute()  # verl's requirement
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    if "search_agent" in cfg:  # sage_rl's own block: typos fail here, not in a Ray worker mid-run
        from sage_rl.train.search_agent_loop import SearchAgentConfig

        SearchAgentConfig.from_trainer_config(cfg)
    OmegaConf.resolve(cfg)  # every remaining verl interpolation resolves


def test_overrides_reach_the_config():
    cfg = compose(recipes_dir() / "train", "grpo_tiny_cpu", ["trainer.total_training_steps=7"])
    assert cfg.trainer.total_training_steps == 7


def test_unknown_recipe_names_the_available_ones():
    with pytest.raises(FileNotFoundError, match="grpo_tiny_cpu"):
        compose(recipes_dir() / "train", "no_such_recipe")
