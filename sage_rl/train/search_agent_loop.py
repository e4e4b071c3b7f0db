"""Search-R1 rollouts inside verl: the token-level adapter of `sage_rl.episode`.

A verl `AgentLoopBase`. The policy generates one turn at a time until `</search>` or `</answer>` (vLLM
stop strings, kept in the output); `sage_rl.episode.Episode` reads each turn and decides what follows,
under the same policies as data generation and evaluation: a search's `<information>` observation, the
invalid-action message, or the end. Observation tokens carry response-mask 0, so PPO's losses ignore
text the policy did not write. Like Search-R1, the whole trajectory is one assistant response of raw
tokens, observations appended as token ids; a turn that continues loses a trailing EOS token, as
Search-R1's re-tokenised turns do.

What reaches the reward function as `extra_info` (verl merges `extra_fields` into it): the episode's
`policy_answer` (the content of the answer the policy itself wrote in its final turn, None if it never
answered: rewards must score this, never text parsed out of the transcript, which holds the
environment's observations), `num_searches`, `invalid_turns`, `retrieval_errors`, `budget_exhausted`,
`end_reason`, and the dataset row's `qid` and `data_source`.

Settings live in the trainer config's `search_agent:` block (recipes/train/grpo_search_tiny_cpu.yaml):
`retrieval_url`, `timeout`, `max_turn_tokens` (a per-turn generation cap, the paper's run.sh 1024) and
`episode:` (the fields of `EpisodePolicy`). verl finds this class through `sage_rl/train/agent_loops.yaml`
(`rollout.agent.agent_loop_config_path`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput
from verl.experimental.agent_loop.tool_agent_loop import SPEC_DECODE_EXTRA_KEYS

from retrieval_server.client import AsyncRetrievalClient
from sage_rl.config import reject_unknown
from sage_rl.episode import Episode, EpisodePolicy, SearchClient

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchAgentConfig:
    """The `search_agent:` block of a training recipe."""

    retrieval_url: str = "http://127.0.0.1:8000"
    timeout: float = 30.0
    max_turn_tokens: int | None = None  # tokens one turn may generate (None: what is left of the response)
    episode: EpisodePolicy = field(default_factory=EpisodePolicy)

    @classmethod
    def from_trainer_config(cls, config: Any) -> SearchAgentConfig:
        block = dict(config.get("search_agent") or {})
        reject_unknown("search_agent", block, cls.__dataclass_fields__)
        episode = EpisodePolicy.from_mapping(block.pop("episode", None), "search_agent.episode")
        return cls(**block, episode=episode)


class SearchAgentLoop(AgentLoopBase):
    """Multi-turn `<search>`/`<information>`/`<answer>` rollout against the retrieval server."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = SearchAgentConfig.from_trainer_config(self.config)
        self.response_length = self.rollout_config.response_length

    def retrieval_client(self) -> AsyncRetrievalClient:
        """A client for one trajectory (httpx clients belong to the event loop that created them)."""
        return AsyncRetrievalClient(self.settings.retrieval_url, timeout=self.settings.timeout)

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        async with self.retrieval_client() as client:
            qid = (kwargs.get("extra_info") or {}).get("qid")
            output = await self._rollout(client, sampling_params, list(kwargs["raw_prompt"]), qid)
            output.extra_fields["data_source"] = kwargs.get("data_source")  # for per-source step metrics
            return output

    async def _rollout(self, client: SearchClient, sampling_params: dict[str, Any], messages: list[dict],
                       qid: str | None = None) -> AgentLoopOutput:
        policy = self.settings.episode
        episode = Episode(policy, self.tokenizer)
        prompt_ids = await self.ct_build_initial_tokens(messages)
        sampling_params = {**sampling_params, "stop": list(policy.stop), "include_stop_str_in_output": True}
        request_id = uuid4().hex  # sticky routing: every turn of a trajectory goes to the same server
        eos = self.tokenizer.eos_token_id

        response_ids: list[int] = []
        response_mask: list[int] = []
        logprobs: list[float] | None = []  # None once any turn comes back without log-probs
        metrics = AgentLoopMetrics()
        server_fields: dict[str, Any] = {}  # what the rollout server reports (policy version, ...)

        while not episode.done:
            budget = self.response_length - len(response_ids)
            if budget <= 0:
                episode.end("length")
                break
            max_tokens = min(budget, self.settings.max_turn_tokens or budget)
            started = time.perf_counter()
            output = await self.server_manager.generate(
                request_id=request_id,
                prompt_ids=prompt_ids + response_ids,
                sampling_params={**sampling_params, "max_tokens": max_tokens},
            )
            metrics.generate_sequences += time.perf_counter() - started
            _merge_server_fields(server_fields, output.extra_fields)
            ids = list(output.token_ids)
            turn_logprobs = list(output.log_probs) if output.log_probs is not None else None
            step = episode.step(self.tokenizer.decode(ids, skip_special_tokens=True))
            if step.kind != "end" and ids and ids[-1] == eos:
                ids.pop()  # the trajectory goes on: an EOS here would end the assistant turn mid-episode
                if turn_logprobs is not None:
                    turn_logprobs.pop()
            response_ids += ids
            response_mask += [1] * len(ids)
            logprobs = logprobs + turn_logprobs if logprobs is not None and turn_logprobs is not None else None
            if step.kind == "end":
                break
            if step.kind == "search":
                started = time.perf_counter()
                observation = await episode.search(client, step.query or "")
                metrics.tool_calls += time.perf_counter() - started
            else:
                observation = step.observation
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
            num_turns=2 * len(episode.turns),
            metrics=metrics,
            extra_fields={
                **server_fields,
                "policy_answer": episode.answer,
                "num_searches": episode.num_searches,
                "invalid_turns": episode.invalid_turns,
                "retrieval_errors": episode.retrieval_errors,
                "budget_exhausted": int(episode.budget_exhausted),
                "end_reason": episode.end_reason or "length",
                "qid": qid,  # the question's id: the online trainer reports outcomes per question
                # Seconds waiting for the rollout server and for `/retrieve`: verl's v1 trainer does not log
                # AgentLoopMetrics, so the step's retrieval share (sage/rollout/retrieval_share) comes from here.
                "generation_s": metrics.generate_sequences,
                "retrieval_s": metrics.tool_calls,
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
