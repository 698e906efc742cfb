"""Where the CLI's secrets, node ids and peer addresses come from (stt_anyio.cli_setup)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stt_anyio.cli_setup import (
    SEED_ENV_VAR,
    SetupError,
    available_backends,
    derived_node_seed,
    load_shared_seed,
    parse_node_id,
    parse_peer_address,
    show_node_id,
)


def _seed_file(tmp_path: Path, content: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "seed"
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_seed_file_wins_over_environment_and_is_stripped(tmp_path: Path) -> None:
    path = _seed_file(tmp_path, b"  file-seed-value\n")
    source = load_shared_seed(path, environ={SEED_ENV_VAR: "environment-seed"})
    assert source.seed == b"file-seed-value"
    assert "seed file" in source.origin
    assert source.warning is None


def test_environment_is_used_without_a_file() -> None:
    source = load_shared_seed(None, environ={SEED_ENV_VAR: "environment-seed\n"})
    assert source.seed == b"environment-seed"
    assert source.origin == f"${SEED_ENV_VAR}"


def test_random_fallback_only_when_allowed() -> None:
    source = load_shared_seed(None, environ={}, random_fallback=lambda n: b"r" * n)
    assert source.seed == b"r" * 32
    assert "random" in source.origin
    with pytest.raises(SetupError, match=SEED_ENV_VAR):
        load_shared_seed(None, environ={})


def test_short_seeds_and_unreadable_files_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="shorter than 8 bytes"):
        load_shared_seed(_seed_file(tmp_path, b"short\n"), environ={})
    with pytest.raises(SetupError, match="shorter than 8 bytes"):
        load_shared_seed(None, environ={SEED_ENV_VAR: "tiny"})
    with pytest.raises(SetupError, match="cannot read seed file"):
        load_shared_seed(tmp_path / "missing", environ={})
    with pytest.raises(SetupError, match="not a regular file"):
        load_shared_seed(tmp_path, environ={})


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_a_seed_file_others_can_read_gets_a_warning(tmp_path: Path) -> None:
    source = load_shared_seed(_seed_file(tmp_path, b"readable-seed", 0o644), environ={})
    assert source.warning is not None and "chmod 600" in source.warning


def test_the_seed_never_appears_in_repr(tmp_path: Path) -> None:
    source = load_shared_seed(_seed_file(tmp_path, b"very-secret-value"), environ={})
    assert "very-secret-value" not in repr(source)


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:9000", ("127.0.0.1", 9000)),
    ("example.org:1", ("example.org", 1)),
    ("[::1]:65535", ("::1", 65535)),
])
def test_peer_addresses_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_peer_address(text) == expected


@pytest.mark.parametrize("text", ["localhost", ":9000", "host:", "host:0", "host:65536",
                                  "host:port", "::1:9000", "[]:9000"])
def test_bad_peer_addresses_are_rejected(text: str) -> None:
    with pytest.raises(SetupError):
        parse_peer_address(text)


@given(st.from_regex(r"[a-z0-9.-]{1,30}", fullmatch=True), st.integers(1, 65535))
def test_host_port_round_trips(host: str, port: int) -> None:
    assert parse_peer_address(f"{host}:{port}") == (host, port)


def test_node_ids() -> None:
    assert parse_node_id(None) is None
    assert parse_node_id("alice") == b"alice"
    with pytest.raises(SetupError):
        parse_node_id("")
    with pytest.raises(SetupError):
        parse_node_id("x" * 65)
    assert derived_node_seed("send") != derived_node_seed("listen")
    assert show_node_id(b"alice") == "alice"
    assert show_node_id(b"\xff\x00") == "ff00"
    assert show_node_id(b"a\nb") == "610a62"
    assert show_node_id(None) == "-"


def test_backends() -> None:
    assert available_backends("asyncio") == (["asyncio"], [])
    usable, skipped = available_backends("both")
    assert "asyncio" in usable and sorted(usable + skipped) == ["asyncio", "trio"]
