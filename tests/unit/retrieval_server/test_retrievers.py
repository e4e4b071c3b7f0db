from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval_server.corpus import iter_corpus
from retrieval_server.encoder import HashingEncoder
from retrieval_server.index import IndexMismatchError
from retrieval_server.retrievers import open_retriever

N_SMALL = 200  # rows in the small_corpus fixture (conftest.py)


@pytest.fixture(scope="module")
def passages(small_corpus: Path):
    return list(iter_corpus(small_corpus))


def test_dense_finds_passage_from_its_own_text(hashing_index: Path, passages) -> None:
    r = open_retriever(hashing_index, "dense", HashingEncoder(256))
    res = r.search([passages[3].contents, passages[120].contents], 4)
    assert res.rows[:, 0].tolist() == [3, 120]
    assert np.all(np.diff(res.scores, axis=1) <= 1e-6)  # best first


def test_bm25_scores_are_those_of_the_returned_docs(hashing_index: Path, passages) -> None:
    r = open_retriever(hashing_index, "bm25", None)
    query = passages[42].contents.split("\n")[0].strip('"')  # the title
    res = r.search([query, "zzqx unknownzzz tokenqqq"], 5)
    ids = r.tokenizer.tokenize([query], update_vocab=False, return_as="ids", show_progress=False)[0]
    all_scores = r.bm25.get_scores(ids)
    np.testing.assert_allclose(res.scores[0], all_scores[res.rows[0]], rtol=1e-5)
    assert res.rows[0, 0] == 42 or all_scores[42] == pytest.approx(res.scores[0, 0])
    assert np.all(res.scores[1] == 0)  # no known word: nothing scores


def test_hybrid_is_reciprocal_rank_fusion(hashing_index: Path, passages) -> None:
    enc = HashingEncoder(256)
    h = open_retriever(hashing_index, "hybrid", enc, rrf_k=60, hybrid_depth=20)
    q = [passages[7].contents[:120]]
    got = h.search(q, 5)
    d, b = h.dense.search(q, 20), h.bm25.search(q, 20)
    fused: dict[int, float] = {}
    for part in (d, b):
        for rank, row in enumerate(part.rows[0].tolist(), 1):
            fused[row] = fused.get(row, 0) + 1 / (60 + rank)
    expected = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert got.rows[0].tolist() == [r for r, _ in expected]
    np.testing.assert_allclose(got.scores[0], [s for _, s in expected], rtol=1e-6)
    assert got.rows[0, 0] == 7


def test_topk_beyond_corpus_is_padded(hashing_index: Path) -> None:
    for kind in ("dense", "bm25", "hybrid"):
        res = open_retriever(hashing_index, kind, HashingEncoder(256)).search(["football"], N_SMALL + 5)
        assert res.rows.shape == (1, N_SMALL + 5)
        assert (res.rows[0] >= 0).sum() == N_SMALL and res.rows[0, -1] == -1


class _ShiftedEncoder(HashingEncoder):
    """Same name and dimension as hashing-256, different embeddings: only the probe can tell."""

    def _encode(self, texts):
        return np.roll(super()._encode(texts), 1, axis=1)


def test_mismatched_encoder_is_refused(hashing_index: Path) -> None:
    with pytest.raises(IndexMismatchError, match="dimension 128 != 256"):
        open_retriever(hashing_index, "dense", HashingEncoder(128))
    with pytest.raises(IndexMismatchError, match="probe embedding differs"):
        open_retriever(hashing_index, "dense", _ShiftedEncoder(256))
