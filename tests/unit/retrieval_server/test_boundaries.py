"""retrieval_server shares only the HTTP contract with sage_rl; the client must stay cheap to import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import retrieval_server

PKG = Path(retrieval_server.__file__).parent


def test_retrieval_server_never_imports_sage_rl() -> None:
    offenders = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "sage_rl"]
    assert offenders == []


def test_client_import_pulls_no_heavy_dependencies() -> None:
    code = (
        "import sys, retrieval_server.client; "
        "print(sorted(m for m in ('torch', 'faiss', 'fastapi', 'bm25s', 'ray', 'sentence_transformers') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
