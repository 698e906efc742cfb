"""Optional compiled build of the protocol core.

``pip install .`` installs STT as pure Python, as always. With ``STT_COMPILE=1``
the modules listed in ``COMPILED`` are compiled to C extensions with mypyc
(from the same source, which is already ``mypy --strict`` clean); the
per-packet work of the core then runs about 2.2x faster. ``make compile`` builds
them in place for development and benchmarks; ``make clean-compiled`` removes
them. See docs/performance.md, "The compiled core".

mypy must be installed where the build runs (``pip install mypy`` and then
``STT_COMPILE=1 pip install --no-build-isolation .``), which is why it is not a
build requirement of the default pure-Python install.
"""

from __future__ import annotations

import os

from setuptools import setup

# Every module of stt_core except:
# - flavour (reports which of the two builds is running);
# - __init__ (only re-exports) and errors (exceptions that inherit from several
#   built-in exception types, which compiled classes cannot);
# - config (validates callers' arguments with messages that say what to fix; a
#   compiled dataclass would reject a wrong type with a generic TypeError first);
# - crypto (thin calls into `cryptography`, nothing to gain, and tests instrument it);
# - sim and sim_links (the simulator drives duck-typed fake endpoints).
COMPILED = [
    f"stt_core/{name}.py"
    for name in (
        "acceptor", "ack_tracker", "bbr", "congestion", "connector", "endpoint",
        "events", "flow", "handshake", "hystart", "packetizer", "ranges", "recovery",
        "resumption", "rtt", "scratch", "send_buffer", "session", "states",
        "stream_io", "stream_receive", "stream_send", "stream_table", "streams",
        "trace", "wire",
    )
]


def _extensions() -> list[object]:
    if os.environ.get("STT_COMPILE", "") not in ("1", "true", "yes"):
        return []
    from mypyc.build import mypycify  # only needed for the compiled build

    # The shared runtime library goes inside the package, so that any import of
    # stt_core (an editable install, a script run from elsewhere) finds it too.
    return list(mypycify(COMPILED, opt_level="3", group_name="stt_core.compiled"))


setup(ext_modules=_extensions())
