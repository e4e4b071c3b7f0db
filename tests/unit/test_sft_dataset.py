"""The warm-start's SFT rows tokenise exactly as the verl search agent loop builds a PPO trajectory."""

import asyncio

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf
from test_search_agent_loop import make_loop
from test_warmstart import Q_BRIDGE, WordRetriever
from transformers import AutoTokenizer

from sage_rl.episode import EpisodePolicy
from sage_rl.models import tiny_model_path
from sage_rl.train.sft import SearchSFTDataset
from sage_rl.warmstart import gold_solver_example


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(tiny_model_path())


def dataset(tmp_path, tokenizer, rows, pad_mode="no_padding"):
    path = tmp_path / "sft.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    config = OmegaConf.create({"pad_mode": pad_mode, "max_length": 1024, "truncation": "error",
                               "messages_key": "messages"})
    return SearchSFTDataset(parquet_files=str(path), tokenizer=tokenizer, config=config)


def test_solver_row_equals_the_agent_loops_trajectory(tmp_path, tokenizer):
    """Same question, turns and passages through the SFT dataset and through SearchAgentLoop: the same token
    ids, with loss mask = the agent loop's response mask (observations 0) and the prompt masked."""
    policy = EpisodePolicy(max_searches=2, topk=1)  # make_loop's episode settings, with topk=1 below
    example = asyncio.run(gold_solver_example(Q_BRIDGE, WordRetriever(), policy, tokenizer=tokenizer))
    assert example is not None and example.trajectory.num_searches == 2
    row = example.sft_row()
    item = dataset(tmp_path, tokenizer, [row])[0]

    class Client(WordRetriever):
        async def __aenter__(self):
            return self

        async def __aexit__(self, *exc):
            return None

    build, _ = make_loop(tokenizer, [t.text for t in example.trajectory.turns], Client(), response_length=1024,
                         prompt_length=1024, topk=1)

    async def go():
        return await build().run({"temperature": 1.0}, raw_prompt=[row["messages"][0]])

    out = asyncio.run(go())
    suffix = tokenizer.encode("<|im_end|>\n", add_special_tokens=False)
    assert item["input_ids"].tolist() == out.prompt_ids + out.response_ids + suffix
    assert item["loss_mask"].tolist() == [0] * len(out.prompt_ids) + out.response_mask + [1] * len(suffix)
    trained = tokenizer.decode([t for t, m in zip(item["input_ids"], item["loss_mask"], strict=True) if m])
    assert "<information>" not in trained and "<answer> Tulsa </answer>" in trained


def test_chat_rows_keep_verls_own_masking(tmp_path, tokenizer):
    rows = [{"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "<search> q </search>"},
                          {"role": "user", "content": "<information>Doc 1 x</information>"},
                          {"role": "assistant", "content": "<answer> A </answer>"}]}]
    item = dataset(tmp_path, tokenizer, rows, pad_mode="right")[0]
    ids, mask = item["input_ids"], item["loss_mask"]
    trained = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert "<search> q </search>" in trained and "<answer> A </answer>" in trained
    assert "<information>" not in trained and "Q?" not in trained

