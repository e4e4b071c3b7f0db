"""Data shipped inside the package (see NOTICE for provenance and licenses).

`hotpotqa/corpus.jsonl.gz`: 10,787 Wikipedia intro paragraphs from the HotpotQA distractor
validation set, in the Search-R1 corpus format `{"id", "contents": "\\"Title\\"\\ntext"}`.
`hotpotqa/questions.jsonl.gz`: the 1,100 HotpotQA validation questions whose gold paragraphs are
all in that corpus (`split` is RPT's train/dev/test sampling; `supporting_doc_ids` index the corpus).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
EMBEDDED_CORPUS = ASSETS_DIR / "hotpotqa" / "corpus.jsonl.gz"
EMBEDDED_QUESTIONS = ASSETS_DIR / "hotpotqa" / "questions.jsonl.gz"


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Yield one dict per line of a `.jsonl` or `.jsonl.gz` file, streaming."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None


def embedded_questions(split: str | None = None) -> list[dict]:
    """The embedded HotpotQA questions, optionally one RPT split (`train`, `dev` or `test`)."""
    if split not in (None, "train", "dev", "test"):
        raise ValueError(f"unknown split {split!r}: expected train, dev or test")
    return [q for q in read_jsonl(EMBEDDED_QUESTIONS) if split is None or q["split"] == split]


def write_corpus_slice(path: str | Path, questions: Iterable[dict], distractors: int = 0) -> int:
    """Write the passages of the embedded corpus that `questions` need (every supporting paragraph) plus the
    first `distractors` other passages, in corpus order, as jsonl; returns the number written.

    A slice keeps those questions answerable while an index of it builds in a fraction of the time."""
    need = {d for q in questions for d in q["supporting_doc_ids"]}
    written = 0
    extra = 0
    with open(path, "w", encoding="utf-8") as out:
        for row in read_jsonl(EMBEDDED_CORPUS):
            keep = row["id"] in need or extra < distractors
            extra += row["id"] not in need and keep
            if keep:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                written += 1
    missing = len(need) - (written - extra)
    if missing:
        raise ValueError(f"{missing} supporting paragraphs are not in the embedded corpus")
    return written
