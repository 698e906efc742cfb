"""SendBuffer: append, read any held range back, free acknowledged chunks."""

from __future__ import annotations

import random

from stt_core.send_buffer import SMALL_WRITE, TAIL_CHUNK, SendBuffer


def test_a_large_write_is_kept_and_read_back_without_a_copy() -> None:
    buffer = SendBuffer()
    message = bytes(range(256)) * 64  # 16 KiB
    buffer.append(b"\x40\x01")  # a small prefix goes to the open tail
    buffer.append(message)
    view = buffer.read(2, 2 + 1000)
    assert isinstance(view, memoryview) and view.obj is message  # the caller's own bytes
    assert view == message[:1000]
    assert buffer.end == 2 + len(message)
    assert buffer.held == buffer.end


def test_small_writes_share_chunks_and_reads_may_span_them() -> None:
    buffer = SendBuffer()
    expected = bytearray()
    for index in range(3000):
        piece = bytes([index % 251]) * (1 + index % 40)
        buffer.append(piece)
        expected += piece
    assert buffer.end == len(expected)
    rng = random.Random(7)
    for _ in range(500):
        start = rng.randrange(len(expected))
        end = min(len(expected), start + rng.randrange(1, 5000))
        assert bytes(buffer.read(start, end)) == expected[start:end]
    assert buffer.read(10, 10) == b""


def test_reading_the_open_tail_seals_it_and_later_writes_continue() -> None:
    buffer = SendBuffer()
    buffer.append(b"abc")
    assert bytes(buffer.read(0, 3)) == b"abc"
    buffer.append(b"def")
    big = b"G" * SMALL_WRITE
    buffer.append(big)
    assert bytes(buffer.read(1, 6 + 10)) == b"bcdef" + b"G" * 10


def test_freeing_drops_whole_chunks_below_the_offset_only() -> None:
    buffer = SendBuffer()
    chunks = [bytes([i]) * 4096 for i in range(100)]
    for chunk in chunks:
        buffer.append(chunk)
    buffer.free_below(4096 * 10 + 100)  # ten chunks fully below, the eleventh partly
    assert buffer.held == 4096 * 90
    assert bytes(buffer.read(4096 * 10 + 100, 4096 * 12)) == chunks[10][100:] + chunks[11]
    buffer.free_below(4096 * 95)  # trims the list of dropped chunks too
    assert buffer.held == 4096 * 5
    assert bytes(buffer.read(4096 * 99, 4096 * 100)) == chunks[99]
    buffer.free_below(buffer.end)
    assert buffer.held == 0


def test_tail_becomes_a_chunk_once_large() -> None:
    buffer = SendBuffer()
    count = TAIL_CHUNK // 100 + 1  # the last append takes the tail past TAIL_CHUNK
    for _ in range(count):
        buffer.append(b"t" * 100)
    assert buffer.held == count * 100
    buffer.free_below(count * 100)  # no read sealed it: only its size did
    assert buffer.held == 0


def test_clear_starts_again_at_an_offset() -> None:
    buffer = SendBuffer()
    buffer.append(b"x" * 10_000)
    buffer.clear(10_000)
    assert buffer.held == 0 and buffer.end == 10_000
    buffer.append(b"after")
    assert bytes(buffer.read(10_000, 10_005)) == b"after"


def test_a_mutable_large_write_is_copied() -> None:
    buffer = SendBuffer()
    data = bytearray(b"m" * 5000)
    buffer.append(data)
    data[0:1] = b"X"  # the caller reuses its buffer
    assert bytes(buffer.read(0, 1)) == b"m"


def test_fresh_buffers_share_nothing_once_written() -> None:
    first, second = SendBuffer(), SendBuffer()
    first.append(b"a" * SMALL_WRITE)
    first.append(b"b")
    first.clear(0)
    first.append(b"c" * SMALL_WRITE)
    second.append(b"d" * SMALL_WRITE)
    assert bytes(first.read(0, 3)) == b"ccc"
    assert bytes(second.read(0, 3)) == b"ddd"
    assert SendBuffer().end == 0 and SendBuffer().held == 0
