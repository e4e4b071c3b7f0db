"""`sage-rl recipes ls` / `cp`: find the shipped recipes and copy one out to edit (torchtune's `tune ls` / `tune cp`).

A recipe is `<recipes_dir>/<group>/<name>.yaml`, group = the command that runs it (`train`, `eval`, ...).
Some recipes pull in sibling files through Hydra's `defaults:` list (`cpu/tiny`, `paper/sage_ppo`, or another
recipe such as `sage_paper_wiki18`). Hydra looks those up in the folder given by `--config-path`, so `cp` copies
them too, at the same relative paths, and the copy composes to the same config from its new folder. Defaults
that are not files of the group (verl's `ppo_trainer`, found through the recipe's `hydra.searchpath`, and
the schemas sage_rl registers in code, `eval_schema`, `pipeline_schema`) are left to resolve as before.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from sage_rl.config import recipes_dir

LAUNCH = "# Launch:"


@dataclass(frozen=True)
class RecipeInfo:
    """One launchable recipe: `group/name`, its file, and the first line of its description."""

    group: str
    name: str
    path: Path
    description: str


def groups() -> list[str]:
    """The recipe groups, i.e. the `sage-rl` commands that take a recipe."""
    return sorted(p.name for p in recipes_dir().iterdir() if p.is_dir() and any(p.glob("*.yaml")))


def describe(path: Path) -> str:
    """The first comment line after the `# Launch:` block (which may continue on indented comment lines).

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "r.yaml"
    >>> _ = p.write_text("# Launch:  sage-rl eval --config-name r\\n#          and more\\n#\\n# What it does.\\nx: 1")
    >>> describe(p)
    'What it does.'
    """
    lines = path.read_text().splitlines()
    in_launch = bool(lines) and lines[0].startswith(LAUNCH)
    for line in lines[1:] if in_launch else lines:
        if not line.startswith("#"):
            break
        text = line[1:]
        if in_launch and text.startswith("  "):  # an indented continuation of the launch command
            continue
        in_launch = False
        if text.strip():
            return text.strip()
    return ""


def list_recipes(group: str | None = None) -> list[RecipeInfo]:
    """The launchable recipes of one group, or of all; the shared fragments in subfolders are not listed."""
    wanted = [group] if group else groups()
    if group and group not in groups():
        raise FileNotFoundError(f"no recipe group {group!r} in {recipes_dir()}; groups: {', '.join(groups())}")
    return [RecipeInfo(g, p.stem, p, describe(p)) for g in wanted for p in sorted((recipes_dir() / g).glob("*.yaml"))]


def recipe_path(spec: str) -> tuple[Path, Path]:
    """`GROUP/NAME` (NAME may be a fragment such as `cpu/tiny`; `.yaml` optional) -> (group folder, file)."""
    group, _, name = spec.removesuffix(".yaml").partition("/")
    if not group or not name:
        raise ValueError(f"expected GROUP/NAME, e.g. train/grpo_tiny_cpu, got {spec!r}")
    group_dir = recipes_dir() / group
    if not group_dir.is_dir():
        raise FileNotFoundError(f"no recipe group {group!r} in {recipes_dir()}; groups: {', '.join(groups())}")
    path = group_dir / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(group_dir.glob("*.yaml")))
        raise FileNotFoundError(f"no recipe {spec!r}; recipes in {group}: {known}")
    return group_dir, path


def _default_names(entry: object, parent: str) -> list[str]:
    """Config paths one `defaults:` entry names, relative to the group folder (Hydra's forms: `name`,
    `optional name`, `override name`, `/abs/name`, `{group: option}`, `{group: [options]}`)."""
    if isinstance(entry, str):
        names = [entry.removeprefix("optional ").removeprefix("override ").strip()]
    elif isinstance(entry, dict):
        names = []
        for key, value in entry.items():
            key = str(key).removeprefix("optional ").removeprefix("override ").strip()
            options = value if isinstance(value, list) else [value]
            names += [f"{key}/{option}" for option in options if option is not None]
    else:
        return []
    return [n[1:] if n.startswith("/") else f"{parent}{n}" for n in names if n != "_self_"]


def dependencies(group_dir: Path, path: Path) -> list[Path]:
    """Files of `group_dir` that `path`'s defaults list names, transitively (relative paths, in order)."""
    found: list[Path] = []
    todo = [path.relative_to(group_dir)]
    while todo:
        rel = todo.pop(0)
        data = OmegaConf.to_container(OmegaConf.load(group_dir / rel))  # unresolved: only `defaults` is read
        defaults = data.get("defaults", []) if isinstance(data, dict) else []
        parent = "" if rel.parent == Path(".") else f"{rel.parent.as_posix()}/"
        for entry in defaults:
            for name in _default_names(entry, parent):
                dep = Path(f"{name}.yaml")
                if (group_dir / dep).is_file() and dep not in found and dep != path.relative_to(group_dir):
                    found.append(dep)
                    todo.append(dep)
    return found


def copy_recipe(spec: str, dest: str | Path, force: bool = False) -> list[Path]:
    """Copy recipe `spec` (`GROUP/NAME`) and the files its defaults list names to `dest`; returns the written
    files, the recipe first.

    `dest` ending in `.yaml` is the recipe's new file; anything else is a folder (created if needed) that gets
    `NAME.yaml`. The defaults' files go next to the recipe at their relative paths (`cpu/tiny.yaml`), so
    `--config-path <that folder>` composes the copy. Nothing is written if a target exists, unless `force`.
    """
    group_dir, source = recipe_path(spec)
    dest = Path(dest).expanduser()
    target = dest if dest.suffix == ".yaml" else dest / source.name
    pairs = [(source, target)] + [(group_dir / d, target.parent / d) for d in dependencies(group_dir, source)]
    for src, dst in pairs:
        if dst.resolve() == src.resolve():
            raise FileExistsError(f"{dst} is the shipped recipe itself; copy it somewhere else")
    if not force and (existing := [dst for _, dst in pairs if dst.exists()]):
        raise FileExistsError(f"refusing to overwrite {', '.join(map(str, existing))}; use --force to overwrite")
    for src, dst in pairs:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    return [dst for _, dst in pairs]
