"""Evaluation benchmarks in one jsonl format, the converters into it, and the sets shipped with the package.

The format is FlashRAG's and Search-R1's: one JSON object per line,
`{"id": str, "question": str, "golden_answers": [str, ...], "metadata": {...}}` (`metadata` optional; e.g.
`supporting_titles`, `supporting_doc_ids`, `hops`, `type`, `source_split`). Every benchmark the evaluator
reads is a file in this format, so one loader validates them all and the converters are the only code that
knows a source's own fields.

A benchmark's name in metrics (verl's `data_source`) is its shipped name, or for a file its name without
`.jsonl`/`.jsonl.gz` (`data_source_name`): name converted files after the set, e.g. `musique-train100.jsonl`.

    python -m sage_rl.benchmarks list
    python -m sage_rl.benchmarks convert --format r1searcher r1_searcher/musique_500.jsonl musique-500.jsonl
    python -m sage_rl.benchmarks convert --format deepresearcher --source nq deepresearcher_test.jsonl dr-nq.jsonl
    python -m sage_rl.benchmarks verl musique-500.jsonl data/val/musique-500.parquet
    python -m sage_rl.benchmarks verl --split train nq.jsonl data/train/nq.parquet

The same format carries training questions (Search-R1's NQ + HotpotQA train files are FlashRAG jsonl): `verl
--split train` writes them as verl training parquet with the search prompt, the rows the validation files have.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sage_rl.assets import ASSETS_DIR, embedded_questions, read_jsonl
from sage_rl.files import atomic_write
from sage_rl.models import cache_dir

logger = logging.getLogger(__name__)

BENCHMARKS_DIR = ASSETS_DIR / "benchmarks"

# Benchmarks shipped with the package: name -> file name. `bamboogle.jsonl` is a file in
# sage_rl/assets/benchmarks/; the hotpotqa sets are written on first use from the embedded questions
# (sage_rl/assets/hotpotqa/questions.jsonl.gz) into the cache, so the package holds those questions once.
SHIPPED: dict[str, str] = {
    "bamboogle": "bamboogle.jsonl",
    "hotpotqa-dev": "hotpotqa-dev.jsonl",
    "hotpotqa-test": "hotpotqa-test.jsonl",
}

# Whether each shipped set is answerable from the embedded HotpotQA corpus (shown by `list`).
SHIPPED_NOTES: dict[str, str] = {
    "bamboogle": "125 hand-written two-hop questions (Press et al. 2022) about Wikipedia topics, not made for the "
    "embedded HotpotQA corpus, which lacks most pages they need: evaluate it on a Wikipedia-scale index (wiki-18).",
    "hotpotqa-dev": "300 HotpotQA validation questions (RPT dev split): answerable from the embedded corpus, every "
    "gold paragraph is in it (`supporting_doc_ids`).",
    "hotpotqa-test": "500 HotpotQA validation questions (RPT test split): answerable from the embedded corpus, every "
    "gold paragraph is in it (`supporting_doc_ids`).",
}

# Shipped names built from one split of the embedded questions (`sage_rl.assets.embedded_questions`).
_EMBEDDED_SPLITS = {"hotpotqa-dev": "dev", "hotpotqa-test": "test"}

_FIELDS = ("id", "question", "golden_answers", "metadata")


@dataclass(frozen=True)
class BenchmarkItem:
    """One evaluation question; validated on construction so a bad row fails where it is read.

    >>> BenchmarkItem("q1", "Capital of France?", ("Paris",)).golden_answers
    ('Paris',)
    """

    id: str
    question: str
    golden_answers: tuple[str, ...]
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"id must be a non-empty string, got {self.id!r}")
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValueError(f"question must be a non-empty string, got {self.question!r}")
        if not isinstance(self.golden_answers, list | tuple):
            raise ValueError(f"golden_answers must be a list of strings, got {self.golden_answers!r}")
        if not self.golden_answers:
            raise ValueError("golden_answers is empty")
        for i, gold in enumerate(self.golden_answers):
            if not isinstance(gold, str) or not gold.strip():
                raise ValueError(f"golden_answers[{i}] must be a non-empty string, got {gold!r}")
        if not isinstance(self.metadata, dict):
            raise ValueError(f"metadata must be a dict, got {self.metadata!r}")
        object.__setattr__(self, "golden_answers", tuple(self.golden_answers))  # a JSON list arrives as a list

    def to_json(self) -> dict:
        """The jsonl row; `metadata` only when non-empty, as in FlashRAG's files."""
        row: dict = {"id": self.id, "question": self.question, "golden_answers": list(self.golden_answers)}
        if self.metadata:
            row["metadata"] = self.metadata
        return row


