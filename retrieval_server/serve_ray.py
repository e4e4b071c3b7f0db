"""Run the same FastAPI app as N replicas under Ray Serve, behind one URL.

Ray Serve's proxy routes requests across replicas (on one node or a cluster); each replica loads the
index once and runs its own micro-batcher. Nothing here balances load itself.

Multi-node: start a Ray cluster (`ray start --head` on one node, `ray start --address=<head>:6379` on the
others), make the index directory readable at the same path on every node, then on the head run
`RAY_ADDRESS=auto python -m retrieval_server serve --index DIR --ray-replicas N --host 0.0.0.0`
(`ray job submit` sets RAY_ADDRESS itself). Serve's default placement only prefers spreading replicas;
`--ray-max-replicas-per-node 1` makes one replica per node a hard rule. Serve runs an HTTP proxy on the
head and on every node holding a replica, each bound to `--host`: the loopback default keeps the URL
private to each of those nodes, so clients on other nodes need `--host 0.0.0.0` (or the node's address).
Without RAY_ADDRESS a private local Ray instance is started (and stopped on exit).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from retrieval_server.config import ServeConfig
from retrieval_server.server import Service, create_app

logger = logging.getLogger(__name__)

APP_NAME = "retrieval_server"
MAX_ONGOING_REQUESTS = 512
"""Per replica. Ray Serve's default (5) would starve the micro-batcher of concurrent requests."""


def _deployment_class():
    """The Ray Serve deployment, built on first use so that importing this module needs no `ray[serve]`."""
    from ray import serve

    @serve.deployment(max_ongoing_requests=MAX_ONGOING_REQUESTS)
    @serve.ingress()
    class RetrievalDeployment:
        """One replica: loads the index in its constructor, then serves the standard app."""

        def __init__(self, cfg_json: str) -> None:
            self.cfg = ServeConfig.model_validate_json(cfg_json)
            self.service = Service.load(self.cfg)

        def __serve_build_asgi_app__(self):
            return create_app(self.cfg, service=self.service)

    return RetrievalDeployment


def connect_ray() -> None:
    """Join the cluster RAY_ADDRESS names (`ray start`, `ray job submit` set it), else start a private local
    instance instead of attaching to whatever cluster happens to run here; the serve and the sharded build share it."""
    import ray

    if ray.is_initialized():
        return
    if address := os.environ.get("RAY_ADDRESS"):  # an existing cluster: its dashboard is the cluster's business
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(address="local", logging_level=logging.WARNING, include_dashboard=False)


def deploy(cfg: ServeConfig, num_cpus_per_replica: float = 1.0) -> str:
    """Start Ray Serve on cfg.host:cfg.port with cfg.ray_replicas replicas; returns the URL."""
    from ray import serve

    connect_ray()
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    options: dict = {"num_replicas": cfg.ray_replicas, "ray_actor_options": {"num_cpus": num_cpus_per_replica}}
    if cfg.ray_max_replicas_per_node is not None:
        options["max_replicas_per_node"] = cfg.ray_max_replicas_per_node
    app = _deployment_class().options(**options).bind(cfg.model_dump_json())
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    return f"http://{cfg.host}:{cfg.port}"


def run_ray_serve(cfg: ServeConfig) -> int:
    """CLI entry: deploy, print the URL, block until SIGINT/SIGTERM, then shut Ray Serve down.

    Our handlers are installed after `ray.init`, which replaces the SIGTERM handler with its own `sys.exit`: a
    SIGTERM while `serve.run` waited for the app (whose replicas may already answer /health) then left the app
    running on an attached cluster. With ours, a signal only ends the wait loop, and the app is removed in any case.
    """
    import ray
    from ray import serve

    connect_ray()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    # On a shared cluster, serve.shutdown() would also stop other people's Serve applications: remove only ours.
    attached = bool(os.environ.get("RAY_ADDRESS"))
    try:
        url = deploy(cfg)
        print(f"retrieval server ready at {url} ({cfg.ray_replicas} Ray Serve replicas)", flush=True)  # noqa: T201
        while not stop.is_set():
            time.sleep(0.2)
    finally:
        if not attached:
            serve.shutdown()
        elif serve.status().applications.get(APP_NAME) is not None:  # also after a failed or interrupted deploy
            serve.delete(APP_NAME)
        ray.shutdown()
    return 0
