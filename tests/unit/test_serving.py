"""`sage_rl.serving`: a server's session priority; servers started together, and all stopped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from priority import PROBE, assert_lowered, own_session

from sage_rl.serving import Server, autogroups_enabled, free_port, lower_priority, serving, serving_all, session_nice

# PROBE, then it writes what it saw to argv[1] and serves on port argv[2].
SERVER = PROBE + ("\nimport http.server as h, sys; pathlib.Path(sys.argv[1]).write_text(seen)\n"
                  "h.HTTPServer(('127.0.0.1', int(sys.argv[2])), h.SimpleHTTPRequestHandler).serve_forever()")


def _served_priority(tmp_path: Path, nice: int) -> str:
    port, seen = free_port(), tmp_path / f"seen{nice}"
    with serving([sys.executable, "-c", SERVER, str(seen), str(port)], f"http://127.0.0.1:{port}/",
                 tmp_path / "server.log", timeout=30, nice=nice):
        pass
    return seen.read_text()


def test_a_server_session_can_yield_the_cores(tmp_path):
    # The online producer's vLLM server yields to training (run.producer_nice); the server's session, not this one.
    before = own_session()
    assert_lowered(_served_priority(tmp_path, 9), 9, before)
    assert int(_served_priority(tmp_path, 0).split()[0]) == os.nice(0)


# A stage at lowered priority starts two servers, at its priority (nice=0) and 3 below it; they write what they saw.
STAGE = ("import os, pathlib, sys, time\nfrom sage_rl.serving import free_port, serving, session_nice\n"
         "deadline = time.monotonic() + 10  # until the parent has lowered us (our session, or us without autogroups)\n"
         "while not (session_nice() or os.nice(0)) and time.monotonic() < deadline: time.sleep(0.05)\n"
         "out, server = pathlib.Path(sys.argv[1]), sys.argv[2]\n"
         "for nice in (0, 3):\n"
         "    port = free_port()\n"
         "    with serving([sys.executable, '-c', server, str(out / f'seen{nice}'), str(port)],\n"
         "                 f'http://127.0.0.1:{port}/', out / 'server.log', timeout=30, nice=nice):\n"
         "        pass\n")


def test_a_server_never_outranks_the_stage_that_started_it(tmp_path):
    # A new session starts at niceness 0: sage-rl eval (at run.nice 19) once served its model at 0, above itself, and
    # its client then waited for the cores between turns while the model idled.
    stage = subprocess.Popen([sys.executable, "-c", STAGE, str(tmp_path), SERVER], start_new_session=True)
    lower_priority(stage.pid, 5)
    assert stage.wait(timeout=120) == 0
    base = session_nice() if autogroups_enabled() else os.nice(0)
    for nice in (0, 3):
        own, group = (tmp_path / f"seen{nice}").read_text().split()
        assert int(group if autogroups_enabled() else own) == min(base + 5 + nice, 19)


# Waits for the file argv[1] before it serves on port argv[2]: only ready if the server after it has started.
WAITING_SERVER = ("import http.server as h, pathlib, sys, time\n"
                  "while not pathlib.Path(sys.argv[1]).exists(): time.sleep(0.05)\n"
                  "h.HTTPServer(('127.0.0.1', int(sys.argv[2])), h.SimpleHTTPRequestHandler).serve_forever()")
# Creates the file argv[1], then serves on port argv[2].
MARKING_SERVER = ("import http.server as h, pathlib, sys\npathlib.Path(sys.argv[1]).touch()\n"
                  "h.HTTPServer(('127.0.0.1', int(sys.argv[2])), h.SimpleHTTPRequestHandler).serve_forever()")


def test_servers_start_together_and_all_stop(tmp_path):
    # The first server is ready only once the second runs: waiting for it before starting the second would time out.
    marker, ports = tmp_path / "second-started", [free_port(), free_port()]
    codes = [WAITING_SERVER, MARKING_SERVER]
    servers = [Server([sys.executable, "-c", code, str(marker), str(port)], f"http://127.0.0.1:{port}/",
                      tmp_path / f"server{i}.log") for i, (code, port) in enumerate(zip(codes, ports, strict=True))]
    with serving_all(servers, timeout=30):
        assert all(httpx.get(s.health_url, timeout=5).status_code == 200 for s in servers)
    for server in servers:
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.health_url, timeout=5)


def test_a_server_that_dies_stops_the_others(tmp_path):
    port = free_port()
    alive = Server([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                   f"http://127.0.0.1:{port}/", tmp_path / "alive.log")
    dead = Server([sys.executable, "-c", "raise SystemExit('no model here')"], "http://127.0.0.1:9/",
                  tmp_path / "dead.log")
    with pytest.raises(RuntimeError, match="no model here"), serving_all([alive, dead], timeout=30):
        pass
    with pytest.raises(httpx.ConnectError):
        httpx.get(alive.health_url, timeout=5)
