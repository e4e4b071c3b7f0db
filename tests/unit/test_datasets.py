import pyarrow.parquet as pq
import pytest

from sage_rl.assets import EMBEDDED_CORPUS, embedded_questions, read_jsonl
from sage_rl.datasets import embedded_hotpotqa_parquet, verl_row, write_verl_parquet


def test_embedded_corpus_is_in_search_r1_format():
    rows = list(read_jsonl(EMBEDDED_CORPUS))
    assert len(rows) == 10_787
    assert all(set(r) == {"id", "contents"} for r in rows[:100])
    title, _, text = rows[0]["contents"].partition("\n")
    assert title.startswith('"') and title.endswith('"') and text


def test_embedded_questions_point_into_the_corpus():
    ids = {r["id"] for r in read_jsonl(EMBEDDED_CORPUS)}
    questions = embedded_questions()
    assert len(questions) == 1_100
    assert {q["split"] for q in questions} == {"train", "dev", "test"}
    assert all(q["supporting_doc_ids"] and set(q["supporting_doc_ids"]) <= ids for q in questions)


def test_verl_parquet_has_the_rlhf_dataset_columns(tmp_path, monkeypatch):
    monkeypatch.setenv("SAGE_RL_CACHE", str(tmp_path))
    table = pq.read_table(embedded_hotpotqa_parquet("dev")).to_pylist()
    assert len(table) == 300
    row = table[0]
    assert row["prompt"][0]["role"] == "user" and row["prompt"][0]["content"].rstrip().endswith("?")
    assert row["reward_model"]["ground_truth"]["target"]
    assert row["extra_info"]["index"] == 0 and row["extra_info"]["split"] == "dev"


def test_bad_items_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="no golden_answers"):
        verl_row({"id": "q1", "question": "Who?", "golden_answers": []}, 0, "x")
    with pytest.raises(ValueError, match="empty dataset"):
        write_verl_parquet([], tmp_path / "empty.parquet")
    assert not (tmp_path / "empty.parquet").exists()


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="unknown split"):
        embedded_questions("validation")


def test_search_prompt_rows_and_cache_keyed_by_prompt(tmp_path, monkeypatch):
    from sage_rl.protocol import SEARCH_PROMPT

    monkeypatch.setenv("SAGE_RL_CACHE", str(tmp_path))
    direct, search = embedded_hotpotqa_parquet("dev"), embedded_hotpotqa_parquet("dev", "search")
    assert direct != search
    content = pq.read_table(search).to_pylist()[0]["prompt"][0]["content"]
    assert content.startswith(SEARCH_PROMPT.split("{question}")[0]) and "<search>" in content
    with pytest.raises(ValueError, match="unknown prompt"):
        embedded_hotpotqa_parquet("dev", "cot")


def test_benchmarks_become_validation_parquet_named_after_the_benchmark(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from sage_rl.config import register_resolvers
    from sage_rl.protocol import SEARCH_PROMPT

    monkeypatch.setenv("SAGE_RL_CACHE", str(tmp_path))
    register_resolvers()
    from omegaconf import OmegaConf

    path = OmegaConf.create({"v": "${sage_rl.benchmark:bamboogle}"}).v
    rows = pq.read_table(path).to_pylist()
    assert len(rows) == 125 and {r["data_source"] for r in rows} == {"bamboogle"}
    assert rows[0]["prompt"][0]["content"] == SEARCH_PROMPT.format(question=rows[0]["extra_info"]["question"])
    assert rows[0]["reward_model"]["ground_truth"]["target"] == ["james madison"]
