"""time_limit: the API's one reading of ``timeout=``, on both backends."""

from __future__ import annotations

import anyio
import pytest

from stt_anyio.timeouts import time_limit

pytestmark = pytest.mark.anyio


async def test_no_timeout_builds_no_cancel_scope_and_waits() -> None:
    start = anyio.current_time()
    with time_limit(None) as scope:
        assert not isinstance(scope, anyio.CancelScope)
        await anyio.sleep(0.05)
    assert anyio.current_time() - start >= 0.05


async def test_a_timeout_fails_with_timeout_error() -> None:
    with pytest.raises(TimeoutError), time_limit(0.01):
        await anyio.sleep(5)


async def test_a_negative_timeout_fails_at_the_first_wait() -> None:
    with pytest.raises(TimeoutError), time_limit(-1.0):
        await anyio.sleep(5)


async def test_no_timeout_is_reusable_and_lets_errors_through() -> None:
    for _ in range(2):
        with pytest.raises(KeyError), time_limit(None):
            raise KeyError("passes through untouched")
