"""Benchmark plumbing shared by every implementation: workloads, processes, links, probes.

This module owns what is the same whichever transport is measured: the description of a
workload, the two-process choreography (server process, client process, each pinned to its own
core), the pipe protocol between the parent and its children, CPU and memory probes, and
percentiles within a run (statistics over repeats and the table are ``report``'s). It must not
know any transport: the STT, aioquic and bare-UDP cases live
in their own modules and are reached only through :func:`child_entry`, by module name.

Choreography of one run (see ``docs/performance.md``):

1. the parent starts the server process; the server binds, then sends ``("ready", address)``;
2. the parent starts the client process with that address; the client runs the workload, then
   sends ``("result", metrics)`` and waits for ``"stop"`` (so its sessions stay open while the
   server is measured, which the memory case needs);
3. the parent sends ``"stop"`` to the server, which measures and replies ``("result", metrics)``;
4. the parent sends ``"stop"`` to the client, and both processes exit.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import multiprocessing
import os
import time
from collections.abc import Awaitable, Coroutine, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol, TypeVar

MiB = 1024 * 1024
"""One mebibyte: every size and rate in the report is in MiB."""

Address = tuple[str, int]
"""A UDP (host, port) pair."""

T = TypeVar("T")

Metrics = dict[str, float]
"""One process's measurements of one run, keyed by metric name (see ``report.METRICS``)."""


class BenchError(RuntimeError):
    """A run failed: a child crashed, timed out, or transferred the wrong number of bytes."""


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the server process tells the client process before the run starts."""

    address: Address
    """Where the server listens."""
    extra: bytes = b""
    """Implementation-specific blob, e.g. the self-signed certificate aioquic's client trusts."""


@dataclass(frozen=True, slots=True)
class Workload:
    """What one run does; sent to both child processes, so it must stay picklable."""

    case: str
    """Case family: ``handshake``, ``bulk``, ``streams``, ``rtt`` or ``memory``."""
    total_bytes: int = 0
    """Bytes the client sends in total (bulk and streams cases)."""
    streams: int = 1
    """Streams the bytes are spread over, in parallel."""
    datagram_size: int = 1200
    """Largest datagram each side may send (bytes)."""
    sessions: int = 0
    """Sessions opened: sequentially (handshake) or held idle at once (memory)."""
    iterations: int = 0
    """Request/response round trips measured (rtt case)."""
    warmup: int = 0
    """Round trips done first and not measured (rtt case)."""
    message_size: int = 64
    """Bytes in each request and each response (rtt case)."""
    chunk_size: int = 256 * 1024
    """Bytes handed to the transport per write call (bulk and streams; one STT message)."""
    tracemalloc: bool = False
    """Run the server under tracemalloc (memory case; slows it and inflates RSS)."""
    idle_timeout: float = 60.0
    """Idle timeout of every session (seconds); raised for the memory case."""
    connect_concurrency: int = 1
    """Connects in flight at once (memory case)."""


@dataclass(frozen=True, slots=True)
class Impl:
    """One column of the report: a case module run on one event loop."""

    name: str
    """Column label, e.g. ``stt-asyncio`` or ``aioquic``."""
    module: str
    """Import path of the module that has ``run_role`` (see :class:`CaseModule`)."""
    backend: str
    """Event loop: ``asyncio``, ``trio`` or ``uvloop``."""
    family: str
    """``stt``, ``aioquic`` or ``baseline``: what ``--only`` selects on."""


class CaseModule(Protocol):
    """What ``stt_cases``, ``aioquic_cases`` and ``udp_baseline`` provide."""

    SUPPORTED_CASES: frozenset[str]

    def run_role(
        self, role: str, backend: str, workload: Workload, link: Link, server: ServerInfo | None
    ) -> None:
        """Run ``role`` (``server`` or ``client``) of ``workload`` to completion.

        The server calls ``link.send_ready`` once bound, then serves until ``stop``
        and answers it with ``link.send_result``. The client (given ``server``) runs the
        workload, sends its result, waits for ``stop`` and returns.
        """


# --------------------------------------------------------------------------- the child side


class Link:
    """The child's end of its pipe to the parent.

    Why a pipe and not the network: the control channel must not share the path being
    measured, and a pipe's file descriptor can be awaited by any event loop.
    """

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def fileno(self) -> int:
        """Descriptor that becomes readable when the parent sends a command."""
        return self._conn.fileno()

    def send_ready(self, info: ServerInfo) -> None:
        """Tell the parent the server is bound, where, and what the client must know."""
        self._conn.send(("ready", info))

    def send_result(self, metrics: Metrics) -> None:
        """Hand this process's measurements of the run to the parent."""
        self._conn.send(("result", dict(metrics)))

    def recv_command(self) -> str:
        """Read one command (blocks; call once ``fileno`` is readable)."""
        msg = self._conn.recv()
        if not isinstance(msg, str):
            raise BenchError(f"unexpected command from parent: {msg!r}")
        return msg


