"""Idle sessions through the binding, under asyncio and trio: keep-alives only.

Sessions that carry nothing must stay up on their keep-alives alone, cost two
datagrams per keep-alive interval (a KEEP_ALIVE and its answer), and leave the
node's timer asleep in between: a timer that spun, or a handshake message
resent after the session was up (protocol.md Appendix B item 28), would show
here as datagrams, pump steps or CPU.
"""

from __future__ import annotations

import time

import anyio
import pytest

from stt_anyio import open_node

from .round_trips import count_calls

pytestmark = pytest.mark.anyio

SEED = b"idle test shared seed"
SESSIONS = 20
KEEP_ALIVE = 0.25
QUIET = {"max_datagram_size": 1452, "keep_alive_interval": KEEP_ALIVE, "idle_timeout": 1.0}
IDLE_SPELL = 2.0
"""Twice the idle timeout: only keep-alives can keep the sessions up this long."""


async def test_idle_sessions_cost_keep_alives_only() -> None:
    async with open_node(node_id=b"server", shared_seed=SEED, config_overrides=QUIET) as server, \
            open_node(node_id=b"client", shared_seed=SEED, server_mode=False,
                      config_overrides=QUIET) as client:
        sessions = [await client.connect(server.local_address, timeout=5)
                    for _ in range(SESSIONS)]
        accepted = [await server.accept(timeout=5) for _ in range(SESSIONS)]
        await anyio.sleep(0.5)  # the handshakes' last ACKs and resume tokens
        nodes = (client, server)
        steps = [count_calls(node, "_step") for node in nodes]
        sent_before = sum(node.endpoint.stats.datagrams_sent for node in nodes)
        cpu_before, wall_before = time.process_time(), time.monotonic()
        await anyio.sleep(IDLE_SPELL)
        cpu = time.process_time() - cpu_before
        elapsed = time.monotonic() - wall_before
        sent = sum(node.endpoint.stats.datagrams_sent for node in nodes) - sent_before

        assert not [s for s in sessions + accepted if s.closed], "an idle session ended"
        intervals = elapsed / KEEP_ALIVE
        # Two datagrams per session and interval; the spell's two ends may each
        # cut one exchange, and a session may stretch an interval a little.
        assert SESSIONS * 2 * (intervals - 2) <= sent <= SESSIONS * 2 * (intervals + 1), \
            f"{sent} datagrams from {SESSIONS} idle sessions in {intervals:.1f} keep-alives"
        # The timer fires for keep-alives (and ACK delays), not in a loop.
        assert sum(calls[0] for calls in steps) <= 2 * SESSIONS * 3 * (intervals + 1)
        # Both nodes share this process: 20 sessions' keep-alives take a few
        # milliseconds a second, a busy loop all of it.
        assert cpu < 0.5 * elapsed, f"{cpu:.2f} s of CPU in {elapsed:.2f} s of idling"
