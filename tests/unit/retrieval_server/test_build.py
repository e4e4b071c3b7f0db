from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from retrieval_server.build import build_index
from retrieval_server.config import BuildConfig, EncoderConfig
from retrieval_server.corpus import DocStore, iter_corpus
from retrieval_server.encoder import HashingEncoder
from retrieval_server.index import FAISS_FILE, Manifest, load_faiss_index

N_SMALL = 200  # rows in the small_corpus fixture (conftest.py)


def _cfg(corpus: Path, out: Path, **kw) -> BuildConfig:
    return BuildConfig(corpus=corpus, out=out, encoder=EncoderConfig(model="hashing-64"), **kw)


def test_build_writes_manifest_docs_and_aligned_vectors(tmp_path: Path, small_corpus: Path) -> None:
    report = build_index(_cfg(small_corpus, tmp_path / "idx", chunk_size=37), show_progress=False)
    m = Manifest.read(tmp_path / "idx")
    assert not report.skipped and report.encoded == N_SMALL
    assert m.num_docs == N_SMALL and m.dense.dim == 64 and m.dense.index_type == "Flat" and m.bm25 is not None
    assert len(m.corpus_sha256) == 64 and len(m.dense.probe) == 64
    # Row i of the doc store is vector i of the index, across chunk boundaries.
    index = faiss.read_index(str(tmp_path / "idx" / FAISS_FILE))
    passages = list(iter_corpus(small_corpus))
    store = DocStore(tmp_path / "idx")
    enc = HashingEncoder(64)
    for i in (0, 36, 37, 150, N_SMALL - 1):
        assert store.get(i) == passages[i]
        np.testing.assert_allclose(index.reconstruct(i), enc.encode_passages([passages[i].contents])[0], atol=1e-6)


def test_rebuild_is_skipped_and_cache_reused(tmp_path: Path, small_corpus: Path) -> None:
    cache = tmp_path / "cache"
    first = build_index(_cfg(small_corpus, tmp_path / "a", embeddings_cache=cache), show_progress=False)
    again = build_index(_cfg(small_corpus, tmp_path / "a", embeddings_cache=cache), show_progress=False)
    other = build_index(
        _cfg(small_corpus, tmp_path / "b", embeddings_cache=cache, index_type="HNSW16"), show_progress=False
    )
    assert first.encoded == N_SMALL and again.skipped and other.encoded == 0 and not other.skipped
    a = load_faiss_index(tmp_path / "a", 64, 1)
    b = load_faiss_index(tmp_path / "b", 64, 1)
    q = HashingEncoder(64).encode_queries(["American football player born in Texas"])
    assert a.search(q, 3)[1].tolist() == b.search(q, 3)[1].tolist()


@pytest.mark.parametrize("index_type", ["HNSW16", "IVF4,PQ8x4"])
def test_ann_index_types_find_exact_passage(tmp_path: Path, small_corpus: Path, index_type: str) -> None:
    build_index(_cfg(small_corpus, tmp_path / "i", index_type=index_type, bm25=False), show_progress=False)
    index = load_faiss_index(tmp_path / "i", hnsw_ef_search=64, ivf_nprobe=4)
    passages = list(iter_corpus(small_corpus))
    enc = HashingEncoder(64)
    hits = index.search(enc.encode_queries([passages[i].contents for i in range(0, N_SMALL, 20)]), 5)[1]
    found = sum(i in row for i, row in zip(range(0, N_SMALL, 20), hits.tolist(), strict=True))
    assert found >= 8  # of 10; PQ is lossy, HNSW approximate
    assert json.loads((tmp_path / "i" / "manifest.json").read_text())["dense"]["index_type"] == index_type


def test_bm25_only_build_needs_no_encoder(tmp_path: Path, small_corpus: Path) -> None:
    report = build_index(BuildConfig(corpus=small_corpus, out=tmp_path / "b", dense=False), show_progress=False)
    assert report.manifest.dense is None and not (tmp_path / "b" / FAISS_FILE).exists()


@pytest.mark.parametrize("index_type", ["IVF4,PQ8x4", "PQ8x4", "OPQ8,IVF4,PQ8x4"])
def test_pq_indexes_skip_polysemous_training(index_type: str) -> None:
    """Search never uses the Hamming filter polysemous training prepares, so the build does not pay for it."""
    from retrieval_server.index import new_faiss_index

    index = new_faiss_index(32, index_type)
    ivf = faiss.try_extract_index_ivf(index)
    pq_index = faiss.downcast_index(ivf if ivf is not None else index)
    if isinstance(pq_index, faiss.IndexPreTransform):
        pq_index = faiss.downcast_index(pq_index.index)
    assert pq_index.do_polysemous_training is False
    assert faiss.index_factory(32, index_type).__class__ is index.__class__
