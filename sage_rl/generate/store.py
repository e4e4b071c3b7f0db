"""Append-only, crash-safe storage of finished items: what makes `sage-rl generate` resumable exactly once.

Two files in the run folder, one JSON line per finished item:
- `trajectories.jsonl`: every agent trajectory of the item (written first);
- `records.jsonl`: the item's `ItemRecord` (written second; its presence is what marks the item done).
Each line is written with one `write`, flushed and fsynced before the next item is recorded. After a
crash (Ctrl-C, kill -9, power loss) `open()` drops a torn last line, drops trajectory lines whose record
never landed, and keeps the first record per item id, so a restart redoes exactly the unfinished items.
A lock file stops two runs from writing to the same folder.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import IO

from sage_rl.generate.records import ItemRecord

logger = logging.getLogger(__name__)


def _read_lines(path: Path) -> list[dict]:
    """Parsed complete lines; a torn (unterminated or unparsable) last line is cut off the file."""
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


class RecordStore:
    """The run folder's records and trajectories. Use as a context manager (holds the folder lock)."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.records_path = self.out_dir / "records.jsonl"
        self.trajectories_path = self.out_dir / "trajectories.jsonl"
        self._records: IO[str] | None = None
        self._trajectories: IO[str] | None = None
        self._lock: IO[str] | None = None

    def __enter__(self) -> RecordStore:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.out_dir / ".lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RuntimeError(f"another sage-rl generate run is writing to {self.out_dir}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        for f in (self._records, self._trajectories, self._lock):
            if f is not None:
                f.close()

    def open(self) -> dict[int, ItemRecord]:
        """Repair both files after a crash and return the finished items by id."""
        done: dict[int, ItemRecord] = {}
        for row in _read_lines(self.records_path):
            done.setdefault(row["item_id"], ItemRecord.from_dict(row))
        traj_rows = _read_lines(self.trajectories_path)
        seen: set[int] = set()
        kept = []
        for row in traj_rows:
            if row["item_id"] in done and row["item_id"] not in seen:
                seen.add(row["item_id"])
                kept.append(row)
        if len(kept) != len(traj_rows):  # orphans of a crash between the two writes: rewrite without them
            tmp = self.trajectories_path.with_suffix(".jsonl.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in kept)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.trajectories_path)
        self._trajectories = open(self.trajectories_path, "a", encoding="utf-8")
        self._records = open(self.records_path, "a", encoding="utf-8")
        return done

    def append(self, record: ItemRecord, trajectories: dict) -> None:
        """Durably record one finished item: trajectories first, then the record that marks it done."""
        assert self._records is not None and self._trajectories is not None, "call open() first"
        traj_row = {"item_id": record.item_id, **trajectories}
        for f, row in ((self._trajectories, traj_row), (self._records, record.to_dict())):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


def read_trajectories(path: Path, item_ids: set[int]) -> dict[int, dict]:
    """The trajectory rows of the given items (streams the file; it can be large)."""
    out: dict[int, dict] = {}
    if not path.exists():
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            row = json.loads(line)
            if row["item_id"] in item_ids:
                out.setdefault(row["item_id"], row)
    return out
