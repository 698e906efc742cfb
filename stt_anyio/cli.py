"""The ``stt`` command line: ``demo``, ``listen``, ``receive``, ``send`` and ``bench``.

Owns the command-line surface: options and their validation (click), where
secrets come from (the rules are in :mod:`stt_anyio.cli_setup`: a seed file
or ``$STT_SHARED_SEED``, never an option value), the choice of event-loop
backend (``anyio.run(..., backend=...)``), turning failures into one readable
line on stderr, and exit codes:

* 0: success (for ``demo``, ``send`` and ``receive``: the SHA-256 matched);
* 1: the run failed (no session, transfer failed, digest mismatch, timeout);
* 2: bad usage (click's convention), including a missing shared seed;
* 130: interrupted with Ctrl-C.

It must not know how the demo, the transfer or the benchmark work: each
command builds an options record and hands it to its module
(:mod:`~stt_anyio.cli_demo`, :mod:`~stt_anyio.cli_serve`,
:mod:`~stt_anyio.cli_bench`).
"""

from __future__ import annotations

import functools
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import anyio
import click
from rich.console import Console
from rich.markup import escape

from stt_core.errors import STTError

from . import cli_bench, cli_demo, cli_serve
from .cli_setup import (
    SEED_ENV_VAR,
    SeedSource,
    SetupError,
    available_backends,
    derived_node_seed,
    load_shared_seed,
    parse_node_id,
    parse_peer_address,
)
from .cli_transfer import TransferError
from .node import TransportName
from .trace_tools import trace_group

