"""Packetizer: the send path of an established session (protocol.md §4, §6).

Owns how frames are packed into protected packets and what happens to each
frame when its packet is acknowledged or declared lost: every sent frame
leaves a small record on the ``SentPacket``; ACK and loss replay those records
(stream bytes acknowledged or re-queued, control frames re-sent with their
current value). Reliability follows the frame, not the packet.

Packing order inside one packet: ACK, control frames, then stream data by
priority (lower first), round-robin among streams of equal priority.
ACK-only packets are not congestion controlled; everything else is, except
PTO probes (RFC 9002 §7.5). Control frames are small and are let through a
closed congestion window so that credit updates can never deadlock.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from .config import GRANT_UNASKED_AT
from .crypto import TAG_SIZE, PacketProtection, next_generation_secret
from .events import Address, MessageDelivered
from .recovery import SentPacket
from .scratch import SCRATCH_MIN_PLAINTEXT
from .states import AMPLIFICATION_FACTOR, SessionState
from .stream_io import maybe_forget, release_send_buffer
from .wire import (
    ACK_ELICITING_EXEMPT,
    AckFrame,
    CloseFrame,
    Frame,
    FrameType,
    LimitFrame,
    NackFrame,
    PathFrame,
    SimpleFrame,
    StreamOpenFrame,
    data_frame_overhead,
    encode_data_frame_header,
    encode_session_header,
    parse_frames,
)

if TYPE_CHECKING:
    from collections import deque

    from .session import Session
    from .stream_table import Stream

__all__ = ["datagrams", "on_ack_frame", "on_nack_frame", "requeue_lost"]

_DATA = 0
_CONTROL = 1
_PMTU_PROBE = 2
KEEP_ALIVE = SimpleFrame(FrameType.KEEP_ALIVE)
"""The KEEP_ALIVE frame (ack-eliciting, no fields); one shared instance."""
KEEP_ALIVE_ACK = SimpleFrame(FrameType.KEEP_ALIVE_ACK)
IMMEDIATE_ACK = SimpleFrame(FrameType.IMMEDIATE_ACK)
"""Asks the peer to acknowledge at once (protocol.md §4.5); rides with a confirmed
message's last byte, and again with any retransmission of that byte."""
_IMMEDIATE_ACK_BYTES = IMMEDIATE_ACK.encode()
_NOT_RETRANSMITTED = frozenset((
    FrameType.KEEP_ALIVE, FrameType.KEEP_ALIVE_ACK, FrameType.IMMEDIATE_ACK,
    FrameType.PATH_CHALLENGE,
    FrameType.PATH_RESPONSE, FrameType.ERROR,
))
_SENDING_STATES = (SessionState.ESTABLISHED, SessionState.CLOSING)
PMTU_PROBE_SIZES = (1452, 8952, 16384, 32768, 65507)
"""Datagram sizes path MTU discovery tries, in order (Ethernet, jumbo frames, loopback)."""
BLACK_HOLE_PTO_COUNT = 2
"""Consecutive probe timeouts after which a sender whose datagram size was raised
falls back to the configured size (protocol.md §8.3): its full-size packets may be
falling into a black hole left by a path whose MTU shrank."""
CONTROL_SCAN_FLOOR = 32
"""Below this many bytes left, a packet stops looking for control frames that fit."""
MAX_NACKED_PER_FRAME = 1024
"""Packet numbers one NACK frame may declare lost."""
MIN_USEFUL_DATA = 32
"""Do not start a DATA frame in fewer bytes than this."""
MAX_DATAGRAMS_PER_FLUSH = 256
"""Bound one flush so a fast sender cannot starve the binding's receive side."""

Outgoing = list[tuple[bytes | memoryview, Address]]
"""Datagrams of one flush and their destinations; a large one may be a view of a
buffer lent until the next flush (``Endpoint.datagrams_to_send(..., lend=True)``)."""


