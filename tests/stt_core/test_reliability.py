"""Reliability under a hostile network, on the deterministic simulator.

* A seed sweep: random mixes of streams and message sizes over loss (0-30%),
  duplication, reordering, corruption and a partition that heals. Every
  confirmed message is delivered exactly once, in order, byte-identical;
  nothing is delivered that was not sent; receive buffers stay bounded.
  The default run covers ``STT_SWEEP_SEEDS`` seeds (200); ``-m slow`` runs the
  long sweep of 10,000 seeds with messages up to 4 MiB.
* Goodput on a 100 Mbit/s, 50 ms RTT link with and without 1% loss.
* The congestion window grows only while it is the limit (RFC 9002 §7.8):
  not for a trickle of small messages, not while the peer's flow control
  holds the sender back.
* Fairness of two sessions sharing one bottleneck, for the loss-based
  controllers. BBR as implemented (v1 without PROBE_RTT) is not fair between
  flows and is documented as such; it is the choice for lossy paths, not for
  shared bottlenecks.

A failure names its seed; ``pytest -k "seed_<n>"`` replays it exactly.
"""

from __future__ import annotations

import functools
import os
import random

import pytest

from stt_core.sim import LinkConfig

from .simload import SERVER_ADDR, Flow, Scenario

FAST_SEEDS = int(os.environ.get("STT_SWEEP_SEEDS", "200"))
LONG_SEEDS = 10_000
SWEEP_TIMEOUT = 3600.0
"""Virtual seconds: loss-based controllers at 30% loss move a few KB/s, by design."""
SWEEP_IDLE_TIMEOUT = 120.0
"""Idle timeout of the sweep's sessions (see ``run_sweep_case``)."""


def _message_sizes(rng: random.Random, count: int, largest: int) -> list[int]:
    sizes = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.6:
            sizes.append(rng.randint(0, 2000))
        elif roll < 0.95:
            sizes.append(rng.randint(2000, 64 * 1024))
        else:
            sizes.append(rng.randint(64 * 1024, largest))
    return sizes


def _rough_link(rng: random.Random) -> LinkConfig:
    return LinkConfig(
        delay=rng.uniform(0.002, 0.060),
        jitter=rng.choice([0.0, rng.uniform(0.0, 0.010)]),
        loss=rng.choice([0.0, rng.uniform(0.0, 0.30)]),
        duplicate=rng.choice([0.0, rng.uniform(0.0, 0.05)]),
        reorder=rng.choice([0.0, rng.uniform(0.0, 0.10)]),
        corrupt=rng.choice([0.0, rng.uniform(0.0, 0.05)]),
    )


