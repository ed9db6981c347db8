"""The batcher's statistics (Triton's): inferences, executions, and a batch's time
split into input, infer and output."""

from __future__ import annotations

import pytest

from serving.batcher import Batcher, BatcherConfig
from serving.errors import InferenceFailed
from tests.serving.batcher_fakes import (
    POISON,
    GatedRun,
    images_of,
    make_batcher,
    run_behind_a_busy_model,
)
from tests.support import run_scenario


def test_stats_count_inferences_and_executions() -> None:
    model = GatedRun()

    async def scenario() -> Batcher:
        batcher = make_batcher(model)
        await batcher.submit(images_of(0.1, 3))
        await batcher.submit(images_of(0.1, 2))
        await batcher.close()
        return batcher

    stats = run_scenario(scenario).stats
    assert stats.inference_count == 5
    assert stats.execution_count == 2
    assert stats.success.count == 2
    assert stats.queue.count == 2
    assert {size: s.compute_infer.count for size, s in stats.batch_sizes.items()} == {3: 1, 2: 1}


def test_stats_split_a_batch_into_input_infer_and_output_as_triton_does() -> None:
    model = GatedRun()
    compute_times: list[float] = []

    async def scenario() -> Batcher:
        config = BatcherConfig(max_batch_size=8, max_queue_delay_s=0.0, max_queue_size=64)
        batcher = Batcher(model, config, on_batch=lambda images, s: compute_times.append(s))
        batcher.start()
        await run_behind_a_busy_model(batcher, model, [images_of(0.1)] * 4)
        return batcher

    stats = run_scenario(scenario).stats
    assert model.batch_sizes == [1, 4]
    of_four = stats.batch_sizes[4]
    parts = (of_four.compute_input, of_four.compute_infer, of_four.compute_output)
    # Four requests' images were joined into one tensor, and the rows handed back: both
    # take time, apart from the ONNX Runtime call, which the metrics' compute time holds.
    assert [part.count for part in parts] == [1, 1, 1]
    assert all(part.ns > 0 for part in parts)
    assert of_four.compute_input.ns + of_four.compute_infer.ns == pytest.approx(
        compute_times[1] * 1e9, abs=2
    )
    assert stats.compute_infer.count == stats.compute_output.count == 2


def test_stats_count_a_failed_request_once_and_no_execution() -> None:
    model = GatedRun()

    async def scenario() -> Batcher:
        batcher = make_batcher(model)
        with pytest.raises(InferenceFailed):
            await batcher.submit(images_of(POISON, 2))
        await batcher.close()
        return batcher

    stats = run_scenario(scenario).stats
    assert (stats.fail.count, stats.success.count, stats.execution_count) == (1, 0, 0)
