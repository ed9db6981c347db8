"""Deadlines: refused at the door when the wait cannot meet them (unless the model is idle);
a 504 once they pass: in the queue (the request dropped unrun), while its batch runs (its
batch-mates still answered), or before the request came."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from serving.batch_result import BatchResult
from serving.batcher import Batcher
from serving.errors import DeadlineExceeded, Overloaded
from tests.serving.batcher.helpers import (
    GatedRun,
    images_of,
    make_batcher,
    occupy,
)
from tests.support import run_scenario, wait_until


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
