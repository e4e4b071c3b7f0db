"""`sage_rl.serving`: a server's session priority."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from priority import PROBE, assert_lowered, own_session

from sage_rl.serving import free_port, serving

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
