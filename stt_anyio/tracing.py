"""Trace files: the core's trace events written as JSON lines, one file per session.

Owns the :class:`TraceWriter` (a ``stt_core.trace.TraceSink``), the file
format, file naming, buffering and the ``STT_TRACE_DIR`` switch. It must not
know what the events mean (that is ``stt_core.trace``, which emits them, and
:mod:`stt_anyio.trace_tools`, which reads them), nor anything about sockets or
the event loop: the node hands it ``now`` values and calls :meth:`close`.

Format (``stt-trace-jsonl`` version 1, in the spirit of qlog's JSON-SEQ
serialisation; see ``docs/observability.md``):

* line 1, the header: ``{"format": "stt-trace-jsonl", "version": 1,
  "node_id": hex, "scope": "session" | "endpoint", "ref": n,
  "session_id": hex | null, "start_time": epoch seconds,
  "start_time_utc": ISO 8601}``;
* then one object per event: ``{"time": seconds since start_time,
  "name": ..., "data": {...}}``.

Files are named ``<UTC start>-<node>-ref<n>[-<session id hex>].jsonl``; the
endpoint-wide events (ref 0, e.g. ``packet_dropped``) go to
``<UTC start>-<node>-endpoint.jsonl``. The session id is only known after the
handshake; a file written before that is renamed once it is known.

Why buffered, synchronous writes: the sink is called from inside the core,
between two awaits of the event loop, so it cannot await. Each session
buffers serialised lines and writes them in one plain file write once it
holds ``batch_events`` lines (a few tens of kilobytes), when the session
closes, and when the node exits. Memory is bounded by ``max_buffered_bytes``
(everything is flushed beyond it) and by a cap on remembered closed sessions.
Files are opened per batch, in append mode, so a server with thousands of
sessions does not hold thousands of descriptors.

Secrets: the core only emits plain numbers and labels; as a second line of
defence any ``bytes`` value that reaches the writer is replaced by its length.
A failing disk never fails the node: the first ``OSError`` is logged and
tracing switches itself off.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from stt_core.events import SessionRef

__all__ = [
    "TRACE_DIR_ENV_VAR",
    "TRACE_FORMAT",
    "TRACE_VERSION",
    "TraceWriter",
    "TraceWriterStats",
    "resolve_trace_dir",
]

logger = logging.getLogger("stt.anyio.tracing")

TRACE_FORMAT = "stt-trace-jsonl"
"""The ``format`` field of every trace file's header line."""
TRACE_VERSION = 1
"""The ``version`` field of the header; bumped on incompatible changes."""
TRACE_DIR_ENV_VAR = "STT_TRACE_DIR"
"""Environment variable that switches tracing on for every node without a ``trace_dir``."""

DEFAULT_BATCH_EVENTS = 256
"""Lines a session buffers before they are written (about 30-60 KB)."""
DEFAULT_MAX_BUFFERED_BYTES = 4 * 1024 * 1024
"""Serialised bytes all sessions may buffer together before everything is written."""
DEFAULT_MAX_CLOSED_SESSIONS = 256
"""Closed sessions remembered (for events that arrive while they drain)."""
_SAFE_LABEL = re.compile(r"[A-Za-z0-9._-]{1,24}")


@dataclass(slots=True)
class TraceWriterStats:
    """Counters of one writer (for tests and for ``Node.get_stats``-style reports)."""

    events_written: int = 0
    """Event lines written to files."""
    events_dropped: int = 0
    """Events discarded: tracing failed, or the session was forgotten long ago."""
    batches_written: int = 0
    """File writes (one per batch)."""
    files_created: int = 0
    """Trace files created."""


@dataclass(slots=True)
class _SessionFile:
    """What the writer keeps per trace file (one session, or the endpoint)."""

    ref: int
    origin: float
    """The ``now`` of the file's first event: time 0 of its event lines."""
    session_id: bytes | None = None
    path: Path | None = None
    """None until the first batch is written."""
    named_with_id: bool = False
    """True once the file name carries the session id."""
    lines: list[str] = field(default_factory=list)
    buffered_bytes: int = 0
    closed: bool = False


def resolve_trace_dir(trace_dir: str | os.PathLike[str] | None) -> Path | None:
    """The directory traces go to, or None when tracing is off.

    ``trace_dir=None`` means "ask the environment": ``$STT_TRACE_DIR`` if set
    and not empty. An empty string switches tracing off even when the
    variable is set. The directory is created if needed.

    Raises:
        OSError: an explicitly given directory cannot be created. (A bad
            ``$STT_TRACE_DIR`` is only logged: observability must not stop a
            service from starting.)
    """
    explicit = trace_dir is not None
    raw = os.fspath(trace_dir) if trace_dir is not None else os.environ.get(TRACE_DIR_ENV_VAR)
    if not raw:
        return None
    directory = Path(raw).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if explicit:
            raise
        logger.warning("tracing off: cannot create $%s directory %s: %s",
                       TRACE_DIR_ENV_VAR, directory, exc)
        return None
    return directory


