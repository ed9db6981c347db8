"""v1 picture decoding: bounded, refused at once when busy, stopped at the deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.api import v1
from serving.app import create_app
from serving.runtime import usable_cpus
from serving.settings import Settings
from tests.serving.api_v1.helpers import PNG, PREDICT, assert_error, png_of_digit
from tests.support import MetricSamples, block_until_past, metric_samples, metric_value

GUARD_S = 10.0  # bound on any wait, so a bug fails a test instead of hanging it


class GatedDecode:
    """A stand-in for ``decode_image`` that blocks while its gate is shut."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls = 0

    def __call__(self, picture: bytes, max_pixels: int) -> np.ndarray:
        self.calls += 1
        self.gate.wait(GUARD_S)
        return np.full((28, 28), 0.5, dtype=np.float32)


def scrape(client: TestClient) -> MetricSamples:
    return metric_samples(client.get("/metrics").text)


def wait_until(condition: Callable[[], bool]) -> None:
    """Poll a condition with a deadline (no fixed sleeps)."""
    deadline = time.monotonic() + GUARD_S
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.001)


def test_pictures_beyond_the_decode_line_are_refused_at_once_and_counted(
    tiny_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decode = GatedDecode()
    monkeypatch.setattr(v1, "decode_image", decode)
    settings = Settings(
        models_dir=tiny_repo, decode_threads=1, max_waiting_decodes=1, overload_status_code=429
    )
    app = create_app(settings)
    with TestClient(app) as client, ThreadPoolExecutor(2) as senders:
        before = scrape(client)
        admitted = [
            senders.submit(client.post, PREDICT, content=png_of_digit(), headers=PNG)
            for _ in range(2)
        ]
        wait_until(lambda: app.server.decode_pool.admitted == 2)  # one decodes, one waits
        refused = client.post(PREDICT, content=png_of_digit(), headers=PNG)  # gate still shut
        decode.gate.set()
        answers = [sent.result(GUARD_S) for sent in admitted]
        after = scrape(client)

    assert_error(refused, 429, "busy decoding pictures")
    assert int(refused.headers["retry-after"]) >= 1
    assert [answer.status_code for answer in answers] == [200, 200]
    assert decode.calls == 2
    for name, labels in [
        ("mnist_serve_rejections_total", {"reason": "decoders_busy"}),
        ("mnist_serve_requests_total", {"outcome": "rejected"}),
    ]:
        delta = metric_value(after, name, model="tiny", **labels) - metric_value(
            before, name, model="tiny", **labels
        )
        assert delta == 1, name


def test_a_multipart_request_stops_decoding_at_its_deadline_with_a_504(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[bytes] = []

    def outlasts_the_deadline(picture: bytes, max_pixels: int) -> np.ndarray:
        decoded.append(picture)
        # A slow picture: the request's 1000 ms began before this decode did, so they
        # have passed when it ends, however late it started.
        block_until_past(time.monotonic() + 1.0)
        return np.full((28, 28), 0.5, dtype=np.float32)

    monkeypatch.setattr(v1, "decode_image", outlasts_the_deadline)
    files = [("file", (f"{index}.png", png_of_digit(index), "image/png")) for index in range(3)]
    before = scrape(client)

    response = client.post(PREDICT, files=files, headers={"X-Request-Timeout-Ms": "1000"})

    assert_error(response, 504, "timed out while its pictures were decoded")
    assert "1 of 3 done" in response.json()["error"]
    assert len(decoded) == 1
    timeouts = [
        metric_value(samples, "mnist_serve_requests_total", model="tiny", outcome="timeout")
        for samples in (before, scrape(client))
    ]
    assert timeouts[1] - timeouts[0] == 1


def test_pictures_decode_on_as_many_threads_as_the_usable_cpus(tiny_repo: Path) -> None:
    app = create_app(Settings(models_dir=tiny_repo))

    assert app.server.decode_pool.threads == usable_cpus()