def datagrams(session: Session, now: float) -> Outgoing:
    """Everything this session wants to send now (may be empty)."""
    if session.send_protection is None:
        return []
    out: Outgoing = []
    if session.state is SessionState.CLOSED:
        packet = _build_packet(session, now, allow_data=False)
        session.control.clear()
        if packet is not None:
            out.append((packet, session.address))
        return out
    _send_path_probes(session, now, out)
    _send_pmtu_probe(session, now, out)
    if session.close_frame_due() and session.close_frame is not None:
        session.close_frame_queued = True
        session.control.append(session.close_frame)
    if session.keep_alive_due(now) and not session.control:
        session.control.append(KEEP_ALIVE)
    if session.keep_alive_ack_due:
        session.keep_alive_ack_due = False
        session.control.append(KEEP_ALIVE_ACK)
    while len(out) < MAX_DATAGRAMS_PER_FLUSH and _may_send(session, now):
        packet = _build_packet(session, now, allow_data=True)
        if packet is None:
            break
        out.append((packet, session.address))
    return out


def output_due(session: Session, now: float, *, patient: bool = True) -> bool:
    """True unless :func:`datagrams` would certainly return nothing now. Pure.

    Errs towards True: anything but an established session with no probe,
    keep-alive or close pending goes to the full test, :func:`datagrams`. One
    exception the other way: an ACK due only because the peer asked for it
    (IMMEDIATE_ACK) counts as not due, see ``Endpoint.output_due``.
    """
    if session.state is not SessionState.ESTABLISHED or session.hs_send_due \
            or session.probes or session.keep_alive_ack_due \
            or session.close_frame is not None:
        return True
    if _pmtu_probe_due(session):
        return True
    return session.keep_alive_due(now) or _may_send(session, now, patient=patient)


def _may_send(session: Session, now: float, *, patient: bool = False) -> bool:
    """False when :func:`_build_packet` would find nothing to put in a packet.

    A packet carries an ACK that is due, control frames, stream data or a
    probe; without any of them it is not built. On a request/response
    exchange two of every three packing attempts find nothing (the flush
    after a receive whose ACK waits for the reply, and the attempt after the
    reply's packet), and this test costs a fraction of finding that out
    through the packing itself. True does not promise a packet (the pacer or
    the congestion window may still hold data back).
    """
    if session.control or session.probe_packets > 0 or session.streams.has_ready():
        return True
    acks = session.acks
    return acks.ack_needed and acks.ack_due(now, patient=patient)


def has_pending_data(session: Session) -> bool:
    """True when stream data waits (used to decide whether to re-flush)."""
    return session.streams.has_ready()


def _send_path_probes(session: Session, now: float, out: Outgoing) -> None:
    """PATH_CHALLENGE to each unvalidated address, within its amplification budget."""
    for addr, probe in session.probes.items():
        retry_interval = max(3 * session.recovery.rtt.smoothed_rtt, 0.05)
        if probe.sent_at >= 0 and now - probe.sent_at < retry_interval:
            continue
        payload = PathFrame(FrameType.PATH_CHALLENGE, probe.challenge).encode()
        header_size = len(encode_session_header(session.send_phase, session.session_id,
                                                session.next_packet_number))
        if probe.bytes_sent + header_size + len(payload) + TAG_SIZE \
                > AMPLIFICATION_FACTOR * probe.bytes_received:
            continue  # checked before sealing: a discarded packet would burn a number
        packet = _seal(session, [payload], [], now, ack_eliciting=False)
        probe.bytes_sent += len(packet)
        probe.sent_at = now
        out.append((packet, addr))


def pmtu_candidates(start: int, limit: int) -> list[int]:
    """The datagram sizes path MTU discovery tries above ``start``, in order."""
    candidates = [size for size in PMTU_PROBE_SIZES if start < size <= limit]
    if start < limit not in candidates:
        candidates.append(limit)
    return candidates


