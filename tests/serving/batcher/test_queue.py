"""The queue: refused at once when full, its depth reported, a cancelled request
never computed, and on close the queued requests finished and new ones refused."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from serving.batcher import Batcher, BatcherConfig
from serving.errors import Overloaded
from tests.serving.batcher.helpers import (
    GatedRun,
    images_of,
    make_batcher,
    occupy,
)
from tests.support import run_scenario, wait_until


def test_full_queue_refuses_at_once_with_retry_after() -> None:
    model = GatedRun()

    async def scenario() -> Overloaded:
        batcher = make_batcher(model, max_queue_size=4, overload_status_code=429)
        first = await occupy(batcher, model)
        waiting = [asyncio.ensure_future(batcher.submit(images_of(0.1))) for _ in range(4)]
        await wait_until(lambda: batcher.queued_images == 4)
        with pytest.raises(Overloaded) as refused:
            await batcher.submit(images_of(0.1))
        model.gate.set()
        await asyncio.gather(first, *waiting)
        await batcher.close()
        return refused.value

    refusal = run_scenario(scenario)
    assert refusal.reason == "queue_full"
    assert refusal.status_code == 429
    assert int(refusal.headers["Retry-After"]) >= 1


def test_queue_depth_is_reported_once_per_event_loop_turn_with_its_latest_value() -> None:
    model = GatedRun()
    reports: list[tuple[int, int]] = []

    async def scenario() -> None:
        batcher = Batcher(
            model,
            BatcherConfig(max_batch_size=8, max_queue_delay_s=0.0, max_queue_size=64),
            name="fake",
            on_queue_depth=lambda images, requests: reports.append((images, requests)),
        )
        batcher.start()
        first = await occupy(batcher, model)
        reports.clear()
        waiting = [asyncio.ensure_future(batcher.submit(images_of(0.1, 2))) for _ in range(3)]
        await wait_until(lambda: batcher.queued_images == 6)
        await asyncio.sleep(0)  # the turn that reports
        assert reports == [(6, 3)]
        model.gate.set()
        await asyncio.gather(first, *waiting)
        await wait_until(lambda: reports[-1] == (0, 0))
        await batcher.close()

    run_scenario(scenario)


def test_cancelled_request_is_never_computed() -> None:
    model = GatedRun()

    async def scenario() -> None:
        batcher = make_batcher(model)
        first = await occupy(batcher, model)
        abandoned = asyncio.ensure_future(batcher.submit(images_of(0.3)))
        await wait_until(lambda: batcher.queued_images == 1)
        abandoned.cancel()
        await wait_until(lambda: batcher.queued_images == 0)
        model.gate.set()
        await first
        await batcher.close()

    run_scenario(scenario)
    assert model.batch_sizes == [1]


def test_close_finishes_queued_requests_and_refuses_new_ones() -> None:
    model = GatedRun()

    async def scenario() -> None:
        batcher = make_batcher(model)
        first = await occupy(batcher, model)
        waiting = [asyncio.ensure_future(batcher.submit(images_of(0.1))) for _ in range(5)]
        await wait_until(lambda: batcher.queued_images == 5)
        closing = asyncio.ensure_future(batcher.close())
        await wait_until(lambda: batcher._is_closing)
        with pytest.raises(Overloaded) as refused:
            await batcher.submit(images_of(0.1))
        assert refused.value.reason == "shutting_down"
        model.gate.set()
        results = await asyncio.gather(first, *waiting)
        await closing
        assert all(np.allclose(result.outputs, 0.2) for result in results[1:])

    run_scenario(scenario)
