"""verl's online training dataset against a real pool actor on a local Ray: the mixing ratio, the pool row
verl and the reward see, the bounded wait and static fallback, and validation untouched. Plus the
`online:` block's schema."""

from __future__ import annotations

import logging
import time

import pytest
import ray
from omegaconf import OmegaConf

from sage_rl.datasets import embedded_hotpotqa_parquet
from sage_rl.online.config import OnlineConfig
from sage_rl.online.pool import Outcome, PoolQuestion
from sage_rl.online.service import start_online


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from sage_rl.models import tiny_model_path

    return AutoTokenizer.from_pretrained(tiny_model_path())


def _question(i: int) -> PoolQuestion:
    return PoolQuestion(qid=f"p0-{i}", question=f"Which river flows past town {i}?", answers=(f"r{i}",),
                        target_steps=3, answer_type="entity", seed_doc_id=f"d{i}", round=0, pass_at_k=0.5,
                        min_searches=4)


def _dataset(tmp_path, tokenizer, files: str, **online):
    from sage_rl.train.online_data import OnlineQADataset

    block = {"enable": True, "num_producers": 0, "pool": {"folder": str(tmp_path / "pool")}, **online}
    train = str(embedded_hotpotqa_parquet("train", "search"))
    config = OmegaConf.create({"train_files": train, "val_files": "unused", "prompt_key": "prompt",
                               "max_prompt_length": 512, "filter_overlong_prompts": False,
                               "return_raw_chat": True, "online": block})
    pool, _ = start_online(OnlineConfig.from_mapping(block))
    return OnlineQADataset(train if files == "train" else files, tokenizer, config), pool


def test_mix_pool_rows_and_policy_statistics(local_ray, tokenizer, tmp_path):
    ds, pool = _dataset(tmp_path, tokenizer, "train", mix=0.5)
    for i in range(3):
        ray.get(pool.add.remote(_question(i)))
    rows = [ds[i] for i in range(4)]
    assert [r["data_source"] for r in rows] == ["hotpotqa", "sage-online", "hotpotqa", "sage-online"]
    pooled = rows[1]
    assert pooled["extra_info"]["qid"] == "p0-0" and pooled["reward_model"]["ground_truth"]["target"] == ["r0"]
    assert pooled["extra_info"]["target_steps"] == 3 and pooled["extra_info"]["min_searches"] == 4
    assert "<search>" in pooled["raw_prompt"][0]["content"] and "town 0" in pooled["raw_prompt"][0]["content"]
    assert set(pooled) == set(rows[0])  # the same columns as static rows, so verl's collate_fn batches them
    # The policy found a shorter correct path than the verifier: the reward's reference is the lower one.
    ray.get(pool.report.remote(1, [Outcome("p0-0", 1, 2, 1, (2, 5), (2,))]))
    again = [ds[i] for i in (5, 7)]
    assert [r["extra_info"]["qid"] for r in again] == ["p0-2", "p0-0"]  # fresh first, then informative
    assert again[1]["extra_info"]["min_searches"] == 2


def test_an_empty_pool_waits_once_then_falls_back_at_once_until_it_has_questions(
        local_ray, tokenizer, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sage_rl.train.online_data")
    ds, pool = _dataset(tmp_path, tokenizer, "train", mix=1.0, wait_s=0.5)
    started = time.monotonic()
    first = ds[0]
    waited = time.monotonic() - started
    assert first["data_source"] == "hotpotqa" and waited >= 0.5
    started = time.monotonic()
    assert ds[1]["data_source"] == "hotpotqa" and time.monotonic() - started < 0.5  # starved: no second wait
    assert sum("no pool question after" in m for m in caplog.messages) == 1
    ray.get(pool.add.remote(_question(7)))
    assert ds[2]["extra_info"]["qid"] == "p0-7"  # back on the pool as soon as it has a question


def test_validation_files_never_touch_the_pool(local_ray, tokenizer, tmp_path):
    val = str(embedded_hotpotqa_parquet("dev", "search"))
    ds, pool = _dataset(tmp_path, tokenizer, val, mix=1.0, wait_s=30)
    ray.get(pool.add.remote(_question(1)))
    assert ds[0]["data_source"] == "hotpotqa" and ray.get(pool.unserved.remote()) == 1


def test_online_block_schema():
    cfg = OnlineConfig.from_mapping({"enable": True, "generate_overrides": ["a=1"],
                                     "pool": {"controller": {"band": [0.3, 0.7]}}, "producer": {"max_unserved": 4}})
    assert cfg.generate_overrides == ("a=1",) and cfg.pool.controller.band == (0.3, 0.7)
    assert cfg.producer.max_unserved == 4 and OnlineConfig.from_mapping(None).enable is False
    with pytest.raises(ValueError, match=r"unknown online.pool settings \['size'\]; known: .*retire_after"):
        OnlineConfig.from_mapping({"pool": {"size": 3}})
    with pytest.raises(ValueError, match="online.mix"):
        OnlineConfig.from_mapping({"mix": 2})
