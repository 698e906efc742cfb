"""The fuzz targets as plain functions over their committed seed corpus.

Each target's ``check`` must accept every seed without raising: the seeds are
real sessions, so this also guards the targets themselves against drifting
away from the core (a seed that stops reaching deep code still runs here).
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import pytest

from fuzz import fuzz_datagram, fuzz_handshake, fuzz_session

CORPUS = pathlib.Path(__file__).resolve().parent.parent / "fuzz" / "corpus"
TARGETS: dict[str, Callable[[bytes], None]] = {
    "datagram": fuzz_datagram.check,
    "session": fuzz_session.check,
    "handshake": fuzz_handshake.check,
}


def _seeds() -> list[tuple[str, pathlib.Path]]:
    return [(target, path) for target in TARGETS
            for path in sorted((CORPUS / target).iterdir())]


def test_every_target_has_a_seed_corpus() -> None:
    for target in TARGETS:
        assert len(list((CORPUS / target).iterdir())) >= 10, target


@pytest.mark.parametrize(("target", "path"), _seeds(), ids=lambda v: getattr(v, "name", v))
def test_seed_runs_clean(target: str, path: pathlib.Path) -> None:
    TARGETS[target](path.read_bytes())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_degenerate_inputs(target: str) -> None:
    for data in (b"", b"\x00", b"|STT|" * 40, bytes(range(256)) * 8, b"\xff" * 1300):
        TARGETS[target](data)
