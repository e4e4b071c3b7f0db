"""`sage-rl`: the project's single command-line entry point.

    sage-rl train --config-name grpo_tiny_cpu [hydra overrides ...]
    sage-rl generate --config-name sage_tiny_cpu [hydra overrides ...]
    sage-rl eval --config-name smollm2_cpu [hydra overrides ...]
    sage-rl warmstart --config-name smollm2_cpu [hydra overrides ...]
    sage-rl pipeline --config-name quickstart_cpu [--verbose] [hydra overrides ...]
    sage-rl models prepare [embedder|smollm2|tiny-qwen2 ...]
    sage-rl recipes ls [GROUP]
    sage-rl recipes cp GROUP/NAME DEST [--force]
"""

from __future__ import annotations

import argparse
import logging
import sys

from sage_rl import __version__


class ConfigError(Exception):
    """A recipe that cannot be loaded: the user's input, reported without a traceback."""


def _load_config(load, args: argparse.Namespace):
    """Compose a recipe; bad names, paths, overrides or values become a one-line `ConfigError`."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return load(args.config_name, args.overrides, args.config_path)
    except (FileNotFoundError, ValueError, HydraException, OmegaConfBaseException) as e:
        raise ConfigError(str(e).strip() or type(e).__name__) from e


def _cmd_train(args: argparse.Namespace) -> int:
    from sage_rl.train.launch import load_train_config, run

    run(_load_config(load_train_config, args))
    return 0


def _run_stage(cfg, stage, what: str) -> dict | None:
    """Run an async stage to completion; Ctrl-C keeps what is saved and says how to resume."""
    import asyncio

    try:
        return asyncio.run(stage(cfg))
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished {what} are saved. Resume with the same command ({cfg.run.output_dir})",  # noqa: T201
              file=sys.stderr)
        return None


def _cmd_generate(args: argparse.Namespace) -> int:
    from sage_rl.generate.config import load_generate_config
    from sage_rl.generate.loop import generate

    paths = _run_stage(_load_config(load_generate_config, args), generate, "items")
    if paths is None:
        return 130
    for name, path in paths.items():
        print(f"{name}: {path}")  # noqa: T201
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from sage_rl.eval.config import load_eval_config
    from sage_rl.eval.runner import evaluate

    paths = _run_stage(_load_config(load_eval_config, args), evaluate, "episodes")
    if paths is None:
        return 130
    print(paths["results_md"].read_text())  # noqa: T201 - the run's table is the command's answer
    for name, path in paths.items():
        print(f"{name}: {path}")  # noqa: T201
    return 0


def _cmd_warmstart(args: argparse.Namespace) -> int:
    from sage_rl.train.sft import load_warmstart_config, run_warmstart

    result = run_warmstart(_load_config(load_warmstart_config, args))
    print(f"report: {result.report}")  # noqa: T201
    print(f"model: {result.model}")  # noqa: T201 - last line: scripts read the model folder from it
    return 0


def _cmd_pipeline(args: argparse.Namespace) -> int:
    from sage_rl.pipeline import StageFailed, load_pipeline_config, run_pipeline

    cfg = _load_config(load_pipeline_config, args)
    cfg.run.verbose = cfg.run.verbose or args.verbose
    try:
        run_pipeline(cfg)
    except StageFailed as e:
        print(f"sage-rl pipeline: {e}", file=sys.stderr)  # noqa: T201
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished stages are kept. Resume with the same command ({cfg.run.output_dir})",  # noqa: T201
              file=sys.stderr)
        return 130
    return 0


def _cmd_models_prepare(args: argparse.Namespace) -> int:
    from sage_rl.models import MODELS, model_path

    for name in args.names or list(MODELS):
        print(f"{name}: {model_path(name)}", flush=True)  # noqa: T201
    return 0


def _cmd_recipes_ls(args: argparse.Namespace) -> int:
    from sage_rl.config import recipes_dir
    from sage_rl.recipe_files import list_recipes

    try:
        recipes = list_recipes(args.group)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from e
    width = max((len(f"{r.group}/{r.name}") for r in recipes), default=0)
    print(f"# recipes in {recipes_dir()}")  # noqa: T201 - where `cp` copies from and SAGE_RL_RECIPES points
    for r in recipes:
        print(f"{r.group}/{r.name}".ljust(width + 2) + r.description)  # noqa: T201
    return 0


def _cmd_recipes_cp(args: argparse.Namespace) -> int:
    from sage_rl.recipe_files import copy_recipe

    try:
        written = copy_recipe(args.recipe, args.dest, force=args.force)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        raise ConfigError(str(e)) from e
    for path in written:
        print(f"copied {path}")  # noqa: T201
    group = args.recipe.partition("/")[0]
    print(f"run it with: sage-rl {group} --config-path {written[0].parent} --config-name {written[0].stem}")  # noqa: T201
    return 0


def _recipe_command(sub, name: str, help: str, example_recipe: str, example_overrides: str,  # noqa: A002
                    func) -> argparse.ArgumentParser:
    """A `sage-rl <name> --config-name <recipe> [overrides]` command; recipes live in recipes/<name>."""
    cmd = sub.add_parser(name, help=help)
    cmd.add_argument("--config-name", required=True, help=f"recipe name, e.g. {example_recipe}")
    cmd.add_argument("--config-path", default=None, help=f"folder of recipes (default: recipes/{name})")
    cmd.add_argument("overrides", nargs="*", help=f"Hydra overrides, e.g. {example_overrides}")
    cmd.set_defaults(func=func)
    return cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sage-rl", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"sage_rl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    _recipe_command(sub, "train", "run verl PPO/GRPO from a recipe in recipes/train", "grpo_tiny_cpu",
                    "trainer.total_training_steps=1", _cmd_train)
    _recipe_command(sub, "generate", "SAGE QA generation from a recipe in recipes/generate", "sage_tiny_cpu",
                    "seeds.num_items=10 run.output_dir=out", _cmd_generate)
    _recipe_command(sub, "eval", "evaluate a search agent on deep-search benchmarks (recipes/eval)", "smollm2_cpu",
                    "model.path=<checkpoint> run.output_dir=out", _cmd_eval)
    _recipe_command(sub, "warmstart", "fine-tune a model on gold search trajectories (recipes/warmstart)",
                    "smollm2_cpu", "gold.limit=40 trainer.total_epochs=1", _cmd_warmstart)
    pipe = _recipe_command(sub, "pipeline", "the main job: index, warm-start, SAGE data, training, evaluation, report",
                           "quickstart_cpu", "run.stages=[eval,report]", _cmd_pipeline)
    pipe.add_argument("--verbose", action="store_true", help="stream every stage's output (also SAGE_RL_VERBOSE=1)")

    models = sub.add_parser("models", help="the offline default models")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    prepare = models_sub.add_parser("prepare", help="convert/build the default models once and print their paths")
    prepare.add_argument("names", nargs="*", help="embedder, smollm2, tiny-qwen2 (default: all)")
    prepare.set_defaults(func=_cmd_models_prepare)

    recipes = sub.add_parser("recipes", help="list the shipped recipes or copy one to edit")
    recipes_sub = recipes.add_subparsers(dest="recipes_command", required=True)
    ls = recipes_sub.add_parser("ls", help="list recipes (GROUP/NAME and what each runs)")
    ls.add_argument("group", nargs="?", default=None, help="one group: train, generate, eval, warmstart, pipeline")
    ls.set_defaults(func=_cmd_recipes_ls)
    cp = recipes_sub.add_parser("cp", help="copy a recipe and the files its defaults list names",
                                description="Copy a recipe to DEST (a .yaml file or a folder) with the shared files "
                                            "its `defaults:` list names (e.g. cpu/tiny.yaml), so that "
                                            "`--config-path <DEST folder>` composes the copy.")
    cp.add_argument("recipe", help="GROUP/NAME, e.g. train/grpo_tiny_cpu (see `sage-rl recipes ls`)")
    cp.add_argument("dest", help="file (ending in .yaml) or folder to copy to")
    cp.add_argument("--force", action="store_true", help="overwrite existing files")
    cp.set_defaults(func=_cmd_recipes_cp)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request drowns the progress bar
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # INFO notes on categorical axes in the plots
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"sage-rl: error: {e}", file=sys.stderr)  # noqa: T201
        return 2


if __name__ == "__main__":
    sys.exit(main())
