"""QA items -> verl's RLHFDataset parquet rows (prompt as chat messages, reward_model.ground_truth, extra_info)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from sage_rl.assets import embedded_questions
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

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(list(rows))
    if table.num_rows == 0:
        raise ValueError(f"refusing to write an empty dataset to {path}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


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
