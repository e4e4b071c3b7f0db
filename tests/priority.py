"""Checks shared by the tests of `sage_rl.serving.lower_priority`'s callers (pipeline stages, servers)."""

from __future__ import annotations

import os
from pathlib import Path

from sage_rl.serving import autogroups_enabled, session_nice

# Prints its own niceness and its session's (autogroup), after the parent has had time to set them.
PROBE = ("import os, pathlib, time; p = pathlib.Path('/proc/self/autogroup'); time.sleep(0.5)\n"
         "seen = f\"{os.nice(0)} {p.read_text().split()[-1] if p.exists() else None}\"")
OURS = Path("/proc/self/autogroup")


def own_session() -> str | None:
    """This process's session priority, to check a child's lowering left it alone."""
    return OURS.read_text() if OURS.exists() else None


def assert_lowered(seen: str, nice: int, ours_before: str | None) -> None:
    """`seen` (what PROBE saw in a child started with `nice`): the child's session yields by `nice` below ours, not
    each process, and ours keeps its priority; without autogroups the child itself is niced (capped at 19)."""
    own, group = seen.split()
    if autogroups_enabled():
        assert (int(own), group) == (os.nice(0), str(min(session_nice() + nice, 19)))
        assert own_session() == ours_before
    else:
        assert int(own) == min(os.nice(0) + nice, 19)