def _pmtu_probe_due(session: Session) -> bool:
    """True when :func:`_send_pmtu_probe` would send a probe now. Pure.

    Never to an unvalidated address (a probe would break the 3x limit), nor
    before the handshake is confirmed (a peer that has not read our
    AUTH_PROOF drops the probe), nor before the application sent anything:
    the size is for our own direction, so a side that only receives, or a
    session that ends before it sends, never needs it. Nor while a probe
    timeout waits for an answer: a probe lost in an outage would end
    discovery, and after a fall-back (:func:`fall_back_datagram_size`) the
    size is won back only once packets get through again.
    """
    return bool(session.pmtu_candidates) and not session.pmtu_probe_size \
        and not session.path.reliable and session.state is SessionState.ESTABLISHED \
        and session.address_validated and session.handshake is None \
        and session.stats.messages_sent > 0 and session.recovery.pto_count == 0


def _send_pmtu_probe(session: Session, now: float, out: Outgoing) -> None:
    """Try the next larger datagram size: a padded KEEP_ALIVE (protocol.md §8.3).

    The probe is not counted in flight, so losing it (the path is too narrow)
    is not read as congestion; an ACK raises the path's datagram size.
    """
    if not _pmtu_probe_due(session):
        return
    size = session.pmtu_candidates[0]
    header_size = len(encode_session_header(session.send_phase, session.session_id,
                                            session.next_packet_number))
    padding = size - header_size - TAG_SIZE - 1
    if padding < 0:
        session.pmtu_candidates.pop(0)
        return
    session.pmtu_probe_size = size
    parts: list[bytes | memoryview] = [KEEP_ALIVE.encode(), bytes(padding)]
    out.append((_seal(session, parts, [(_PMTU_PROBE, size)], now, ack_eliciting=True,
                      in_flight=False), session.address))


def _on_pmtu_probe_acked(session: Session, size: int) -> None:
    if size == session.pmtu_probe_size:
        session.pmtu_probe_size = 0
        if session.pmtu_candidates and session.pmtu_candidates[0] == size:
            session.pmtu_candidates.pop(0)
    if size > session.path.max_datagram_size:
        _set_datagram_size(session, size)
        if session.pmtu_learned is not None:
            session.pmtu_learned(session.address, size)
        controller = session.recovery.congestion
        controller.minimum_window = max(controller.minimum_window, 2 * size)
        controller.congestion_window = max(controller.congestion_window, 2 * size)


def _set_datagram_size(session: Session, size: int) -> None:
    session.path = replace(session.path, max_datagram_size=size)
    controller = session.recovery.congestion
    controller.max_datagram_size = size
    controller.pacer.set_max_datagram_size(size)


def fall_back_datagram_size(session: Session) -> None:
    """Probe timeouts in a row on a path whose datagram size discovery raised:
    go back to the configured size (protocol.md §8.3, black-hole detection).

    A path whose MTU shrank (a new route, a tunnel) drops every full-size
    packet, retransmissions and probes included, and without this the session
    would only end by idle timeout. If the timeouts had another cause (an
    outage), discovery starts over and wins the size back with its first
    probes once packets get through.
    """
    base = session.config.max_datagram_size
    if session.path.reliable or session.path.max_datagram_size <= base:
        return
    _set_datagram_size(session, base)
    session.pmtu_probe_size = 0
    session.pmtu_candidates = pmtu_candidates(base, session.config.pmtu_probe_limit)
    session.stats.pmtu_fallbacks += 1
    if session.pmtu_lost is not None:
        session.pmtu_lost(session.address)


def _on_pmtu_probe_lost(session: Session, size: int) -> None:
    if size == session.pmtu_probe_size:
        session.pmtu_probe_size = 0
        session.pmtu_candidates = []  # the path is narrower: stop at what works


