"""CLI set-up: where the shared secret, the node id and the peer address come from.

Owns the rules the ``stt`` command applies before any socket exists:

1. The shared seed is a secret, so it never comes from a command-line value
   (those end up in shell history and in ``ps`` output for every local user).
   It comes from ``--seed-file PATH`` or, failing that, the environment
   variable ``STT_SHARED_SEED``. ``stt demo`` and ``stt bench`` may fall back to
   a random in-process seed, because both of their nodes live in one process.
2. The node id is not secret: ``--node-id TEXT`` or, when absent, derived
   from the host name, the role and the process id, so that two commands on
   one machine never present the same id.
3. Peer addresses are ``HOST:PORT`` (``[v6]:PORT`` for IPv6 literals).

It must not know about click, rich or the node API: the commands turn the
:class:`SetupError` raised here into a usage message.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "BACKENDS",
    "SEED_ENV_VAR",
    "SeedSource",
    "SetupError",
    "available_backends",
    "derived_node_seed",
    "load_shared_seed",
    "parse_node_id",
    "parse_peer_address",
    "show_node_id",
]

SEED_ENV_VAR = "STT_SHARED_SEED"
"""Environment variable holding the shared seed (UTF-8 text)."""
MIN_SEED_BYTES = 8
"""Shortest shared seed the core accepts (``stt_core.Config``)."""
MAX_SEED_FILE_BYTES = 64 * 1024
"""A seed file larger than this is surely the wrong file."""
MAX_NODE_ID_BYTES = 64
BACKENDS = ("asyncio", "trio")


class SetupError(Exception):
    """A command-line setting is missing or invalid; the message says which and why."""


@dataclass(frozen=True, slots=True)
class SeedSource:
    """The shared seed and a human description of where it came from."""

    seed: bytes = field(repr=False)
    """The secret itself; never printed."""
    origin: str
    """E.g. ``"seed file keys/seed"``, ``"$STT_SHARED_SEED"`` or ``"random (in-process)"``."""
    warning: str | None = None
    """Something the user should fix (a seed file others can read), if any."""


def load_shared_seed(seed_file: Path | None, *, environ: Mapping[str, str] | None = None,
                     random_fallback: Callable[[int], bytes] | None = None) -> SeedSource:
    """The shared seed from ``seed_file``, else ``$STT_SHARED_SEED``, else the fallback.

    A seed file holds the seed as bytes; surrounding whitespace (the newline
    an editor or ``echo`` adds) is stripped.

    Args:
        seed_file: path given with ``--seed-file``, or None.
        environ: the environment to read (default ``os.environ``).
        random_fallback: ``random_bytes(n)`` used when neither source is set
            (demo and bench); None means a missing seed is an error.

    Raises:
        SetupError: the file cannot be read, a seed is too short, or no seed
            is configured and there is no fallback.
    """
    env = os.environ if environ is None else environ
    if seed_file is not None:
        seed, warning = _read_seed_file(seed_file)
        return _checked(SeedSource(seed, f"seed file {seed_file}", warning))
    value = env.get(SEED_ENV_VAR)
    if value:
        return _checked(SeedSource(value.strip().encode(), f"${SEED_ENV_VAR}"))
    if random_fallback is not None:
        return SeedSource(random_fallback(32), "random (generated in-process; "
                                               "nodes outside this process cannot join)")
    raise SetupError(f"no shared seed: pass --seed-file PATH or set {SEED_ENV_VAR} "
                     "(a seed is never accepted as a command-line value)")


def _read_seed_file(path: Path) -> tuple[bytes, str | None]:
    """The stripped contents of ``path`` and a warning if others may read it."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise SetupError(f"seed file {path} is not a regular file")
        if info.st_size > MAX_SEED_FILE_BYTES:
            raise SetupError(f"seed file {path} is larger than {MAX_SEED_FILE_BYTES} bytes")
        data = path.read_bytes()
    except OSError as exc:
        raise SetupError(f"cannot read seed file {path}: {exc.strerror or exc}") from exc
    warning = None
    if os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        warning = (f"seed file {path} is accessible by other users; "
                   f"consider 'chmod 600 {path}'")
    return data.strip(), warning


def _checked(source: SeedSource) -> SeedSource:
    if len(source.seed) < MIN_SEED_BYTES:
        raise SetupError(f"the shared seed from {source.origin} is shorter than "
                         f"{MIN_SEED_BYTES} bytes")
    return source


def parse_node_id(text: str | None) -> bytes | None:
    """``--node-id`` as bytes (UTF-8), or None when not given.

    Raises:
        SetupError: empty or longer than 64 bytes.
    """
    if text is None:
        return None
    value = text.encode()
    if not 1 <= len(value) <= MAX_NODE_ID_BYTES:
        raise SetupError(f"--node-id must be 1-{MAX_NODE_ID_BYTES} bytes of UTF-8")
    return value


def show_node_id(node_id: bytes | None) -> str:
    """A node id for people: its text if it is printable UTF-8, else hex (derived ids)."""
    if not node_id:
        return "-"
    try:
        text = node_id.decode()
    except UnicodeDecodeError:
        return node_id.hex()
    return text if text.isprintable() else node_id.hex()


def derived_node_seed(role: str) -> bytes:
    """A node seed for a node without ``--node-id``: host name, role and process id.

    Why not random: the id then says where a session comes from in the
    peer's log; why the pid: two commands on one machine must differ.
    """
    return f"{socket.gethostname()}/{role}/{os.getpid()}".encode()


def parse_peer_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` as ``(host, port)``.

    Raises:
        SetupError: no port, a port outside 1-65535, or an empty host.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise SetupError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise SetupError(f"write IPv6 addresses as [ADDRESS]:PORT, got {text!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise SetupError(f"port must be a number, got {port_text!r}") from None
    if not 1 <= port <= 65535 or not host:
        raise SetupError(f"expected HOST:PORT with a port in 1-65535, got {text!r}")
    return host, port


def available_backends(requested: str) -> tuple[list[str], list[str]]:
    """Backends to run for ``requested`` (a name or ``"both"``) and those skipped.

    trio is an optional dependency: a skipped backend is one that is not
    installed; asking for it by name is an error instead.

    Raises:
        SetupError: an explicitly requested backend is not installed.
    """
    wanted = list(BACKENDS) if requested == "both" else [requested]
    usable: list[str] = []
    skipped: list[str] = []
    for name in wanted:
        if name == "trio" and not _trio_installed():
            if requested != "both":
                raise SetupError("the trio backend needs the 'trio' package "
                                 "(pip install 'stt[trio]')")
            skipped.append(name)
        else:
            usable.append(name)
    return usable, skipped


def _trio_installed() -> bool:
    try:
        import trio  # noqa: F401
    except ImportError:
        return False
    return True
