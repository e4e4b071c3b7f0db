"""Stand-in OpenAI-compatible chat servers on loopback ports, for unit and end-to-end tests.

`llm_server(respond)` answers each `/v1/chat/completions` request with `respond(messages)`, applying the
request's stop strings as vLLM does (the matched stop string is dropped unless the request sets
`include_stop_str_in_output`), e.g. sage_world's scripted SAGE roles for producers running in other
processes. `judge_server()` grades like the paper's judge prompt asks (`correct: yes|no`) by comparing the
prompt's `Response:` and `Correct answer:` lines after SQuAD normalisation. Both can be switched to fail:
`mode` = `ok`, `error` (HTTP 500 on every request) or `hang` (never answers in time). A refused connection
needs no server: use `refused_url()`. Requests are counted in `calls`. They run in a thread of the test
process, so verl's workers and Ray actors (other processes) reach them over loopback too.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sage_rl.qa_match import normalize_answer


class ServerState:
    def __init__(self, respond: Callable[[list[dict]], str], mode: str = "ok", hang_s: float = 30.0) -> None:
        self.respond, self.mode, self.hang_s, self.calls, self.prompts = respond, mode, hang_s, 0, []


def _verdict(messages: list[dict]) -> str:
    prompt = messages[0]["content"]
    response = re.search(r"Response: (.*)", prompt)
    gold = re.search(r"(?:Correct answer|Acceptable answers \(any one is correct\)): (.*)", prompt)
    golds = [g for g in (gold.group(1).split(", ") if gold else [])]
    ok = response is not None and normalize_answer(response.group(1)) in {normalize_answer(g) for g in golds}
    return f"extracted_final_answer: {response.group(1) if response else None}\nreasoning: compared\n" \
           f"correct: {'yes' if ok else 'no'}\nconfidence: 100%"


def _apply_stop(text: str, body: dict) -> tuple[str, str]:
    for stop in body.get("stop") or ():
        if (i := text.find(stop)) != -1:
            return text[: i + len(stop)] if body.get("include_stop_str_in_output") else text[:i], "stop"
    return text, "stop"


def _handler(state: ServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            return

        def do_POST(self) -> None:
            try:
                self._answer()
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (the `hang` mode's point)
                pass

        def _answer(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.calls += 1
            prompt = body["messages"][0]["content"]
            state.prompts.append(prompt)
            if state.mode == "hang":
                time.sleep(state.hang_s)
            if state.mode == "error":
                self.send_response(500)
                self.end_headers()
                self.wfile.write(b"judge is down")
                return
            text, finish = _apply_stop(state.respond(body["messages"]), body)
            payload = {"choices": [{"message": {"content": text}, "finish_reason": finish}],
                       "usage": {"prompt_tokens": 10, "completion_tokens": 10}}
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextmanager
def llm_server(respond: Callable[[list[dict]], str], mode: str = "ok",
               hang_s: float = 30.0) -> Iterator[tuple[str, ServerState]]:
    """(base URL up to /v1, state) of a running stand-in chat server answering with `respond(messages)`."""
    state = ServerState(respond, mode, hang_s)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", state
    finally:
        server.shutdown()
        server.server_close()


def judge_server(mode: str = "ok", hang_s: float = 30.0):
    """(base URL up to /v1, state) of a running stand-in judge."""
    return llm_server(_verdict, mode, hang_s)


def refused_url() -> str:
    """A loopback URL where nothing listens (the port was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
