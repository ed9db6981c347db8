"""A batch the model fails on: bisected, so only the poisoned request fails."""

from __future__ import annotations

import asyncio

import numpy as np

from serving.errors import InferenceFailed
from tests.serving.batcher.helpers import (
    POISON,
    GatedRun,
    images_of,
    make_batcher,
    occupy,
)
from tests.support import run_scenario, wait_until


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
