"""Streams: the public face of message-oriented streams with byte-offset reliability.

Each STT stream carries a sequence of application messages. On the wire a
stream is one byte sequence, and every message is written to it as
``varint(len(message)) || message`` (RFC 9000 §16 varints), so messages of
any size (up to ``Config.max_message_size``) are cut into DATA frames of at
most ``max_frame_size`` bytes and reassembled by offset (protocol.md §5).

The work is split by direction, as aioquic keeps sender and receiver apart:

* :class:`StreamSender` (:mod:`stt_core.stream_send`): framing, the
  retransmission buffer, per-message delivery (``MessageDelivered``).
* :class:`StreamReceiver` (:mod:`stt_core.stream_receive`): reassembly,
  message parsing, per-stream credit (MAX_STREAM_DATA). Its module docstring
  states the flow-control rule: bytes of an incomplete message release
  credit as soon as they are in order (a message larger than the window would
  otherwise deadlock); a completed message holds its whole payload's credit
  until the application consumes it. Memory per stream stays below
  ``window + max_message_size``.
* :class:`SessionFlowControl` (:mod:`stt_core.flow`): the session-level
  credit (MAX_DATA) in both directions, fed with the same released bytes.

None of these know about packets, timers, congestion or crypto: they are pure
buffers that ``session.py`` wires to frames. Typical session wiring::

    # sending
    credit = min(session_flow.available(), sender.stream_credit)
    chunk = sender.next_frame(room_in_packet, credit)     # (offset, payload, fin)
    session_flow.on_sent(new_highest_sent - old_highest_sent)
    # on ACK / LOST of that frame
    for message_id in sender.on_acked(offset, len(payload), fin): ...MessageDelivered
    sender.on_lost(offset, len(payload), fin)
    # receiving a DATA frame
    session_flow.on_new_bytes(receiver.on_data(offset, data, fin))
    for message in receiver.pop_messages(): ...MessageReceived
    receiver.consume(len(message))                        # when the app takes it
    session_flow.consume(receiver.take_released())          # signed
    receiver.credit_update(), session_flow.credit_update()  # -> MAX_STREAM_DATA, MAX_DATA
"""

from __future__ import annotations

from .flow import SessionFlowControl
from .stream_receive import StreamReceiver
from .stream_send import StreamSender

__all__ = ["SessionFlowControl", "StreamReceiver", "StreamSender"]
