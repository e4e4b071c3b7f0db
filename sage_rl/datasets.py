"""QA items -> verl's RLHFDataset parquet rows (prompt as chat messages, reward_model.ground_truth, extra_info)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from sage_rl.assets import embedded_questions
from sage_rl.files import atomic_write
from sage_rl.models import cache_dir
from sage_rl.protocol import SEARCH_PROMPT, as_question

DIRECT_ANSWER_PROMPT = (
    "Answer the given question. Think briefly, then give only the final answer inside <answer> and "
    "</answer>, without explanation, for example <answer> Beijing </answer>. Question: {question}\n"
)


def verl_row(
    item: dict, index: int, data_source: str, template: str = DIRECT_ANSWER_PROMPT, extra_info: dict | None = None
) -> dict:
    """One RLHFDataset row from a QA item with `question`, `golden_answers` and optional `id`/`split`.

    `extra_info` adds per-item metadata (e.g. SAGE's target steps and pass@K) next to the standard keys.
    """
    question = as_question(item["question"])
    answers = item["golden_answers"]
    if not answers:
        raise ValueError(f"QA item {item.get('id', index)!r} has no golden_answers")
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": template.format(question=question)}],
        "ability": "deep-search-qa",
        "reward_model": {"style": "rule", "ground_truth": {"target": [str(a) for a in answers]}},
        "extra_info": {"index": index, "qid": str(item.get("id", index)), "split": item.get("split", ""),
                       "question": question, **(extra_info or {})},
    }


def write_verl_parquet(rows: Iterable[dict], path: str | Path) -> Path:
    """Write rows to parquet atomically (temp file + rename), so readers never see half a file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(list(rows))
    if table.num_rows == 0:
        raise ValueError(f"refusing to write an empty dataset to {path}")
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))


PROMPTS = {"direct": DIRECT_ANSWER_PROMPT, "search": SEARCH_PROMPT}


def embedded_hotpotqa_parquet(split: str, prompt: str = "direct") -> Path:
    """The embedded HotpotQA questions of one split as a verl parquet file (cached).

    `prompt` is `direct` (answer at once) or `search` (the search-agent instruction, for search training).
    """
    if prompt not in PROMPTS:
        raise ValueError(f"unknown prompt {prompt!r}; expected one of {sorted(PROMPTS)}")
    template = PROMPTS[prompt]
    digest = hashlib.sha1(template.encode()).hexdigest()[:8]  # a reworded prompt must not reuse old files
    path = cache_dir() / "data" / f"hotpotqa-{split}-{prompt}-{digest}.parquet"
    if not path.is_file():
        rows = (verl_row(q, i, "hotpotqa", template) for i, q in enumerate(embedded_questions(split)))
        write_verl_parquet(rows, path)
    return path


def benchmark_parquet(name_or_path: str, prompt: str = "search") -> Path:
    """A benchmark (a shipped name or a benchmark jsonl path) as a verl parquet file for validation (cached).

    Its `data_source` is the benchmark's name, so verl's validation metrics appear under it
    (`val-core/<name>/...`), the name `sage-rl eval` reports the same set under.
    """
    from sage_rl.benchmarks import benchmark_path, data_source_name, load_benchmark

    if prompt not in PROMPTS:
        raise ValueError(f"unknown prompt {prompt!r}; expected one of {sorted(PROMPTS)}")
    source = benchmark_path(name_or_path)
    name = data_source_name(name_or_path)
    digest = hashlib.sha1(PROMPTS[prompt].encode() + source.read_bytes()).hexdigest()[:10]
    path = cache_dir() / "data" / f"bench-{name}-{prompt}-{digest}.parquet"
    if not path.is_file():
        items = load_benchmark(source)
        rows = (verl_row({"question": it.question, "golden_answers": list(it.golden_answers), "id": it.id}, i, name,
                         PROMPTS[prompt]) for i, it in enumerate(items))
        write_verl_parquet(rows, path)
    return path
