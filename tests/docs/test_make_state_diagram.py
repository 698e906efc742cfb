"""Tests of docs/make_state_diagram.py: the §11.1 diagram matches stt_core.states."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from stt_core.states import TRANSITIONS, SessionState

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_state_diagram",
                                                  DOCS / "make_state_diagram.py")
    if spec is None or spec.loader is None:
        raise RuntimeError("cannot load docs/make_state_diagram.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


msd = _load()


def test_protocol_md_diagram_is_up_to_date() -> None:
    assert msd.main(["--check"]) == 0


def test_every_transition_of_the_code_is_drawn_and_tabled() -> None:
    block = msd.render()
    for src, targets in TRANSITIONS.items():
        for dst in targets:
            assert f"    {src.name} --> {dst.name}\n" in block
            assert f"| {src.name} | {dst.name} |" in block
    drawn = [line for line in block.splitlines() if " --> " in line and "[*]" not in line]
    assert len(drawn) == sum(len(t) for t in TRANSITIONS.values())


def test_block_sits_between_markers() -> None:
    block = msd.render()
    assert block.startswith(msd.BEGIN)
    assert block.endswith(msd.END)


def test_splice_replaces_only_the_marked_region() -> None:
    doc = f"before\n{msd.BEGIN}\nold\n{msd.END}\nafter\n"
    out = msd.splice(doc, "NEW")
    assert out == "before\nNEW\nafter\n"


def test_splice_without_markers_is_an_error() -> None:
    with pytest.raises(ValueError):
        msd.splice("no markers here", "NEW")


def test_trigger_table_out_of_sync_with_code_refuses_to_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    triggers = dict(msd.TRIGGERS)
    triggers.pop((SessionState.CLOSING, SessionState.CLOSED))
    monkeypatch.setattr(msd, "TRIGGERS", triggers)
    with pytest.raises(SystemExit, match="missing"):
        msd.render()