def load_benchmark(path: str | Path, limit: int | None = None) -> list[BenchmarkItem]:
    """Read a benchmark file (.jsonl or .jsonl.gz) in file order, validating every row.

    The whole file is validated even with `limit`, so a short smoke run already catches a bad file.
    Errors name `file:N` with N the row number (the line number, unless the file has blank lines).

    Args:
        path: the file; use `benchmark_path` to resolve a shipped name.
        limit: keep only the first `limit` items (never a sample: results stay comparable across runs).
    """
    path = Path(path)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    items: list[BenchmarkItem] = []
    first_row: dict[str, int] = {}
    for n, row in enumerate(read_jsonl(path), 1):
        where = f"{path}:{n}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
        unknown = sorted(set(row) - set(_FIELDS))
        if unknown:
            raise ValueError(f"{where}: unknown fields {unknown}; a benchmark row has {list(_FIELDS)} "
                             "(convert other formats with `python -m sage_rl.benchmarks convert`)")
        missing = [k for k in _FIELDS[:3] if k not in row]
        if missing:
            raise ValueError(f"{where}: missing field(s) {missing}")
        try:
            item = BenchmarkItem(row["id"], row["question"], row["golden_answers"], row.get("metadata", {}))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        if item.id in first_row:
            raise ValueError(f"{where}: duplicate id {item.id!r} (first on row {first_row[item.id]})")
        first_row[item.id] = n
        items.append(item)
    if not items:
        raise ValueError(f"{path}: no questions")
    return items[:limit]


def write_benchmark(items: Iterable[BenchmarkItem], path: str | Path) -> Path:
    """Write items as benchmark jsonl (gzip if the name ends in .gz) atomically: readers never see half a file."""
    path = Path(path)
    items = list(items)
    if not items:
        raise ValueError(f"refusing to write an empty benchmark to {path}")
    _check_unique_ids(items, str(path))
    text = "".join(json.dumps(item.to_json(), ensure_ascii=False) + "\n" for item in items)
    data = text.encode("utf-8")
    if path.suffix == ".gz":
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:  # mtime 0: same items, same bytes
            f.write(data)
        data = buf.getvalue()
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def benchmark_path(name_or_path: str | Path) -> Path:
    """The file of a shipped benchmark name (see `SHIPPED`) or of a path to a benchmark file.

    >>> benchmark_path("bamboogle").name
    'bamboogle.jsonl'
    """
    name = str(name_or_path)
    if name in _EMBEDDED_SPLITS:
        return _embedded_benchmark_file(name)
    if name in SHIPPED:
        return BENCHMARKS_DIR / SHIPPED[name]
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    raise FileNotFoundError(f"{name!r} is neither a shipped benchmark ({', '.join(SHIPPED)}) nor a file")


