"""The multi-turn search loop over the agent protocol, and the search agent (solver) built on it.

`run_search_loop` is shared by SAGE's two agents: the solver (answers a question, stops at `<answer>`)
and the generator (searches, then writes a QA pair). Each turn is one chat call; a `<search>` is sent
to the retrieval server and its passages come back as a user message holding the `<information>`
block (multi-turn chat rather than Search-R1's single growing completion, so any chat API works).
When the search budget is used up and the agent still searches, it is told so and called once more.

Deviation from Search-R1's loop: the last valid action of a turn counts (see `protocol.parse_action`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from sage_rl import protocol
from sage_rl.llm import ChatModel, Messages
from sage_rl.protocol import Action, Passage, Tokenizer

SOLVER_BUDGET_MESSAGE = (
    "\nI have used all my searches. I must now give my best final answer between <answer> and </answer>.\n"
)


class HitLike(Protocol):
    """What the retrieval client returns per passage (`retrieval_server.client.Hit`)."""

    id: str

    @property
    def title(self) -> str: ...

    @property
    def text(self) -> str: ...


class Retriever(Protocol):
    """`retrieval_server.client.AsyncRetrievalClient`, or a fake with the same `retrieve`."""

    async def retrieve(self, queries: list[str], topk: int | None = None) -> Sequence[Sequence[HitLike]]: ...


@dataclass(frozen=True)
class Turn:
    """One model call: its text (stop string restored), the parsed action, and what the environment replied."""

    text: str
    action: Literal["search", "answer", "invalid", "final"]
    query: str | None = None
    doc_ids: tuple[str, ...] = ()
    observation: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Trajectory:
    """A whole agent run: the prompt, every turn, the final answer (solver) and counts."""

    prompt: str
    turns: tuple[Turn, ...]
    answer: str | None
    num_searches: int
    budget_exhausted: bool = False

    @property
    def queries(self) -> list[str]:
        return [t.query for t in self.turns if t.action == "search" and t.query is not None]

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
        """The full prompt and trajectory as text, with every retrieved document (for feedback prompts)."""
        return self.prompt + "".join(t.text + t.observation for t in self.turns)

    def to_dict(self) -> dict:
        return {
            "prompt": self.prompt,
            "turns": [vars(t) | {"doc_ids": list(t.doc_ids)} for t in self.turns],
            "answer": self.answer,
            "num_searches": self.num_searches,
            "budget_exhausted": self.budget_exhausted,
        }


@dataclass
class SearchLoopConfig:
    """How one agent runs the loop."""

    max_searches: int
    topk: int = 3
    stop: tuple[str, ...] = protocol.STOP_STRINGS
    max_tokens: int | None = None
    temperature: float | None = None
    max_obs_tokens: int | None = 500
    budget_message: str = SOLVER_BUDGET_MESSAGE
    # Message after a turn without a valid action; None ends the run there (the generator's final turn).
    invalid_message: str | None = protocol.INVALID_ACTION_MESSAGE
    # Extra calls allowed for invalid turns, so a model that never acts cannot loop forever.
    max_invalid: int = 2
    tokenizer: Tokenizer | None = field(default=None, repr=False)


def _is_final(action: Action | None, text: str, cfg: SearchLoopConfig) -> bool:
    if action is not None and action.kind == "answer" and "</answer>" in cfg.stop:
        return True
    # Without `</answer>` as a stop string (the generator), any turn that does not search is its output.
    return "</answer>" not in cfg.stop and (action is None or action.kind != "search")


async def run_search_loop(
    llm: ChatModel,
    messages: Messages,
    retriever: Retriever,
    cfg: SearchLoopConfig,
    finalize: Callable[[str], str | None] = protocol.extract_answer,
) -> Trajectory:
    """Run turns until a final turn, the budget's forced last call, or too many invalid turns.

    Args:
        messages: the opening chat messages; the last one is the task prompt.
        finalize: extracts the run's answer from the final turn's text.
    """
    messages = [dict(m) for m in messages]
    turns: list[Turn] = []
    searches = invalid = 0
    forced = False
    while True:
        completion = await llm.chat(messages, stop=cfg.stop, max_tokens=cfg.max_tokens, temperature=cfg.temperature)
        text = protocol.truncate_at_action(protocol.close_stopped(completion.text), cfg.stop)
        action = protocol.parse_action(text)
        tokens = {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens}
        messages.append({"role": "assistant", "content": text})
        if forced or _is_final(action, text, cfg):
            answered = action is not None and action.kind == "answer" and "</answer>" in cfg.stop
            turns.append(Turn(text, "answer" if answered else "final", **tokens))
            break
        if action is not None and action.kind == "search":
            if searches >= cfg.max_searches:
                forced = True
                turns.append(Turn(text, "search", query=action.content, observation=cfg.budget_message, **tokens))
                messages.append({"role": "user", "content": cfg.budget_message})
                continue
            [hits] = await retriever.retrieve([action.content], topk=cfg.topk)
            passages = [Passage(id=str(h.id), title=h.title, text=h.text) for h in hits]
            observation = protocol.render_information(passages, cfg.max_obs_tokens, cfg.tokenizer)
            searches += 1
            turns.append(
                Turn(text, "search", action.content, tuple(p.id for p in passages), observation, **tokens)
            )
            messages.append({"role": "user", "content": observation})
            continue
        invalid += 1
        if cfg.invalid_message is None or invalid > cfg.max_invalid:
            turns.append(Turn(text, "invalid", **tokens))
            break
        turns.append(Turn(text, "invalid", observation=cfg.invalid_message, **tokens))
        messages.append({"role": "user", "content": cfg.invalid_message})
    return Trajectory(
        prompt=_first_user(messages),
        turns=tuple(turns),
        answer=finalize(turns[-1].text) if turns[-1].action in ("answer", "final") else None,
        num_searches=searches,
        budget_exhausted=forced,
    )


def _first_user(messages: Messages) -> str:
    return next((m["content"] for m in messages if m["role"] == "user"), "")


# The verifier additions the paper's solver prompt makes to Search-R1's (paper.md §2), in our words.
SOLVER_RULES = (
    "Rules: phrase each search query as a question. Do not rely on your own knowledge and do not guess "
    "entities; base every reasoning step on retrieved text.\n"
)


@dataclass
class SearchAgent:
    """The fixed search agent that verifies QA pairs: sees only the question, never the seed document."""

    llm: ChatModel
    retriever: Retriever
    max_turns: int = 10
    topk: int = 3
    max_tokens: int | None = 512
    temperature: float | None = None
    max_obs_tokens: int | None = 500
    tokenizer: Tokenizer | None = None

    async def solve(self, question: str) -> Trajectory:
        prompt = protocol.search_prompt(question) + SOLVER_RULES
        cfg = SearchLoopConfig(
            max_searches=self.max_turns,
            topk=self.topk,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            max_obs_tokens=self.max_obs_tokens,
            tokenizer=self.tokenizer,
        )
        return await run_search_loop(self.llm, [{"role": "user", "content": prompt}], self.retriever, cfg)
