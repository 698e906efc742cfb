"""The ``stt`` command line, end to end: demo, send/receive/listen, bench, secrets.

Commands run in-process through click's ``CliRunner`` (each does its own
``anyio.run``); a listener that must run at the same time as a sender runs in
a subprocess (``python -m stt_anyio.cli``), read line by line by a thread.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from stt_anyio import cli_demo
from stt_anyio.cli import cli
from stt_anyio.cli_setup import SEED_ENV_VAR
from stt_anyio.cli_transfer import Receipt

REPO_ROOT = Path(__file__).resolve().parents[2]
SEED = "cli test shared seed"
NO_SEED: dict[str, str | None] = {SEED_ENV_VAR: None}
WITH_SEED: dict[str, str | None] = {SEED_ENV_VAR: SEED}


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=NO_SEED if env is None else env)


# -- demo -----------------------------------------------------------------------------

def test_demo_transfers_and_verifies_the_file() -> None:
    result = invoke("demo", "--megabytes", "2")
    assert result.exit_code == 0, result.output
    assert "random (generated in-process" in result.output
    assert re.search(r"SHA-256 OK: 2,000,000 bytes, [0-9a-f]{64}", result.output)
    for row in ("handshake time", "RTT min / smoothed", "throughput", "retransmitted bytes",
                "packets lost", "datagrams dropped by the nodes"):
        assert row in result.output
    assert "chat" in result.output and "telemetry" in result.output


def test_demo_survives_real_loss_through_the_relay() -> None:
    result = invoke("demo", "--megabytes", "2", "--loss", "0.05")
    assert result.exit_code == 0, result.output
    assert "SHA-256 OK" in result.output
    drops = re.search(r"relay drops \(to server / to client\)\s*│\s*([\d,]+) / ([\d,]+)",
                      result.output)
    assert drops is not None, result.output
    assert int(drops.group(1).replace(",", "")) > 0
    retransmitted = re.search(r"retransmitted bytes \(client / server\)\s*│\s*([\d,]+)",
                              result.output)
    assert retransmitted is not None and int(retransmitted.group(1).replace(",", "")) > 0


def test_demo_over_websocket_on_trio_with_the_seed_from_the_environment() -> None:
    result = invoke("demo", "--megabytes", "1", "--transport", "websocket", "--backend",
                    "trio", env=WITH_SEED)
    assert result.exit_code == 0, result.output
    assert f"shared seed: ${SEED_ENV_VAR}" in result.output
    assert "websocket / trio" in result.output and "SHA-256 OK" in result.output


def test_demo_reads_a_seed_file_and_warns_when_others_can_read_it(tmp_path: Path) -> None:
    seed_file = tmp_path / "seed"
    seed_file.write_text(SEED + "\n")
    seed_file.chmod(0o644)
    result = invoke("demo", "--megabytes", "0.2", "--seed-file", str(seed_file))
    assert result.exit_code == 0, result.output
    assert "shared seed: seed file" in result.stdout
    assert "chmod 600" in result.stderr


def test_demo_loss_needs_udp() -> None:
    result = invoke("demo", "--loss", "0.1", "--transport", "websocket")
    assert result.exit_code == 2
    assert "--loss needs --transport udp" in result.output


def test_demo_exits_1_when_the_digest_does_not_match(monkeypatch: pytest.MonkeyPatch) -> None:
    async def mismatching_demo(options: cli_demo.DemoOptions,
                               console: object) -> cli_demo.DemoResult:
        return cli_demo.DemoResult(
            nbytes=10, expected_sha256="aa" * 32, sender_verified=False,
            received=Receipt(ok=False, nbytes=10, sha256="bb" * 32, error="SHA-256 mismatch"),
            errors=["client file transfer: SHA-256 mismatch"])

    monkeypatch.setattr(cli_demo, "run_demo", mismatching_demo)
    result = invoke("demo")
    assert result.exit_code == 1
    assert "MISMATCH" in result.output and "SHA-256 OK" not in result.output


def test_demo_result_needs_both_sides_to_agree() -> None:
    good = Receipt(ok=True, nbytes=1, sha256="aa" * 32)
    assert cli_demo.DemoResult(expected_sha256="aa" * 32, received=good,
                               sender_verified=True).sha256_ok
    assert not cli_demo.DemoResult(expected_sha256="aa" * 32, received=good).sha256_ok
    assert not cli_demo.DemoResult(expected_sha256="bb" * 32, received=good,
                                   sender_verified=True).sha256_ok
    assert not cli_demo.DemoResult(expected_sha256="aa" * 32, sender_verified=True).sha256_ok


def test_demo_that_runs_out_of_time_fails_cleanly() -> None:
    result = invoke("demo", "--megabytes", "50", "--timeout", "0.3")
    assert result.exit_code == 1
    assert "did not finish within 0.3 s" in result.output and "Traceback" not in result.output


# -- secrets ------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["demo", "--seed", "secret-value-123"],
    ["demo", "--shared-seed", "secret-value-123"],
    ["listen", "--shared-seed", "secret-value-123"],
    ["send", "127.0.0.1:9", "README.md", "--shared-seed", "secret-value-123"],
    ["bench", "--seed", "secret-value-123"],
])
def test_a_seed_on_the_command_line_is_impossible(args: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert "No such option" in result.output


def test_no_option_takes_a_secret_value() -> None:
    """Structural check: the only seed-related options are a path and the loss seed."""
    def commands(group: click.Group) -> Iterator[click.Command]:
        for command in group.commands.values():
            yield command
            if isinstance(command, click.Group):
                yield from commands(command)

    assert isinstance(cli, click.Group)
    for command in commands(cli):
        for param in command.params:
            if "seed" in (param.name or "") or "secret" in (param.name or ""):
                assert param.name in ("seed_file", "loss_seed"), (command.name, param.name)


@pytest.mark.parametrize("args", [["listen"], ["receive"], ["send", "127.0.0.1:9", "README.md"]])
def test_listen_and_send_need_a_configured_seed(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args, env=NO_SEED, catch_exceptions=False)
    assert result.exit_code == 2
    assert SEED_ENV_VAR in result.output and "never accepted" in result.output


def test_send_rejects_a_bad_address(tmp_path: Path) -> None:
    file = tmp_path / "f"
    file.write_bytes(b"x")
    result = invoke("send", "no-port-here", str(file), env=WITH_SEED)
    assert result.exit_code == 2 and "HOST:PORT" in result.output


# -- send / receive / listen ------------------------------------------------------------------

class Listener:
    """An ``stt`` listener subprocess whose output lines are read by a thread."""

    def __init__(self, args: list[str], seed: str = SEED) -> None:
        env = {**os.environ, SEED_ENV_VAR: seed, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stt_anyio.cli", *args], cwd=REPO_ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first (new) output line matching ``pattern``."""
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no {pattern!r} in {self.lines}") from None
            if line is None:
                raise AssertionError(f"listener exited; output: {self.lines}")
            self.lines.append(line)
            if match := re.search(pattern, line):
                return match

    def port(self, transport: str) -> int:
        return int(self.wait_for(rf"listening on {transport} 127\.0\.0\.1:(\d+)").group(1))

    def finish(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout=timeout)
        while (line := self._queue.get(timeout=timeout)) is not None:
            self.lines.append(line)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def listener(*args: str, seed: str = SEED) -> Iterator[Listener]:
    process = Listener(list(args), seed)
    try:
        yield process
    finally:
        process.kill()


