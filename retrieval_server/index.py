"""Index directory layout, its manifest, and FAISS index construction/loading.

An index directory holds:
    manifest.json      what was built from what (written last: its presence means the build finished)
    docs.jsonl         corpus rows in index order (row i <-> FAISS id i <-> BM25 doc i)
    offsets.npy        byte offset of each row in docs.jsonl
    dense.faiss        FAISS index (inner product over L2-normalised embeddings), if built
    bm25/              bm25s index + tokenizer vocabulary, if built
"""

from __future__ import annotations

import logging
import math
import struct
from pathlib import Path

import faiss
import numpy as np
from pydantic import BaseModel, ConfigDict

from retrieval_server.encoder import Encoder, probe_vector

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
FAISS_FILE = "dense.faiss"
BM25_DIR = "bm25"
FORMAT_VERSION = 1


class DenseManifest(BaseModel):
    """How the dense index was made; the server checks its encoder against this."""

    model_config = ConfigDict(extra="forbid")

    model: str
    dim: int
    index_type: str
    query_prefix: str
    passage_prefix: str
    max_seq_length: int | None
    probe: list[float]
    faiss_version: str
    backend: str = "torch"  # the passage encoder's runtime (indexes from before backends: torch)
    precision: str = "fp32"  # its effective precision


class Bm25Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stopwords: str
    lower: bool
    bm25s_version: str