def _build_packet(session: Session, now: float, *,
                  allow_data: bool) -> bytes | memoryview | None:
    """Pack one packet, or return None when there is nothing worth sending."""
    max_size = session.path.max_datagram_size
    if not session.address_validated:
        budget = AMPLIFICATION_FACTOR * session.amplification_received - session.amplification_sent
        max_size = min(max_size, budget)
        if max_size < 64:
            return None
    capacity = max_size - 10 - 8 - TAG_SIZE
    parts: list[bytes | memoryview] = []
    records: list[tuple[object, ...]] = []
    probing = session.probe_packets > 0
    recovery = session.recovery
    data_ok = allow_data and session.state in _SENDING_STATES and (
        probing or recovery.can_send())
    queues = session.streams.ready_streams() if data_ok else []
    ready = bool(queues)
    if ready and not probing:
        send_at = recovery.next_send_time(now)
        if send_at > now:
            session.pacing_at = send_at  # the pacer holds data back; the timer wakes us
            ready = False
    acks = session.acks
    if acks.ack_needed:
        deadline = acks.ack_deadline()
        if (deadline is not None and deadline <= now) or session.control or ready or probing:
            built = acks.build_ack(now)
            if built is not None:
                ranges, delay = built
                ack = AckFrame(ranges, delay).encode()
                parts.append(ack)
                capacity -= len(ack)
                if len(ranges) > 1:
                    capacity -= _pack_nack(session, ranges[0].stop, parts)
    has_ack = len(parts)
    grant = None
    grant_encoded = b""
    if session.grant_due and session.state is SessionState.ESTABLISHED:
        # A fresh session's window rides on an ack-eliciting packet, never on a
        # lone ACK (connector.grant_session_window); data decides only once packed.
        grant = session.max_data_frame()
        if session.control or probing or session.data_received >= GRANT_UNASKED_AT:
            session.grant_due = False
            session.control.append(grant)
            grant = None
        else:
            grant_encoded = grant.encode()
            capacity -= len(grant_encoded)  # kept free in case data follows
    remaining, not_eliciting = _pack_control(session, parts, records, capacity)
    if ready:
        remaining = _pack_data(session, queues, parts, records, remaining)
    ack_eliciting = len(parts) > has_ack + not_eliciting
    if grant is not None and ack_eliciting:
        session.grant_due = False
        parts.append(grant_encoded)
        records.append((_CONTROL, grant))
    if probing and not ack_eliciting:
        parts.append(KEEP_ALIVE.encode())
        ack_eliciting = True
    if not parts:
        return None
    if probing and ack_eliciting:
        session.probe_packets -= 1
    return _seal(session, parts, records, now, ack_eliciting=ack_eliciting)


def _pack_nack(session: Session, largest_stop: int, parts: list[bytes | memoryview]) -> int:
    """Name the holes that appeared since the last NACK, so the sender repairs at once.

    Old holes are not repeated: their packets were already declared lost or
    were reordered and arrived. Returns the bytes added.
    """
    fresh = [r for r in session.acks.missing_ranges(limit=8) if r.stop > session.nack_floor]
    session.nack_floor = largest_stop
    if not fresh:
        return 0
    nack = NackFrame(fresh).encode()
    parts.append(nack)
    return len(nack)


def _pack_control(session: Session, parts: list[bytes | memoryview],
                  records: list[tuple[object, ...]],
                  capacity: int) -> tuple[int, int]:
    """Pack queued control frames; returns the capacity left and how many of the
    packed frames do not elicit an ACK (``wire.ACK_ELICITING_EXEMPT``: KEEP_ALIVE_ACK),
    so the sender counts a packet as the receiver will."""
    control = session.control
    if not control:
        return capacity, 0
    not_eliciting = 0
    kept: list[Frame] = []
    for index, frame in enumerate(control):
        encoded = frame.encode()
        if len(encoded) > capacity:
            if capacity < CONTROL_SCAN_FLOOR:
                # The packet is as good as full: leave the rest for the next one
                # instead of trying every queued frame (a long queue made each
                # packet cost as much as the whole queue).
                kept.extend(control[index:])
                break
            kept.append(frame)
            continue
        parts.append(encoded)
        capacity -= len(encoded)
        if frame.frame_type in ACK_ELICITING_EXEMPT:
            not_eliciting += 1
        if frame.frame_type not in _NOT_RETRANSMITTED:
            records.append((_CONTROL, frame))
    session.control = kept
    return capacity, not_eliciting