def run_on_asyncio_loop(backend: str, main: Coroutine[Any, Any, None], who: str) -> None:
    """Run ``main`` on asyncio's own loop or on uvloop; ``who`` names an implementation
    that runs on nothing else, for the error."""
    if backend == "asyncio":
        asyncio.run(main)
    elif backend == "uvloop":
        uvloop: Any = importlib.import_module("uvloop")
        uvloop.run(main)
    else:
        main.close()
        raise BenchError(f"{who} runs on asyncio or uvloop, not {backend!r}")


async def asyncio_wait_readable(fd: int) -> None:
    """Wait, without blocking the asyncio loop, until ``fd`` (a pipe end) is readable."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, on_readable)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def asyncio_wait_command(link: Link) -> str:
    """Wait, without blocking the asyncio loop, for the parent's next command."""
    await asyncio_wait_readable(link.fileno())
    return link.recv_command()


STALL_TIMEOUT = 30.0
"""Seconds without progress after which a run counts as stalled (a bug, not slowness)."""


@dataclass(slots=True)
class Progress:
    """A counter the measured loop bumps, so a watchdog can tell a stall from slow progress.

    Why: a transport that stops delivering would otherwise hold the run until the parent's
    timeout, and then fail without saying where it stopped.
    """

    what: str
    done: int = 0


class StallWatch:
    """Clock-side half of the watchdog: call ``check`` about once a second."""

    __slots__ = ("_last", "_progress", "_since")

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._last = progress.done
        self._since = time.monotonic()

    def check(self, limit: float = STALL_TIMEOUT) -> None:
        """Raise ``BenchError`` when ``progress.done`` has not moved for ``limit`` seconds."""
        now = time.monotonic()
        if self._progress.done != self._last:
            self._last, self._since = self._progress.done, now
        elif now - self._since > limit:
            raise BenchError(
                f"{self._progress.what}: stalled at {self._progress.done} "
                f"(no progress for {limit:.0f} s)"
            )


async def asyncio_guard(work: Awaitable[T], progress: Progress) -> T:
    """Await ``work``, cancelling it with a clear error if ``progress`` stalls."""
    task = asyncio.ensure_future(work)
    watch = StallWatch(progress)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=1.0)
            if done:
                return task.result()
            watch.check()
    finally:
        task.cancel()


def describe_error(exc: BaseException) -> str:
    """One line per leaf exception, so errors from inside task groups keep their message."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe_error(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def child_entry(
    role: str,
    impl: Impl,
    workload: Workload,
    conn: Connection,
    cpu: int | None,
    server: ServerInfo | None,
) -> None:
    """Process target: pin to one core, then hand over to the implementation's module."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    module: Any = importlib.import_module(impl.module)
    link = Link(conn)
    try:
        module.run_role(role, impl.backend, workload, link, server)
    except BaseException as exc:
        # The parent waits on the pipe; tell it why instead of letting it time out.
        conn.send(("error", f"{role}: {describe_error(exc)}"))
        raise


# --------------------------------------------------------------------------- probes


def cpu_seconds() -> float:
    """CPU time (user + system, all threads) this process has used so far."""
    return time.process_time()


def rss_bytes() -> int:
    """Resident set size of this process now (Linux ``/proc``; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            resident_pages = int(f.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def udp_rcvbuf_errors() -> int | None:
    """Host-wide count of UDP datagrams dropped for a full receive buffer (Linux), else None.

    Why: on loopback this is the only loss there is, and it explains a goodput collapse under
    a loss-driven congestion controller better than any guess.
    """
    try:
        with open("/proc/net/snmp", encoding="ascii") as f:
            lines = [line.split() for line in f if line.startswith("Udp:")]
        header, values = lines[0], lines[1]
        return int(values[header.index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return None


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1) of a non-empty sample."""
    if not values:
        raise ValueError("percentile of an empty sample")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within 0..1, not {fraction}")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered) - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def check_count(what: str, expected: int, actual: int) -> None:
    """Fail the run when a transfer delivered a different number of bytes or sessions."""
    if expected != actual:
        raise BenchError(f"{what}: expected {expected}, got {actual}")


def pattern_bytes(size: int) -> bytes:
    """A deterministic, non-compressible-looking payload of ``size`` bytes."""
    block = bytes((i * 131 + 7) & 0xFF for i in range(4096))
    repeats, rest = divmod(size, len(block))
    return block * repeats + block[:rest]


# --------------------------------------------------------------------------- the parent side



