"""Fixtures: a small slice of the embedded HotpotQA corpus and hashing-encoder indexes built from it.

The hashing encoder needs no model, so every fixture here builds in well under a second.
"""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path

import pytest

from retrieval_server.build import build_index
from retrieval_server.config import BuildConfig, EncoderConfig, ServeConfig
from retrieval_server.server import Service

REPO = Path(__file__).resolve().parents[3]
HOTPOT_CORPUS = REPO / "sage_rl" / "assets" / "hotpotqa" / "corpus.jsonl.gz"
N_SMALL = 200


def write_small_corpus(path: Path, n: int = N_SMALL) -> Path:
    """First `n` rows of the embedded HotpotQA corpus, as plain jsonl."""
    with gzip.open(HOTPOT_CORPUS, "rb") as src, open(path, "wb") as dst:
        for line in itertools.islice(src, n):
            dst.write(line)
    return path


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_small_corpus(tmp_path_factory.mktemp("corpus") / "small.jsonl")


@pytest.fixture(scope="session")
def hashing_index(tmp_path_factory: pytest.TempPathFactory, small_corpus: Path) -> Path:
    """Flat dense (hashing-256) + BM25 index over the small corpus."""
    out = tmp_path_factory.mktemp("index") / "flat"
    cfg = BuildConfig(corpus=small_corpus, out=out, encoder=EncoderConfig(model="hashing-256"), index_type="Flat")
    build_index(cfg, show_progress=False)
    return out


@pytest.fixture
def serve_cfg(hashing_index: Path) -> ServeConfig:
    return ServeConfig(index=hashing_index, retriever="dense")


@pytest.fixture
def service(serve_cfg: ServeConfig) -> Service:
    return Service.load(serve_cfg)
