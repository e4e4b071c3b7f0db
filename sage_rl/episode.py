"""One search episode: the state machine that generation, training and evaluation all run.

A model turn's text goes in (`Episode.step`); the next step comes out: run a search, append an
observation and continue, or end. The episode renders every observation (`sage_rl.protocol`), counts
searches, invalid turns and retrieval errors, and applies the named policies of `EpisodePolicy`. The
adapters only move text and tokens:

- `run_chat_episode` (here): one chat call per turn against any `ChatModel`; used by SAGE's solver and
  generator (`sage_rl.search_agent`, `sage_rl.generate.generator`) and by `sage-rl eval`;
- `sage_rl.train.search_agent_loop.SearchAgentLoop`: verl's token-level agent loop.

A test feeds the same scripted turns through all of them and asserts identical turns, observations and
counts (tests/unit/test_episode_adapters.py).

Policies and their defaults, which are Search-R1's (`search_r1/llm_agent/generation.py`):

- `max_searches` (Search-R1 `max_turns`, 4 in its paper): the search budget. With
  `invalid_spends_budget` (Search-R1), an invalid turn spends one unit of it too, so the budget counts
  action turns, and a model that never acts still ends.
- `on_budget`: a turn that tries to act once the budget is spent either ends the episode unanswered
  (`end`, Search-R1's final `do_search=False` turn: only an answer counts in it) or gets
  `budget_message` as its observation and one last turn in which only an answer counts
  (`force_answer`, the paper's solver and generator).
- `max_invalid`: invalid turns allowed beyond which the episode ends (None: only the budget bounds them).
- `on_retrieval_error`: `observe` (the turn gets a fixed "search failed" observation, counted) or
  `fail` (the episode fails and the adapter raises `EpisodeFailed`, so a generation item is retried
  rather than judged on a search it never saw).
- `max_obs_tokens` (Search-R1 `max_obs_length`): passages beyond this many tokens are cut.
- `ends_on`: `answer` (a search agent: `<answer>` ends the episode) or `no_search` (SAGE's generator:
  any turn that does not search is the episode's output).

Where we differ from Search-R1 on purpose: the last complete action of a turn counts (`parse_action`);
the invalid-action message names the tags without forming a parseable action (Search-R1's does, so a
reward reading the whole transcript could score the environment's own words); an observation is cut
inside `<information>` so the closing tag survives truncation; a failed search is an observation, not a
crashed run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from retrieval_server.client import Hit
from sage_rl import protocol
from sage_rl.llm import ChatModel, Messages
from sage_rl.protocol import Tokenizer

logger = logging.getLogger(__name__)

TurnKind = Literal["search", "answer", "invalid", "output"]
EndReason = Literal["answer", "output", "budget", "invalid", "length", "retrieval_error"]

SEARCH_FAILED_OBSERVATION = "\n\n<information>The search failed; no results.</information>\n\n"


class SearchClient(Protocol):
    """`retrieval_server.client.AsyncRetrievalClient`, or any object with the same `retrieve`."""

    async def retrieve(self, queries: list[str], topk: int | None = None) -> Sequence[Sequence[Hit]]: ...

    async def health(self) -> dict: ...


class EpisodeFailed(Exception):
    """A retrieval error under `on_retrieval_error=fail`."""


@dataclass(frozen=True)
class EpisodePolicy:
    """How an episode runs; see the module docstring. Defaults are Search-R1's."""

    max_searches: int = 4
    invalid_spends_budget: bool = True
    on_budget: Literal["end", "force_answer"] = "end"
    budget_message: str = ""
    max_invalid: int | None = None
    on_retrieval_error: Literal["observe", "fail"] = "observe"
    max_obs_tokens: int | None = 500
    topk: int = 3
    ends_on: Literal["answer", "no_search"] = "answer"

    def __post_init__(self) -> None:
        if self.max_searches < 0:
            raise ValueError(f"max_searches must be >= 0, got {self.max_searches}")
        if self.on_budget not in ("end", "force_answer"):
            raise ValueError(f"on_budget must be 'end' or 'force_answer', got {self.on_budget!r}")
        if self.on_retrieval_error not in ("observe", "fail"):
            raise ValueError(f"on_retrieval_error must be 'observe' or 'fail', got {self.on_retrieval_error!r}")
        if self.ends_on not in ("answer", "no_search"):
            raise ValueError(f"ends_on must be 'answer' or 'no_search', got {self.ends_on!r}")
        if self.ends_on == "answer" and not self.invalid_spends_budget and self.max_invalid is None:
            raise ValueError("with invalid_spends_budget=false, set max_invalid so a model that never acts still ends")

    @classmethod
    def from_mapping(cls, block: Mapping[str, Any] | None, where: str = "episode") -> EpisodePolicy:
        """The policy of a config block (a recipe's `episode:`); unknown keys fail with the known ones."""
        from sage_rl.config import reject_unknown

        block = dict(block or {})
        reject_unknown(where, block, cls.__dataclass_fields__)
        return cls(**block)

    @property
    def stop(self) -> tuple[str, ...]:
        """Stop strings to sample turns with: the generator's output continues past its `</answer>`."""
        return protocol.STOP_STRINGS if self.ends_on == "answer" else ("</search>",)


