"""HTTP contract (Search-R1 `/retrieve`), bad input, health and OpenAPI, through FastAPI's TestClient."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from retrieval_server.config import LimitsConfig, ServeConfig
from retrieval_server.corpus import DocStore
from retrieval_server.encoder import HashingEncoder
from retrieval_server.retrievers import open_retriever
from retrieval_server.server import Service, create_app


@pytest.fixture
def client(serve_cfg: ServeConfig, service: Service):
    cfg = serve_cfg.model_copy(update={"limits": LimitsConfig(max_topk=20, max_queries=8, max_query_chars=500)})
    with TestClient(create_app(cfg, service=service)) as c:
        yield c


def _expected_ids(index: Path, queries: list[str], k: int) -> list[list[str]]:
    res = open_retriever(index, "dense", HashingEncoder(256)).search(queries, k)
    store = DocStore(index)
    return [[store.get(r).id for r in row] for row in res.rows.tolist()]


def _search_r1_passages2string(retrieval_result: list[dict]) -> str:
    """Verbatim logic of Search-R1's `_passages2string` (llm_agent/generation.py) for the reference shape."""
    format_reference = ""
    for idx, doc_item in enumerate(retrieval_result):
        content = doc_item["document"]["contents"]
        title = content.split("\n")[0]
        text = "\n".join(content.split("\n")[1:])
        format_reference += f"Doc {idx + 1}(Title: {title}) {text}\n"
    return format_reference


@pytest.mark.parametrize("n_queries", [1, 2, 3])
def test_return_scores_true_shape(client: TestClient, hashing_index: Path, n_queries: int) -> None:
    queries = ["Delta Machine Tour Depeche Mode", "American football", "film director"][:n_queries]
    r = client.post("/retrieve", json={"queries": queries, "topk": 4, "return_scores": True})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    result = r.json()["result"]
    assert len(result) == n_queries
    for per_query, ids in zip(result, _expected_ids(hashing_index, queries, 4), strict=True):
        assert [set(h) for h in per_query] == [{"document", "score"}] * 4
        assert [set(h["document"]) for h in per_query] == [{"id", "contents"}] * 4
        assert [h["document"]["id"] for h in per_query] == ids
        scores = [h["score"] for h in per_query]
        assert all(isinstance(s, float) for s in scores) and scores == sorted(scores, reverse=True)
        assert _search_r1_passages2string(per_query).startswith('Doc 1(Title: "')


@pytest.mark.parametrize("n_queries", [1, 2, 3])
def test_return_scores_false_shape(client: TestClient, hashing_index: Path, n_queries: int) -> None:
    queries = ["Delta Machine Tour Depeche Mode", "American football", "film director"][:n_queries]
    r = client.post("/retrieve", json={"queries": queries, "topk": 2})  # return_scores defaults to false
    result = r.json()["result"]
    assert r.status_code == 200 and len(result) == n_queries
    assert [[set(d) for d in q] for q in result] == [[{"id", "contents"}] * 2] * n_queries
    assert [[d["id"] for d in q] for q in result] == _expected_ids(hashing_index, queries, 2)


def test_default_topk_and_per_query_order(client: TestClient, small_corpus: Path) -> None:
    rows = [json.loads(line) for line in small_corpus.read_text().splitlines()[:5]]
    texts = [r["contents"][:400] for r in rows]
    result = client.post("/retrieve", json={"queries": texts, "return_scores": True}).json()["result"]
    assert [len(q) for q in result] == [3] * 5  # server default topk = 3, as Search-R1
    assert [q[0]["document"]["id"] for q in result] == [r["id"] for r in rows]  # each passage finds itself


