"""``stt listen`` / ``stt receive`` / ``stt send``: files between two machines.

Owns the two ends of a real transfer: a listener node that accepts sessions,
prints what happens on them (sessions, streams, messages, closes) and stores
files sent to it in an output directory, and a sender node that connects,
sends one file with the protocol of :mod:`stt_anyio.cli_transfer` and checks
the receipt.

Files are written to a hidden temporary name in the output directory and
renamed only after their SHA-256 matched; an existing file is never
overwritten (``name.1``, ``name.2``, ... instead). The name the sender gives is
reduced to its last path component, so a sender cannot write outside the
output directory.

It must not know about click or where the shared seed came from: the command
in :mod:`stt_anyio.cli` builds :class:`ListenOptions` / :class:`SendOptions`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from stt_core.errors import SessionClosedError, StreamClosedError, STTError

from .cli_setup import show_node_id
from .cli_transfer import (
    CHUNK_SIZE,
    FILE_PURPOSE,
    FileHeader,
    Receipt,
    TransferError,
    receive_file,
    send_file,
)
from .node import Node, TransportName, open_node
from .session import Session, Stream

__all__ = ["DirectorySink", "ListenOptions", "SendOptions", "run_listener", "run_sender"]

PREVIEW_BYTES = 60
"""How much of a non-file message the listener prints."""
SENDER_CLOSE_GRACE = 5.0
"""Seconds ``stt receive`` waits for the sender to close before it exits."""
DRAIN_LINGER = 0.5
"""Seconds ``stt receive`` stays up after the close so its acknowledgement gets out."""
MAX_NAME_TRIES = 1000
"""``name.1`` ... ``name.999``: past this the output directory is surely wrong."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenOptions:
    """What ``stt listen`` / ``stt receive`` were asked to do."""

    shared_seed: bytes = field(repr=False)
    node_id: bytes | None = None
    node_seed: bytes | None = None
    """Used when ``node_id`` is None (see ``cli_setup.derived_node_seed``)."""
    host: str = "0.0.0.0"
    port: int = 9000
    transports: tuple[TransportName, ...] = ("udp",)
    out_dir: Path = Path(".")
    once: bool = False
    """Exit after the first file (``stt receive``)."""
    idle_timeout: float = 60.0
    """Seconds a file transfer may stall before the listener gives up on it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SendOptions:
    """What ``stt send`` was asked to do."""

    shared_seed: bytes = field(repr=False)
    peer: tuple[str, int]
    path: Path
    node_id: bytes | None = None
    node_seed: bytes | None = None
    peer_node_id: bytes | None = None
    """If given, the listener must prove exactly this node id."""
    transport: TransportName = "udp"
    connect_timeout: float = 10.0
    receipt_timeout: float = 60.0


class DirectorySink:
    """Stores a received file in a directory, keeping it only once verified."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._name = ""
        self._part: Path | None = None
        self._file: anyio.AsyncFile[bytes] | None = None

    async def begin(self, header: FileHeader) -> None:
        """Open a hidden temporary file for ``header.name``.

        Raises:
            TransferError: the name is unusable or the directory not writable.
        """
        name = Path(header.name.replace("\\", "/")).name
        if name in ("", ".", "..") or "\x00" in name:
            raise TransferError(f"unusable file name {header.name!r}")
        self._name = name
        self._part = self.out_dir / f".{name}.{os.urandom(4).hex()}.part"
        try:
            await anyio.Path(self.out_dir).mkdir(parents=True, exist_ok=True)
            self._file = await anyio.open_file(self._part, "xb")
        except OSError as exc:
            raise TransferError(f"cannot store the file: {exc.strerror or exc}") from exc

    async def write(self, data: bytes) -> None:
        """Append to the temporary file.

        Raises:
            TransferError: the disk is full or the file went away.
        """
        if self._file is None:
            raise TransferError("write before begin")
        try:
            await self._file.write(data)
        except OSError as exc:
            raise TransferError(f"cannot store the file: {exc.strerror or exc}") from exc

    async def commit(self) -> str:
        """Rename the temporary file to a free name; returns that path.

        Raises:
            TransferError: the file cannot be closed or renamed.
        """
        if self._file is None or self._part is None:
            raise TransferError("commit before begin")
        try:
            await self._file.aclose()
            self._file = None
            for attempt in range(MAX_NAME_TRIES):
                name = self._name if attempt == 0 else f"{self._name}.{attempt}"
                target = self.out_dir / name
                if not await anyio.Path(target).exists():
                    await anyio.Path(self._part).rename(target)
                    self._part = None
                    return str(target)
        except OSError as exc:
            raise TransferError(f"cannot store the file: {exc.strerror or exc}") from exc
        raise TransferError(f"no free name for {self._name!r} in {self.out_dir}")

    async def discard(self) -> None:
        """Remove the temporary file (best effort: never raises)."""
        with contextlib.suppress(OSError):
            if self._file is not None:
                await self._file.aclose()
            if self._part is not None:
                await anyio.Path(self._part).unlink(missing_ok=True)
        self._file = None
        self._part = None


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=console)


