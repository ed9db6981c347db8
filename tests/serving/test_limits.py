"""``receive_by``: the body deadline's timer, alone on an event loop (the 408 end to end
is in tests/reliability/test_slow_clients.py)."""

from __future__ import annotations

import asyncio

import pytest

from serving.limits import receive_by

MESSAGE = {"type": "http.request", "body": b"{}", "more_body": False}


async def arrives_after(delay_s: float) -> dict[str, object]:
    await asyncio.sleep(delay_s)
    return MESSAGE


async def never_arrives() -> dict[str, object]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def test_a_message_in_time_is_returned_and_its_timer_cancelled() -> None:
    async def scenario() -> tuple[object, int]:
        loop = asyncio.get_running_loop()
        message = await receive_by(lambda: arrives_after(0.001), loop.time() + 5, loop)
        return message, asyncio.current_task().cancelling()  # type: ignore[union-attr]

    assert asyncio.run(scenario()) == (MESSAGE, 0)


def test_a_message_past_the_deadline_gives_none_and_leaves_the_task_uncancelled() -> None:
    async def scenario() -> tuple[object, int, str]:
        loop = asyncio.get_running_loop()
        message = await receive_by(never_arrives, loop.time() + 0.01, loop)
        await asyncio.sleep(0)  # the task still runs: it is not cancelled
        return message, asyncio.current_task().cancelling(), "went on"  # type: ignore[union-attr]

    assert asyncio.run(scenario()) == (None, 0, "went on")


def test_a_cancellation_from_elsewhere_is_not_mistaken_for_the_deadline() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        waiting = asyncio.ensure_future(receive_by(never_arrives, loop.time() + 5, loop))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(scenario())


def test_a_cancellation_from_elsewhere_at_the_deadline_still_cancels() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 0.01
        waiting = asyncio.ensure_future(receive_by(never_arrives, deadline, loop))
        loop.call_at(deadline, waiting.cancel)  # after receive_by's own timer, same instant
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(scenario())
