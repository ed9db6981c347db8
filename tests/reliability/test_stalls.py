"""A stalled ONNX Runtime call: the model stops taking requests, the process asks to be
restarted, and both recover when the call ends (see serving/stall.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.reliability.helpers import QUIET_ENV, gauge, is_correct, until, v2_body
from tests.reliability.models import (
    DEFAULT_ITERATIONS_PER_UNIT,
    SLOW_PIXEL,
    clean_images,
    marked,
    write_marker_model,
)
from tests.support import running_server

INFER = "/v2/models/marker/infer"
STALL_VALUE = 1.0  # the Loop's longest
# 60,000 matrix products: ~3.5 s on one core here, 7x liveness_stall_s below, so the
# stall outlasts both thresholds with room on a machine a few times faster.
STALL_ITERATIONS = 3 * DEFAULT_ITERATIONS_PER_UNIT
STALL_ENV = {
    **QUIET_ENV,
    "MNIST_SERVE_REQUEST_TIMEOUT_S": "0.2",
    "MNIST_SERVE_LIVENESS_STALL_S": "0.5",
}


@dataclass
class StallSeen:
    """What clients saw while one batch stalled: (status, error) pairs and the gauge."""

    was_live_while_unready: bool = False
    model_ready: tuple[int, str] = (0, "")
    newcomer: tuple[int, str] = (0, "")
    model_ready_gauge: float = -1.0
    stalled_status: int = 0
    after: list[int] = field(default_factory=list)


def status_and_error(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json().get("error", "")


async def status(client: httpx.AsyncClient, path: str) -> int:
    return (await client.get(path)).status_code


async def watch_a_stall(url: str, stalling: bytes) -> StallSeen:
    seen = StallSeen()
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        sent = asyncio.create_task(client.post(INFER, content=stalling))

        async def unready() -> bool:
            assert not sent.done() or sent.result().status_code == 504
            return await status(client, "/v2/health/ready") == 503

        await until(unready, what="readiness to fail while the batch runs")
        seen.was_live_while_unready = await status(client, "/v2/health/live") == 200
        seen.model_ready = status_and_error(await client.get("/v2/models/marker/ready"))
        newcomer = await client.post(INFER, content=v2_body(clean_images(1)))
        seen.newcomer = status_and_error(newcomer)
        seen.model_ready_gauge = gauge(url, "mnist_serve_model_ready", model="marker")

        async def not_live() -> bool:
            return await status(client, "/v2/health/live") == 503

        await until(not_live, what="liveness to fail once the batch ran past liveness_stall_s")
        seen.stalled_status = (await sent).status_code

        async def recovered() -> bool:
            return await status(client, "/v2/health/ready") == 200

        await until(recovered, timeout_s=120, what="readiness once the batch ended")
        seen.after = [
            await status(client, "/v2/health/live"),
            await status(client, "/v2/models/marker/ready"),
        ]
    return seen


def test_a_stalled_batch_makes_its_model_unready_then_the_process_not_live_until_it_ends(
    tmp_path: Path,
) -> None:
    write_marker_model(tmp_path, iterations_per_unit=STALL_ITERATIONS)
    stalling = v2_body(marked(clean_images(1), SLOW_PIXEL, STALL_VALUE))
    with running_server(tmp_path, env=STALL_ENV) as (url, _):
        seen = asyncio.run(watch_a_stall(url, stalling))
        ready_gauge_after = gauge(url, "mnist_serve_model_ready", model="marker")
        images = clean_images(2, seed=3)
        answer_after = httpx.post(url + INFER, content=v2_body(images), timeout=30)

    # Past request_timeout_s: the model is not ready, and says why, at once.
    assert seen.was_live_while_unready
    for status_code, error in (seen.model_ready, seen.newcomer):
        assert status_code == 503
        assert "is not ready: its ONNX Runtime call has run for over 0.2 s" in error
    assert seen.model_ready_gauge == 0
    # The stalled request itself timed out long before its batch ended.
    assert seen.stalled_status == 504
    # Once the batch ended: live, ready and answering again.
    assert seen.after == [200, 200]
    assert ready_gauge_after == 1
    assert is_correct(answer_after, images)


async def liveness_while_unloading_a_stalled_model(url: str, stalling: bytes) -> list[int]:
    """Stall the model until liveness fails, unload it (which waits for the stuck call), and
    sample liveness from when the model has left the repository until the unload is done."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        sent = asyncio.create_task(client.post(INFER, content=stalling))

        async def not_live() -> bool:
            return await status(client, "/v2/health/live") == 503

        await until(not_live, what="liveness to fail once the batch ran past liveness_stall_s")
        unload = asyncio.create_task(client.post("/v2/repository/models/marker/unload"))

        async def gone() -> bool:
            return await status(client, "/v2/models/marker/ready") == 404

        await until(gone, what="the unloaded model to leave the repository")
        samples = []
        while not unload.done():
            samples.append(await status(client, "/v2/health/live"))
            await asyncio.sleep(0.02)  # a sampling interval, not a wait for an event
        assert (await unload).status_code == 200
        await sent
    return samples


def test_unloading_a_stalled_model_keeps_the_process_not_live_until_the_call_ends(
    tmp_path: Path,
) -> None:
    """The unload waits for the stuck call; while it does, the call still holds its thread,
    so liveness must not turn 200 because the model left the repository."""
    write_marker_model(tmp_path, iterations_per_unit=STALL_ITERATIONS)
    stalling = v2_body(marked(clean_images(1), SLOW_PIXEL, STALL_VALUE))
    env = {**STALL_ENV, "MNIST_SERVE_MODEL_CONTROL": "true"}
    with running_server(tmp_path, env=env) as (url, _):
        samples = asyncio.run(liveness_while_unloading_a_stalled_model(url, stalling))

    # 503 for as long as the call ran (seconds, far more than the watchdog's 50 ms checks),
    # then 200 once it ended: never 200 first and 503 again.
    assert samples == sorted(samples, reverse=True)
    assert samples.count(503) >= 10, samples
