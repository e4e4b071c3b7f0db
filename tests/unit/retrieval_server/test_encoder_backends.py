"""Query/passage encoder backends: the real all-MiniLM-L6-v2 through torch, ONNX Runtime (fp32, int8) and OpenVINO.

Parity is measured on embedded HotpotQA questions and passages against the torch fp32 encoder; the export is
cached in a temporary XDG cache for this module, so the test also shows a second load reuses it.
"""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from retrieval_server import encoder_runtime
from retrieval_server.build import build_index
from retrieval_server.config import BuildConfig, EncoderConfig, ServeConfig
from retrieval_server.encoder import HashingEncoder, load_encoder
from retrieval_server.index import IndexMismatchError, Manifest, check_encoder
from retrieval_server.server import Service

REPO = Path(__file__).resolve().parents[3]
QUESTIONS = REPO / "sage_rl" / "assets" / "hotpotqa" / "questions.jsonl.gz"
CORPUS = REPO / "sage_rl" / "assets" / "hotpotqa" / "corpus.jsonl.gz"


@pytest.fixture(scope="module")
def export_cache(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("xdg")
        mp.setenv("XDG_CACHE_HOME", str(root))
        yield root / "retrieval_server" / "encoders"


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """32 questions and 32 passages (up to the 256-token cap: the export must hold for any length)."""
    with gzip.open(QUESTIONS, "rt") as f:
        questions = [json.loads(line)["question"] for line in itertools.islice(f, 32)]
    with gzip.open(CORPUS, "rt") as f:
        return questions + [json.loads(line)["contents"] * 3 for line in itertools.islice(f, 32)]


@pytest.fixture(scope="module")
def reference(texts: list[str]) -> np.ndarray:
    return load_encoder(EncoderConfig(backend="torch", torch_threads=2)).encode_queries(texts)


@pytest.mark.parametrize(("backend", "precision", "min_cos"), [
    ("onnx", "fp32", 0.9999), ("openvino", "fp32", 0.9999), ("openvino", "bf16", 0.999), ("onnx", "int8", 0.99),
])
def test_backend_parity_with_torch_fp32(export_cache: Path, texts: list[str], reference: np.ndarray,
                                        backend: str, precision: str, min_cos: float) -> None:
    if precision == "int8" and not encoder_runtime.cpu_has_vnni():
        min_cos = 0.985  # 7-bit weights on a CPU without VNNI: min 0.98926 on a 2-core AVX2 AMD EPYC
    enc = load_encoder(EncoderConfig(backend=backend, precision=precision, torch_threads=2))
    emb = enc.encode_queries(texts)
    assert emb.shape == reference.shape and emb.dtype == np.float32
    cos = (emb * reference).sum(axis=1)
    assert cos.min() >= min_cos, f"{backend} {precision}: min cosine {cos.min():.5f}"
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    # bf16 is a hint: OpenVINO runs it where the CPU has bf16 units and says fp32 elsewhere.
    assert enc.backend == backend and enc.precision in ({"fp32", "bf16"} if precision == "bf16" else {precision})
    # order-independent: texts are sorted by length inside, results come back in input order
    assert np.allclose(enc.encode_queries(texts[::-1])[::-1], emb, atol=1e-5)


def test_export_is_cached(export_cache: Path) -> None:
    load_encoder(EncoderConfig(backend="onnx", precision="int8"))
    files = sorted(export_cache.glob("*/*.onnx"))
    int8 = "model_int8.onnx" if encoder_runtime.cpu_has_vnni() else "model_int8_7bit.onnx"
    assert [f.name for f in files] == ["model.onnx", int8]
    stamps = [f.stat().st_mtime_ns for f in files]
    load_encoder(EncoderConfig(backend="onnx", precision="int8"))
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert not list(export_cache.glob("*/.tmp-*")), "temporary export folders left behind"


def test_backend_and_precision_are_checked_at_config_time() -> None:
    assert EncoderConfig().resolved() == ("openvino", "bf16")
    assert EncoderConfig(device="cuda").resolved() == ("torch", "fp32")
    with pytest.raises(ValueError, match="torch supports precision fp32, not int8"):
        EncoderConfig(backend="torch", precision="int8")
    with pytest.raises(ValueError, match="runs on CPU; use backend=torch for device=cuda"):
        EncoderConfig(backend="onnx", device="cuda")


class _Runtime(HashingEncoder):
    """hashing-256 vectors moved a share `mix` towards another direction, under a given backend label."""

    def __init__(self, backend: str, precision: str, mix: float) -> None:
        super().__init__(256)
        self.backend, self.precision, self.mix = backend, precision, mix

    def _encode(self, texts):
        base = super()._encode(texts)
        moved = (1 - self.mix) * base + self.mix * np.roll(base, 7, axis=1)
        return moved / np.linalg.norm(moved, axis=1, keepdims=True)


def test_probe_tolerance_depends_on_the_runtime(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": str(i), "contents": f"passage {i} about t{i}"}) + "\n"
                              for i in range(8)))
    build_index(BuildConfig(corpus=corpus, out=tmp_path / "i", encoder=EncoderConfig(model="hashing-256"), bm25=False),
                show_progress=False)
    dense = Manifest.read(tmp_path / "i").dense
    assert (dense.backend, dense.precision) == ("hashing", "fp32")
    check_encoder(dense, _Runtime("hashing", "fp32", 0.0))
    small = _Runtime("onnx", "int8", 0.08)  # cosine ~0.99 to the build's probe: what int8 does to MiniLM
    check_encoder(dense, small)  # another runtime: tolerated
    with pytest.raises(IndexMismatchError, match=r"< 0\.999 for hashing fp32"):
        check_encoder(dense, _Runtime("hashing", "fp32", 0.08))  # same runtime claims the same vectors
    with pytest.raises(IndexMismatchError, match=r"< 0\.98 for onnx int8 against an index built with hashing fp32"):
        check_encoder(dense, _Runtime("onnx", "int8", 0.5))  # another model, whatever the runtime


def test_int8_index_is_served_by_the_default_encoder_and_a_relabelled_manifest_is_refused(
        export_cache: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    with gzip.open(CORPUS, "rb") as src:
        corpus.write_bytes(b"".join(itertools.islice(src, 24)))
    out = tmp_path / "int8"
    build_index(BuildConfig(corpus=corpus, out=out, encoder=EncoderConfig(backend="onnx", precision="int8"),
                            bm25=False), show_progress=False)
    manifest = Manifest.read(out)
    assert (manifest.dense.backend, manifest.dense.precision) == ("onnx", "int8")
    service = Service.load(ServeConfig(index=out))  # the manifest's model on the default (openvino) backend
    titles = [json.loads(line)["contents"].split("\n")[0].strip('"') for line in corpus.read_text().splitlines()]
    hits = service.retriever.search(titles, 1).rows[:, 0]
    assert (hits == np.arange(len(titles))).mean() >= 0.9
    manifest.dense.backend, manifest.dense.precision = "openvino", service.retriever.encoder.precision
    manifest.write(out)  # claims the server's own runtime, so the int8 probe must now match to 0.999
    with pytest.raises(IndexMismatchError, match="probe embedding differs"):
        Service.load(ServeConfig(index=out))
