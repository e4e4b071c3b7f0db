"""Corpus streaming (build time) and the memory-mapped document store (serve time).

Search-R1 loads the whole corpus with `datasets` and looks rows up one Python object at a time. Here the
build writes `docs.jsonl` (one `{"id", "contents"}` row per line, in index order) plus `offsets.npy` (byte
offset of each row, int64). The server memory-maps both, so a hit costs one slice of the mapped file and
its bytes are spliced into the response unparsed (`orjson.Fragment`). Resident memory stays at the page
cache's discretion instead of ~2x the corpus size in Python objects.
"""

from __future__ import annotations

import gzip
import hashlib
import mmap
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import orjson

DOCS_FILE = "docs.jsonl"
OFFSETS_FILE = "offsets.npy"


@dataclass(frozen=True)
class Passage:
    """One corpus row as the retrievers see it."""

    id: str | int
    contents: str


class CorpusFormatError(ValueError):
    """A corpus line is not a JSON object with `id` and `contents`."""


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")  # noqa: SIM115


def _contents(row: dict) -> str:
    # {"id", "title", "text"} rows (FlashRAG/DPR style) become Search-R1's '"Title"\ntext'.
    if "contents" not in row and "title" in row and "text" in row:
        return f'"{row["title"]}"\n{row["text"]}'
    return row["contents"]


def iter_corpus(path: Path) -> Iterator[Passage]:
    """Stream passages from a jsonl(.gz) corpus without holding more than one line.

    Rows are `{"id", "contents"}`; `{"id", "title", "text"}` rows are accepted and converted.
    """
    with _open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
                yield Passage(id=row["id"], contents=_contents(row))
            except (orjson.JSONDecodeError, KeyError, TypeError) as e:
                msg = f"{path}:{lineno}: expected a JSON object with 'id' and 'contents' ({e})"
                raise CorpusFormatError(msg) from e


def corpus_stats(path: Path) -> tuple[str, int]:
    """(sha256 of the uncompressed bytes, number of non-empty lines) in one streaming pass.

    Hashing the uncompressed bytes makes a .gz and its plain twin share a checksum (and an index cache).
    """
    digest = hashlib.sha256()
    count = 0
    with _open(path) as f:
        for line in f:
            digest.update(line)
            if line.strip():
                count += 1
    return digest.hexdigest(), count


class DocStoreWriter:
    """Appends rows to `docs.jsonl` and their offsets to a scratch file; memory stays one buffer, any corpus size.

    A Python list of offsets cost ~36 bytes a row (0.75 GB for wiki-18's 21M rows); the offsets now go to
    disk as they come and `close` writes `offsets.npy` byte-identical to `np.save` of the same array.
    """

    _FLUSH_ROWS = 65_536

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self._f = open(self.out_dir / DOCS_FILE, "wb")  # noqa: SIM115
        self._offsets_tmp = open(self.out_dir / (OFFSETS_FILE + ".tmp"), "w+b")  # noqa: SIM115
        self._pending: list[int] = [0]
        self._end = 0
        self._rows = 0

    def add(self, passage: Passage) -> None:
        line = orjson.dumps({"id": passage.id, "contents": passage.contents}) + b"\n"
        self._f.write(line)
        self._end += len(line)
        self._rows += 1
        self._pending.append(self._end)
        if len(self._pending) >= self._FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        self._offsets_tmp.write(np.asarray(self._pending, dtype=np.int64).tobytes())
        self._pending = []

    def close(self) -> int:
        """Flush files; returns the number of rows written."""
        self._f.close()
        self._flush()
        header = {"descr": np.dtype(np.int64).str, "fortran_order": False, "shape": (self._rows + 1,)}
        with open(self.out_dir / OFFSETS_FILE, "wb") as out:
            np.lib.format.write_array_header_1_0(out, header)
            self._offsets_tmp.seek(0)
            shutil.copyfileobj(self._offsets_tmp, out, 1 << 20)
        self._offsets_tmp.close()
        (self.out_dir / (OFFSETS_FILE + ".tmp")).unlink()
        return self._rows


class DocStore:
    """Read-only, memory-mapped view of `docs.jsonl` addressed by row number."""

    def __init__(self, index_dir: Path) -> None:
        index_dir = Path(index_dir)
        self.offsets = np.load(index_dir / OFFSETS_FILE, mmap_mode="r")
        self._file = open(index_dir / DOCS_FILE, "rb")  # noqa: SIM115
        size = int(self.offsets[-1])
        # mmap of an empty file is an error; an empty corpus is legal but useless.
        self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def raw(self, row: int) -> bytes:
        """The JSON bytes of one row (no trailing newline), ready to splice into a response."""
        return self._mm[int(self.offsets[row]) : int(self.offsets[row + 1]) - 1]

    def get(self, row: int) -> Passage:
        d = orjson.loads(self.raw(row))
        return Passage(id=d["id"], contents=d["contents"])

    def close(self) -> None:
        if isinstance(self._mm, mmap.mmap):
            self._mm.close()
        self._file.close()
