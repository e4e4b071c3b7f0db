"""`run_ray_serve`'s shutdown: a SIGTERM at any point after Ray is up removes our Serve app from an attached cluster.

Ray is faked here (its `ray.init` replaces the SIGTERM handler with `sys.exit`, which the fake `connect_ray` does
too); the real path runs in tests/e2e/test_multinode.py, which once failed on exactly this race: the SIGTERM came
while `serve.run` still waited for the app its replicas already served, and the app outlived the CLI.
"""

from __future__ import annotations

import os
import signal
import sys
from types import SimpleNamespace

import pytest

from retrieval_server import serve_ray
from retrieval_server.config import ServeConfig


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Ray and Serve replaced by recorders; returns the calls in order."""
    import ray
    from ray import serve

    calls: list[str] = []
    apps: dict[str, object] = {}
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    def connect() -> None:  # the first call runs ray.init, which sets the driver's SIGTERM handler to sys.exit
        if "connect" not in calls:
            calls.append("connect")
            signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(signum))

    def deploy(cfg: ServeConfig) -> str:  # as the real one: connect, then the app is up before serve.run returns
        serve_ray.connect_ray()
        apps[serve_ray.APP_NAME] = object()
        calls.append("deploy")
        os.kill(os.getpid(), signal.SIGTERM)
        calls.append("deploy returned")
        return f"http://{cfg.host}:{cfg.port}"

    monkeypatch.setattr(serve_ray, "connect_ray", connect)
    monkeypatch.setattr(serve_ray, "deploy", deploy)
    monkeypatch.setattr(serve, "status", lambda: SimpleNamespace(applications=dict(apps)))
    monkeypatch.setattr(serve, "delete", lambda name: calls.append(f"delete {name}") or apps.pop(name))
    monkeypatch.setattr(serve, "shutdown", lambda: calls.append("shutdown serve"))
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown ray"))
    yield calls
    signal.signal(signal.SIGTERM, previous[0])
    signal.signal(signal.SIGINT, previous[1])


def test_sigterm_during_deploy_still_deletes_the_app_on_an_attached_cluster(
        fake_ray: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert serve_ray.run_ray_serve(ServeConfig(index="unused", ray_replicas=2)) == 0
    assert fake_ray == ["connect", "deploy", "deploy returned", f"delete {serve_ray.APP_NAME}", "shutdown ray"]


def test_sigterm_on_a_private_instance_shuts_serve_down(fake_ray: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert serve_ray.run_ray_serve(ServeConfig(index="unused", ray_replicas=2)) == 0
    assert fake_ray == ["connect", "deploy", "deploy returned", "shutdown serve", "shutdown ray"]