__all__ = ["cli", "main"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
EXPECTED_ERRORS = (STTError, TransferError, OSError, TimeoutError)
"""Failures that deserve one line on stderr rather than a traceback."""


def main() -> None:
    """Console-script entry point (``stt``)."""
    cli(prog_name="stt")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stt", prog_name="stt")
def cli() -> None:
    """STT: a secure, reliable, multiplexed session transport over UDP and WebSocket.

    \b
    The shared seed (the secret every node of a deployment shares) is read
    from --seed-file PATH or the STT_SHARED_SEED environment variable; it is
    never accepted as an option value, which would leak it into shell
    history and process listings.
    """


# -- options shared by several commands ----------------------------------------------


def _seed_file_option(func: F) -> F:
    return click.option(
        "--seed-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help=f"File holding the shared seed (default: ${SEED_ENV_VAR}).")(func)


def _backend_option(func: F) -> F:
    return click.option(
        "--backend", type=click.Choice(["asyncio", "trio"]), default="asyncio",
        show_default=True, help="Event loop the nodes run on.")(func)


def _node_id_option(func: F) -> F:
    return click.option(
        "--node-id", default=None,
        help="This node's id (UTF-8, not secret; default: derived from host and process).",
    )(func)


# -- running a command ---------------------------------------------------------------


def _console() -> Console:
    """A console on the current stdout (CliRunner swaps it per invocation)."""
    return Console()


def _fail(message: str, code: int = 1) -> NoReturn:
    Console(stderr=True).print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    sys.exit(code)


def _interrupted() -> NoReturn:
    """Ctrl-C is how ``listen`` is meant to stop: no error, the usual 130."""
    Console(stderr=True).print("interrupted")
    sys.exit(130)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The non-group exceptions inside ``exc`` (task groups wrap what they raise)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _run(backend: str, func: Callable[[], Awaitable[T]]) -> T:
    """``anyio.run(func, backend=backend)``, with expected failures turned into exits."""
    try:
        available_backends(backend)
        return anyio.run(func, backend=backend)
    except SetupError as exc:
        raise click.UsageError(str(exc)) from None
    except KeyboardInterrupt:
        _interrupted()
    except BaseException as exc:  # re-raised below unless every leaf is expected
        leaves = _leaves(exc)
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            _interrupted()
        expected = [leaf for leaf in leaves if isinstance(leaf, EXPECTED_ERRORS)]
        if not expected or len(expected) != len(leaves):
            raise
        _fail(_describe(expected[0]))


def _describe(exc: BaseException) -> str:
    """One line for an expected failure; STT's own messages already say what failed."""
    if isinstance(exc, STTError | TransferError):
        return str(exc)
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name: {exc.strerror or exc}"
    if isinstance(exc, TimeoutError):
        return str(exc) or "timed out"
    return f"{type(exc).__name__}: {exc}"


def _seed(seed_file: Path | None, *, random_ok: bool) -> SeedSource:
    """The shared seed, as a usage error when missing; warns about a readable file."""
    try:
        source = load_shared_seed(seed_file, random_fallback=os.urandom if random_ok else None)
    except SetupError as exc:
        raise click.UsageError(str(exc)) from None
    if source.warning:
        Console(stderr=True).print(f"[yellow]warning:[/] {escape(source.warning)}",
                                   soft_wrap=True)
    return source


def _identity(node_id: str | None, role: str) -> tuple[bytes | None, bytes | None]:
    """``(node_id, node_seed)`` for ``open_node``: the given id or a derived one."""
    try:
        parsed = parse_node_id(node_id)
    except SetupError as exc:
        raise click.BadParameter(str(exc), param_hint="--node-id") from None
    return (parsed, None) if parsed else (None, derived_node_seed(role))


# -- commands -------------------------------------------------------------------------


@cli.command()
@click.option("--megabytes", type=click.FloatRange(min=0.0, min_open=True), default=8.0,
              show_default=True, help="Size of the file transfer (1 MB = 10**6 bytes).")
@click.option("--loss", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.0,
              show_default=True,
              help="Drop probability of a UDP relay put between the nodes (udp only).")
@click.option("--loss-seed", type=int, default=1, show_default=True,
              help="Seed of the relay's drop decisions (not a secret).")
@click.option("--transport", type=click.Choice(["udp", "websocket"]), default="udp",
              show_default=True)
@_backend_option
@_seed_file_option
@click.option("--timeout", type=click.FloatRange(min=0.0, min_open=True), default=120.0,
              show_default=True, help="Seconds the whole demo may take.")
def demo(megabytes: float, loss: float, loss_seed: int, transport: str, backend: str,
         seed_file: Path | None, timeout: float) -> None:
    """Two nodes on this machine: handshake, streams, a verified file transfer.

    Exits 0 only if the receiver's SHA-256 matched the sender's.
    """
    if loss > 0 and transport != "udp":
        raise click.UsageError("--loss needs --transport udp (a WebSocket runs over TCP, "
                               "which never shows loss to STT)")
    source = _seed(seed_file, random_ok=True)
    console = _console()
    console.print(f"shared seed: {escape(source.origin)}", soft_wrap=True)
    options = cli_demo.DemoOptions(shared_seed=source.seed, megabytes=megabytes, loss=loss,
                                   loss_seed=loss_seed, transport=_transport(transport),
                                   timeout=timeout)
    result = _run(backend, lambda: cli_demo.run_demo(options, console))
    console.print(cli_demo.summary_table(result, transport=transport, backend=backend))
    for error in result.errors:
        console.print(f"[red]{escape(error)}[/]", soft_wrap=True)
    if not result.sha256_ok:
        _fail(f"SHA-256 mismatch or transfer failure "
              f"(expected {result.expected_sha256 or 'unknown'})")
    console.print(f"SHA-256 OK: {result.nbytes:,} bytes, {result.expected_sha256}",
                  soft_wrap=True)


def _transport(name: str) -> TransportName:
    if name == "websocket":
        return "websocket"
    return "udp"


def _listen_options(func: F) -> F:
    decorators = [
        click.option("--host", default="0.0.0.0", show_default=True,
                     help="Address to bind."),
        click.option("--port", type=click.IntRange(0, 65535), default=9000,
                     show_default=True, help="Port to bind (0: any free port)."),
        click.option("--transport", type=click.Choice(["udp", "websocket", "both"]),
                     default="udp", show_default=True),
        click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path),
                     default=Path("."), show_default=True,
                     help="Where received files are stored."),
        click.option("--idle-timeout", type=click.FloatRange(min=0.0, min_open=True),
                     default=60.0, show_default=True,
                     help="Seconds a file transfer may stall before it is abandoned."),
        _seed_file_option, _node_id_option, _backend_option,
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _listen(once: bool, host: str, port: int, transport: str, out_dir: Path,
            idle_timeout: float, seed_file: Path | None, node_id: str | None,
            backend: str) -> None:
    source = _seed(seed_file, random_ok=False)
    node_id_bytes, node_seed = _identity(node_id, "receive" if once else "listen")
    kinds: tuple[TransportName, ...] = (("udp", "websocket") if transport == "both"
                                        else (_transport(transport),))
    options = cli_serve.ListenOptions(
        shared_seed=source.seed, node_id=node_id_bytes, node_seed=node_seed, host=host,
        port=port, transports=kinds, out_dir=out_dir, once=once, idle_timeout=idle_timeout)
    console = _console()
    code = _run(backend, lambda: cli_serve.run_listener(options, console))
    sys.exit(code)


@cli.command()
@_listen_options
def listen(**kwargs: Any) -> None:
    """Accept sessions, print their events and store the files sent with 'stt send'."""
    _listen(False, **kwargs)


@cli.command()
@_listen_options
def receive(**kwargs: Any) -> None:
    """Like 'listen', but exit after one file (0 if its SHA-256 matched)."""
    _listen(True, **kwargs)


@cli.command()
@click.argument("address", metavar="HOST:PORT")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--transport", type=click.Choice(["udp", "websocket"]), default="udp",
              show_default=True)
