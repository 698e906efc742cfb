"""The core frees a closed session by reference counting: no reference cycles.

A server process holding many sessions pays for every object the cyclic
garbage collector must scan, and ``gc.freeze()`` (docs/guides/tuning.md, "The
garbage collector") is safe only if what is closed later does not need the
collector. The binding's side of the same promise is tested in
``tests/stt_anyio/test_session_gc.py``.
"""

from __future__ import annotations

import gc

from stt_core import MessageReceived, SessionEstablished

from .helpers import SERVER_ADDR, Pair


def core_objects(objects: list[object]) -> list[str]:
    return sorted({type(o).__name__ for o in objects
                   if type(o).__module__.startswith("stt_core")})


def test_closed_sessions_leave_nothing_for_the_cyclic_collector() -> None:
    pair = Pair()
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for i in range(10):
            ref = pair.client.connect(SERVER_ADDR, pair.now)
            assert pair.run_for(1.0, stop=lambda: any(isinstance(e, SessionEstablished)
                                                      for e in pair.client_events))
            stream = pair.client.open_stream(ref, purpose="gc")
            pair.client.send_message(ref, stream, b"message %d" % i)
            assert pair.run_for(1.0, stop=lambda: any(isinstance(e, MessageReceived)
                                                      for e in pair.server_events))
            pair.client.close_session(ref, now=pair.now)
            pair.run_for(30.0, stop=lambda: not pair.client.sessions
                         and not pair.server.sessions)
            assert not pair.client.sessions and not pair.server.sessions
            pair.client_events.clear()
            pair.server_events.clear()
        gc.collect()
        garbage = list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert core_objects(garbage) == []