@pytest.mark.parametrize("transport", ["udp", "websocket"])
def test_send_and_receive_transfer_a_file(tmp_path: Path, transport: str) -> None:
    data = os.urandom(700_000)
    source = tmp_path / "payload.bin"
    source.write_bytes(data)
    out_dir = tmp_path / "received"
    seed_file = tmp_path / "seed"
    seed_file.write_text(SEED)
    seed_file.chmod(0o600)
    with listener("receive", "--host", "127.0.0.1", "--port", "0", "--transport", transport,
                  "--out-dir", str(out_dir), "--node-id", "bob") as receiver:
        port = receiver.port(transport)
        result = invoke("send", f"127.0.0.1:{port}", str(source), "--transport", transport,
                        "--seed-file", str(seed_file), "--peer-node-id", "bob")
        assert result.exit_code == 0, result.output
        assert "SHA-256 OK: the receiver stored" in result.output
        assert receiver.finish() == 0, receiver.lines
    assert (out_dir / "payload.bin").read_bytes() == data
    assert [p.name for p in out_dir.iterdir()] == ["payload.bin"]
    assert any("SHA-256 OK: saved" in line for line in receiver.lines)


def test_listen_serves_many_senders_and_refuses_a_wrong_seed(tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_bytes(b"hello over STT\n" * 1000)
    with listener("listen", "--host", "127.0.0.1", "--port", "0",
                  "--out-dir", str(tmp_path / "in")) as server:
        port = server.port("udp")
        wrong = invoke("send", f"127.0.0.1:{port}", str(source),
                       env={SEED_ENV_VAR: "a different seed"})
        assert wrong.exit_code == 1
        assert "authentication" in wrong.output.lower()
        for _ in range(2):
            result = invoke("send", f"127.0.0.1:{port}", str(source), "--backend", "trio",
                            env=WITH_SEED)
            assert result.exit_code == 0, result.output
        server.wait_for(r"notes\.txt\.1")
        server.proc.send_signal(signal.SIGINT)
        assert server.finish() == 130
    assert (tmp_path / "in" / "notes.txt").read_bytes() == source.read_bytes()
    assert (tmp_path / "in" / "notes.txt.1").read_bytes() == source.read_bytes()
    assert any("session established" in line for line in server.lines)
    assert any("session closed: graceful" in line for line in server.lines)


def test_send_to_a_peer_with_another_node_id_fails(tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"data")
    with listener("listen", "--host", "127.0.0.1", "--port", "0", "--node-id", "alice",
                  "--out-dir", str(tmp_path)) as server:
        port = server.port("udp")
        result = invoke("send", f"127.0.0.1:{port}", str(source), "--peer-node-id", "mallory",
                        env=WITH_SEED)
    assert result.exit_code == 1
    assert "error:" in result.output


# -- bench --------------------------------------------------------------------------------------

def test_bench_quick_prints_a_table() -> None:
    result = invoke("bench", "--quick")
    assert result.exit_code == 0, result.output
    assert "STT loopback benchmark" in result.output and "MB/s" in result.output
    assert "median of 5 connects" in result.output
    rows = re.findall(r"│ (asyncio|trio)\s*│ (udp|websocket)\s*│", result.output)
    assert ("asyncio", "udp") in rows and ("asyncio", "websocket") in rows


def test_bench_by_duration_on_one_case() -> None:
    result = invoke("bench", "--seconds", "0.2", "--connects", "2", "--transport", "udp",
                    "--backend", "asyncio")
    assert result.exit_code == 0, result.output
    assert "bulk: 0.2 s per case" in result.output
    assert len(re.findall(r"│ asyncio\s*│ udp\s*│", result.output)) == 1


def test_bench_rejects_both_limits() -> None:
    result = invoke("bench", "--seconds", "1", "--megabytes", "1")
    assert result.exit_code == 2 and "not both" in result.output