def _preview(message: bytes) -> str:
    text = repr(message[:PREVIEW_BYTES])
    return text + ("..." if len(message) > PREVIEW_BYTES else "")


def _show_address(address: object) -> str:
    """``host:port`` for UDP, the carrier's own description otherwise (WebSocket)."""
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


def _label(session: Session) -> str:
    """``[session-id-prefix peer-id]``, escaped so rich prints the brackets."""
    return escape(f"[{session.session_id.hex()[:8]} {show_node_id(session.peer_node_id)}]")


class _Listener:
    """Accepts sessions, prints their events, stores their files."""

    def __init__(self, options: ListenOptions, console: Console) -> None:
        self.options = options
        self.console = console
        self.files_ok = 0
        self.files_failed = 0
        self.done = anyio.Event()
        """Set after the first file when ``options.once``."""
        self.last_session: Session | None = None
        """The session of the last file (``once``: waited for before exiting)."""
        self.progress = _progress(console)
        self._transfers = 0

    def say(self, text: str) -> None:
        self.console.print(text, soft_wrap=True)

    async def run(self, node: Node) -> None:
        async with anyio.create_task_group() as tg:
            while True:
                session = await node.accept()
                tg.start_soon(self._serve_session, session)

    async def _serve_session(self, session: Session) -> None:
        self.say(f"{_label(session)} session established from "
                 f"{escape(_show_address(session.peer_address))}")
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._serve_stream, session, session.default_stream)
            while True:
                try:
                    stream = await session.accept_stream()
                except SessionClosedError:
                    break
                self.say(f"{_label(session)} stream {stream.stream_id} opened "
                         f"(purpose {escape(stream.purpose)!r})")
                tg.start_soon(self._serve_stream, session, stream)
            closed = await session.wait_closed()
            self.say(f"{_label(session)} session closed: {closed.reason}"
                     + (f" ({escape(closed.message)})" if closed.message else ""))
            tg.cancel_scope.cancel()

    async def _serve_stream(self, session: Session, stream: Stream) -> None:
        try:
            if stream.purpose == FILE_PURPOSE:
                await self._receive(session, stream)
                return
            async for message in stream:
                self.say(f"{_label(session)} stream {stream.stream_id}: {len(message)} "
                         f"bytes {escape(_preview(message))}")
        except SessionClosedError:
            return  # the session's own close line says it
        except StreamClosedError as exc:
            self.say(f"{_label(session)} stream {stream.stream_id} ended: {escape(str(exc))}")

    async def _receive(self, session: Session, stream: Stream) -> None:
        task = self.progress.add_task("receiving", total=None)
        self._transfers += 1
        if self._transfers == 1:
            self.progress.start()  # one live display shared by concurrent transfers

        def on_header(header: FileHeader) -> None:
            self.say(f"{_label(session)} receiving {escape(header.name)!r}: "
                     f"{header.size:,} bytes, SHA-256 {header.sha256}")
            self.progress.update(task, total=header.size,
                                 description=f"receiving {escape(header.name)}")

        try:
            _, receipt = await receive_file(
                stream, DirectorySink(self.options.out_dir), on_header=on_header,
                on_progress=lambda n: self.progress.advance(task, n),
                timeout=self.options.idle_timeout)
        except (TransferError, TimeoutError, STTError) as exc:
            receipt = Receipt(ok=False, nbytes=0, sha256="", error=str(exc))
        finally:
            self._transfers -= 1
            if self._transfers == 0:
                self.progress.stop()
            self.progress.remove_task(task)
        self._report(session, receipt)

    def _report(self, session: Session, receipt: Receipt) -> None:
        if receipt.ok:
            self.files_ok += 1
            self.say(f"{_label(session)} SHA-256 OK: saved {escape(receipt.saved_as)} "
                     f"({receipt.nbytes:,} bytes, {receipt.sha256})")
        else:
            self.files_failed += 1
            self.say(f"{_label(session)} [red]file transfer failed[/]: "
                     f"{escape(receipt.error)}")
        if self.options.once:
            self.last_session = session
            self.done.set()


