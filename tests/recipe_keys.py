"""Composed recipes as flat `a.b.c -> value` dicts, so tests can say which keys two recipes may differ in."""

from omegaconf import OmegaConf

from sage_rl.config import compose, recipes_dir


def flat(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def composed_train_recipe(name: str) -> dict:
    """`recipes/train/<name>` composed (sage_rl's and verl's interpolations left as written), flattened."""
    return flat(OmegaConf.to_container(compose(recipes_dir() / "train", name)))
