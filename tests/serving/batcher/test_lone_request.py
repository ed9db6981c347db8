"""A lone request, run straight from ``submit`` on an idle batcher; any other goes
through the queue."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import numpy as np
import pytest

from serving.batch_result import BatchResult
from serving.batcher import Batcher, BatcherConfig
from serving.errors import InferenceFailed
from serving.inline_policy import InlinePolicy
from tests.serving.batcher.helpers import (
    IDLE_INLINE,
    POISON,
    GatedRun,
    ThreadRecordingRun,
    images_of,
    occupy,
)
from tests.support import run_scenario, wait_until


def lone_batcher(model: GatedRun, **probes: Callable[..., object]) -> Batcher:
    """A batcher whose batching loop never starts: only a request run straight from
    ``submit`` can be answered (any other would wait for GUARD_S and fail the test)."""
    config = BatcherConfig(max_batch_size=8, max_queue_delay_s=0.0)
    inline = InlinePolicy(**IDLE_INLINE)
    return Batcher(model, config, name="fake", inline=inline, **probes)  # type: ignore[arg-type]


def test_a_lone_request_on_an_idle_batcher_is_answered_without_the_batching_loop() -> None:
    model = ThreadRecordingRun()
    batches: list[int] = []

    async def scenario() -> tuple[BatchResult, int]:
        batcher = lone_batcher(model, on_batch=lambda images, compute_s: batches.append(images))
        result = await batcher.submit(images_of(0.1, 3), is_alone=True)
        stats = batcher.stats
        assert (stats.inference_count, stats.execution_count, stats.success.count) == (3, 1, 1)
        assert (stats.queue.count, stats.queue.ns) == (1, 0)
        assert {size: s.compute_infer.count for size, s in stats.batch_sizes.items()} == {3: 1}
        return result, threading.get_ident()

    result, loop_thread = run_scenario(scenario)
    assert np.allclose(result.outputs, 0.2)
    assert result.outputs.shape == (3, 10)
    assert (result.queue_s, result.batch_images) == (0.0, 3)
    assert model.threads == [loop_thread]
    assert batches == [3]


def test_a_request_not_known_to_be_alone_goes_through_the_queue() -> None:
    model = ThreadRecordingRun()

    async def scenario() -> None:
        batcher = lone_batcher(model)
        waiting = asyncio.ensure_future(batcher.submit(images_of(0.1)))
        await wait_until(lambda: batcher.queued_images == 1)
        assert model.calls == []
        batcher.start()
        await waiting
        await batcher.close()

    run_scenario(scenario)
    assert model.batch_sizes == [1]


def test_a_lone_request_waits_for_the_queue_when_the_server_is_busy() -> None:
    model = ThreadRecordingRun()

    async def scenario() -> None:
        batcher = lone_batcher(model, is_server_idle=lambda: False)
        batcher.inline.max_images = 1  # quicker than a hand-off, were it idle
        batcher.inline.max_s = 1e-3
        waiting = asyncio.ensure_future(batcher.submit(images_of(0.1), is_alone=True))
        await wait_until(lambda: batcher.queued_images == 1)
        batcher.start()
        await waiting
        await batcher.close()

    run_scenario(scenario)
    assert model.batch_sizes == [1]


def test_a_lone_request_arriving_while_a_batch_runs_queues_behind_it() -> None:
    model = ThreadRecordingRun()
    is_idle = False  # while the first request occupies the thread

    async def scenario() -> None:
        nonlocal is_idle
        config = BatcherConfig(max_batch_size=8, max_queue_delay_s=0.0)
        batcher = Batcher(
            model,
            config,
            name="fake",
            is_server_idle=lambda: is_idle,
            inline=InlinePolicy(**IDLE_INLINE),
        )
        batcher.start()
        first = await occupy(batcher, model)
        is_idle = True  # as the probe may say; the batcher itself is busy
        second = asyncio.ensure_future(batcher.submit(images_of(0.3), is_alone=True))
        await wait_until(lambda: batcher.queued_images == 1)
        model.gate.set()
        assert np.allclose((await second).outputs, 0.6)
        await first
        await batcher.close()

    run_scenario(scenario)
    assert [call[0, 0, 0, 0] for call in model.calls] == pytest.approx([0.01, 0.3])


def test_a_lone_request_the_model_fails_on_gets_its_error_and_the_next_is_answered() -> None:
    model = ThreadRecordingRun()
    batches: list[int] = []

    async def scenario() -> Batcher:
        batcher = lone_batcher(model, on_batch=lambda images, compute_s: batches.append(images))
        with pytest.raises(InferenceFailed, match="ONNX Runtime failed"):
            await batcher.submit(images_of(POISON, 2), is_alone=True)
        assert np.allclose((await batcher.submit(images_of(0.1), is_alone=True)).outputs, 0.2)
        return batcher

    stats = run_scenario(scenario).stats
    assert (stats.fail.count, stats.success.count, stats.execution_count) == (1, 1, 1)
    assert batches == [2, 1]


def test_a_lone_request_too_large_for_the_event_loop_goes_through_the_queue() -> None:
    # 1024 images at 16 µs: 16 ms, over the 10 ms bound; the thread runs it.
    model = ThreadRecordingRun()

    async def scenario() -> int:
        batcher = lone_batcher(model)
        waiting = asyncio.ensure_future(batcher.submit(images_of(0.1, 1024), is_alone=True))
        await wait_until(lambda: batcher.queued_images == 1024)
        batcher.start()
        await waiting
        await batcher.close()
        return threading.get_ident()

    loop_thread = run_scenario(scenario)
    assert model.batch_sizes == [1024]
    assert model.threads != [loop_thread]