async def run_listener(options: ListenOptions, console: Console) -> int:
    """Serve until cancelled (or, with ``once``, until the first file); the exit code.

    Returns:
        0, or with ``once`` 0 only if the file was verified and stored.

    Raises:
        OSError: the address cannot be bound.
    """
    listener = _Listener(options, console)
    async with open_node(node_id=options.node_id, node_seed=options.node_seed,
                         shared_seed=options.shared_seed, host=options.host,
                         port=options.port, transport=options.transports,
                         server_mode=True) as node:
        for kind, (host, port) in node.local_addresses.items():
            listener.say(f"listening on {kind} {host}:{port}")
        listener.say(f"node id {escape(show_node_id(node.node_id))}; "
                     f"files go to {escape(str(options.out_dir))}")
        interrupted = False

        async def stop_on_signal(scope: anyio.CancelScope) -> None:
            # Ctrl-C / SIGTERM become a cancellation, so the node closes its
            # sessions with its pump still running; a KeyboardInterrupt raised
            # at an arbitrary point could stop the pump mid-shutdown.
            nonlocal interrupted
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    interrupted = True
                    scope.cancel()
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_on_signal, tg.cancel_scope)
            tg.start_soon(listener.run, node)
            await listener.done.wait()
            if listener.last_session is not None:
                # The sender closes the session once it has read the receipt;
                # leaving first would make it wait out its close timeout.
                with anyio.move_on_after(SENDER_CLOSE_GRACE):
                    await listener.last_session.wait_closed()
                # A draining session acknowledges SESSION_CLOSE only with the
                # closer's next probe (protocol.md Appendix B, item 1); stay
                # long enough to answer it, or the sender waits close_timeout.
                await anyio.sleep(DRAIN_LINGER)
            tg.cancel_scope.cancel()
    if interrupted:
        raise KeyboardInterrupt  # the CLI reports it as the usual exit code 130
    return 0 if listener.files_failed == 0 else 1


def _sha256_of(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a file (runs in a worker thread)."""
    hasher = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            hasher.update(block)
            size += len(block)
    return size, hasher.hexdigest()


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as file:
        while chunk := await file.read(CHUNK_SIZE):
            yield chunk


async def run_sender(options: SendOptions, console: Console) -> int:
    """Send one file and check the receipt; the exit code (0: verified by the receiver).

    Raises:
        OSError: the file cannot be read.
        STTError: no session (refused, timed out, wrong seed or peer id).
    """
    size, digest = await anyio.to_thread.run_sync(_sha256_of, options.path)
    header = FileHeader(name=options.path.name, size=size, sha256=digest)
    bind_host = "::" if ":" in options.peer[0] else "0.0.0.0"
    async with open_node(node_id=options.node_id, node_seed=options.node_seed,
                         shared_seed=options.shared_seed, host=bind_host, port=0,
                         transport=options.transport, server_mode=False) as node:
        session = await node.connect(options.peer, peer_node_id=options.peer_node_id,
                                     timeout=options.connect_timeout)
        host, port = options.peer
        console.print(f"connected to {escape(host)}:{port} (node "
                      f"{escape(show_node_id(session.peer_node_id))}) over "
                      f"{options.transport}, session {session.session_id.hex()}",
                      soft_wrap=True)
        progress = _progress(console)
        task = progress.add_task(f"sending {escape(header.name)}", total=size)
        try:
            with progress:
                receipt = await send_file(session.open_stream(FILE_PURPOSE), header,
                                          _file_chunks(options.path),
                                          on_progress=lambda n: progress.advance(task, n),
                                          receipt_timeout=options.receipt_timeout)
        except TransferError as exc:
            console.print(f"[red]transfer failed[/]: {escape(str(exc))}", soft_wrap=True)
            return 1
        finally:
            await session.close()
    console.print(f"SHA-256 OK: the receiver stored {escape(receipt.saved_as)} "
                  f"({receipt.nbytes:,} bytes, {receipt.sha256})", soft_wrap=True)
    return 0