def pick_cores() -> tuple[int | None, int | None]:
    """Cores for (server, client): two different ones when this process may use two."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    return cores[-1], cores[0]


def _wait_message(
    conn: Connection, proc: multiprocessing.process.BaseProcess, timeout: float, what: str
) -> tuple[str, Any]:
    """Wait for one message from a child; fail clearly if it dies or stays silent."""
    deadline = time.monotonic() + timeout
    while True:
        if conn.poll(0.2):
            try:
                msg = conn.recv()
            except EOFError as exc:
                raise BenchError(f"{what}: child closed its pipe") from exc
            kind, payload = msg
            if kind == "error":
                raise BenchError(str(payload))
            return str(kind), payload
        if not proc.is_alive():
            raise BenchError(f"{what}: child exited with code {proc.exitcode}")
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: no answer within {timeout:.0f} s")


def _finish(proc: multiprocessing.process.BaseProcess, grace: float) -> None:
    """Let a child exit on its own, then kill it; a benchmark never leaves processes behind."""
    proc.join(grace)
    if proc.is_alive():
        proc.terminate()
        proc.join(2.0)
    if proc.is_alive():
        proc.kill()
        proc.join(2.0)


def run_pair(impl: Impl, workload: Workload, timeout: float, settle: float = 0.0) -> Metrics:
    """Run one repeat of one case: server and client in their own pinned processes.

    Args:
        impl: which implementation and event loop to run.
        workload: what the client does.
        timeout: seconds allowed for each step (bind, the whole client run, measuring).
        settle: seconds to wait between the client's result and measuring the server, so that
            sessions are idle when their memory is counted.

    Returns:
        The client's and the server's metrics, merged.

    Raises:
        BenchError: a child failed, timed out, or reported a wrong byte count.
    """
    ctx = multiprocessing.get_context("spawn")
    s_parent, s_child = ctx.Pipe()
    c_parent, c_child = ctx.Pipe()
    procs: list[multiprocessing.process.BaseProcess] = []
    grace = 10.0
    try:
        return _choreograph(
            ctx, impl, workload, (s_parent, s_child), (c_parent, c_child), procs, timeout, settle
        )
    except BaseException:
        grace = 0.0  # failed or interrupted: nothing to wait for
        raise
    finally:
        for proc in reversed(procs):  # client first: it may hold sessions to the server
            _finish(proc, grace)
        for conn in (s_parent, s_child, c_parent, c_child):
            conn.close()


def _choreograph(
    ctx: multiprocessing.context.SpawnContext,
    impl: Impl,
    workload: Workload,
    server_pipe: tuple[Connection, Connection],
    client_pipe: tuple[Connection, Connection],
    procs: list[multiprocessing.process.BaseProcess],
    timeout: float,
    settle: float,
) -> Metrics:
    """The four steps of the module docstring; every started process is added to ``procs``."""
    server_cpu, client_cpu = pick_cores()
    server = ctx.Process(
        target=child_entry,
        args=("server", impl, workload, server_pipe[1], server_cpu, None),
        daemon=True,
    )
    procs.append(server)
    server.start()
    _, info = _wait_message(server_pipe[0], server, 60.0, f"{impl.name} server start")
    client = ctx.Process(
        target=child_entry,
        args=("client", impl, workload, client_pipe[1], client_cpu, info),
        daemon=True,
    )
    procs.append(client)
    client.start()
    drops0 = udp_rcvbuf_errors()
    _, client_metrics = _wait_message(client_pipe[0], client, timeout, f"{impl.name} client")
    drops1 = udp_rcvbuf_errors()
    if settle > 0:
        time.sleep(settle)
    server_pipe[0].send("stop")
    _, server_metrics = _wait_message(server_pipe[0], server, timeout, f"{impl.name} server stop")
    client_pipe[0].send("stop")
    merged: Metrics = {**client_metrics, **server_metrics}
    if drops0 is not None and drops1 is not None:
        merged["udp_rcvbuf_drops"] = float(drops1 - drops0)
    return merged


def server_metrics(
    workload: Workload, cpu: float, rss_delta: int, traced_delta: int, accepted: int
) -> Metrics:
    """Turn a server's raw deltas into the per-unit figures of ``report.METRICS``.

    ``accepted`` is how many sessions (handshakes) the server completed; both
    implementations' servers report through this one function.
    """
    metrics: Metrics = {}
    if workload.case == "handshake":
        check_count("server sessions accepted", workload.sessions, accepted)
        metrics["server_cpu_ms_per_handshake"] = cpu * 1000 / workload.sessions
    elif workload.case in ("bulk", "streams"):
        metrics["server_cpu_ms_per_mib"] = cpu * 1000 / (workload.total_bytes / MiB)
    elif workload.case == "memory":
        # Not a failure: the server holds state for a handshake still in flight too, so the
        # per-session figure stays right; the count is shown so that it is not hidden.
        metrics["sessions_pending"] = float(workload.sessions - accepted)
        if workload.tracemalloc:
            metrics["traced_kib_per_session"] = traced_delta / 1024 / workload.sessions
        else:
            metrics["rss_kib_per_session"] = rss_delta / 1024 / workload.sessions
    return metrics
