"""The batcher with a fake run function and asyncio alone: how requests become batches,
the queue and its limit, deadlines, and a batch the model fails on."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from serving.batch_result import BatchResult
from serving.batcher import Batcher, BatcherConfig
from serving.errors import DeadlineExceeded, InferenceFailed, Overloaded
from tests.serving.batcher_fakes import (
    POISON,
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


def test_request_expiring_in_the_queue_is_dropped_unrun() -> None:
    model = GatedRun()

    async def scenario() -> None:
        batcher = make_batcher(model)
        first = await occupy(batcher, model)
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(images_of(0.3), deadline=time.monotonic() + 0.05)
        assert batcher.queued_images == 0
        model.gate.set()
        await first
        await batcher.close()

    run_scenario(scenario)
    assert not any(np.any(call == 0.3) for call in model.calls)


def test_request_expiring_while_its_batch_runs_gets_its_504_and_batch_mates_their_answers() -> None:
    model = GatedRun()

    async def scenario() -> tuple[list[object], Batcher]:
        batcher = make_batcher(model)
        first = await occupy(batcher, model)
        # Long enough to be taken into the second batch even on a stalled machine; the
        # gate holds that batch until the deadline has passed.
        hasty = asyncio.ensure_future(
            batcher.submit(images_of(0.2), deadline=time.monotonic() + 1.0)
        )
        patient = asyncio.ensure_future(batcher.submit(images_of(0.3)))
        await wait_until(lambda: batcher.queued_images == 2)
        first_gate, model.gate = model.gate, threading.Event()  # holds the second batch
        first_gate.set()
        await wait_until(lambda: batcher.queued_images == 0)  # hasty and patient taken
        await wait_until(hasty.done)  # expires while its batch is held
        model.gate.set()
        outcomes = await asyncio.gather(first, hasty, patient, return_exceptions=True)
        await batcher.close()
        return outcomes, batcher

    [_, hasty, patient], batcher = run_scenario(scenario)
    assert isinstance(hasty, DeadlineExceeded)
    assert np.allclose(patient.outputs, 0.6)
    assert model.batch_sizes == [1, 2]
    assert batcher.queued_images == 0


def test_deadline_that_cannot_be_met_is_refused_at_the_door() -> None:
    model = GatedRun()

    async def scenario() -> Overloaded:
        batcher = make_batcher(model, max_batch_size=1)
        batcher.record_batch_time(1.0)
        first = await occupy(batcher, model)
        with pytest.raises(Overloaded) as refused:
            await batcher.submit(images_of(0.3), deadline=time.monotonic() + 0.5)
        model.gate.set()
        await first
        await batcher.close()
        return refused.value

    assert run_scenario(scenario).reason == "deadline"
    assert not any(np.any(call == 0.3) for call in model.calls)


def test_an_idle_model_runs_a_request_its_past_batch_time_says_cannot_make_it() -> None:
    """One slow batch (a stall) must not get every later request refused: with nothing
    queued the request runs, and the estimate learns from it."""
    model = GatedRun()

    async def scenario() -> BatchResult:
        batcher = make_batcher(model)
        batcher.record_batch_time(1.0)
        result = await batcher.submit(images_of(0.3), deadline=time.monotonic() + 0.5)
        await batcher.close()
        return result

    assert np.allclose(run_scenario(scenario).outputs, 0.6)
    assert model.batch_sizes == [1]


def test_a_batch_running_far_past_its_usual_time_gets_later_requests_refused_at_once() -> None:
    """A stalled ONNX Runtime call: the 1 ms warm-up figure no longer predicts the wait."""
    model = GatedRun()

    async def scenario() -> tuple[Overloaded, float, int]:
        batcher = make_batcher(model)
        batcher.record_batch_time(0.001)
        first = await occupy(batcher, model)
        await wait_until(lambda: batcher.running_s > 0.2)
        with pytest.raises(Overloaded) as refused:
            await batcher.submit(images_of(0.3), deadline=time.monotonic() + 0.1)
        running = batcher.running_s, batcher.running_images
        model.gate.set()
        await first
        assert (batcher.running_s, batcher.running_images) == (0.0, 0)
        await batcher.close()
        return refused.value, *running

    refused, running_s, running_images = run_scenario(scenario)
    assert refused.reason == "deadline"
    assert running_s > 0.2
    assert running_images == 1
    assert not any(np.any(call == 0.3) for call in model.calls)


def test_request_whose_deadline_passed_before_it_came_times_out_not_told_to_retry() -> None:
    model = GatedRun()

    async def scenario() -> DeadlineExceeded:
        batcher = make_batcher(model)
        with pytest.raises(DeadlineExceeded) as expired:
            await batcher.submit(images_of(0.3), deadline=time.monotonic() - 0.001)
        await batcher.close()
        return expired.value

    error = run_scenario(scenario)
    assert error.status_code == 504
    assert "before it reached model 'fake'" in error.message
    assert model.calls == []


def test_failing_batch_is_bisected_so_only_the_poisoned_request_fails() -> None:
    model = GatedRun()
    values = [0.1, 0.2, POISON, 0.4, 0.6, 0.7]

    async def scenario() -> list[object]:
        batcher = make_batcher(model)
        first = await occupy(batcher, model)
        waiting = [asyncio.ensure_future(batcher.submit(images_of(value))) for value in values]
        await wait_until(lambda: batcher.queued_images == len(values))
        model.gate.set()
        await first
        results = await asyncio.gather(*waiting, return_exceptions=True)
        after = await batcher.submit(images_of(0.9))
        await batcher.close()
        return [*results, after]

    *results, after = run_scenario(scenario)
    for value, result in zip(values, results, strict=True):
        if value == POISON:
            assert isinstance(result, InferenceFailed)
        else:
            assert np.allclose(result.outputs, 2 * value)
    assert np.allclose(after.outputs, 1.8)
    # The busy model's request; the six, failing; halves until the poison is alone
    # (0.1 0.2 P -> 0.1, then 0.2 P -> 0.2, P); the other half at once; the request after.
    assert model.batch_sizes == [1, 6, 3, 1, 2, 1, 1, 3, 1]
