"""Search-R1 rollouts inside verl: the policy searches the corpus while it is being trained.

A verl `AgentLoopBase`: the policy generates until `</search>` or `</answer>` (vLLM stop strings); after a
search, the retrieval server's top-k passages are appended as an `<information>` observation whose tokens
carry response-mask 0, so PPO's losses ignore text the policy did not write. A turn with no valid action
gets the protocol's invalid-action message. Parsing and rendering come from `sage_rl.protocol`, so
training sees exactly the observations that data generation and evaluation see.

Like Search-R1, the whole trajectory is one assistant response of raw tokens: observations are appended
as token ids, not as chat messages. `extra_fields["num_searches"]` reaches the reward function as
`extra_info["num_searches"]` (verl merges extra_fields into extra_info).

Settings live in the trainer config's `search_agent:` block (see recipes/train/grpo_search_tiny_cpu.yaml);
verl finds this class through `sage_rl/train/agent_loops.yaml` (`rollout.agent.agent_loop_config_path`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput
from verl.experimental.agent_loop.tool_agent_loop import SPEC_DECODE_EXTRA_KEYS

from retrieval_server.client import AsyncRetrievalClient, RetrievalError
from sage_rl.protocol import (
    ANSWER,
    INVALID_ACTION_MESSAGE,
    SEARCH,
    STOP_STRINGS,
    Passage,
    parse_action,
    render_information,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchAgentConfig:
    """The `search_agent:` block of a training recipe."""

    retrieval_url: str = "http://127.0.0.1:8000"
    topk: int = 3
    max_turns: int = 4  # searches allowed per trajectory; one more turn may then only answer
    max_obs_tokens: int = 500  # Search-R1's max_obs_length
    timeout: float = 30.0

    @classmethod
    def from_trainer_config(cls, config: Any) -> SearchAgentConfig:
        block = config.get("search_agent") or {}
        unknown = set(block) - set(cls.__dataclass_fields__)
        if unknown:
            known = sorted(cls.__dataclass_fields__)
            raise ValueError(f"unknown search_agent settings {sorted(unknown)}; known: {known}")
        return cls(**block)


class SearchAgentLoop(AgentLoopBase):
    """Multi-turn `<search>`/`<information>`/`<answer>` rollout against the retrieval server."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = SearchAgentConfig.from_trainer_config(self.config)
        self.response_length = self.rollout_config.response_length

    def retrieval_client(self) -> AsyncRetrievalClient:
        """A client for one trajectory (httpx clients belong to the event loop that created them)."""
        return AsyncRetrievalClient(self.settings.retrieval_url, timeout=self.settings.timeout)

    async def _observe(self, retriever: AsyncRetrievalClient, query: str) -> tuple[str, bool]:
        """The `<information>` block for one query, and whether retrieval succeeded."""
        try:
            hits = (await retriever.retrieve([query], topk=self.settings.topk))[0]
        except RetrievalError as e:
            # One failed search should not kill a training step; it is counted and logged instead.
            logger.warning("retrieval failed for %r: %s", query, e)
            return f"\n\n<information>Search failed: {e}</information>\n\n", False
        passages = [Passage.from_contents(h.id, h.contents) for h in hits]
        return render_information(passages, self.settings.max_obs_tokens, self.tokenizer), True

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        async with self.retrieval_client() as retriever:
            return await self._rollout(retriever, sampling_params, list(kwargs["raw_prompt"]))

    async def _rollout(
        self, retriever: AsyncRetrievalClient, sampling_params: dict[str, Any], messages: list[dict]
    ) -> AgentLoopOutput:
        prompt_ids = await self.ct_build_initial_tokens(messages)
        sampling_params = {**sampling_params, "stop": list(STOP_STRINGS), "include_stop_str_in_output": True}
        request_id = uuid4().hex  # sticky routing: every turn of a trajectory goes to the same server
        eos = self.tokenizer.eos_token_id

        response_ids: list[int] = []
        response_mask: list[int] = []
        logprobs: list[float] | None = []  # None once any turn comes back without log-probs
        searches = search_errors = invalid = turns = 0
        metrics = AgentLoopMetrics()
        server_fields: dict[str, Any] = {}  # what the rollout server reports (policy version, ...)

        while len(response_ids) < self.response_length:
            budget = self.response_length - len(response_ids)
            output = await self.server_manager.generate(
                request_id=request_id,
                prompt_ids=prompt_ids + response_ids,
                sampling_params={**sampling_params, "max_tokens": budget},
            )
            turns += 1
            _merge_server_fields(server_fields, output.extra_fields)
            response_ids += output.token_ids
            response_mask += [1] * len(output.token_ids)
            if logprobs is not None and output.log_probs is not None:
                logprobs += output.log_probs
            else:
                logprobs = None

            text = self.tokenizer.decode(output.token_ids, skip_special_tokens=True)
            action = parse_action(text)
            ended = bool(output.token_ids) and output.token_ids[-1] == eos
            if action is not None and action.kind == ANSWER:
                break
            if action is not None and action.kind == SEARCH and text.rstrip().endswith(f"</{SEARCH}>"):
                if searches >= self.settings.max_turns:
                    break  # search budget spent: the trajectory ends unanswered
                observation, ok = await self._observe(retriever, action.content)
                searches += 1
                search_errors += not ok
            elif ended or not output.token_ids or len(output.token_ids) >= budget:
                break
            else:
                observation = INVALID_ACTION_MESSAGE
                invalid += 1
            obs_ids = self.tokenizer.encode(observation, add_special_tokens=False)
            response_ids += obs_ids
            response_mask += [0] * len(obs_ids)
            if logprobs is not None:
                logprobs += [0.0] * len(obs_ids)  # verl wants one entry per response token

        n = self.response_length
        return AgentLoopOutput(
            prompt_ids=prompt_ids,
            response_ids=response_ids[:n],
            response_mask=response_mask[:n],
            response_logprobs=logprobs[:n] if logprobs is not None else None,
            num_turns=2 * turns,
            metrics=metrics,
            extra_fields={
                **server_fields,
                "num_searches": searches,
                "search_errors": search_errors,
                "invalid_actions": invalid,
                "turn_scores": [],
                "tool_rewards": [],
            },
        )


def _merge_server_fields(fields: dict[str, Any], turn: dict[str, Any]) -> None:
    """Combine the rollout server's per-turn extra fields the way verl's ToolAgentLoop does: the first
    turn's fields, the newest `max_global_steps` (the policy version that finished the trajectory), and
    speculative-decoding counters summed over turns. verl's trainer requires the policy-version tags."""
    if not fields:
        fields.update(turn)
        return
    if turn.get("max_global_steps"):
        fields["max_global_steps"] = turn["max_global_steps"]
    for key in SPEC_DECODE_EXTRA_KEYS:
        if key in turn and key in fields:
            fields[key] = int(fields[key]) + int(turn[key])
