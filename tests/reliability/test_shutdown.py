"""Graceful shutdown: SIGTERM in the middle of a burst loses no accepted request."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from serving.__main__ import single_process_server
from serving.settings import Settings
from tests.reliability.helpers import QUIET_ENV, is_correct, v2_body
from tests.reliability.models import SLOW_PIXEL, clean_images, marked
from tests.support import running_server

# Open-loop arrivals, one per interval, whatever the server does: they reach the door
# before, during and after it closes. ~100 ms of work per batch of up to 4 images, so
# the server falls behind and requests queue up.
ARRIVAL_INTERVAL_S = 0.01
MAX_ARRIVALS = 300
ARRIVALS_AFTER_SIGTERM = 60
SLOW_VALUE = 0.25
IN_FLIGHT_AT_SIGTERM = 16


@dataclass
class Tally:
    completed: int = 0
    refused: int = 0
    cut_off: list[str] = field(default_factory=list)


async def one_request(client: httpx.AsyncClient, number: int, tally: Tally) -> None:
    images = marked(clean_images(1, seed=number), SLOW_PIXEL, SLOW_VALUE)
    try:
        response = await client.post("/v2/models/marker/infer", content=v2_body(images))
    except httpx.ConnectError:
        tally.refused += 1
        return
    except httpx.HTTPError as error:
        tally.cut_off.append(f"request {number}: {type(error).__name__}: {error!r}")
        return
    if response.status_code == 503:
        tally.refused += 1
    elif is_correct(response, images):
        tally.completed += 1
    else:
        tally.cut_off.append(f"request {number}: {response.status_code} {response.text[:200]}")


async def in_flight(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith("mnist_serve_requests_in_flight "):
            return float(line.split()[1])  # scrapes are not counted
    return 0.0


async def burst_with_sigterm(url: str, process: subprocess.Popen[bytes]) -> tuple[Tally, float]:
    """Arrivals every ARRIVAL_INTERVAL_S; SIGTERM once enough are in flight; more after it."""
    tally = Tally()
    # A fresh connection per request: a keep-alive connection idle at the instant the
    # server closes it can lose a request on the wire, which HTTP/1.1 clients retry.
    limits = httpx.Limits(max_keepalive_connections=0, max_connections=None)
    requests: list[asyncio.Task[None]] = []
    busy_at_sigterm = 0.0
    sigterm_at: int | None = None
    async with (
        httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client,
        httpx.AsyncClient(base_url=url, timeout=10) as probe,
    ):
        for number in range(MAX_ARRIVALS):
            requests.append(asyncio.create_task(one_request(client, number, tally)))
            if sigterm_at is None and (busy := await in_flight(probe)) >= IN_FLIGHT_AT_SIGTERM:
                busy_at_sigterm, sigterm_at = busy, number
                process.send_signal(signal.SIGTERM)
            if sigterm_at is not None and number >= sigterm_at + ARRIVALS_AFTER_SIGTERM:
                break
            await asyncio.sleep(ARRIVAL_INTERVAL_S)
        assert sigterm_at is not None, f"never {IN_FLIGHT_AT_SIGTERM} requests in flight"
        await asyncio.gather(*requests)
    return tally, busy_at_sigterm


def test_sigterm_mid_burst_finishes_every_accepted_request_then_exits_0(
    marker_repo: Path,
) -> None:
    env = {**QUIET_ENV, "MNIST_SERVE_MAX_BATCH_SIZE": "4", "MNIST_SERVE_SHUTDOWN_GRACE_S": "30"}
    with running_server(marker_repo, env=env) as (url, process):
        started = time.monotonic()
        tally, busy_at_sigterm = asyncio.run(burst_with_sigterm(url, process))
        exit_code = process.wait(timeout=60)

    print(
        f"\n{busy_at_sigterm:.0f} in flight at SIGTERM; {tally}; {time.monotonic() - started:.1f} s"
    )
    assert tally.cut_off == []
    assert tally.completed >= busy_at_sigterm
    assert tally.refused > 0
    assert exit_code == 0


def test_signal_turns_readiness_off_while_the_server_stays_live(tiny_repo: Path) -> None:
    server = single_process_server(Settings(models_dir=tiny_repo))
    with TestClient(server.config.app) as client:
        assert client.get("/v2/health/ready").status_code == 200

        server.handle_exit(signal.SIGTERM, None)

        assert client.get("/v2/health/ready").status_code == 503
        assert client.get("/v2/health/live").status_code == 200
        assert server.should_exit
