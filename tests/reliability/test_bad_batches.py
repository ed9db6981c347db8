"""Batches that go wrong: a poisoned request, a malformed output, a very slow batch."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.inline_policy import INLINE_STALL_STRIKES
from serving.settings import Settings
from tests.reliability.helpers import QUIET_ENV, is_correct, scrape, until, v2_body
from tests.reliability.models import (
    MALFORMED_PIXEL,
    POISON_PIXEL,
    SLOW_PIXEL,
    clean_images,
    marked,
)
from tests.support import metric_samples, metric_value, running_server

INFER = "/v2/models/marker/infer"
BLOCKER_VALUE = 0.5  # ~5000 Loop iterations: the model is busy for ~0.2-1 s
BATCH_MATES = 6


def batches_of_5_to_8(url: str) -> float:
    """ONNX Runtime calls (failed ones included) of 5 to 8 images, from the histogram."""
    samples = scrape(url)
    name = "mnist_serve_batch_size_images_bucket"
    return metric_value(samples, name, model="marker", le="8.0") - metric_value(
        samples, name, model="marker", le="4.0"
    )


async def queued_images(client: httpx.AsyncClient) -> float:
    samples = metric_samples((await client.get("/metrics")).text)
    return metric_value(samples, "mnist_serve_queue_depth_images", model="marker")


async def poisoned_batch(url: str) -> tuple[httpx.Response, list[httpx.Response], np.ndarray]:
    """While a slow request runs, a poisoned request and its batch-mates queue up together."""
    blocker = marked(clean_images(1, seed=100), SLOW_PIXEL, BLOCKER_VALUE)
    mates = clean_images(BATCH_MATES, seed=1)
    poisoned = marked(clean_images(1, seed=2), POISON_PIXEL, 1.0)
    requests = [poisoned, *(mates[index : index + 1] for index in range(BATCH_MATES))]
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        running = asyncio.create_task(client.post(INFER, content=v2_body(blocker)))

        async def is_running() -> bool:
            return await queued_images(client) == 0 and await is_in_flight(client)

        await until(is_running, what="the slow request to run")
        sent = [asyncio.create_task(client.post(INFER, content=v2_body(x))) for x in requests]
        while await queued_images(client) < len(requests):
            assert not running.done(), "the slow request ended before its followers queued"
            await asyncio.sleep(0.005)
        responses = await asyncio.gather(*sent)
        assert is_correct(await running, blocker)
    return responses[0], list(responses[1:]), mates


async def is_in_flight(client: httpx.AsyncClient) -> bool:
    samples = metric_samples((await client.get("/metrics")).text)
    return metric_value(samples, "mnist_serve_requests_in_flight") > 0  # scrapes are not counted


def test_poisoned_request_fails_alone_and_its_batch_mates_are_answered(
    marker_repo: Path,
) -> None:
    env = {**QUIET_ENV, "MNIST_SERVE_MAX_BATCH_SIZE": "8"}
    with running_server(marker_repo, env=env) as (url, _):
        big_batches_before = batches_of_5_to_8(url)

        poisoned, mates, mate_images = asyncio.run(poisoned_batch(url))

        assert poisoned.status_code == 500
        assert "ONNX Runtime failed on this request's images" in poisoned.json()["error"]
        for index, response in enumerate(mates):
            assert is_correct(response, mate_images[index : index + 1]), response.text
        assert batches_of_5_to_8(url) == big_batches_before + 1  # all seven in one call
        fresh = clean_images(3, seed=3)
        assert is_correct(httpx.post(url + INFER, content=v2_body(fresh)), fresh)
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200


def v1_json(images: np.ndarray) -> bytes:
    return orjson.dumps({"images": images.reshape(len(images), 784).tolist()})


@pytest.mark.parametrize("endpoint", ["v1", "v2"])
def test_output_that_breaks_the_model_card_is_an_error_not_an_answer(
    marker_repo: Path, endpoint: str
) -> None:
    # The marker model answers this batch with logits of no columns.
    images = np.concatenate([marked(clean_images(1), MALFORMED_PIXEL, 1.0), clean_images(1)])
    with running_server(marker_repo, env=QUIET_ENV) as (url, _):
        if endpoint == "v1":
            response = httpx.post(
                f"{url}/v1/models/marker/predict",
                content=v1_json(images),
                headers={"content-type": "application/json"},
            )
        else:
            response = httpx.post(url + INFER, content=v2_body(images))
        still_served = httpx.post(url + INFER, content=v2_body(clean_images(1)))

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert (
        "returned 'logits' of shape [2, 0] for 2 image(s); its card says [2, 10]"
        in (response.json()["error"])
    )
    assert "Traceback" not in response.text
    assert still_served.status_code == 200


def test_unexpected_error_is_a_json_500_without_a_traceback(marker_repo: Path) -> None:
    app = create_app(Settings(models_dir=marker_repo))

    @app.get("/explode")
    async def explode() -> None:
        raise RuntimeError("secret internal detail")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/explode")

    assert response.status_code == 500
    assert response.json() == {"error": "internal server error; the server log has the details"}
    assert "secret internal detail" not in response.text
    assert "Traceback" not in response.text


async def live_latencies_during(url: str, images: np.ndarray) -> tuple[list[float], float]:
    """Liveness-probe latencies while a slow request computes, and that request's time."""
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        started = time.perf_counter()
        slow = asyncio.create_task(client.post(INFER, content=v2_body(images)))
        while not slow.done():
            probe_started = time.perf_counter()
            assert (await client.get("/v2/health/live")).status_code == 200
            latencies.append(time.perf_counter() - probe_started)
        assert is_correct(await slow, images)
        return latencies, time.perf_counter() - started


def test_slow_batches_do_not_stall_the_event_loop(marker_repo: Path) -> None:
    # Default settings: warm-up on blank images finds this model quick enough to run on the
    # event loop; slow batches there stall it, and the third within a minute pauses that
    # path (one alone is as likely the machine's doing).
    env = {"MNIST_SERVE_ACCESS_LOG": "false", "MNIST_SERVE_INTRA_OP_THREADS": "1"}
    images = marked(clean_images(1), SLOW_PIXEL, BLOCKER_VALUE)
    with running_server(marker_repo, env=env) as (url, _):
        for _ in range(INLINE_STALL_STRIKES):
            response = httpx.post(url + INFER, content=v2_body(images), timeout=60)
            assert is_correct(response, images)
        latencies, slow_s = asyncio.run(live_latencies_during(url, images))

    assert len(latencies) > 1
    assert max(latencies) < slow_s / 2
