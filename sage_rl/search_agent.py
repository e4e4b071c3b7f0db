"""The search agent A_search that verifies SAGE's QA pairs: a chat adapter over `sage_rl.episode`.

It sees only the question, never the seed document (SAGE, arXiv 2601.18202). Each turn is one chat call; passages
come back as a user message holding the `<information>` block, so any chat API works.

Its episode policy is the paper's verifier's, not Search-R1's training defaults: up to `max_searches`
searches (10 in the authors' code), then a message that the budget is spent and one last answer-only
turn (`force_answer`); two invalid turns allowed, which do not spend the search budget; and a
retrieval error fails the rollout (`fail`), so the item is retried instead of judged on a search
the solver never saw.
"""

from __future__ import annotations

from dataclasses import dataclass

from sage_rl import protocol
from sage_rl.episode import ChatSettings, EpisodePolicy, SearchClient, Trajectory, run_chat_episode
from sage_rl.llm import ChatModel
from sage_rl.protocol import Tokenizer

SOLVER_BUDGET_MESSAGE = (
    "\nI have used all my searches. I must now give my best final answer between the answer tags.\n"
)

# The verifier additions the authors' solver prompt (agentic_answer_prompt.py) makes to Search-R1's, in our words.
SOLVER_RULES = (
    "Rules: phrase each search query as a question. Do not rely on your own knowledge and do not guess "
    "entities; base every reasoning step on retrieved text.\n"
)


def solver_policy(max_searches: int = 10, topk: int = 3, max_obs_tokens: int | None = 500) -> EpisodePolicy:
    """The verifier's episode policy (see the module docstring)."""
    return EpisodePolicy(
        max_searches=max_searches, invalid_spends_budget=False, on_budget="force_answer",
        budget_message=SOLVER_BUDGET_MESSAGE, max_invalid=2, on_retrieval_error="fail",
        max_obs_tokens=max_obs_tokens, topk=topk,
    )


@dataclass
class SearchAgent:
    """The fixed search agent: `solve(question)` runs one episode under `policy`."""

    llm: ChatModel
    client: SearchClient
    policy: EpisodePolicy
    settings: ChatSettings
    tokenizer: Tokenizer | None = None

    async def solve(self, question: str) -> Trajectory:
        prompt = protocol.search_prompt(question) + SOLVER_RULES
        return await run_chat_episode(self.llm, [{"role": "user", "content": prompt}], self.client, self.policy,
                                      self.settings, self.tokenizer)
