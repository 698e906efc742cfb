"""Config: every tunable of an endpoint, validated once, frozen afterwards.

Each limit has a unit in its name (``_timeout``/``_interval`` in seconds,
``_size``/``_bytes`` in bytes). Change values with ``dataclasses.replace``.
Secrets (``shared_seed``, ``node_seed``) never appear in ``repr``.

The config does no I/O; loading secrets from files is the bindings' job.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from .errors import ConfigError

__all__ = ["AEAD_ALGORITHMS", "CONGESTION_ALGORITHMS", "Config", "derive_node_id"]

AEAD_ALGORITHMS = ("aes-256-gcm", "chacha20-poly1305")
CONGESTION_ALGORITHMS = ("newreno", "cubic", "bbr")

MIN_DATAGRAM_SIZE = 1200
"""Smallest datagram every path must carry (the QUIC minimum, RFC 9000 §14)."""
MAX_DATAGRAM_SIZE = 65507
"""Largest UDP payload over IPv4."""
MAX_NODE_ID_SIZE = 64
INITIAL_STREAM_CREDIT = 64 * 1024
"""Bytes a sender may put on a new stream before the peer's first MAX_STREAM_DATA."""
INITIAL_SESSION_CREDIT = 1024 * 1024
"""Bytes a sender may send on a new session before the peer's first MAX_DATA."""
GRANT_UNASKED_AT = INITIAL_SESSION_CREDIT // 4
"""Session bytes received after which a fresh session's window grant goes out even
though this side has sent nothing ack-eliciting (protocol.md §5.4). A sender in slow
start cannot send the remaining three quarters of its initial credit within the
round trip the grant needs to reach it, so it never waits for the grant."""


