"""Sharded, resumable build (in-process encoders; the Ray path is tests/e2e/test_index_build_sharded.py) and
the memory-flat writers: the same bytes as a single-process build, shards skipped after a kill, RSS flat."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
from index_build import INDEX_FILES, CountingEncoder

from retrieval_server.build import SHARDS_DIR, build_index
from retrieval_server.config import BuildConfig, EncoderConfig
from retrieval_server.corpus import OFFSETS_FILE, DocStoreWriter, Passage
from retrieval_server.index import FAISS_FILE, FlatIndexWriter

N_SMALL = 200  # rows in the small_corpus fixture (conftest.py)
def _cfg(corpus: Path, out: Path, **kw) -> BuildConfig:
    return BuildConfig(corpus=corpus, out=out, encoder=EncoderConfig(model="hashing-64"), chunk_size=20, **kw)


def test_flat_writer_and_offsets_match_faiss_and_numpy(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((7, 5), dtype=np.float32)
    writer = FlatIndexWriter(tmp_path / FAISS_FILE, 5)
    writer.add(x[:3])
    writer.add(x[3:])
    writer.close()
    index = faiss.index_factory(5, "Flat", faiss.METRIC_INNER_PRODUCT)
    index.add(x)
    assert (tmp_path / FAISS_FILE).read_bytes() == faiss.serialize_index(index).tobytes()

    docs = DocStoreWriter(tmp_path)
    for i in range(70_000):  # past one flush of the offsets buffer
        docs.add(Passage(id=i, contents="x" * (i % 7)))
    assert docs.close() == 70_000
    expected = io.BytesIO()
    np.save(expected, np.load(tmp_path / OFFSETS_FILE))
    assert (tmp_path / OFFSETS_FILE).read_bytes() == expected.getvalue()


def test_sharded_build_equals_single_process(tmp_path: Path, small_corpus: Path) -> None:
    build_index(_cfg(small_corpus, tmp_path / "one"), show_progress=False)
    report = build_index(_cfg(small_corpus, tmp_path / "sharded", shards=3), show_progress=False)
    assert report.encoded == N_SMALL and not (tmp_path / "sharded" / SHARDS_DIR).exists()
    for name in [*INDEX_FILES, "manifest.json"]:
        a, b = (tmp_path / d / name for d in ("one", "sharded"))
        if name == "manifest.json":
            assert json.loads(a.read_text())["corpus_path"] == json.loads(b.read_text())["corpus_path"]
        assert a.read_bytes() == b.read_bytes(), name


def test_killed_sharded_build_resumes_without_reencoding(tmp_path: Path, small_corpus: Path) -> None:
    cfg = _cfg(small_corpus, tmp_path / "i", shards=4)  # 4 shards x 50 rows = 3 encoder calls each
    killed = CountingEncoder(fail_at=8)  # during shard 2: shards 0 and 1 are on disk
    with pytest.raises(KeyboardInterrupt):
        build_index(cfg, encoder=killed, show_progress=False)
    assert sorted(p.name for p in (tmp_path / "i" / SHARDS_DIR).glob("*.json")) == ["00000.json", "00001.json"]
    resumed = CountingEncoder()
    report = build_index(cfg, encoder=resumed, show_progress=False)
    assert resumed.calls == 2 * 3 and report.encoded == 100
    build_index(_cfg(small_corpus, tmp_path / "ref"), show_progress=False)
    for name in INDEX_FILES:
        assert (tmp_path / "i" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name


def test_corrupted_shard_is_encoded_again(tmp_path: Path, small_corpus: Path) -> None:
    cfg = _cfg(small_corpus, tmp_path / "i", shards=4)
    with pytest.raises(KeyboardInterrupt):
        build_index(cfg, encoder=CountingEncoder(fail_at=8), show_progress=False)
    shard = tmp_path / "i" / SHARDS_DIR / "00001.f32"
    raw = bytearray(shard.read_bytes())
    raw[0] ^= 0xFF
    shard.write_bytes(bytes(raw))
    resumed = CountingEncoder()
    build_index(cfg, encoder=resumed, show_progress=False)
    assert resumed.calls == 3 * 3  # shards 1, 2 and 3


BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "retrieval_build_memory.py"


def _peak_rss_mb(tmp_path: Path, n: int) -> tuple[float, float]:
    """(peak RSS MB, index MB) of a build of `n` synthetic passages in a fresh process: the memory benchmark's
    own corpus and child build (`--child`), so the test asserts what the benchmark measures."""
    spec = importlib.util.spec_from_file_location("bench_build_memory", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    corpus = bench.synthetic_corpus(tmp_path / f"c{n}.jsonl", n)
    out_text = subprocess.run([sys.executable, str(BENCH), "--child", str(corpus), str(tmp_path / f"i{n}")],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
    figures = json.loads(out_text.strip().splitlines()[-1])
    return figures["peak_mb"], figures["index_mb"]


def test_build_rss_is_flat_in_corpus_size(tmp_path: Path) -> None:
    """4x the passages may cost the index's own size (bm25s builds its matrix in memory) and little more."""
    (small, small_index), (big, big_index) = (_peak_rss_mb(tmp_path, n) for n in (3_000, 12_000))
    growth = big - small - 4 * (big_index - small_index)  # bm25s peaks at a few times its final matrix
    assert growth < 25, f"peak RSS {small:.0f} -> {big:.0f} MB; index {small_index:.1f} -> {big_index:.1f} MB"
