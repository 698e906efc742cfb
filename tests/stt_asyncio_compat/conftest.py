"""Compat tests run under asyncio only: the compat API is asyncio's by definition."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from stt_asyncio_compat import STTNode

from .helpers import NodeFactory, make_node


@pytest.fixture
def anyio_backend() -> str:
    """``@pytest.mark.anyio`` tests of this package run on asyncio."""
    return "asyncio"

@pytest.fixture
async def nodes() -> AsyncIterator[NodeFactory]:
    """Make loopback nodes (``helpers.make_node``); all are stopped after the test."""
    created: list[STTNode] = []

    def factory(node_id: bytes | None = None, **kwargs: Any) -> STTNode:
        node = make_node(node_id, **kwargs)
        created.append(node)
        return node

    yield factory
    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            for node in created:
                tg.start_soon(node.stop)