def run_sweep_case(seed: int, *, largest: int) -> None:
    rng = random.Random(seed)
    # The sweep checks delivery, not the liveness policy. At up to 30 % loss each
    # way a run of about seven lost ACKs leaves a sender whose probes have backed
    # off to 10-20 s with nothing heard for the default 30 s idle timeout, and the
    # session then ends as specified (it happened once in about 2,000 seeds:
    # seed 925 of the long sweep). A longer idle timeout keeps such a session
    # alive for its next probe; everything the sweep asserts is unchanged.
    scenario = Scenario(seed, server_overrides={"idle_timeout": SWEEP_IDLE_TIMEOUT})
    link = _rough_link(rng)
    algorithm = ("newreno", "cubic", "bbr")[seed % 3]  # every controller gets swept
    flow = scenario.add_flow("client", link, connect_timeout=60.0,
                             congestion_control=algorithm, idle_timeout=SWEEP_IDLE_TIMEOUT)
    if rng.random() < 0.5:
        start = rng.uniform(0.1, 2.0)
        scenario.net.partition([flow.address], [SERVER_ADDR], start=start,
                               end=start + rng.uniform(0.2, 3.0))
    streams = rng.randint(1, 4)
    payload_rng = random.Random(seed * 7919)
    for index in range(streams):
        sizes = _message_sizes(rng, rng.randint(1, 12), largest)
        scenario.queue(flow, f"s{index}", [payload_rng.randbytes(n) for n in sizes])
    window = scenario.server.config.session_receive_window
    peak = [0]

    def sample_memory() -> None:
        for session in scenario.server.sessions.values():
            held = sum(s.receiver.buffered_bytes for s in session.streams)
            peak[0] = max(peak[0], held)
        if scenario.net.now < SWEEP_TIMEOUT:
            scenario.net.call_at(scenario.net.now + 0.25, sample_memory)

    scenario.net.call_at(0.25, sample_memory)
    done = scenario.run(timeout=SWEEP_TIMEOUT)
    assert done, f"seed={seed}: not every message was confirmed ({algorithm}, {link})"
    for stream_id, sent in flow.sent.items():
        assert scenario.received_for(flow, stream_id) == sent, f"seed={seed} stream={stream_id}"
        assert flow.confirmed[stream_id] == flow.message_ids[stream_id], f"seed={seed}"
    delivered_streams = {key[1] for key in scenario.received}
    assert delivered_streams <= set(flow.sent), f"seed={seed}: data on a stream never used"
    assert peak[0] <= window + scenario.server.config.max_message_size, f"seed={seed}"


@pytest.mark.parametrize("seed", range(FAST_SEEDS), ids=lambda s: f"seed_{s}")
def test_sweep(seed: int) -> None:
    run_sweep_case(seed, largest=256 * 1024)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(LONG_SEEDS), ids=lambda s: f"seed_{s}")
def test_long_sweep(seed: int) -> None:
    run_sweep_case(seed, largest=4 * 1024 * 1024)


LINK_RATE = 100e6
WIDE_WINDOWS = {"stream_receive_window": 8 * 1024 * 1024,
                "session_receive_window": 64 * 1024 * 1024}


def bulk_goodput(loss: float, megabytes: int, algorithm: str = "bbr") -> float:
    """Application goodput in bit/s of one 64 MiB transfer over a 100 Mbit/s, 50 ms link."""
    scenario = Scenario(1, server_overrides=WIDE_WINDOWS)
    link = LinkConfig(delay=0.025, bandwidth_bps=LINK_RATE,
                      queue_bytes=int(LINK_RATE / 8 * 0.05), loss=loss)
    flow = scenario.add_flow("client", link, congestion_control=algorithm,
                             stream_send_buffer_bytes=8 * 1024 * 1024,
                             session_send_buffer_bytes=64 * 1024 * 1024)
    scenario.queue(flow, "bulk", [bytes([i % 251]) * (1024 * 1024) for i in range(megabytes)])
    assert scenario.run(timeout=600.0)
    assert flow.established_at is not None
    elapsed = scenario.net.now - flow.established_at
    assert scenario.received_for(flow, 1) == flow.sent[1]
    return megabytes * 1024 * 1024 * 8 / elapsed


@pytest.mark.parametrize("algorithm", ["bbr", "newreno", "cubic"])
def test_goodput_without_loss_is_above_90_percent_of_the_link(algorithm: str) -> None:
    goodput = bulk_goodput(0.0, 64, algorithm)
    print(f"{algorithm}: goodput {goodput / 1e6:.1f} Mbit/s of {LINK_RATE / 1e6:.0f}")
    assert goodput >= 0.90 * LINK_RATE


def test_goodput_with_1_percent_loss_is_above_70_percent_of_what_the_link_allows() -> None:
    goodput = bulk_goodput(0.01, 64)
    allowed = LINK_RATE * (1 - 0.01)
    print(f"goodput {goodput / 1e6:.1f} Mbit/s of {allowed / 1e6:.0f} after loss")
    assert goodput >= 0.70 * allowed


