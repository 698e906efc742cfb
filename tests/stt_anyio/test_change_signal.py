"""ChangeSignal: every waiter wakes on fire, a cancelled waiter leaves the others
waiting, and timed-out waits leave nothing behind (asyncio and trio)."""

from __future__ import annotations

import anyio
import pytest

from stt_anyio.session import ChangeSignal

pytestmark = pytest.mark.anyio


async def test_fire_wakes_every_current_waiter_and_later_waiters_block() -> None:
    signal = ChangeSignal()
    woken: list[int] = []

    async def waiter(n: int) -> None:
        await signal.wait()
        woken.append(n)

    async with anyio.create_task_group() as tg:
        for n in range(3):
            tg.start_soon(waiter, n)
        await anyio.wait_all_tasks_blocked()
        signal.fire()
    assert sorted(woken) == [0, 1, 2]
    with anyio.move_on_after(0.05) as scope:
        await signal.wait()  # nothing fires again: it must block
    assert scope.cancelled_caught


async def test_a_cancelled_waiter_does_not_wake_or_cancel_the_others() -> None:
    signal = ChangeSignal()
    woken: list[str] = []

    async def patient() -> None:
        await signal.wait()
        woken.append("patient")

    async with anyio.create_task_group() as tg:
        tg.start_soon(patient)
        with anyio.move_on_after(0.02):
            await signal.wait()
            woken.append("impatient")  # never: it timed out
        await anyio.wait_all_tasks_blocked()
        assert woken == []  # the patient waiter is still waiting, not cancelled
        signal.fire()
    assert woken == ["patient"]


async def test_timed_out_waits_leave_no_waiter_behind() -> None:
    signal = ChangeSignal()
    for _ in range(50):
        with anyio.move_on_after(0):
            await signal.wait()
    assert not signal._futures  # asyncio: each timed-out future was removed
