"""Whether this ``stt_core`` runs compiled (mypyc extension modules) or as pure Python.

The same source runs either way and the test suite passes on both (CI runs it
twice). Benchmarks, ``stt bench`` and the test header print which one ran,
because the per-packet cost differs by about 2.2x and a figure means little
without it. See docs/performance.md, "The compiled core".
"""

from __future__ import annotations

import importlib.machinery
import sys

from . import packetizer, session, wire

__all__ = ["compiled_modules", "describe", "is_compiled"]

_HOT_MODULES = (packetizer, session, wire)
_EXTENSION_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def _from_extension(module: object) -> bool:
    return str(getattr(module, "__file__", "") or "").endswith(_EXTENSION_SUFFIXES)


def compiled_modules() -> list[str]:
    """Names of the loaded ``stt_core`` modules that came from extension files."""
    return sorted(name for name, module in list(sys.modules.items())
                  if name.startswith("stt_core.") and _from_extension(module))


def is_compiled() -> bool:
    """True when the per-packet modules are compiled (what decides the speed)."""
    return all(_from_extension(module) for module in _HOT_MODULES)


def describe() -> str:
    """One line for reports: ``"compiled (mypyc, N modules)"`` or ``"pure Python"``."""
    if is_compiled():
        return f"compiled (mypyc, {len(compiled_modules())} modules)"
    return "pure Python"
