"""End-to-end: the retrieval server as Ray Serve replicas spread over a two-node Ray cluster.

Both nodes are raylets on this one host (Ray's own `ray.cluster_utils.Cluster`, as Ray tests multi-node
behaviour), each with 2 logical CPUs: both replicas would fit on one node, so landing on both shows the
spreading setting works, not a resource shortage. The serve CLI attaches through RAY_ADDRESS, as it does
under `ray start` / `ray job submit` on a real cluster. Not tested here: separate machines, GPUs, a network
between nodes.

The cluster lives in its own RAY_TMPDIR, so its `ray_current_cluster` file never redirects another user's
`ray.init()` on this shared machine, and it is stopped with `Cluster.shutdown()`, which kills only the
processes it started (never `ray stop`, which is machine-wide).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from servers import embedded_corpus_head, free_port, serving

from retrieval_server.client import RetrievalClient

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def two_node_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """A head (resource `node_a`) and a worker (`node_b`) raylet; yields (GCS address, dashboard URL)."""
    from ray.cluster_utils import Cluster

    # Short path: Ray's unix sockets live under it (108-byte limit); RAY_TMPDIR also reaches every Ray child.
    ray_tmp = tempfile.mkdtemp(prefix="sage_mn_", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    # An earlier in-process `ray.init()` leaves RAY_AUTH_MODE=token in os.environ: the raylets would then demand a
    # token that the server subprocess (started with ENV) does not have. The cluster and its clients agree on none.
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    cluster = Cluster(shutdown_at_exit=True)
    try:
        cluster.add_node(num_cpus=2, resources={"node_a": 1}, include_dashboard=True, dashboard_port=free_port(),
                         dashboard_host="127.0.0.1")
        cluster.add_node(num_cpus=2, resources={"node_b": 1})
        cluster.wait_for_nodes()
        yield cluster.address, f"http://{cluster.webui_url}"
    finally:
        cluster.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _replica_nodes(dashboard: str) -> dict[str, str]:
    """{replica actor id: the custom resource (node_a / node_b) of the node it runs on}, via Ray's state API."""
    from ray.util.state import list_actors, list_nodes

    names = {n.node_id: next(r for r in n.resources_total if r.startswith("node_")) for n in list_nodes(dashboard)}
    actors = list_actors(dashboard, filters=[("state", "=", "ALIVE")], limit=100)
    return {a.actor_id: names[a.node_id] for a in actors if a.class_name.startswith("ServeReplica:retrieval_server")}


def _wait_for(get: Callable[[], T], done: Callable[[T], bool], timeout: float = 60) -> T:
    """Poll `get` until `done` holds or `timeout` seconds pass; returns the last value (the assert shows it)."""
    deadline = time.monotonic() + timeout
    value = get()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(1)
        value = get()
    return value


def _health_pids(url: str, n: int) -> set[int]:
    """Replica pids answering `n` /health requests, each on a new connection (so on either proxy).

    A proxy that has not yet learned the route answers 404 in plain text, hence the 200 filter."""
    replies = [httpx.get(f"{url}/health", timeout=30) for _ in range(n)]
    return {r.json()["pid"] for r in replies if r.status_code == 200}


def test_serve_replicas_spread_over_two_nodes(two_node_cluster: tuple[str, str], tmp_path: Path) -> None:
    address, dashboard = two_node_cluster
    corpus = embedded_corpus_head(tmp_path / "c.jsonl", 40)
    build = [sys.executable, "-m", "retrieval_server", "build", "--corpus", str(corpus), "--out", str(tmp_path / "idx"),
             "--no-dense"]
    done = subprocess.run(build, capture_output=True, text=True, timeout=120, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]

    port = free_port()
    serve = [sys.executable, "-m", "retrieval_server", "serve", "--index", str(tmp_path / "idx"), "--retriever",
             "bm25", "--port", str(port), "--ray-replicas", "2", "--ray-max-replicas-per-node", "1"]
    url = f"http://127.0.0.1:{port}"
    env = {**ENV, "RAY_ADDRESS": address}
    with serving(serve, f"{url}/health", tmp_path / "serve.log", timeout=180, env=env):
        placed = _wait_for(lambda: _replica_nodes(dashboard), lambda p: len(p) == 2)
        assert sorted(placed.values()) == ["node_a", "node_b"], placed

        rows = [json.loads(line) for line in corpus.read_text().splitlines()[:4]]
        titles = [row["contents"].split("\n")[0].strip('"') for row in rows]
        with RetrievalClient(url, timeout=60) as client:
            hits = client.retrieve(titles, topk=3)
        assert [h[0].id for h in hits] == [row["id"] for row in rows]
        # Serve runs a proxy on each node holding a replica, and a proxy prefers its own node's replica. On
        # a real cluster each node's clients reach their local replica at 127.0.0.1; here both proxies share
        # the port (SO_REUSEPORT), so fresh connections land on either one and must reach both replicas.
        pids = _wait_for(lambda: _health_pids(url, 20), lambda p: len(p) == 2, timeout=30)
        assert len(pids) == 2, pids

    # The CLI removed only its own application: the cluster (and any other Serve app on it) stays up. Replicas
    # drain gracefully (up to Serve's 20 s shutdown timeout each), which a busy shared box can stretch: allow 3 min
    # and show the CLI's shutdown lines if they are still up (CI once saw both alive after 60 s, log not kept).
    left = _wait_for(lambda: _replica_nodes(dashboard), lambda p: not p, timeout=180)
    assert left == {}, "\n".join(  # read only on failure
        [line for line in (tmp_path / "serve.log").read_text().splitlines() if "GET /health" not in line][-40:])


def test_cluster_launcher_example_is_valid() -> None:
    """examples/ray_cluster.yaml passes the schema check `ray up` runs first (it is never launched here)."""
    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "examples" / "ray_cluster.yaml").read_text())
    validate_config(prepare_config(config))
    assert config["provider"]["type"] == "local" and len(config["provider"]["worker_ips"]) == config["max_workers"]
