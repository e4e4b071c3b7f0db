"""Architecture rules that a reader can miss: only sage_rl/train imports verl; the retrieval server and
sage_rl share nothing but the HTTP contract (sage_rl may use the contract's client)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", _files("sage_rl"), ids=lambda p: str(p.relative_to(ROOT)))
def test_verl_only_in_train(path: Path):
    if "train" in path.relative_to(ROOT / "sage_rl").parts[:1]:
        return
    bad = {m for m in _imports(path) if m == "verl" or m.startswith("verl.")}
    assert not bad, f"{path} imports {bad}; only sage_rl/train/ may import verl"


@pytest.mark.parametrize("path", _files("sage_rl"), ids=lambda p: str(p.relative_to(ROOT)))
def test_sage_rl_uses_only_the_retrieval_client(path: Path):
    bad = {m for m in _imports(path) if m.startswith("retrieval_server") and m != "retrieval_server.client"}
    assert not bad, f"{path} imports {bad}; sage_rl may only use retrieval_server.client"


@pytest.mark.parametrize("path", _files("retrieval_server"), ids=lambda p: str(p.relative_to(ROOT)))
def test_retrieval_server_never_imports_sage_rl(path: Path):
    bad = {m for m in _imports(path) if m == "sage_rl" or m.startswith("sage_rl.")}
    assert not bad, f"{path} imports {bad}"