@pytest.mark.parametrize("algorithm", ["newreno", "cubic"])
def test_two_sessions_sharing_a_bottleneck_converge(algorithm: str) -> None:
    rate = 20e6
    scenario = Scenario(3, server_overrides=WIDE_WINDOWS)
    link = LinkConfig(delay=0.010, bandwidth_bps=rate, queue_bytes=int(rate / 8 * 0.04))
    flows = [scenario.add_flow(f"c{i}", link, congestion_control=algorithm,
                               stream_send_buffer_bytes=4 * 1024 * 1024) for i in range(2)]
    for flow in flows:
        scenario.net.set_link(flow.address, SERVER_ADDR, link, queue="bottleneck")
        scenario.queue(flow, "bulk", [bytes(64 * 1024) for _ in range(6000)])

    def delivered(flow: Flow) -> int:
        return sum(len(m) for m in scenario.received_for(flow, 1))

    scenario.net.run(10.0)  # let both reach their steady state
    before = [delivered(flow) for flow in flows]
    # Two minutes, not one: on this lossless drop-tail link the split swings
    # between the flows with a period of tens of seconds (a 10 s window saw
    # 0.47..0.88), so one minute's share ratio depended on where the swing
    # happened to start; a small change in the first packets (or a link delay
    # of 10.1 or 11 ms instead of 10) gave 0.75 where the target is 0.8.
    scenario.net.run(130.0)
    shares = [delivered(flow) - b for flow, b in zip(flows, before, strict=True)]
    total_rate = sum(shares) * 8 / 120.0
    print(f"{algorithm}: shares {shares}, total {total_rate / 1e6:.1f} Mbit/s")
    assert min(shares) >= 0.8 * max(shares)
    assert total_rate >= 0.7 * rate


@pytest.mark.parametrize("algorithm", ["newreno", "cubic", "bbr"])
def test_a_trickle_of_small_messages_does_not_grow_the_window(algorithm: str) -> None:
    """One 200-byte message every 100 ms for five minutes on a 40 ms RTT link."""
    scenario = Scenario(5)
    flow = scenario.add_flow("client", LinkConfig(delay=0.020), congestion_control=algorithm)
    endpoint = flow.endpoint
    assert scenario.run(timeout=5.0, until=lambda: flow.established_at is not None)
    stream_id = scenario.net.call("client", lambda: endpoint.open_stream(flow.ref))
    start = endpoint.session_stats(flow.ref).congestion_window
    sent: list[bytes] = []

    def send(i: int) -> None:
        message = i.to_bytes(4, "big") * 50
        sent.append(message)
        scenario.net.call("client", lambda: endpoint.send_message(flow.ref, stream_id, message))

    begin = scenario.net.now
    for i in range(3000):
        scenario.net.call_at(begin + 0.1 * i, functools.partial(send, i))
    scenario.net.run(begin + 301.0)
    assert scenario.received_for(flow, stream_id) == sent
    assert endpoint.session_stats(flow.ref).congestion_window <= start


@pytest.mark.parametrize("algorithm", ["newreno", "cubic"])
def test_a_flow_control_limited_sender_keeps_its_window_near_what_it_uses(
    algorithm: str,
) -> None:
    """8 MiB through a 64 KiB stream window, 40 ms RTT: about 64 KiB in flight per round trip."""
    window = 64 * 1024
    scenario = Scenario(6, server_overrides={"stream_receive_window": window})
    flow = scenario.add_flow("client", LinkConfig(delay=0.020), congestion_control=algorithm)
    scenario.queue(flow, "bulk", [bytes([i]) * (256 * 1024) for i in range(32)])
    assert scenario.run(timeout=60.0)
    assert scenario.received_for(flow, 1) == flow.sent[1]
    # Slow start may double the window once the flight reaches half of it;
    # without the rule it grew by every byte acknowledged, to about 8 MiB.
    assert flow.endpoint.session_stats(flow.ref).congestion_window <= 3 * window