@click.option("--peer-node-id", default=None,
              help="Require the listener to prove this node id.")
@click.option("--connect-timeout", type=click.FloatRange(min=0.0, min_open=True),
              default=10.0, show_default=True, help="Seconds the handshake may take.")
@click.option("--timeout", type=click.FloatRange(min=0.0, min_open=True), default=60.0,
              show_default=True,
              help="Seconds to wait for the receiver's confirmation after the last byte.")
@_seed_file_option
@_node_id_option
@_backend_option
def send(address: str, file: Path, transport: str, peer_node_id: str | None,
         connect_timeout: float, timeout: float, seed_file: Path | None,
         node_id: str | None, backend: str) -> None:
    """Send FILE to a listener; exits 0 once the receiver confirmed its SHA-256."""
    try:
        peer = parse_peer_address(address)
        expected_peer = parse_node_id(peer_node_id)
    except SetupError as exc:
        raise click.BadParameter(str(exc)) from None
    source = _seed(seed_file, random_ok=False)
    node_id_bytes, node_seed = _identity(node_id, "send")
    options = cli_serve.SendOptions(
        shared_seed=source.seed, peer=peer, path=file, node_id=node_id_bytes,
        node_seed=node_seed, peer_node_id=expected_peer, transport=_transport(transport),
        connect_timeout=connect_timeout, receipt_timeout=timeout)
    console = _console()
    sys.exit(_run(backend, lambda: cli_serve.run_sender(options, console)))


@cli.command()
@click.option("--seconds", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="Bulk phase length per case (instead of --megabytes).")
@click.option("--megabytes", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help=f"Bulk transfer size per case (default {cli_bench.DEFAULT_MEGABYTES}).")
@click.option("--connects", type=click.IntRange(min=1), default=None,
              help=f"Handshakes timed per case (default {cli_bench.DEFAULT_CONNECTS}).")
@click.option("--transport", type=click.Choice(["udp", "websocket", "both"]),
              default="both", show_default=True)
@click.option("--backend", type=click.Choice(["asyncio", "trio", "both"]), default="both",
              show_default=True)
@click.option("--quick", is_flag=True, help="A small, fast run (a smoke test).")
@_seed_file_option
def bench(seconds: float | None, megabytes: float | None, connects: int | None,
          transport: str, backend: str, quick: bool, seed_file: Path | None) -> None:
    """Loopback throughput and handshake latency per transport and backend."""
    if seconds is not None and megabytes is not None:
        raise click.UsageError("give --seconds or --megabytes, not both")
    try:
        backends, skipped = available_backends(backend)
    except SetupError as exc:
        raise click.UsageError(str(exc)) from None
    source = _seed(seed_file, random_ok=True)
    console = _console()
    console.print(f"shared seed: {escape(source.origin)}", soft_wrap=True)
    for name in skipped:
        console.print(f"skipping the {name} backend (not installed)")
    plan = cli_bench.BenchPlan.build(seconds=seconds, megabytes=megabytes,
                                     connects=connects, quick=quick)
    kinds = ["udp", "websocket"] if transport == "both" else [transport]
    rows: list[cli_bench.BenchRow] = []
    for name in backends:
        for kind in kinds:
            case = cli_bench.BenchCase(transport=_transport(kind), backend=name, plan=plan,
                                       shared_seed=source.seed)
            rows.append(_run(name, functools.partial(cli_bench.run_case, case)))
    console.print(cli_bench.results_table(rows, plan))


cli.add_command(trace_group)  # 'stt trace summarize|plot' (stt_anyio.trace_tools)


if __name__ == "__main__":  # pragma: no cover - `python -m stt_anyio.cli`
    main()
