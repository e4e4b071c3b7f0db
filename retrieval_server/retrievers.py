"""Dense (FAISS), sparse (bm25s) and hybrid (reciprocal-rank fusion) retrievers.

All three answer `search(queries, k)` with row numbers into the doc store and scores of the same shape,
padded with row -1 when the corpus has fewer than k passages. Scores are always those of the returned
rows (Search-R1's BM25 path computed scores before slicing, so they could be misaligned).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from retrieval_server.encoder import Encoder
from retrieval_server.index import BM25_DIR, Manifest, check_encoder, load_faiss_index

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchResult:
    """rows[i, j] is the j-th best doc-store row for query i (-1 = none); scores align with rows."""

    rows: np.ndarray  # int64 [n_queries, k]
    scores: np.ndarray  # float32 [n_queries, k]


class Retriever(Protocol):
    name: str

    def search(self, queries: list[str], k: int) -> SearchResult: ...


class DenseRetriever:
    """Encode queries, inner-product search in FAISS."""

    name = "dense"

    def __init__(self, encoder: Encoder, index) -> None:
        self.encoder = encoder
        self.index = index

    def search(self, queries: list[str], k: int) -> SearchResult:
        emb = self.encoder.encode_queries(queries)
        scores, rows = self.index.search(emb, k)
        return SearchResult(rows=rows.astype(np.int64), scores=scores.astype(np.float32))


class BM25Retriever:
    """bm25s over the stored token vocabulary; the score matrix is memory-mapped."""

    name = "bm25"

    def __init__(self, index_dir: Path) -> None:
        import bm25s

        path = str(Path(index_dir) / BM25_DIR)
        self.bm25 = bm25s.BM25.load(path, mmap=True)
        manifest = Manifest.read(index_dir)
        self.tokenizer = bm25s.tokenization.Tokenizer(lower=manifest.bm25.lower, stopwords=manifest.bm25.stopwords)
        self.tokenizer.load_vocab(path)
        self.num_docs = int(self.bm25.scores["num_docs"])
        self._empty = self.bm25.vocab_dict[""]  # bm25s adds this token for queries with no known word

    def search(self, queries: list[str], k: int) -> SearchResult:
        n, kk = len(queries), min(k, self.num_docs)
        ids = self.tokenizer.tokenize(queries, update_vocab=False, return_as="ids", show_progress=False)
        ids = [q if q else [self._empty] for q in ids]
        docs, scores = self.bm25.retrieve(ids, k=kk, show_progress=False, n_threads=0)
        rows = np.full((n, k), -1, dtype=np.int64)
        out = np.zeros((n, k), dtype=np.float32)
        rows[:, :kk], out[:, :kk] = docs, scores
        return SearchResult(rows=rows, scores=out)


class HybridRetriever:
    """Reciprocal-rank fusion: score(d) = sum over retrievers of 1 / (rrf_k + rank(d)), rank from 1."""

    name = "hybrid"

    def __init__(self, dense: DenseRetriever, bm25: BM25Retriever, rrf_k: int = 60, depth: int = 50) -> None:
        self.dense, self.bm25, self.rrf_k, self.depth = dense, bm25, rrf_k, depth

    def search(self, queries: list[str], k: int) -> SearchResult:
        depth = max(k, self.depth)
        parts = [self.dense.search(queries, depth), self.bm25.search(queries, depth)]
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.zeros((len(queries), k), dtype=np.float32)
        for i in range(len(queries)):
            fused: dict[int, float] = {}
            for part in parts:
                for rank, row in enumerate(part.rows[i].tolist(), 1):
                    if row >= 0:
                        fused[row] = fused.get(row, 0.0) + 1.0 / (self.rrf_k + rank)
            # Ties broken by row number so results are deterministic.
            best = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
            rows[i, : len(best)] = [r for r, _ in best]
            scores[i, : len(best)] = [s for _, s in best]
        return SearchResult(rows=rows, scores=scores)


def open_retriever(
    index_dir: Path,
    kind: str,
    encoder: Encoder | None,
    *,
    rrf_k: int = 60,
    hybrid_depth: int = 50,
    hnsw_ef_search: int = 128,
    ivf_nprobe: int = 16,
) -> Retriever:
    """Load the retriever `kind` from an index directory, refusing a dense index built by another model."""
    manifest = Manifest.read(index_dir)
    dense = bm25 = None
    if kind in ("dense", "hybrid"):
        if manifest.dense is None:
            raise FileNotFoundError(f"{index_dir} has no dense index (built with --no-dense?)")
        if encoder is None:
            raise ValueError("a dense retriever needs an encoder")
        check_encoder(manifest.dense, encoder)
        dense = DenseRetriever(encoder, load_faiss_index(index_dir, hnsw_ef_search, ivf_nprobe))
    if kind in ("bm25", "hybrid"):
        if manifest.bm25 is None:
            raise FileNotFoundError(f"{index_dir} has no BM25 index (built with --no-bm25?)")
        bm25 = BM25Retriever(index_dir)
    if kind == "dense":
        return dense
    if kind == "bm25":
        return bm25
    if kind == "hybrid":
        return HybridRetriever(dense, bm25, rrf_k=rrf_k, depth=hybrid_depth)
    raise ValueError(f"unknown retriever {kind!r}: expected dense, bm25 or hybrid")
