"""Architecture rules that a reader can miss (STYLE.md §1.1):

- only `sage_rl/train/` imports verl, in sage_rl and in the retrieval server;
- the retrieval server and sage_rl share nothing but the HTTP contract: `retrieval_server` never imports
  `sage_rl`, and `sage_rl` imports nothing of `retrieval_server` but the contract's client,
  `retrieval_server.client`, which must stay cheap to import (no torch, FAISS, FastAPI, ...);
- the retrieval server installs alone (`retrieval_server/pyproject.toml`, the `sage-rl-retrieval` distribution):
  every third-party module it imports is one of that distribution's requirements (so never vLLM, verl or
  sage_rl), and what only an extra provides (Ray) is imported inside functions.

Imports are read from the syntax tree, so lazy imports inside functions count too.
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imports(source: str, filename: str = "<source>") -> set[str]:
    """Dotted names a module imports: `import a.b` -> a.b; `from a import b` -> a.b; import_module("a") -> a.

    >>> sorted(_imports("import verl\\nfrom retrieval_server import client\\ndef f():\\n    from sage_rl.x import y"))
    ['retrieval_server.client', 'sage_rl.x.y', 'verl']
    """
    names = set()
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:  # relative: same package
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and _called_name(node) in {"import_module", "__import__"} and node.args:
            if isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    return names


def _called_name(call: ast.Call) -> str | None:
    """`f` for `f(...)` and `m.f(...)`."""
    if isinstance(call.func, ast.Name):
        return call.func.id
    return call.func.attr if isinstance(call.func, ast.Attribute) else None


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _files(*packages: str) -> list[Path]:
    return sorted(path for package in packages for path in (ROOT / package).rglob("*.py"))


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _file_imports(path: Path) -> set[str]:
    return _imports(path.read_text(), filename=str(path))


@pytest.mark.parametrize("path", _files("sage_rl", "retrieval_server"), ids=_id)
def test_verl_only_in_sage_rl_train(path: Path) -> None:
    if path.is_relative_to(ROOT / "sage_rl" / "train"):
        return
    bad = {m for m in _file_imports(path) if _within(m, "verl")}
    assert not bad, f"{_id(path)} imports {bad}; only sage_rl/train/ may import verl"


@pytest.mark.parametrize("path", _files("sage_rl"), ids=_id)
def test_sage_rl_uses_only_the_retrieval_client(path: Path) -> None:
    imports = _file_imports(path)
    bad = {m for m in imports if _within(m, "retrieval_server") and not _within(m, "retrieval_server.client")}
    assert not bad, f"{_id(path)} imports {bad}; sage_rl may only use retrieval_server.client"


@pytest.mark.parametrize("path", _files("retrieval_server"), ids=_id)
def test_retrieval_server_never_imports_sage_rl(path: Path) -> None:
    bad = {m for m in _file_imports(path) if _within(m, "sage_rl")}
    assert not bad, f"{_id(path)} imports {bad}; the retrieval server shares only the HTTP contract with sage_rl"


@pytest.mark.parametrize(
    "source",
    [
        "import verl",
        "from verl.trainer import main_ppo",
        "def f():\n    import verl.utils as u",
        "import importlib\nimportlib.import_module('verl.workers')",
    ],
)
def test_the_import_reader_sees_every_form_of_import(source: str) -> None:
    assert any(_within(m, "verl") for m in _imports(source))


def test_client_import_pulls_no_heavy_dependencies() -> None:
    code = (
        "import sys, retrieval_server.client; "
        "print(sorted(m for m in ('torch', 'faiss', 'fastapi', 'bm25s', 'ray', 'sentence_transformers') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# Import name -> distribution name, where they differ by more than `_` vs `-`.
DISTRIBUTION_OF = {"faiss": "faiss-cpu", "yaml": "pyyaml"}


def _retrieval_requirements() -> tuple[set[str], set[str]]:
    """(always installed, only with an extra) distribution names of `retrieval_server/pyproject.toml`."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    project = tomllib.loads((ROOT / "retrieval_server" / "pyproject.toml").read_text())["project"]

    def names(reqs: list[str]) -> set[str]:
        return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}

    extras = set().union(*(names(r) for r in project.get("optional-dependencies", {}).values()))
    return names(project["dependencies"]), extras


def _third_party(names: set[str]) -> set[str]:
    tops = {n.split(".")[0] for n in names}
    return {DISTRIBUTION_OF.get(t, t.replace("_", "-")) for t in tops
            if t not in sys.stdlib_module_names and t != "retrieval_server"}


@pytest.mark.parametrize("path", _files("retrieval_server"), ids=_id)
def test_retrieval_server_imports_only_its_distributions_requirements(path: Path) -> None:
    base, extras = _retrieval_requirements()
    anywhere = _third_party(_file_imports(path))
    assert anywhere <= base | extras, f"{_id(path)} imports {anywhere - base - extras}; not required by the package"
    body = ast.parse(path.read_text(), filename=str(path)).body
    eager = {a.name for n in body if isinstance(n, ast.Import) for a in n.names}
    eager |= {n.module for n in body if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    module_level = _third_party(eager)
    assert module_level <= base, f"{_id(path)} imports the optional {module_level - base} at module level"
