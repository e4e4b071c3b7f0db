"""benchmarks/index_types.py on 2,000 synthetic vectors: the reference is exact, sizes order, projection formula."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "index_types.py"


@pytest.fixture(scope="module")
def bench():
    # benchmarks/ is not a package: load the script by path, as `python benchmarks/index_types.py` would run it.
    spec = importlib.util.spec_from_file_location("bench_index_types", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_flat_is_exact_and_sizes_order(bench):
    xb = bench.clustered_vectors(2000, 64, clusters=20, seed=0, stream=1)
    xq = bench.clustered_vectors(50, 64, clusters=20, seed=0, stream=2)
    rows = bench.measure(xb, xq, ["SQ8", "PQ8x4"], latency_queries=5)
    by_type = {r.index_type: r for r in rows}
    assert list(by_type) == ["Flat", "SQ8", "PQ8x4"]  # Flat added first, as the reference

    flat = by_type["Flat"]
    assert flat.recall10 == 1.0
    exact = np.argsort(-(xq @ xb.T), axis=1)[:, :10]  # independent of FAISS: the reference really is exact
    assert (np.sort(flat.top10, axis=1) == np.sort(exact, axis=1)).all()
    assert 0.5 < by_type["SQ8"].recall10 < 1.0 + 1e-9

    per_vector = {t: r.nbytes / r.n for t, r in by_type.items()}
    assert per_vector["Flat"] > per_vector["SQ8"] > per_vector["PQ8x4"]
    # the projection formulas reproduce the serialized sizes at this scale
    for t, r in by_type.items():
        assert bench.projected_bytes(t, r.n, 64)[0] == pytest.approx(r.nbytes, rel=0.01)


def test_wiki18_projection(bench):
    flat, formula = bench.projected_bytes("Flat", 21_000_000, 768)
    assert flat == pytest.approx(64.5e9, rel=0.001)
    assert formula == "n*4*d"
    assert bench.wiki18_type("IVF1024,PQ48", 384, 65_536) == "IVF65536,PQ96"
    ivfpq = bench.projected_bytes("IVF65536,PQ96", 21_000_000, 768)[0]
    assert ivfpq == 21_000_000 * (96 + 8) + 65_536 * 768 * 4 + 256 * 768 * 4