def _pack_data(session: Session, queues: list[deque[Stream]], parts: list[bytes | memoryview],
               records: list[tuple[object, ...]], capacity: int) -> int:
    for queue in queues:
        # A stream alone at its priority fills the packet with one frame: its
        # frames would be contiguous anyway, and each frame costs the receiver
        # a parse and a reassembly call (4 per 64 KiB datagram at 16 KiB).
        alone = len(queue) == 1
        while queue and capacity >= MIN_USEFUL_DATA:
            stream = queue[0]
            sender = stream.sender
            stream_id = stream.stream_id
            before = sender.highest_sent
            credit = max(0, min(session.peer_max_data - session.data_sent,
                                sender.peer_max_stream_data - before))
            overhead = data_frame_overhead(stream_id, before, capacity)
            chunk = sender.next_frame(capacity - overhead, credit, whole=alone)
            if chunk is None:
                queue.popleft()
                continue
            offset, payload, fin = chunk
            size = len(payload)
            # Header and payload stay apart (no 64 KiB concatenation): sealing
            # writes them into the plaintext buffer one after the other.
            parts.append(encode_data_frame_header(stream_id, offset, size, fin))
            parts.append(payload)
            capacity -= overhead + size
            records.append((_DATA, stream_id, offset, size, fin))
            awaited = sender.ack_request_end
            if awaited and offset < awaited <= offset + size:
                # The last byte of a message its writer waits on: ask for the
                # ACK now, or in the next packet if this one is full.
                if capacity > 0:
                    parts.append(_IMMEDIATE_ACK_BYTES)
                    capacity -= 1
                else:
                    session.control.append(IMMEDIATE_ACK)
            new_bytes = sender.highest_sent - before
            if new_bytes > 0:
                session.data_sent += new_bytes
                stream.bytes_sent += new_bytes
                session.stats.stream_bytes_sent += new_bytes
            else:
                session.stats.retransmitted_bytes += size
            queue.rotate(-1)
        if capacity < MIN_USEFUL_DATA:
            break
    return capacity


def _seal(session: Session, parts: list[bytes | memoryview], records: list[tuple[object, ...]],
          now: float, *, ack_eliciting: bool, in_flight: bool = True) -> bytes | memoryview:
    """Protect the payload under the current key, record it, maybe rotate keys."""
    protection = session.send_protection
    if protection is None:
        raise RuntimeError("sealing without keys")
    pn = session.next_packet_number
    session.next_packet_number = pn + 1
    header = encode_session_header(session.send_phase, session.session_id, pn)
    plaintext: bytes | memoryview
    packet: bytes | memoryview
    if len(parts[-1]) >= SCRATCH_MIN_PLAINTEXT:
        # Large (a packet's last part is its DATA payload or its padding, and
        # summing every part's length would cost a small packet 0.3 us):
        # assembled and sealed in the endpoint's reused buffers, so the packet
        # itself is the only new object (see stt_core.scratch).
        length = sum(map(len, parts))
        scratch = session.scratch
        plaintext = scratch.plaintext.view(length)
        position = 0
        for part in parts:
            end = position + len(part)
            plaintext[position:end] = part
            position = end
        lent = scratch.packets.take(len(header) + length + TAG_SIZE) \
            if scratch.lending else None
        if lent is not None:
            # Sealed in place in a buffer lent to the caller until its next flush.
            lent[:len(header)] = header
            protection.seal_into(pn, header, plaintext, lent[len(header):])
            packet = lent
        else:
            sealed = scratch.sealed.view(length + TAG_SIZE)
            protection.seal_into(pn, header, plaintext, sealed)
            packet = header + sealed
    else:
        plaintext = b"".join(parts)
        packet = header + protection.seal(pn, header, plaintext)
    size = len(packet)
    if session.trace.enabled:
        session.trace.event(now, session.ref, "packet_sent", {
            "packet_number": pn, "size": size, "ack_eliciting": ack_eliciting,
            "frames": [frame.frame_type for frame in parse_frames(bytes(plaintext))[0]],
            "stream_data": [(r[1], r[2], r[3]) for r in records if r[0] == _DATA]})
    session.stats.packets_sent += 1
    session.stats.bytes_sent += size
    if not session.address_validated:
        session.amplification_sent += size
    if ack_eliciting:
        session.last_sent_ack_eliciting = now
        session.recovery.on_packet_sent(SentPacket(pn, now, size, True, in_flight, records))
    session.packets_under_key += 1
    if session.packets_under_key >= session.config.key_update_interval_packets:
        _maybe_update_keys(session, pn)
    return packet


