"""How requests become batches: a lone one runs at once, later ones run together in
order, counted in images, each request answered with its own rows."""

from __future__ import annotations

import asyncio

import numpy as np

from serving.batch_result import BatchResult
from tests.serving.batcher.helpers import (
    GatedRun,
    images_of,
    make_batcher,
    occupy,
    run_behind_a_busy_model,
)
from tests.support import GUARD_S, run_scenario, wait_until


def test_lone_request_runs_at_once_even_with_a_long_queue_delay() -> None:
    model = GatedRun()

    async def scenario() -> None:
        batcher = make_batcher(model, max_queue_delay_s=60.0)
        result = await batcher.submit(images_of(0.1))
        assert result.batch_images == 1
        assert np.allclose(result.outputs, 0.2)
        await batcher.close()

    run_scenario(scenario)
    assert model.batch_sizes == [1]


def test_requests_arriving_while_busy_are_batched_together_in_order() -> None:
    model = GatedRun()

    async def scenario() -> list[np.ndarray]:
        values = [0.02 * (index + 1) for index in range(6)]
        requests = [images_of(value) for value in values]
        results = await run_behind_a_busy_model(make_batcher(model), model, requests)
        return [result.outputs for result in results[1:]]

    outputs = run_scenario(scenario)
    assert model.batch_sizes == [1, 6]
    for index, output in enumerate(outputs):
        assert np.allclose(output, 2 * 0.02 * (index + 1))


def test_a_row_function_runs_once_per_batch_and_each_request_gets_its_own_rows() -> None:
    model = GatedRun()
    calls: list[int] = []

    def doubled(outputs: np.ndarray) -> np.ndarray:
        calls.append(len(outputs))
        return outputs * 2

    async def scenario() -> list[BatchResult]:
        batcher = make_batcher(model)
        first = await occupy(batcher, model)
        waiting = [
            asyncio.ensure_future(batcher.submit(images_of(0.1 * (index + 1), index + 1)))
            for index in range(3)
        ]
        await wait_until(lambda: batcher.queued_images == 6)
        model.gate.set()
        results = await asyncio.gather(first, *waiting)
        await batcher.close()
        return results[1:]

    results = run_scenario(scenario)
    derived = [result.derived(doubled) for result in results]
    assert calls == [6]
    for index, (result, rows) in enumerate(zip(results, derived, strict=True)):
        assert rows.shape == (index + 1, 10)
        np.testing.assert_array_equal(rows, result.outputs * 2)


def test_batches_are_counted_in_images_not_requests() -> None:
    model = GatedRun()

    async def scenario() -> None:
        batcher = make_batcher(model, max_batch_size=8)
        first = await occupy(batcher, model)
        waiting = [asyncio.ensure_future(batcher.submit(images_of(0.1, 3))) for _ in range(4)]
        await wait_until(lambda: batcher.queued_images == 12)
        model.gate.set()
        await asyncio.gather(first, *waiting)
        await batcher.close()

    run_scenario(scenario)
    assert model.batch_sizes == [1, 6, 6]


def test_request_larger_than_max_batch_size_runs_alone_in_one_call() -> None:
    model = GatedRun()
    images = np.stack([images_of(index / 100)[0] for index in range(20)])

    async def scenario() -> np.ndarray:
        batcher = make_batcher(model, max_batch_size=8)
        result = await batcher.submit(images)
        await batcher.close()
        return result.outputs

    outputs = run_scenario(scenario)
    assert model.batch_sizes == [20]
    assert np.allclose(outputs[:, 0], 2 * np.arange(20) / 100)


def test_without_batching_each_request_runs_alone() -> None:
    model = GatedRun()

    async def scenario() -> None:
        batcher = make_batcher(model, batching=False, max_batch_size=1)
        await run_behind_a_busy_model(batcher, model, [images_of(0.1)] * 3)

    run_scenario(scenario)
    assert model.batch_sizes == [1, 1, 1, 1]


def test_under_load_the_batcher_waits_for_as_many_images_as_the_last_batch_had() -> None:
    model = GatedRun()

    async def scenario() -> None:
        batcher = make_batcher(model, max_queue_delay_s=GUARD_S / 2)
        first = await occupy(batcher, model)
        four = [asyncio.ensure_future(batcher.submit(images_of(0.1))) for _ in range(4)]
        await wait_until(lambda: batcher.queued_images == 4)
        model.gate.set()
        await asyncio.gather(first, *four)
        # The last batch had four images, so a lone request now waits for three more...
        lone = asyncio.ensure_future(batcher.submit(images_of(0.2)))
        await wait_until(lambda: batcher.queued_images == 1)
        rest = [asyncio.ensure_future(batcher.submit(images_of(0.3))) for _ in range(3)]
        await asyncio.gather(lone, *rest)
        await batcher.close()

    run_scenario(scenario)
    # ...and runs with them, instead of alone (the delay, 5 s here, is only a cap).
    assert model.batch_sizes == [1, 4, 4]