def _redact(value: object) -> object:
    """``json.dumps`` fallback: never write raw bytes (they could be key material)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"redacted_bytes": len(value)}
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return repr(value)


def _node_label(node_id: bytes) -> str:
    """A short, file-name-safe label for the node (its id is not secret)."""
    try:
        text = node_id.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    if text and _SAFE_LABEL.fullmatch(text):
        return text
    return node_id[:8].hex() or "node"


class TraceWriter:
    """A trace sink writing one JSON-lines file per session into ``directory``.

    Args:
        directory: where the files go (must exist; see :func:`resolve_trace_dir`).
        node_id: this node's id, written in every header (not secret).
        now: the current time on the clock the core's ``now`` values come
            from; pairs it with ``wall_clock()`` to date the files.
        session_id_of: looks up a session's 8-byte id by ref (typically
            ``Endpoint.session_id``); without it files carry no session id.
            May also be set later through the attribute of the same name.
        wall_clock: epoch seconds (``time.time``), only for headers and names.
        batch_events: lines a session buffers before writing them.
        max_buffered_bytes: bound on everything buffered; beyond it all is written.
        max_closed_sessions: closed sessions remembered for late (draining) events.

    Call :meth:`close` when the node stops; it writes whatever is buffered.
    """

    def __init__(self, directory: str | os.PathLike[str], *, node_id: bytes, now: float,
                 session_id_of: Callable[[SessionRef], bytes | None] | None = None,
                 wall_clock: Callable[[], float] = time.time,
                 batch_events: int = DEFAULT_BATCH_EVENTS,
                 max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
                 max_closed_sessions: int = DEFAULT_MAX_CLOSED_SESSIONS) -> None:
        if batch_events < 1 or max_buffered_bytes < 1 or max_closed_sessions < 0:
            raise ValueError("batch_events and max_buffered_bytes must be >= 1, "
                             "max_closed_sessions >= 0")
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"trace directory {self.directory} does not exist")
        self.node_id = bytes(node_id)
        self.session_id_of = session_id_of
        self.enabled = True
        """The ``TraceSink`` switch: False after :meth:`close` or a write failure."""
        self.stats = TraceWriterStats()
        self._wall_offset = wall_clock() - now
        self._label = _node_label(self.node_id)
        self._batch_events = batch_events
        self._max_buffered_bytes = max_buffered_bytes
        self._max_closed = max_closed_sessions
        self._files: dict[int, _SessionFile] = {}
        self._closed_order: OrderedDict[int, None] = OrderedDict()
        self._forgotten: OrderedDict[int, None] = OrderedDict()
        self._buffered_bytes = 0
        self._paths: list[Path] = []

    @property
    def paths(self) -> list[Path]:
        """Every file this writer created (current names), in creation order."""
        return list(self._paths)

    # -- the TraceSink protocol ---------------------------------------------------

    def event(self, now: float, ref: int, name: str, data: dict[str, object]) -> None:
        """Buffer one event of session ``ref`` (0: endpoint-wide); write a full batch."""
        if not self.enabled:
            return
        record = self._files.get(ref)
        if record is None:
            if ref in self._forgotten:
                self.stats.events_dropped += 1
                return
            record = self._files[ref] = _SessionFile(ref=ref, origin=now)
        line = json.dumps({"time": round(now - record.origin, 6), "name": name, "data": data},
                          separators=(",", ":"), default=_redact)
        record.lines.append(line)
        size = len(line) + 1
        record.buffered_bytes += size
        self._buffered_bytes += size
        if name == "session_state_changed" and ref != 0:
            self._on_state_change(record, data)
        elif len(record.lines) >= self._batch_events:
            self._write(record)
        if self._buffered_bytes > self._max_buffered_bytes:
            self.flush()

    def _on_state_change(self, record: _SessionFile, data: dict[str, object]) -> None:
        """A session became established (learn its id) or closed (write it out)."""
        self._learn_session_id(record)
        if data.get("new") == "closed":
            self.session_closed(record.ref)
        elif len(record.lines) >= self._batch_events:
            self._write(record)

    def session_closed(self, ref: int) -> None:
        """Session ``ref`` ended: write its file now; it is forgotten later.

        The node calls this on ``SessionClosed`` (not every way a session ends
        is traced as a ``closed`` state change). Events that still arrive for
        the session while it drains are appended to the same file. Idempotent.
        """
        record = self._files.get(ref)
        if record is None or record.closed or ref == 0:
            return
        record.closed = True
        self._write(record)
        self._closed_order[ref] = None
        self._forget_old_sessions()

    # -- writing ------------------------------------------------------------------

    def flush(self) -> None:
        """Write every buffered line now (the node calls it on exit through :meth:`close`)."""
        for record in list(self._files.values()):
            if record.lines:
                self._write(record)

    def close(self) -> None:
        """Write everything and stop tracing; later events are ignored. Idempotent."""
        if self.enabled:
            self.flush()
        self.enabled = False
        self._files.clear()
        self._closed_order.clear()
        self._buffered_bytes = 0

    def _write(self, record: _SessionFile) -> None:
        """Append the record's buffered lines to its file (creating it with a header)."""
        if not self.enabled:
            return
        self._learn_session_id(record)
        try:
            if record.path is None:
                record.path = self._create(record)
            elif record.session_id is not None and not record.named_with_id:
                record.path = self._rename(record)
            count = len(record.lines)
            with record.path.open("a", encoding="utf-8") as file:
                file.write("\n".join(record.lines) + "\n")
        except OSError as exc:
            self._fail(exc)
            return
        self.stats.events_written += count
        self.stats.batches_written += 1
        self._buffered_bytes -= record.buffered_bytes
        record.lines.clear()
        record.buffered_bytes = 0

    def _fail(self, exc: OSError) -> None:
        logger.warning("tracing off after a write error in %s: %s", self.directory, exc)
        self.stats.events_dropped += sum(len(r.lines) for r in self._files.values())
        self.enabled = False
        self._files.clear()
        self._buffered_bytes = 0

    def _learn_session_id(self, record: _SessionFile) -> None:
        if record.session_id is None and record.ref != 0 and self.session_id_of is not None:
            record.session_id = self.session_id_of(SessionRef(record.ref)) or None

    def _file_name(self, record: _SessionFile, suffix: str = "") -> str:
        start = datetime.fromtimestamp(record.origin + self._wall_offset, UTC)
        stamp = start.strftime("%Y%m%dT%H%M%S.") + f"{start.microsecond // 1000:03d}Z"
        if record.ref == 0:
            what = "endpoint"
        else:
            what = f"ref{record.ref}"
            if record.session_id is not None:
                what += f"-{record.session_id.hex()}"
        return f"{stamp}-{self._label}-{what}{suffix}.jsonl"

    def _free_path(self, record: _SessionFile) -> Path:
        """A name nobody uses yet (two nodes of one process may share a directory)."""
        path = self.directory / self._file_name(record)
        attempt = 1
        while path.exists():
            attempt += 1
            path = self.directory / self._file_name(record, f"-{attempt}")
        return path

    def _create(self, record: _SessionFile) -> Path:
        path = self._free_path(record)
        record.named_with_id = record.session_id is not None
        with path.open("x", encoding="utf-8") as file:
            file.write(json.dumps(self._header(record), separators=(",", ":")) + "\n")
        self._paths.append(path)
        self.stats.files_created += 1
        logger.debug("trace file %s", path)
        return path

    def _rename(self, record: _SessionFile) -> Path:
        """The session id arrived after the first batch: put it in the name and the file."""
        old = record.path
        if old is None or record.session_id is None:
            raise RuntimeError("renaming a trace file that was never created")
        new = self._free_path(record)
        os.replace(old, new)
        record.named_with_id = True
        self._paths[self._paths.index(old)] = new
        note = {"time": 0.0, "name": "session_identified",
                "data": {"session_id": record.session_id.hex()}}
        record.lines.insert(0, json.dumps(note, separators=(",", ":")))
        return new

    def _header(self, record: _SessionFile) -> dict[str, object]:
        start = record.origin + self._wall_offset
        return {
            "format": TRACE_FORMAT,
            "version": TRACE_VERSION,
            "node_id": self.node_id.hex(),
            "scope": "endpoint" if record.ref == 0 else "session",
            "ref": record.ref,
            "session_id": None if record.session_id is None else record.session_id.hex(),
            "start_time": round(start, 6),
            "start_time_utc": datetime.fromtimestamp(start, UTC).isoformat(),
        }

    def _forget_old_sessions(self) -> None:
        """Bound memory: drop the oldest closed sessions (written out already)."""
        while len(self._closed_order) > self._max_closed:
            ref, _ = self._closed_order.popitem(last=False)
            record = self._files.get(ref)
            if record is not None and record.lines:
                self._write(record)  # its late (draining) events
            self._files.pop(ref, None)
            self._forgotten[ref] = None
            while len(self._forgotten) > 4 * max(self._max_closed, 1):
                self._forgotten.popitem(last=False)
