"""Deadlines: refused at the door when they cannot be met; dropped unrun once expired."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.helpers import QUIET_ENV, gauge, is_correct, v2_body
from tests.reliability.models import SLOW_PIXEL, clean_images, marked
from tests.support import metric_samples, metric_value, running_server, wait_for

SLOW_VALUE = 0.1  # ~1000 Loop iterations: a batch of 50-150 ms
BLOCKER_VALUE = 0.5  # ~5000 iterations: the model is busy for ~0.2-1 s
STALL_BLOCKER_VALUE = 1.0  # ~10000 iterations: ~0.4-2 s
INFER = "/v2/models/marker/infer"


ONE_PER_BATCH_ENV = {**QUIET_ENV, "MNIST_SERVE_MAX_BATCH_SIZE": "1"}


def inference_count(url: str, field: str = "inference_count") -> int:
    """Images answered (or, with ``field="execution_count"``, batches run)."""
    stats = httpx.get(f"{url}/v2/models/marker/stats").json()
    return int(stats["model_stats"][0][field])


@pytest.fixture(scope="module")
def slow_server(marker_repo: Path) -> Iterator[str]:
    """A server whose batcher has learnt that a batch takes ~100 ms; batches of one, so
    that requests sent together queue behind each other."""
    with running_server(marker_repo, env=ONE_PER_BATCH_ENV) as (url, _):
        images = marked(clean_images(1), SLOW_PIXEL, SLOW_VALUE)
        for _ in range(8):  # the batch-time estimate is a moving average
            assert is_correct(httpx.post(url + INFER, content=v2_body(images)), images)
        yield url


@pytest.mark.parametrize(
    ("timeout_us", "headers"),
    # Far less than a batch, far more than reading and decoding one image takes.
    [(None, {"X-Request-Timeout-Ms": "20"}), (20_000, {})],
    ids=["header-X-Request-Timeout-Ms", "v2-parameters-timeout"],
)
def test_request_that_cannot_meet_its_deadline_is_refused_at_the_door(
    slow_server: str, timeout_us: int | None, headers: dict[str, str]
) -> None:
    images = marked(clean_images(1), SLOW_PIXEL, SLOW_VALUE)
    refused_before = gauge(slow_server, "mnist_serve_rejections_total", reason="deadline")
    computed_before = inference_count(slow_server)

    blockers, response = asyncio.run(
        behind_a_busy_model(slow_server, v2_body(images, timeout_us=timeout_us), headers)
    )

    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert "cannot finish before the request's deadline" in response.json()["error"]
    assert gauge(slow_server, "mnist_serve_rejections_total", reason="deadline") == (
        refused_before + 1
    )
    assert [blocker.status_code for blocker in blockers] == [200, 200]
    assert inference_count(slow_server) == computed_before + 2  # the blockers, never it
    generous = httpx.post(slow_server + INFER, content=v2_body(images, timeout_us=10_000_000))
    assert is_correct(generous, images)


def test_idle_model_runs_a_short_deadline_request_its_past_batches_say_is_too_short(
    slow_server: str,
) -> None:
    """Nothing queued: the request runs (and times out), which is what teaches the batch-time
    estimate; refusing it would refuse forever after one slow batch."""
    images = marked(clean_images(1), SLOW_PIXEL, SLOW_VALUE)
    batches_before = inference_count(slow_server, "execution_count")

    response = httpx.post(
        slow_server + INFER, content=v2_body(images), headers={"X-Request-Timeout-Ms": "20"}
    )

    assert response.status_code == 504
    assert wait_for(
        lambda: inference_count(slow_server, "execution_count") == batches_before + 1,
        timeout_s=30,
        what="the request's batch to finish",
    )
    quick = httpx.post(slow_server + INFER, content=v2_body(clean_images(1)))
    assert is_correct(quick, clean_images(1))


async def behind_a_busy_model(
    url: str, body: bytes, headers: dict[str, str], blocker_value: float = BLOCKER_VALUE
) -> tuple[list[httpx.Response], httpx.Response]:
    """Two slow requests (batches of one); once one runs and one waits, ``body`` joins the
    queue behind them."""
    blockers = [marked(clean_images(1, seed=n), SLOW_PIXEL, blocker_value) for n in (1, 2)]
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        sent = [asyncio.create_task(client.post(INFER, content=v2_body(x))) for x in blockers]
        while await in_flight_and_queued(client) != (2, 1):
            assert not any(task.done() for task in sent), "the model was never seen busy"
            await asyncio.sleep(0.005)
        victim = await client.post(INFER, content=body, headers=headers)
        return list(await asyncio.gather(*sent)), victim


async def in_flight_and_queued(client: httpx.AsyncClient) -> tuple[float, float]:
    """Requests being handled (scrapes are not counted) and images waiting in the queue."""
    samples = metric_samples((await client.get("/metrics")).text)
    in_flight = metric_value(samples, "mnist_serve_requests_in_flight")
    return in_flight, metric_value(samples, "mnist_serve_queue_depth_images", model="marker")


def test_request_that_expires_in_the_queue_is_dropped_unrun_with_504(marker_repo: Path) -> None:
    with running_server(marker_repo, env=ONE_PER_BATCH_ENV) as (url, _):
        timeouts_before = gauge(url, "mnist_serve_requests_total", outcome="timeout")
        computed_before = inference_count(url)

        # The running blocker has run a few ms when the victim comes (its deadline is
        # not yet beyond hope), and it and the queued one take 0.4-2 s.
        blockers, victim = asyncio.run(
            behind_a_busy_model(
                url,
                v2_body(clean_images(1)),
                headers={"X-Request-Timeout-Ms": "300"},
                blocker_value=STALL_BLOCKER_VALUE,
            )
        )

        assert victim.status_code == 504
        assert "dropped" in victim.json()["error"]
        assert [blocker.status_code for blocker in blockers] == [200, 200]
        assert inference_count(url) == computed_before + 2  # the blockers only
        assert gauge(url, "mnist_serve_requests_total", outcome="timeout") == timeouts_before + 1
