"""verl's training dataset for online runs: batch items drawn from the question pool, mixed with a static file.

Set by an online recipe (recipes/train/online_tiny_cpu.yaml) as `data.custom_cls`, with `data.online:
${online}` and `data.dataloader_num_workers: 0` (worker processes would draw batches ahead, training on
staler questions). verl builds the validation set with the same class: given the validation files it is
plain `RLHFDataset`.

Item `i` comes from the pool when `floor((i + 1) * mix) > floor(i * mix)` (so `mix` of every batch, spread
evenly; `mix = 1.0` is pool only, `0.0` is the static file, today's behaviour), else it is static row
`i`. A pool item is the search-agent prompt for the pool's question with `extra_info` carrying its `qid`,
`target_steps` and `min_searches` (the fewest correct searches known: the verifying solver's |S*| or the
policy's best, whichever is lower), which the step-aware reward reads. When the pool has nothing fresh or
informative, the item waits up to `online.wait_s` with one log line, then takes the static row; while
starved, later items take static rows at once (one quick look at the pool each), so a batch never waits
`batch size x wait_s`.
"""

from __future__ import annotations

import logging
import time

import ray
import torch
from verl.utils.dataset.rl_dataset import RLHFDataset

from sage_rl.datasets import verl_row
from sage_rl.online.config import OnlineConfig
from sage_rl.online.pool import PoolQuestion
from sage_rl.online.service import pool_actor_name
from sage_rl.protocol import SEARCH_PROMPT

logger = logging.getLogger(__name__)

ONLINE_DATA_SOURCE = "sage-online"


def pool_row(q: PoolQuestion, index: int, fewest_correct: int | None) -> dict:
    """The verl dataset row of a pool question (the same columns as sage_rl's static parquet rows)."""
    known = [n for n in (q.min_searches, fewest_correct) if n is not None]
    return verl_row({"question": q.question, "golden_answers": list(q.answers), "id": q.qid}, index,
                    ONLINE_DATA_SOURCE, template=SEARCH_PROMPT,
                    extra_info={"target_steps": q.target_steps, "min_searches": min(known)})


def from_pool(i: int, mix: float) -> bool:
    """Whether item `i` is a pool item: `mix` of the items, evenly spread.

    >>> "".join("P" if from_pool(i, 0.5) else "s" for i in range(6))
    'sPsPsP'
    """
    return int((i + 1) * mix) > int(i * mix)


class OnlineQADataset(RLHFDataset):
    """`RLHFDataset` whose training items come from the online question pool (see the module docstring)."""

    def __init__(self, data_files, tokenizer, config, processor=None, max_samples: int = -1) -> None:
        super().__init__(data_files, tokenizer, config, processor, max_samples)
        self.online = OnlineConfig.from_mapping(config.get("online"))
        files = list(data_files) if not isinstance(data_files, str) else [data_files]
        train = config.get("train_files")
        train = [train] if isinstance(train, str) else list(train or [])
        self.is_train = self.online.enable and files == train
        self._pool = None
        self._draws = 0
        self._starved = False

    def pool(self):
        if self._pool is None:
            self._pool = ray.get_actor(pool_actor_name(self.online.pool.folder))
        return self._pool

    def _draw(self) -> PoolQuestion | None:
        self._draws += 1
        drawn = ray.get(self.pool().draw.remote(1, self._draws))
        return drawn[0] if drawn else None

    def _wait_for_question(self) -> PoolQuestion | None:
        question = self._draw()
        if question is not None or self._starved:
            self._starved = question is None
            return question
        logger.info("online: the question pool has nothing to serve; waiting up to %.0f s", self.online.wait_s)
        deadline = time.monotonic() + self.online.wait_s
        while question is None and time.monotonic() < deadline:
            time.sleep(min(1.0, self.online.wait_s))
            question = self._draw()
        if question is None:
            self._starved = True
            logger.warning("online: no pool question after %.0f s; using static rows until the pool has one",
                           self.online.wait_s)
        return question

    def __getitem__(self, item):
        if not self.is_train or not from_pool(int(item), self.online.mix):
            return super().__getitem__(item)
        question = self._wait_for_question()
        if question is None:
            return super().__getitem__(item)
        fewest = ray.get(self.pool().fewest_correct.remote(question.qid))
        row = pool_row(question, int(item), fewest)
        row["raw_prompt"] = self._build_messages(row, key=self.prompt_key)
        row["dummy_tensor"] = torch.tensor([0], dtype=torch.uint8)
        row["index"] = row["extra_info"]["index"]
        row["tools_kwargs"], row["interaction_kwargs"] = {}, {}
        return row
