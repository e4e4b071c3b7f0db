"""Append-only, crash-safe storage of finished items: what makes `sage-rl generate` resumable exactly once.

Two files in the run folder, one JSON line per finished item:
- `trajectories.jsonl`: every agent trajectory of the item (written first);
- `records.jsonl`: the item's `ItemRecord` (written second; its presence is what marks the item done).
Each line is durable before the next item is recorded (`sage_rl.files`). After a crash (Ctrl-C, kill -9,
power loss) `open()` drops a torn last line, drops trajectory lines whose record never landed, and keeps
the first record per item id, so a restart redoes exactly the unfinished items. A lock file stops two runs
from writing to the same folder.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from sage_rl.files import JsonlAppender, atomic_write_jsonl, folder_lock, read_complete_lines
from sage_rl.generate.records import ItemRecord


class RecordStore:
    """The run folder's records and trajectories. Use as a context manager (holds the folder lock)."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.records_path = self.out_dir / "records.jsonl"
        self.trajectories_path = self.out_dir / "trajectories.jsonl"
        self._records: JsonlAppender | None = None
        self._trajectories: JsonlAppender | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> RecordStore:
        self._stack.enter_context(folder_lock(self.out_dir, "sage-rl generate"))
        return self

    def __exit__(self, *exc: object) -> None:
        for f in (self._records, self._trajectories):
            if f is not None:
                f.close()
        self._stack.close()

    def open(self) -> dict[int, ItemRecord]:
        """Repair both files after a crash and return the finished items by id."""
        done: dict[int, ItemRecord] = {}
        for row in read_complete_lines(self.records_path):
            done.setdefault(row["item_id"], ItemRecord.from_dict(row))
        traj_rows = read_complete_lines(self.trajectories_path)
        seen: set[int] = set()
        kept = []
        for row in traj_rows:
            if row["item_id"] in done and row["item_id"] not in seen:
                seen.add(row["item_id"])
                kept.append(row)
        if len(kept) != len(traj_rows):  # orphans of a crash between the two writes: rewrite without them
            atomic_write_jsonl(self.trajectories_path, kept)
        self._trajectories = JsonlAppender(self.trajectories_path)
        self._records = JsonlAppender(self.records_path)
        return done

    def append(self, record: ItemRecord, trajectories: dict) -> None:
        """Durably record one finished item: trajectories first, then the record that marks it done."""
        assert self._records is not None and self._trajectories is not None, "call open() first"
        self._trajectories.append({"item_id": record.item_id, **trajectories})
        self._records.append(record.to_dict())


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