def _maybe_update_keys(session: Session, pn: int) -> None:
    """Rotate our send key once the peer has acknowledged the current phase.

    Waiting for that acknowledgement guarantees the peer has switched to our
    current key before we move again, so it never sees two flips it cannot
    tell apart (protocol.md §6.4).
    """
    largest = session.recovery.largest_acked
    if largest is None or largest < session.send_phase_start:
        return
    session.send_secret = next_generation_secret(session.send_secret)
    session.send_protection = PacketProtection(session.config.aead, session.send_secret)
    session.send_phase ^= 1
    session.send_phase_start = pn + 1
    session.packets_under_key = 0
    session.stats.key_updates += 1
    if session.trace.enabled:
        session.trace.event(session.last_sent_ack_eliciting, session.ref, "key_updated",
                            {"direction": "send", "phase": session.send_phase})


# ---------------------------------------------------------------- feedback from the peer


def on_ack_frame(session: Session, frame: Frame, now: float) -> None:
    """ACK: release acknowledged frames, re-queue lost ones."""
    if not isinstance(frame, AckFrame):
        return
    recovery = session.recovery
    acked, lost = recovery.on_ack_received(frame.ranges, frame.ack_delay, now)
    _release_acked(session, acked, now)
    if lost:
        requeue_lost(session, lost, now)
    if session.trace.enabled:
        rtt = recovery.rtt
        session.trace.event(now, session.ref, "metrics_updated", {
            "latest_rtt": rtt.latest_rtt, "smoothed_rtt": rtt.smoothed_rtt,
            "min_rtt": rtt.min_rtt, "rttvar": rtt.rttvar,
            "congestion_window": recovery.congestion.congestion_window,
            "bytes_in_flight": recovery.bytes_in_flight,
            "acked": [p.packet_number for p in acked]})


def on_nack_frame(session: Session, frame: Frame, now: float) -> None:
    """NACK: the peer reports holes; repair them without waiting for a timer."""
    if not isinstance(frame, NackFrame):
        return
    numbers: list[int] = []
    for r in frame.ranges:  # bounded: a hostile range must not make us enumerate 2**62 numbers
        numbers.extend(r[:MAX_NACKED_PER_FRAME - len(numbers)])
        if len(numbers) >= MAX_NACKED_PER_FRAME:
            break
    lost = session.recovery.on_nack(numbers, now)
    if lost:
        requeue_lost(session, lost, now)


