"""Sharded index build on Ray (`build --shards N --ray-encoders K`): a private local Ray instance with 2 CPUs,
the hashing encoder on 2 actors, 200 passages (~20 s, most of it Ray start-up).

The Ray build must write the same index as the single-process build (same bytes, same top-k), resume a build
killed after k shards without encoding them again, and load in the server like any other index.
"""

from __future__ import annotations

import gzip
import itertools
import os
from pathlib import Path

import pytest
from index_build import INDEX_FILES, CountingEncoder

from retrieval_server.build import SHARDS_DIR, build_index
from retrieval_server.config import BuildConfig, EncoderConfig, ServeConfig
from retrieval_server.server import Service

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
QUERIES = ["American football player born in Texas", "album released by a rock band", "river in Europe"]


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    environ = dict(os.environ)  # ray.init sets RAY_AUTH_MODE=token (and more) here; later tests must not inherit it
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")  # private: never a shared cluster
    try:
        yield ray
    finally:
        ray.shutdown()
        os.environ.clear()
        os.environ.update(environ)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "c200.jsonl"
    with gzip.open(REPO / "sage_rl" / "assets" / "hotpotqa" / "corpus.jsonl.gz", "rb") as src:
        path.write_bytes(b"".join(itertools.islice(src, 200)))
    return path


def _cfg(corpus: Path, out: Path, **kw) -> BuildConfig:
    return BuildConfig(corpus=corpus, out=out, encoder=EncoderConfig(model="hashing-64"), chunk_size=20,
                       embeddings_cache=None, **kw)  # fmt: skip


def _top3(index: Path) -> list[list[str]]:
    service = Service.load(ServeConfig(index=index, retriever="dense"))
    rows = service.retriever.search(QUERIES, 3).rows
    return [[service.docs.get(int(i)).id for i in r] for r in rows]


def test_ray_sharded_build_equals_single_process_and_resumes(ray_local, corpus: Path, tmp_path: Path) -> None:
    build_index(_cfg(corpus, tmp_path / "one"), show_progress=False)
    report = build_index(_cfg(corpus, tmp_path / "ray", shards=4, ray_encoders=2), show_progress=False)
    assert report.encoded == 200 and not (tmp_path / "ray" / SHARDS_DIR).exists()
    for name in INDEX_FILES:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    assert _top3(tmp_path / "ray") == _top3(tmp_path / "one")

    # Killed during shard 2 (3 encoder calls of <= 20 rows per 50-row shard), resumed on the Ray actors.
    cfg = _cfg(corpus, tmp_path / "resumed", shards=4)
    with pytest.raises(KeyboardInterrupt):
        build_index(cfg, encoder=CountingEncoder(fail_at=8), show_progress=False)
    resumed = build_index(cfg.model_copy(update={"ray_encoders": 2}), show_progress=False)
    assert resumed.encoded == 100  # shards 2 and 3 only
    assert _top3(tmp_path / "resumed") == _top3(tmp_path / "one")
    assert (tmp_path / "resumed" / "dense.faiss").read_bytes() == (tmp_path / "one" / "dense.faiss").read_bytes()