@dataclass(frozen=True)
class Turn:
    """One model turn and the environment's reply to it.

    `text` is the turn as the episode read it (cut after its first action); `observation` is what was
    appended after it ("" when the episode ended there).
    """

    text: str
    kind: TurnKind
    query: str | None = None
    doc_ids: tuple[str, ...] = ()
    observation: str = ""
    retrieval_error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Step:
    """What the adapter does next: `search` (run `query`, then `Episode.observe`), `continue` (append
    `observation`, sample the next turn) or `end`."""

    kind: Literal["search", "continue", "end"]
    query: str | None = None
    observation: str = ""


@dataclass(frozen=True)
class Trajectory:
    """A finished episode: the prompt, every turn, the answer and the counts every stage reports."""

    prompt: str
    turns: tuple[Turn, ...]
    answer: str | None
    num_searches: int
    invalid_turns: int = 0
    retrieval_errors: int = 0
    end_reason: EndReason = "answer"
    budget_exhausted: bool = False

    @property
    def queries(self) -> list[str]:
        return [t.query for t in self.turns if t.kind == "search" and t.query is not None]

    @property
    def doc_ids(self) -> list[str]:
        """Retrieved passage ids in retrieval order, without repeats."""
        return list(dict.fromkeys(d for t in self.turns for d in t.doc_ids))

    @property
    def llm_calls(self) -> int:
        return len(self.turns)

    @property
    def prompt_tokens(self) -> int:
        return sum(t.prompt_tokens for t in self.turns)

    @property
    def completion_tokens(self) -> int:
        return sum(t.completion_tokens for t in self.turns)

    @property
    def final_text(self) -> str:
        return self.turns[-1].text if self.turns else ""

    def transcript(self) -> str:
        """The prompt and the whole trajectory as text, every retrieved document included."""
        return self.prompt + "".join(t.text + t.observation for t in self.turns)

    def to_dict(self) -> dict:
        return {
            "prompt": self.prompt,
            "turns": [vars(t) | {"doc_ids": list(t.doc_ids)} for t in self.turns],
            "answer": self.answer,
            "num_searches": self.num_searches,
            "invalid_turns": self.invalid_turns,
            "retrieval_errors": self.retrieval_errors,
            "end_reason": self.end_reason,
            "budget_exhausted": self.budget_exhausted,
        }


