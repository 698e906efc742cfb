"""Say which build of the core the tests ran against, and insist on one if asked.

CI runs the suite twice: on the pure-Python source and on the mypyc-compiled
core (``make test-compiled``). ``STT_REQUIRE_COMPILED=1`` makes a run fail at
once if the compiled modules are not the ones imported, so that pass cannot
silently test the pure-Python source instead.
"""

from __future__ import annotations

import os

import pytest

from stt_core import flavour


def pytest_report_header() -> str:
    return f"stt_core: {flavour.describe()}"


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("STT_REQUIRE_COMPILED") == "1" and not flavour.is_compiled():
        raise pytest.UsageError(
            "STT_REQUIRE_COMPILED=1 but stt_core is pure Python here: run `make compile` first")
