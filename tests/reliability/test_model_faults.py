"""Model faults end to end: refusing to start, skipping bad models, hot reload."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from serving.card import MODEL_FILE, ModelCard, file_sha256
from tests.reliability.helpers import QUIET_ENV, gauge, is_correct, until, v2_body
from tests.reliability.models import SLOW_PIXEL, clean_images, marked, write_marker_model
from tests.support import SERVE_COMMAND, free_port, running_server, write_tiny_model

STARTUP_TIMEOUT_S = 120
INFER = "/v2/models/marker/infer"
CLIENTS_DURING_LOAD = 8


def serve_until_exit(models_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``mnist-serve`` on ``models_dir``, expecting it to exit by itself."""
    executable = Path(sys.executable).parent / SERVE_COMMAND[0]
    return subprocess.run(
        [str(executable), *SERVE_COMMAND[1:]],
        env={
            **os.environ,
            "MNIST_SERVE_MODELS_DIR": str(models_dir),
            "MNIST_SERVE_PORT": str(free_port()),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT_S,
        check=False,
    )


def truncate(version_dir: Path) -> None:
    """Cut the ONNX file short after publishing (a broken copy or disk)."""
    model = version_dir / MODEL_FILE
    model.write_bytes(model.read_bytes()[:300])


def corrupt_with_matching_card(version_dir: Path) -> None:
    """Garbage bytes whose checksum the card agrees with: ONNX Runtime must reject them."""
    (version_dir / MODEL_FILE).write_bytes(b"\x08\x07garbage" * 40)
    card = ModelCard.read(version_dir)
    card.model_sha256 = file_sha256(version_dir / MODEL_FILE)
    card.write(version_dir)


def test_empty_repository_refuses_to_start(tmp_path: Path) -> None:
    run = serve_until_exit(tmp_path)

    assert run.returncode != 0
    assert f"no models in {tmp_path}" in run.stderr


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (truncate, "SHA-256 differs from the card's"),
        (corrupt_with_matching_card, "ONNX Runtime cannot load it"),
    ],
    ids=["truncated", "corrupt-with-matching-card"],
)
def test_damaged_model_refuses_to_start_naming_the_file(
    tmp_path: Path, damage: Callable[[Path], None], message: str
) -> None:
    write_tiny_model(tmp_path, "good")
    damage(write_tiny_model(tmp_path, "broken"))

    run = serve_until_exit(tmp_path)

    assert run.returncode != 0
    assert message in run.stderr
    assert str(tmp_path / "broken" / "1" / MODEL_FILE) in run.stderr


def test_skip_bad_models_serves_the_good_one_and_lists_the_bad_as_unavailable(
    tmp_path: Path,
) -> None:
    write_tiny_model(tmp_path, "good")
    truncate(write_tiny_model(tmp_path, "broken"))
    images = clean_images(2)
    env = {**QUIET_ENV, "MNIST_SERVE_SKIP_BAD_MODELS": "true"}
    with running_server(tmp_path, env=env) as (url, _):
        index = httpx.post(f"{url}/v2/repository/index").json()
        answer = httpx.post(f"{url}/v2/models/good/infer", content=v2_body(images))
        broken = httpx.post(f"{url}/v2/models/broken/infer", content=v2_body(images))
        ready = httpx.get(f"{url}/v2/health/ready")

    states = {entry["name"]: entry for entry in index}
    assert states["good"]["state"] == "READY"
    assert states["broken"]["state"] == "UNAVAILABLE"
    assert "SHA-256 differs" in states["broken"]["reason"]
    assert is_correct(answer, images)
    assert broken.status_code == 404
    assert ready.status_code == 200


def answered_by(response: httpx.Response, images: np.ndarray) -> str | None:
    """The version that answered correctly (seed = version - 1), else None."""
    if response.status_code != 200:
        return None
    version = response.json()["model_version"]
    return version if is_correct(response, images, seed=int(version) - 1) else None


async def reload_under_load(url: str, repo: Path) -> tuple[list[str | None], list[str | None]]:
    """Slow requests in flight on v1, then v2 published and loaded while requests keep coming.

    Returns who answered the in-flight requests, and who answered those sent during the load.
    """
    in_flight_images = [marked(clean_images(1, seed=n), SLOW_PIXEL, 0.3) for n in range(3)]
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        in_flight = [
            asyncio.create_task(client.post(INFER, content=v2_body(images)))
            for images in in_flight_images
        ]

        async def all_queued() -> bool:
            text = (await client.get("/metrics")).text
            return 'mnist_serve_queue_depth_images{model="marker",version="1"} 2.0' in text

        await until(all_queued, what="one request running and two queued on version 1")
        write_marker_model(repo, version=2, seed=1)
        load = asyncio.create_task(client.post("/v2/repository/models/marker/load"))
        during: list[str | None] = []

        async def keep_asking(client_number: int) -> None:
            while not load.done():
                images = clean_images(1, seed=1000 * client_number + len(during))
                response = await client.post(INFER, content=v2_body(images))
                during.append(answered_by(response, images) or response.text[:200])

        await asyncio.gather(*(keep_asking(number) for number in range(CLIENTS_DURING_LOAD)))
        assert (await load).status_code == 200
        answers = await asyncio.gather(*in_flight)
    return [answered_by(*pair) for pair in zip(answers, in_flight_images, strict=True)], during


def test_hot_reload_finishes_in_flight_requests_on_the_old_version(tmp_path: Path) -> None:
    write_marker_model(tmp_path, version=1, seed=0)
    env = {**QUIET_ENV, "MNIST_SERVE_MODEL_CONTROL": "true", "MNIST_SERVE_MAX_BATCH_SIZE": "1"}
    with running_server(tmp_path, env=env) as (url, _):
        in_flight, during = asyncio.run(reload_under_load(url, tmp_path))
        images = clean_images(2, seed=7)
        after = answered_by(httpx.post(url + INFER, content=v2_body(images)), images)
        rejected = gauge(url, "mnist_serve_rejections_total")

    assert in_flight == ["1", "1", "1"]
    assert during  # requests kept coming while the new version loaded
    assert all(version in ("1", "2") for version in during), during
    print(f"\n{len(during)} requests during the load: {sorted(set(during))}")
    assert after == "2"
    assert rejected == 0
