"""Crash-safe files, in one place: atomic replacement, append-only JSON lines, and a folder lock.

- `atomic_write(path, write)`: the file appears complete or not at all (temp file in the same folder,
  fsync, `os.replace`), so readers never see half a parquet or jsonl file.
- `read_complete_lines(path)`: the parsed lines of an append-only jsonl file; a torn last line (a write a
  crash interrupted) is cut off the file, so appending can continue safely.
- `JsonlAppender`: one `write` per line, flushed and fsynced before the next, so a line is either durable
  or torn (and then repaired by `read_complete_lines`).
- `folder_lock(dir, what)`: stops two runs from writing to the same folder.

Used by `sage-rl generate` (its record store) and `sage-rl eval` (its results), which both resume exactly
once after Ctrl-C, kill -9 or power loss.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` to produce the file, then move it to `path` in one step.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "x.txt"
    >>> atomic_write(p, lambda tmp: tmp.write_text("done")).read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`atomic_write` of a UTF-8 text."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_jsonl(path: str | Path, rows) -> Path:
    """`atomic_write` of JSON lines, one per row, in the format `JsonlAppender` appends."""
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_complete_lines(path: str | Path) -> list[dict]:
    """Parsed complete lines; a torn (unterminated or unparsable) last line is cut off the file."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1  # bytes after the last newline belong to a write that never finished
    rows, good_end = [], 0
    for line in data[:keep].splitlines(keepends=True):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # only the tail can be torn; stop at the first bad line and cut from there
        good_end += len(line)
    if good_end < len(data):
        logger.warning("%s: dropping %d bytes of an interrupted write", path, len(data) - good_end)
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return rows


class JsonlAppender:
    """Durable appends to a jsonl file: one line per `append`, fsynced before it returns."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: IO[str] = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def append(self, row: dict) -> None:
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (created if needed); `what` names the run in the error.

    `wait_s` > 0 waits that long for the holder to let go (a restarted job whose killed predecessor's
    processes are still exiting) before failing."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    with open(folder / ".lock", "w") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"another {what} run is writing to {folder}") from None
                time.sleep(0.2)
        yield
