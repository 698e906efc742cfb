"""The lossy relay's sends: failures are loss, and closing mid-forward is not an error."""

from __future__ import annotations

import anyio
import pytest

from stt_anyio.cli_relay import _send_ignoring_errors

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("error", [ConnectionRefusedError(), anyio.ClosedResourceError(),
                                   anyio.BrokenResourceError()])
async def test_a_failed_or_closed_send_is_swallowed(error: BaseException) -> None:
    async def send() -> None:
        raise error

    await _send_ignoring_errors(send())  # returns instead of raising


async def test_other_errors_still_raise() -> None:
    async def send() -> None:
        raise ValueError("a bug, not loss")

    with pytest.raises(ValueError):
        await _send_ignoring_errors(send())