class Episode:
    """The state of one episode. Adapters call `step` with each model turn, `observe` after a search."""

    def __init__(self, policy: EpisodePolicy, tokenizer: Tokenizer | None = None) -> None:
        self.policy = policy
        self.tokenizer = tokenizer
        self.turns: list[Turn] = []
        self.answer: str | None = None
        self.num_searches = 0
        self.invalid_turns = 0
        self.retrieval_errors = 0
        self.end_reason: EndReason | None = None
        self.budget_exhausted = False
        self._spent = 0  # units of the search budget spent (searches, plus invalid turns if they count)
        self._last_turn = False  # under force_answer: only an answer counts in this turn
        self._pending: Turn | None = None  # a search turn waiting for its observation
        self.last_text = ""  # the latest turn as read (cut after its first action): what adapters append

    @property
    def done(self) -> bool:
        return self.end_reason is not None

    def step(self, text: str, prompt_tokens: int = 0, completion_tokens: int = 0) -> Step:
        """Read one model turn (its stop string included) and decide what happens next."""
        if self.done or self._pending is not None:
            raise RuntimeError("step() after the episode ended, or before the pending search was observed")
        p = self.policy
        text = self.last_text = protocol.truncate_at_action(text, p.stop)
        action = protocol.parse_action(text)
        tokens = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
        is_search = action is not None and action.kind == protocol.SEARCH
        if p.ends_on == "no_search" and (not is_search or self._last_turn):
            self._record(Turn(text, "output", **tokens))
            return self._end("output", answer=None)
        if p.ends_on == "answer" and action is not None and action.kind == protocol.ANSWER:
            self._record(Turn(text, "answer", **tokens))
            return self._end("answer", answer=action.content)
        kind: TurnKind = "search" if is_search else "invalid"
        if self._last_turn:
            self._record(Turn(text, kind, query=action.content if is_search else None, **tokens))
            return self._end("budget")
        spends = is_search or p.invalid_spends_budget
        if spends and self._spent >= p.max_searches:
            self.budget_exhausted = True
            if p.on_budget == "end":
                self._record(Turn(text, kind, query=action.content if is_search else None, **tokens))
                return self._end("budget")
            self._last_turn = True
            self._record(Turn(text, kind, query=action.content if is_search else None,
                              observation=p.budget_message, **tokens))
            return Step("continue", observation=p.budget_message)
        self._spent += spends
        if is_search:
            assert action is not None
            self._pending = Turn(text, "search", query=action.content, **tokens)
            return Step("search", query=action.content)
        self.invalid_turns += 1
        if p.max_invalid is not None and self.invalid_turns > p.max_invalid:
            self._record(Turn(text, "invalid", **tokens))
            return self._end("invalid")
        self._record(Turn(text, "invalid", observation=protocol.INVALID_ACTION_MESSAGE, **tokens))
        return Step("continue", observation=protocol.INVALID_ACTION_MESSAGE)

    def observe(self, hits: Sequence[Hit]) -> str:
        """The `<information>` observation for the pending search's hits."""
        turn = self._take_pending()
        observation = protocol.render_information(hits, self.policy.max_obs_tokens, self.tokenizer)
        self.num_searches += 1
        self._record(Turn(turn.text, "search", turn.query, tuple(str(h.id) for h in hits), observation,
                          prompt_tokens=turn.prompt_tokens, completion_tokens=turn.completion_tokens))
        return observation

    def observe_error(self, error: str) -> str:
        """The observation after a failed search (`observe`), or raise `EpisodeFailed` (`fail`)."""
        turn = self._take_pending()
        self.num_searches += 1
        self.retrieval_errors += 1
        if self.policy.on_retrieval_error == "fail":
            self._record(Turn(turn.text, "search", turn.query, retrieval_error=error,
                              prompt_tokens=turn.prompt_tokens, completion_tokens=turn.completion_tokens))
            self._end("retrieval_error")
            raise EpisodeFailed(f"retrieval failed for {turn.query!r}: {error}")
        # The error text stays out of the observation: it may echo the query, tags included.
        self._record(Turn(turn.text, "search", turn.query, observation=SEARCH_FAILED_OBSERVATION,
                          retrieval_error=error, prompt_tokens=turn.prompt_tokens,
                          completion_tokens=turn.completion_tokens))
        return SEARCH_FAILED_OBSERVATION

    async def search(self, client: SearchClient, query: str) -> str:
        """Run the pending search against `client` and return its observation; errors follow the policy."""
        try:
            [hits] = await client.retrieve([query], topk=self.policy.topk)
        except Exception as e:  # intended: any client failure is a retrieval error under the policy
            logger.warning("retrieval failed for %r: %s: %s", query, type(e).__name__, e)
            return self.observe_error(f"{type(e).__name__}: {e}")
        return self.observe(hits)

    def end(self, reason: EndReason) -> None:
        """End the episode from outside (the adapter ran out of tokens, or the model stopped)."""
        if not self.done:
            self._end(reason)

    def result(self, prompt: str) -> Trajectory:
        return Trajectory(
            prompt=prompt, turns=tuple(self.turns), answer=self.answer, num_searches=self.num_searches,
            invalid_turns=self.invalid_turns, retrieval_errors=self.retrieval_errors,
            end_reason=self.end_reason or "length", budget_exhausted=self.budget_exhausted,
        )

    def _take_pending(self) -> Turn:
        if self._pending is None:
            raise RuntimeError("observe() without a pending search")
        turn, self._pending = self._pending, None
        return turn

    def _record(self, turn: Turn) -> None:
        self.turns.append(turn)

    def _end(self, reason: EndReason, answer: str | None = None) -> Step:
        self.end_reason = reason
        self.answer = answer
        return Step("end")