def data_source_name(name_or_path: str | Path) -> str:
    """A benchmark's name in metrics: the shipped name, else the file name without .jsonl / .jsonl.gz.

    >>> data_source_name("bamboogle"), data_source_name("/data/musique-500.jsonl.gz")
    ('bamboogle', 'musique-500')
    """
    name = Path(name_or_path).name
    for suffix in (".jsonl.gz", ".jsonl"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def hotpotqa_embedded_items(split: str) -> list[BenchmarkItem]:
    """One RPT split of the embedded HotpotQA questions, with their gold paragraphs' corpus ids as metadata."""
    return [BenchmarkItem(q["id"], q["question"].strip(), _golds(q["golden_answers"]),
                          _hotpotqa_metadata(q, q["split"], q["supporting_doc_ids"]))
            for q in embedded_questions(split)]


def _hotpotqa_metadata(q: dict, rpt_split: str, doc_ids: list[str] | None) -> dict:
    """The metadata both HotpotQA-RPT paths give; all 1,100 are validation questions, RPT's splits sample them."""
    meta = {"type": q["type"], "hops": 2, "supporting_titles": q["supporting_titles"]}
    if doc_ids is not None:
        meta["supporting_doc_ids"] = doc_ids
    return meta | {"source_split": "validation", "rpt_split": rpt_split}


def _embedded_benchmark_file(name: str) -> Path:
    """Write the benchmark file of an embedded split to the cache when missing or out of date."""
    path = cache_dir() / "benchmarks" / SHIPPED[name]
    items = hotpotqa_embedded_items(_EMBEDDED_SPLITS[name])
    text = "".join(json.dumps(item.to_json(), ensure_ascii=False) + "\n" for item in items)
    # Comparing the content (not a version stamp) keeps the cache right after any package upgrade.
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        write_benchmark(items, path)
    return path


def _check_unique_ids(items: Sequence[BenchmarkItem], where: str) -> None:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item.id in seen:
            raise ValueError(f"{where}: duplicate id {item.id!r} (items {seen[item.id]} and {i})")
        seen[item.id] = i


# --- converters: one per source format, each `(path) -> list[BenchmarkItem]` --------------------------------


def _golds(value: str | int | float | list) -> tuple[str, ...]:
    """Gold answers from a string or a list, stripped, exact duplicates dropped (order kept)."""
    values = value if isinstance(value, list) else [value]
    return tuple(dict.fromkeys(s for s in (str(v).strip() for v in values) if s))


def _stem(path: str | Path) -> str:
    """File name without its format suffixes: the prefix of generated ids."""
    return data_source_name(Path(path).name.removesuffix(".json").removesuffix(".csv"))


def _jsonl_rows(path: str | Path) -> Iterator[tuple[str, dict]]:
    """(`file:N`, row) for each row of a jsonl file."""
    for n, row in enumerate(read_jsonl(path), 1):
        yield f"{path}:{n}", row


def _json_list_rows(path: str | Path) -> Iterator[tuple[str, dict]]:
    """(`file[i]`, row) for each element of a file holding one JSON list."""
    with open(path, encoding="utf-8") as f:
        rows = json.load(f)
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of objects, got {type(rows).__name__}")
    for i, row in enumerate(rows):
        yield f"{path}[{i}]", row


def _convert(path: str | Path, rows: Iterable[tuple[str, dict]],
             make: Callable[[int, dict], BenchmarkItem | None]) -> list[BenchmarkItem]:
    """Apply `make(position, row)` to every row (None skips it); any failure names the row."""
    items = []
    for n, (where, row) in enumerate(rows):
        try:
            item = make(n, row)
        except KeyError as e:
            raise ValueError(f"{where}: missing field {e}") from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None
        if item is not None:
            items.append(item)
    if not items:
        raise ValueError(f"{path}: no questions (after filtering)")
    _check_unique_ids(items, str(path))
    return items


def from_flashrag(path: str | Path) -> list[BenchmarkItem]:
    """FlashRAG / Search-R1 files (`reason_over_search/*.jsonl`, `flashrag/nq_test.jsonl`).

    Already `id, question, golden_answers[, metadata]`; any other top-level field moves into `metadata`.
    """
    def make(_: int, row: dict) -> BenchmarkItem:
        extra = {k: v for k, v in row.items() if k not in _FIELDS}
        return BenchmarkItem(str(row["id"]), row["question"].strip(), _golds(row["golden_answers"]),
                             {**row.get("metadata", {}), **extra})
    return _convert(path, _jsonl_rows(path), make)


def from_r1searcher(path: str | Path) -> list[BenchmarkItem]:
    """R1-Searcher eval sets (`r1_searcher/*.jsonl`: `idx, question, answer`); ids are `<file stem>-<idx>`."""
    stem = _stem(path)
    return _convert(path, _jsonl_rows(path), lambda _, row: BenchmarkItem(
        f"{stem}-{row['idx']}", row["question"].strip(), _golds(row["answer"])))


def from_hotpotqa_rpt(path: str | Path, split: str | None = None) -> list[BenchmarkItem]:
    """`derived/hotpotqa_rpt_questions.jsonl`, optionally one RPT split (`test` = the 500 held-out questions).

    `supporting_doc_ids` come from the embedded questions (same ids and corpus as the derived files), so they
    index the embedded corpus; a question not in the package has supporting titles only.
    """
    doc_ids = {q["id"]: q["supporting_doc_ids"] for q in embedded_questions()}

    def make(_: int, row: dict) -> BenchmarkItem | None:
        if split is not None and row["rpt_split"] != split:
            return None
        meta = _hotpotqa_metadata(row, row["rpt_split"], doc_ids.get(row["id"]))
        meta |= {"level": row["level"], "supporting_facts": row["supporting_facts"]}
        return BenchmarkItem(row["id"], row["question"].strip(), _golds(row["golden_answers"]), meta)

    items = _convert(path, _jsonl_rows(path), make)
    unmapped = sum("supporting_doc_ids" not in item.metadata for item in items)
    if unmapped:
        logger.warning("%s: %d of %d questions are not in the embedded corpus (no supporting_doc_ids)",
                       path, unmapped, len(items))
    return items


def from_2wiki_fastgraphrag(path: str | Path) -> list[BenchmarkItem]:
    """`derived/2wiki_fastgraphrag101_questions.jsonl` (2Wiki dev): gold titles index the HippoRAG 2Wiki corpus."""
    return _convert(path, _jsonl_rows(path), lambda _, row: BenchmarkItem(
        row["id"], row["question"].strip(), _golds(row["golden_answers"]),
        {"supporting_titles": row["supporting_titles"], "source_split": "dev"}))


def from_musique_hipporag(path: str | Path) -> list[BenchmarkItem]:
    """`derived/musique_hipporag_train100_questions.jsonl` (MuSiQue-Ans *train*): golds are answer + aliases.

    Keeps `hops`, `question_decomposition` and `supporting_titles`; drops the supporting paragraphs' text,
    which the matching corpus file holds.
    """
    return _convert(path, _jsonl_rows(path), lambda _, row: BenchmarkItem(
        row["id"], row["question"].strip(), _golds(row["golden_answers"]),
        {"hops": row["hops"], "question_decomposition": row["question_decomposition"],
         "supporting_titles": row["supporting_titles"], "source_split": "train"}))


def from_frames(path: str | Path) -> list[BenchmarkItem]:
    """FRAMES (`skillorchestra_frames/frames*.jsonl`: `id, question, answer`)."""
    return _convert(path, _jsonl_rows(path), lambda _, row: BenchmarkItem(
        str(row["id"]), row["question"].strip(), _golds(row["answer"]), {"source_split": "test"}))


def from_agentic_rag(path: str | Path) -> list[BenchmarkItem]:
    """Agentic-RAG lists (`agentic_rag_qa/*.json`: one JSON list of `{question, answer}`, answer str or list).

    The files have no ids: ids are `<file stem>-<position>`, 0-based.
    """
    stem = _stem(path)
    return _convert(path, _json_list_rows(path), lambda i, row: BenchmarkItem(
        f"{stem}-{i}", row["question"].strip(), _golds(row["answer"])))


def from_deepresearcher(path: str | Path, source: str | None = None) -> list[BenchmarkItem]:
    """`derived/deepresearcher_{test,dev}.jsonl`: seven sets in one file; `source` keeps one (case-insensitive).

    Sources: nq, tq, popqa, hotpotqa, 2wiki, musique, Bamboogle. Without `source` every item keeps its set in
    `metadata["data_source"]`, for per-set scores.
    """
    rows = list(_jsonl_rows(path))
    if source is not None:
        found = sorted({row.get("data_source", "") for _, row in rows})
        if source.lower() not in {s.lower() for s in found}:
            raise ValueError(f"{path}: no data_source {source!r}; the file has {found}")

    def make(_: int, row: dict) -> BenchmarkItem | None:
        if source is not None and row["data_source"].lower() != source.lower():
            return None
        return BenchmarkItem(row["id"], row["question"].strip(), _golds(row["golden_answers"]),
                             {"data_source": row["data_source"], "source_split": row["orig_split"]})
    return _convert(path, rows, make)


# QAItem fields (sage_rl/generate/assemble.py) that are not generation metadata.
_SAGE_QA_FIELDS = ("id", "question", "answer", "golden_answers")


def from_sage(path: str | Path) -> list[BenchmarkItem]:
    """The `qa.jsonl` that `sage-rl generate` writes: every field but the question and answers becomes metadata.

    That keeps `target_steps`, `min_searches`, `round`, pass@K and the evidence doc ids next to each question.
    """
    return _convert(path, _jsonl_rows(path), lambda _, row: BenchmarkItem(
        row["id"], row["question"].strip(), _golds(row.get("golden_answers") or row["answer"]),
        {k: v for k, v in row.items() if k not in _SAGE_QA_FIELDS}))


def from_bamboogle_csv(path: str | Path) -> list[BenchmarkItem]:
    """The original Bamboogle sheet (`bamboogle_original/*.csv`, cp1252): `Question,,,,Answer,Answer 2[,,,sub_a1]`.

    Prefer the jsonl copies (clean Unicode, and the sheet shows one date as `22-Apr-04`); use this for `sub_a1`,
    the gold intermediate answer, kept as `metadata["intermediate_answer"]`. Lost curly quotes (`?€?`) become `"`.
    """
    stem = _stem(path)
    with open(path, encoding="cp1252", newline="") as f:
        header, *rows = list(csv.reader(f))
    col = {name: i for i, name in enumerate(header) if name}
    for name in ("Question", "Answer"):
        if name not in col:
            raise ValueError(f"{path}: no {name!r} column in the header {header}")

    def make(i: int, cells: list[str]) -> BenchmarkItem | None:
        if not any(cells):  # a trailing empty line of the sheet
            return None
        cells = [c.replace("?€?", '"') for c in cells]
        golds = [cells[col["Answer"]]] + ([cells[col["Answer 2"]]] if "Answer 2" in col else [])
        meta = {"intermediate_answer": cells[col["sub_a1"]].strip()} if "sub_a1" in col else {}
        return BenchmarkItem(f"{stem}-{i}", cells[col["Question"]].strip(), _golds(golds), meta)
    # Data row i is line i + 2 of the file (the header is line 1).
    return _convert(path, ((f"{path}:{i + 2}", r) for i, r in enumerate(rows)), make)


# Source format -> converter; `convert --format` picks from these.
CONVERTERS: dict[str, Callable[[str | Path], list[BenchmarkItem]]] = {
    "flashrag": from_flashrag,
    "r1searcher": from_r1searcher,
    "hotpotqa-rpt": from_hotpotqa_rpt,
    "2wiki-fastgraphrag": from_2wiki_fastgraphrag,
    "musique-hipporag": from_musique_hipporag,
    "frames": from_frames,
    "agentic-rag": from_agentic_rag,
    "deepresearcher": from_deepresearcher,
    "sage": from_sage,
    "bamboogle-csv": from_bamboogle_csv,
}


def training_parquet(name_or_path: str | Path, output: str | Path) -> Path:
    """A question file in this format as verl *training* parquet: the search prompt, `data_source` = the set's name.

    The rows are the validation parquet's (`sage_rl.datasets.benchmark_parquet`) with `extra_info.split = "train"`,
    so a set reads the same in training and in validation. Written straight to `output`, not through the cache:
    training sets are large and read once. The shipped benchmarks
    are evaluation sets and are refused, so a recipe cannot train on what it reports.
    """
    from sage_rl.datasets import PROMPTS, verl_row, write_verl_parquet

    if str(name_or_path) in SHIPPED:
        raise ValueError(f"{name_or_path!r} is a shipped evaluation set; refusing to write it as training data")
    name = data_source_name(name_or_path)
    items = load_benchmark(benchmark_path(name_or_path))
    rows = (verl_row({"question": it.question, "golden_answers": list(it.golden_answers), "id": it.id,
                      "split": "train"}, i, name, PROMPTS["search"]) for i, it in enumerate(items))
    return write_verl_parquet(rows, output)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sage_rl.benchmarks {list, convert, verl}`."""
    parser = argparse.ArgumentParser(prog="python -m sage_rl.benchmarks", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the shipped benchmarks: name, size, file, whether the embedded corpus answers them")
    conv = sub.add_parser("convert", help="convert a source file to benchmark jsonl")
    conv.add_argument("--format", required=True, choices=list(CONVERTERS), help="the input's source format")
    conv.add_argument("--split", default=None, help="hotpotqa-rpt only: keep one RPT split (train, dev, test)")
    conv.add_argument("--source", default=None, help="deepresearcher only: keep one data_source (e.g. nq, 2wiki)")
    conv.add_argument("input", type=Path)
    conv.add_argument("output", type=Path, help="the benchmark file (.jsonl or .jsonl.gz); its name is the set's")
    verl = sub.add_parser("verl", help="a benchmark as verl validation parquet (search prompt, named after the set)")
    verl.add_argument("--split", choices=["train"], default=None,
                      help="train: write training parquet (extra_info.split=train; shipped evaluation sets refused)")
    verl.add_argument("benchmark", help="a shipped name or a benchmark jsonl path")
    verl.add_argument("output", type=Path, help="the parquet file to write")
    args = parser.parse_args(argv)

    if args.command == "verl":
        import shutil

        from sage_rl.datasets import benchmark_parquet

        args.output.parent.mkdir(parents=True, exist_ok=True)
        if args.split == "train":
            training_parquet(args.benchmark, args.output)
        else:
            shutil.copyfile(benchmark_parquet(args.benchmark), args.output)
        print(f"{args.output}: {args.split or 'validation'} data, data_source "  # noqa: T201
              f"{data_source_name(args.benchmark)!r}")
        return 0
    if args.command == "list":
        for name in SHIPPED:
            path = benchmark_path(name)
            print(f"{name}\t{len(load_benchmark(path))}\t{path}\n    {SHIPPED_NOTES[name]}")  # noqa: T201
        return 0
    if args.split is not None and args.format != "hotpotqa-rpt":
        parser.error("--split applies to --format hotpotqa-rpt only")
    if args.source is not None and args.format != "deepresearcher":
        parser.error("--source applies to --format deepresearcher only")
    if args.format == "hotpotqa-rpt":
        items = from_hotpotqa_rpt(args.input, split=args.split)
    elif args.format == "deepresearcher":
        items = from_deepresearcher(args.input, source=args.source)
    else:
        items = CONVERTERS[args.format](args.input)
    path = write_benchmark(items, args.output)
    print(f"{path}: {len(items)} questions, data_source {data_source_name(path)!r}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