def test_contents_bytes_are_exactly_the_corpus(client: TestClient, small_corpus: Path) -> None:
    row = json.loads(small_corpus.read_text().splitlines()[10])
    hit = client.post("/retrieve", json={"queries": [row["contents"][:400]], "topk": 1}).json()["result"][0][0]
    assert hit == {"id": row["id"], "contents": row["contents"]}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ('{"queries": ["a"', 400, "malformed JSON"),
        ("not json at all", 400, "malformed JSON"),
        ("", 422, "Field required"),
        ("{}", 422, "queries: Field required"),
        ('{"queries": "just a string"}', 422, "queries: Input should be a valid list"),
        ('{"queries": [1, 2]}', 422, "queries.0: Input should be a valid string"),
        ('{"queries": ["a", null]}', 422, "queries.1: Input should be a valid string"),
        ('{"queries": []}', 422, "non-empty list"),
        ('{"queries": ["a"], "topk": 0}', 422, "topk must be between 1 and 20"),
        ('{"queries": ["a"], "topk": -3}', 422, "topk must be between 1 and 20"),
        ('{"queries": ["a"], "topk": 21}', 422, "topk must be between 1 and 20"),
        ('{"queries": ["a"], "topk": "3"}', 422, "topk: Input should be a valid integer"),
        ('{"queries": ["a"], "topk": 2.5}', 422, "topk: Input should be a valid integer"),
        ('{"queries": ["a"], "return_scores": "yes"}', 422, "return_scores: Input should be a valid boolean"),
        ('{"queries": ["a"], "top_k": 3}', 422, "top_k: Extra inputs are not permitted"),
        ('[{"queries": ["a"]}]', 422, "valid dictionary"),
        ('{"queries": ["a","b","c","d","e","f","g","h","i"]}', 422, "too many queries: 9 > max_queries=8"),
        ('{"queries": ["' + "x" * 501 + '"]}', 422, "query too long: 501 characters > max_query_chars=500"),
        ('{"queries": ["ok", "\\ud800"]}', 422, "valid Unicode"),
    ],
)
def test_bad_input_is_a_clear_4xx_and_server_keeps_serving(
    client: TestClient, body: str, status: int, message: str
) -> None:
    r = client.post("/retrieve", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    ok = client.post("/retrieve", json={"queries": ["still serving"], "topk": 1})
    assert ok.status_code == 200 and len(ok.json()["result"][0]) == 1


def test_oversized_body_is_413(serve_cfg: ServeConfig, service: Service) -> None:
    cfg = serve_cfg.model_copy(update={"limits": LimitsConfig(max_body_bytes=2048, max_query_chars=10_000)})
    with TestClient(create_app(cfg, service=service)) as c:
        r = c.post("/retrieve", json={"queries": ["x" * 5000]})
        assert r.status_code == 413 and "larger than 2048 bytes" in r.json()["detail"]

        def chunked():  # no Content-Length: the limit must still hold
            for _ in range(10):
                yield b" " * 500

        r = c.post("/retrieve", content=chunked(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.post("/retrieve", json={"queries": ["fine"], "topk": 1}).status_code == 200


def test_body_without_json_content_type_is_parsed(client: TestClient) -> None:
    r = client.post("/retrieve", content='{"queries": ["film"], "topk": 1}', headers={"content-type": "text/plain"})
    assert r.status_code == 200 and len(r.json()["result"]) == 1


def test_health_and_openapi(client: TestClient) -> None:
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["num_docs"] == 200 and h["retriever"] == "dense" and h["model"] == "hashing-256"
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) >= {"/retrieve", "/health"}
    props = schema["components"]["schemas"]["RetrieveRequest"]["properties"]
    assert set(props) == {"queries", "topk", "return_scores"}


def test_health_is_503_until_loaded(serve_cfg: ServeConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    real_load = Service.load

    def slow_load(cfg, encoder=None):
        gate.wait(10)
        return real_load(cfg, encoder)

    monkeypatch.setattr(Service, "load", staticmethod(slow_load))
    with TestClient(create_app(serve_cfg)) as c:
        assert c.get("/health").status_code == 503 and c.get("/health").json()["status"] == "loading"
        r = c.post("/retrieve", json={"queries": ["a"]})
        assert r.status_code == 503 and "loading" in r.json()["detail"]
        gate.set()
        for _ in range(100):
            if c.get("/health").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert c.post("/retrieve", json={"queries": ["a"], "topk": 1}).status_code == 200


def test_failed_load_is_reported_on_health(tmp_path: Path) -> None:
    app = create_app(ServeConfig(index=tmp_path / "missing"))
    app.state.ready.wait(10)
    with TestClient(app) as c:
        h = c.get("/health")
        assert h.status_code == 503 and h.json()["status"] == "error"
        assert "manifest.json not found" in h.json()["detail"]


@pytest.mark.parametrize("kind", ["bm25", "hybrid"])
def test_bm25_and_hybrid_serve_the_same_contract(hashing_index: Path, kind: str) -> None:
    cfg = ServeConfig(index=hashing_index, retriever=kind)
    with TestClient(create_app(cfg, service=Service.load(cfg))) as c:
        res = c.post("/retrieve", json={"queries": ["Depeche Mode tour", "x"], "topk": 3, "return_scores": True})
        assert res.status_code == 200
        assert [len(q) for q in res.json()["result"]] == [3, 3]
        assert c.get("/health").json()["retriever"] == kind
