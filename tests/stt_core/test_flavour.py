"""The build flavour report, and the list of modules the compiled build covers."""

from __future__ import annotations

import ast
import pathlib

from stt_core import flavour

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Modules setup.py leaves as Python, each for a reason given there.
NOT_COMPILED = {"__init__", "errors", "config", "crypto", "sim", "sim_links", "flavour"}


def compiled_list() -> list[str]:
    """``setup.COMPILED`` read from the source (importing setup.py would run setup())."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "COMPILED":
            generator = node.value
            assert isinstance(generator, ast.ListComp)
            names = generator.generators[0].iter
            assert isinstance(names, ast.Tuple)
            return [str(ast.literal_eval(element)) for element in names.elts]
    raise AssertionError("setup.py has no COMPILED list")


def test_every_core_module_is_compiled_or_deliberately_left_out() -> None:
    modules = {path.stem for path in (ROOT / "stt_core").glob("*.py")}
    listed = compiled_list()
    assert len(listed) == len(set(listed))
    assert set(listed) <= modules, "setup.py lists a module that does not exist"
    assert set(listed) | NOT_COMPILED == modules, (
        "a new stt_core module: add it to setup.COMPILED or say there why it stays Python")
    assert not set(listed) & NOT_COMPILED


def test_report_matches_what_was_imported() -> None:
    names = flavour.compiled_modules()
    if flavour.is_compiled():
        assert {"stt_core.packetizer", "stt_core.session", "stt_core.wire"} <= set(names)
        assert flavour.describe() == f"compiled (mypyc, {len(names)} modules)"
    else:
        assert flavour.describe() == "pure Python"
        assert "stt_core.session" not in names