@dataclass
class ChatSettings:
    """Sampling settings of one chat-episode run."""

    max_tokens: int | None = None
    temperature: float | None = None
    # `messages`: each observation is a user message (any chat API). `inline`: the trajectory is one
    # growing assistant message that the server continues (vLLM's `continue_final_message`), which is
    # the text a verl-trained policy saw in training.
    transcript: Literal["messages", "inline"] = "messages"
    extra: dict = field(default_factory=dict)  # more request fields, e.g. {"seed": 3, "top_p": 0.95}


async def run_chat_episode(
    llm: ChatModel,
    messages: Messages,
    client: SearchClient,
    policy: EpisodePolicy,
    settings: ChatSettings | None = None,
    tokenizer: Tokenizer | None = None,
) -> Trajectory:
    """Run one episode with one chat call per turn.

    Args:
        messages: the opening chat messages; the first user message is recorded as the prompt.
        settings: sampling and transcript settings (defaults: the model's own, observations as messages).
    """
    settings = settings or ChatSettings()
    episode = Episode(policy, tokenizer)
    messages = [dict(m) for m in messages]
    inline = settings.transcript == "inline"
    response = ""
    while not episode.done:
        continuing = inline and bool(response)
        call_messages = [*messages, {"role": "assistant", "content": response}] if continuing else messages
        extra_body = {**settings.extra, **_continue_body(continuing)}
        completion = await llm.chat(call_messages, stop=policy.stop, max_tokens=settings.max_tokens,
                                    temperature=settings.temperature, extra_body=extra_body or None)
        text = completion.text
        if completion.finish_reason in ("stop", None):
            text = protocol.close_stopped(text)  # OpenAI-compatible servers drop the matched stop string
        step = episode.step(text, completion.prompt_tokens, completion.completion_tokens)
        if step.kind == "end":
            break
        observation = await episode.search(client, step.query or "") if step.kind == "search" else step.observation
        if inline:
            response += episode.last_text + observation
        else:
            messages.append({"role": "assistant", "content": episode.last_text})
            messages.append({"role": "user", "content": observation})
    prompt = next((m["content"] for m in messages if m["role"] == "user"), "")
    return episode.result(prompt)


def _continue_body(continuing: bool) -> dict:
    """Request fields that make a vLLM server continue the last assistant message instead of answering it."""
    return {"continue_final_message": True, "add_generation_prompt": False} if continuing else {}
