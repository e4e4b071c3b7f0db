"""`sage_rl.serving`: a server's session priority."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sage_rl.serving import free_port, serving

# Records its session's niceness (autogroup) and its own, after the parent has had time to set them, then serves.
PROBE = ("import http.server as h, os, pathlib, sys, time; time.sleep(0.5); p = pathlib.Path('/proc/self/autogroup')\n"
         "pathlib.Path(sys.argv[1]).write_text(f\"{os.nice(0)} {p.read_text().split()[-1] if p.exists() else None}\")\n"
         "h.HTTPServer(('127.0.0.1', int(sys.argv[2])), h.SimpleHTTPRequestHandler).serve_forever()")


def _served_priority(tmp_path: Path, nice: int) -> tuple[int, str]:
    port, seen = free_port(), tmp_path / f"seen{nice}"
    with serving([sys.executable, "-c", PROBE, str(seen), str(port)], f"http://127.0.0.1:{port}/",
                 tmp_path / "server.log", timeout=30, nice=nice):
        pass
    own, group = seen.read_text().split()
    return int(own), group


def test_a_server_session_can_yield_the_cores(tmp_path):
    # The online producer's vLLM server yields to training (run.producer_nice); the server's session, not this one.
    ours = Path("/proc/self/autogroup")
    before = ours.read_text() if ours.exists() else None
    own, group = _served_priority(tmp_path, 9)
    autogroups = Path("/proc/sys/kernel/sched_autogroup_enabled")
    if autogroups.exists() and autogroups.read_text().strip() == "1":
        assert (own, group) == (os.nice(0), "9")
        assert ours.read_text() == before
    else:
        assert own == min(os.nice(0) + 9, 19)
    assert _served_priority(tmp_path, 0)[0] == os.nice(0)