def derive_node_id(node_seed: bytes) -> bytes:
    """Node id of a node configured by seed: 16 bytes of SHA-256 over a label and the seed.

    Why hash: the seed may be long and secret-ish; the id travels (encrypted) in
    the handshake and must not reveal it.
    """
    return hashlib.sha256(b"stt node id v1" + node_seed).digest()[:16]


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Endpoint configuration. Only ``shared_seed`` and an identity are required."""

    shared_seed: bytes = field(repr=False)
    """Secret shared by every node allowed to talk to this one (>= 8 bytes)."""
    node_id: bytes = b""
    """This node's id (1-64 bytes). Derived from ``node_seed`` when empty."""
    node_seed: bytes | None = field(default=None, repr=False)
    """Alternative to ``node_id``: the id is derived from this seed."""
    server_mode: bool = False
    """Accept sessions initiated by peers."""
    aead: str = "aes-256-gcm"
    """Packet protection: ``aes-256-gcm`` (default) or ``chacha20-poly1305``.

    Both peers must use the same one: the initiator names it in its HELLO, and
    a responder configured otherwise refuses (``connect`` raises
    ``ConnectionRefusedError``, protocol.md §6.4)."""
    congestion_control: str = "newreno"
    """Congestion controller: ``newreno``, ``cubic`` or ``bbr``."""

    connect_timeout: float = 10.0
    """Seconds ``connect`` waits for the handshake before giving up."""
    handshake_retransmit_interval: float = 0.25
    """First retransmission delay of a handshake message; doubles each time."""
    keep_alive_interval: float = 10.0
    """Send KEEP_ALIVE after this many seconds without sending anything."""
    idle_timeout: float = 30.0
    """Declare the session dead after this many seconds without hearing the peer."""
    close_timeout: float = 3.0
    """Seconds a graceful close waits for the peer's acknowledgement."""

    max_datagram_size: int = 1200
    """Largest datagram we send (bytes, 1200-65507). Raise it for loopback/LAN."""
    pmtu_probe_limit: int = 1452
    """Largest datagram size path MTU discovery may probe for (bytes, 1200-65507).

    After the handshake the sender tries larger datagrams (padded probes) up to
    this size and keeps the largest the peer acknowledged (protocol.md §8.3).
    1452 suits the internet (1500-byte Ethernet); LANs with jumbo frames and
    loopback carry far more, and raising the limit there cuts per-packet cost.
    """
    max_frame_size: int = 16384
    """Default largest DATA frame payload per stream (bytes, up to 65536)."""
    max_message_size: int = 16 * 1024 * 1024
    """Largest message a peer may send us (bytes); a larger one resets that stream."""

    max_sessions: int = 100_000
    """Sessions (established plus handshaking) this endpoint holds at once."""
    max_pending_handshakes: int = 1024
    """Half-open handshakes held at once; past this HELLOs are dropped."""
    cookie_threshold: int = 256
    """Pending handshakes above which the server demands a stateless cookie."""
    max_streams_per_session: int = 1024
    """Concurrent streams a peer may open on one session.

    Announced to the peer in the handshake, whose ``open_stream`` refuses past
    it (protocol.md §5.1); the peer's own value bounds this side's opens."""
    stream_receive_window: int = 1024 * 1024
    """Bytes a peer may send on one stream beyond what we consumed."""
    session_receive_window: int = 16 * 1024 * 1024
    """Bytes a peer may send on all streams of a session beyond what we consumed."""
    stream_send_buffer_bytes: int = 1024 * 1024
    """Bytes buffered per stream (unsent + unacknowledged) before backpressure."""
    session_send_buffer_bytes: int = 32 * 1024 * 1024
    """Bytes buffered on all streams of a session before backpressure."""

    key_update_interval_packets: int = 1 << 20
    """Packets sent under one key before the sender rotates keys."""
    resume_token_lifetime: float = 86400.0
    """Seconds a resume token stays valid."""
    auto_consume: bool = True
    """Return flow-control credit as soon as a message event is produced.

    Bindings that queue messages for the application set this False and call
    ``Endpoint.consume`` when the application takes each message, so that a
    slow reader pushes back on the sender instead of growing a queue.
    """

    def __post_init__(self) -> None:
        if not isinstance(self.shared_seed, (bytes, bytearray)) or len(self.shared_seed) < 8:
            raise ConfigError("shared_seed must be bytes of length >= 8")
        node_id = self.node_id
        if not node_id:
            if not self.node_seed:
                raise ConfigError("give node_id (1-64 bytes) or node_seed")
            object.__setattr__(self, "node_id", derive_node_id(bytes(self.node_seed)))
        elif not isinstance(node_id, bytes) or len(node_id) > MAX_NODE_ID_SIZE:
            raise ConfigError(f"node_id must be 1-{MAX_NODE_ID_SIZE} bytes")
        if self.aead not in AEAD_ALGORITHMS:
            raise ConfigError(f"aead must be one of {AEAD_ALGORITHMS}, not {self.aead!r}")
        if self.congestion_control not in CONGESTION_ALGORITHMS:
            raise ConfigError(
                f"congestion_control must be one of {CONGESTION_ALGORITHMS}, "
                f"not {self.congestion_control!r}"
            )
        if not MIN_DATAGRAM_SIZE <= self.max_datagram_size <= MAX_DATAGRAM_SIZE:
            raise ConfigError(
                f"max_datagram_size must be {MIN_DATAGRAM_SIZE}-{MAX_DATAGRAM_SIZE} bytes"
            )
        if not MIN_DATAGRAM_SIZE <= self.pmtu_probe_limit <= MAX_DATAGRAM_SIZE:
            raise ConfigError(
                f"pmtu_probe_limit must be {MIN_DATAGRAM_SIZE}-{MAX_DATAGRAM_SIZE} bytes"
            )
        if not 64 <= self.max_frame_size <= 65536:
            raise ConfigError("max_frame_size must be 64-65536 bytes")
        for name in ("connect_timeout", "handshake_retransmit_interval",
                     "keep_alive_interval", "idle_timeout", "close_timeout",
                     "resume_token_lifetime"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0 seconds")
        if self.keep_alive_interval >= self.idle_timeout:
            raise ConfigError("keep_alive_interval must be shorter than idle_timeout")
        for name in ("max_message_size", "max_sessions", "max_pending_handshakes",
                     "max_streams_per_session", "stream_receive_window",
                     "session_receive_window", "stream_send_buffer_bytes",
                     "session_send_buffer_bytes", "key_update_interval_packets"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if self.stream_receive_window < INITIAL_STREAM_CREDIT:
            raise ConfigError(f"stream_receive_window must be >= {INITIAL_STREAM_CREDIT} bytes "
                              "(the credit every peer may use before hearing our limit)")
        if self.session_receive_window < INITIAL_SESSION_CREDIT:
            raise ConfigError(f"session_receive_window must be >= {INITIAL_SESSION_CREDIT} "
                              "bytes (the credit every peer may use before hearing our limit)")
        if self.cookie_threshold < 0:
            raise ConfigError("cookie_threshold must be >= 0")