class Manifest(BaseModel):
    """Written as `manifest.json` after every other file of the index."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    corpus_path: str
    corpus_sha256: str
    num_docs: int
    dense: DenseManifest | None = None
    bm25: Bm25Manifest | None = None

    def write(self, index_dir: Path) -> None:
        (Path(index_dir) / MANIFEST_FILE).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, index_dir: Path) -> Manifest:
        path = Path(index_dir) / MANIFEST_FILE
        if not path.exists():
            raise IndexMismatchError(f"{path} not found: not an index directory, or its build did not finish")
        return cls.model_validate_json(path.read_text())


PROBE_MIN_COSINE = 0.999  # same backend and precision as the build: the same vector up to float noise
PROBE_MIN_COSINE_OTHER_RUNTIME = 0.98  # same weights, other runtime or precision (int8, bf16)


class IndexMismatchError(RuntimeError):
    """The index on disk was not built with the encoder (or settings) the server is about to use."""


def check_encoder(dense: DenseManifest, encoder: Encoder) -> None:
    """Refuse to serve an index with an encoder that embeds differently from the one that built it.

    Names can legitimately differ (a hub name vs a local folder), so the decisive check is behavioural:
    the fixed probe text must embed to the same vector with the same passage prefix: cosine >= 0.999 when
    the encoder runs with the manifest's backend and precision, >= 0.98 when either differs (an int8 or
    bf16 run of the same weights moves the probe by about 0.01 at most; another model moves it far more).
    """
    problems = []
    if encoder.dim != dense.dim:
        problems.append(f"dimension {encoder.dim} != {dense.dim}")
    if encoder.passage_prefix != dense.passage_prefix:
        problems.append(f"passage prefix {encoder.passage_prefix!r} != {dense.passage_prefix!r}")
    if not problems:
        a, b = np.asarray(probe_vector(encoder)), np.asarray(dense.probe)
        cos = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
        same_runtime = (encoder.backend, encoder.precision) == (dense.backend, dense.precision)
        bound = PROBE_MIN_COSINE if same_runtime else PROBE_MIN_COSINE_OTHER_RUNTIME
        if cos < bound:
            problems.append(f"probe embedding differs (cosine {cos:.4f} < {bound} for {encoder.backend} "
                            f"{encoder.precision} against an index built with {dense.backend} {dense.precision})")
    if problems:
        raise IndexMismatchError(
            f"index was built with model {dense.model!r} but the server's encoder is {encoder.name!r}: "
            + "; ".join(problems)
            + ". Rebuild the index with this model or serve with the manifest's model."
        )
    if encoder.name != dense.model:
        logger.warning("encoder name %r differs from manifest %r but embeds identically", encoder.name, dense.model)


def new_faiss_index(dim: int, index_type: str) -> faiss.Index:
    """An empty inner-product index from a FAISS factory string ('Flat', 'HNSW32', 'IVF1024,PQ32', ...).

    FAISS's factory turns on polysemous training for PQ codes (a centroid permutation for Hamming-distance
    filtering, ~2 min at PQ48 whatever the corpus size); search here never uses it (`polysemous_ht` stays 0,
    distances are the same asymmetric PQ ones), so it is switched off.
    """
    index = faiss.index_factory(dim, index_type, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.try_extract_index_ivf(index)
    inner = faiss.downcast_index(ivf if ivf is not None else index)
    if isinstance(inner, faiss.IndexPreTransform):
        inner = faiss.downcast_index(inner.index)
    if hasattr(inner, "do_polysemous_training"):
        inner.do_polysemous_training = False
    return index


class FlatIndexWriter:
    """Streams vectors into `dense.faiss` as an inner-product `Flat` index, never holding the index in memory.

    `faiss.write_index` needs the whole N x dim x 4-byte index in RAM (64 GB for wiki-18 with e5-base-v2,
    plus a reallocation peak while adding); the file is a fixed header and the raw vectors, so the build
    writes it as the vectors come. The bytes equal `faiss.write_index` of the same vectors (a unit test
    compares them): "IxFI", d, ntotal, two dummies, is_trained, metric, the float count, the floats.
    """

    def __init__(self, path: Path, dim: int) -> None:
        self.path, self.dim, self.ntotal = Path(path), dim, 0
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._f = open(self._tmp, "wb")  # noqa: SIM115
        self._f.write(self._header())

    def _header(self) -> bytes:
        dummy = 1 << 20  # what FAISS writes in the two unused header fields
        head = struct.pack("<4sIqqq?i", b"IxFI", self.dim, self.ntotal, dummy, dummy, True, faiss.METRIC_INNER_PRODUCT)
        return head + struct.pack("<q", self.ntotal * self.dim)

    def add(self, emb: np.ndarray) -> None:
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != self.dim:
            raise ValueError(f"expected (n, {self.dim}) vectors, got {emb.shape}")
        self._f.write(emb.tobytes())
        self.ntotal += len(emb)

    def close(self) -> None:
        """Patch the counts into the header and move the file into place."""
        self._f.seek(0)
        self._f.write(self._header())
        self._f.close()
        self._tmp.replace(self.path)


def fit_ivf_nlist(index_type: str, n: int) -> str:
    """Shrink an IVF list count that a small corpus cannot train (FAISS wants ~39 points per list)."""
    parts = index_type.split(",")
    if parts[0].startswith("IVF") and parts[0][3:].isdigit():
        nlist = int(parts[0][3:])
        cap = max(1, 2 ** int(math.log2(max(n // 39, 1))))
        if nlist > cap:
            logger.warning("IVF%d needs ~%d training vectors, have %d: using IVF%d", nlist, 39 * nlist, n, cap)
            parts[0] = f"IVF{cap}"
    return ",".join(parts)


def load_faiss_index(index_dir: Path, hnsw_ef_search: int, ivf_nprobe: int) -> faiss.Index:
    """Load the FAISS index once (memory-mapped where FAISS supports it) and apply search parameters."""
    path = str(Path(index_dir) / FAISS_FILE)
    try:
        index = faiss.read_index(path, faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError:  # index types without mmap support are read into memory once
        index = faiss.read_index(path)
    if "HNSW" in type(index).__name__:
        faiss.ParameterSpace().set_index_parameter(index, "efSearch", hnsw_ef_search)
    if "IVF" in type(index).__name__:
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", ivf_nprobe)
    return index