def _release_acked(session: Session, acked: list[SentPacket], now: float) -> None:
    """Replay the records of acknowledged packets, oldest packet first.

    Why coalesce: in a bulk transfer one ACK covers dozens of packets whose
    DATA records continue each other on one stream; acknowledging the
    stream's bytes once per run instead of once per packet gives the same
    result (acknowledgement is a union of ranges) for a fraction of the calls.
    A run ends at a FIN, another stream, a gap or any other record.
    """
    run_stream = -1
    run_start = run_end = 0
    for packet in acked:
        for record in packet.frames:
            if record[0] == _DATA and not record[4]:
                stream_id, offset, length = record[1], record[2], record[3]
                if stream_id == run_stream and offset == run_end:
                    run_end += length
                    continue
                if run_stream >= 0:
                    _on_data_acked(session, run_stream, run_start, run_end - run_start, False)
                run_stream, run_start = stream_id, offset
                run_end = offset + length
                continue
            if run_stream >= 0:
                _on_data_acked(session, run_stream, run_start, run_end - run_start, False)
                run_stream = -1
            _on_record_acked(session, record, now)
    if run_stream >= 0:
        _on_data_acked(session, run_stream, run_start, run_end - run_start, False)


def _on_data_acked(session: Session, stream_id: int, offset: int, length: int,
                   fin: bool) -> None:
    stream = session.streams.get(stream_id)
    if stream is None:
        return
    before = stream.sender.buffered_bytes
    delivered = stream.sender.on_acked(offset, length, fin)
    release_send_buffer(session, stream, before)
    for message_id in delivered:
        session.emit(MessageDelivered(ref=session.ref, stream_id=stream.stream_id,
                                      message_id=message_id))
    if stream.sender.fin_acked:  # checked at every ACK: the FIN's can come before a lost frame's
        maybe_forget(session, stream)


def _on_record_acked(session: Session, record: tuple[object, ...], now: float) -> None:
    if record[0] == _DATA:
        _, stream_id, offset, length, fin = record
        _on_data_acked(session, stream_id, offset, length, fin)  # type: ignore[arg-type]
        return
    if record[0] == _PMTU_PROBE:
        _on_pmtu_probe_acked(session, int(record[1]))  # type: ignore[call-overload]
        return
    frame = record[1]
    if isinstance(frame, CloseFrame) and frame.frame_type == FrameType.SESSION_CLOSE:
        session.finish_close(now)


def requeue_lost(session: Session, packets: list[SentPacket], now: float = 0.0) -> None:
    """Put the content of lost packets back in line for sending."""
    session.stats.packets_lost += len(packets)
    if session.trace.enabled:
        session.trace.event(now, session.ref, "packets_lost",
                            {"packet_numbers": [p.packet_number for p in packets]})
    for packet in packets:
        for record in packet.frames:
            if record[0] == _DATA:
                _, stream_id, offset, length, fin = record
                stream = session.streams.get(stream_id)
                if stream is not None and not stream.reset:
                    stream.sender.on_lost(offset, length, fin)
                    session.streams.mark_ready(stream)
                continue
            if record[0] == _PMTU_PROBE:
                _on_pmtu_probe_lost(session, record[1])
                continue
            frame = _refresh(session, record[1])
            if frame is not None:
                session.control.append(frame)


def _refresh(session: Session, frame: Frame) -> Frame | None:
    """The frame to send again in place of a lost one, or None when it is moot.

    A lost credit frame is re-sent with the current limit, not the stale one.
    STREAM_OPEN and MAX_STREAM_DATA of a stream this side has forgotten (reset,
    or finished both ways) are dropped: the peer has the STREAM_CLOSE or the
    FIN instead, and a late STREAM_OPEN would open there a stream that nobody
    here reads or will ever close.
    """
    if isinstance(frame, LimitFrame) and frame.frame_type == FrameType.MAX_DATA:
        return session.max_data_frame()
    if isinstance(frame, (LimitFrame, StreamOpenFrame)):
        stream = session.streams.get(frame.stream_id)
        if stream is None or stream.reset:
            return None
        if isinstance(frame, LimitFrame):
            return LimitFrame(FrameType.MAX_STREAM_DATA, frame.stream_id,
                              stream.receiver.advertised_limit)
    return frame
