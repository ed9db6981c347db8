"""What ObservabilityMiddleware costs per request: ``python -m tests.serving.bench_middleware``.

Not a test (timings are never asserted): it drives a trivial ASGI app directly, with
and without the middleware, best of five runs, and prints microseconds per request.
The access-log case writes real JSON lines, to /dev/null.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import SimpleNamespace
from typing import Any

from serving.logs import configure_logging
from serving.metrics import ServingMetrics
from serving.middleware import ObservabilityMiddleware

RECORD = SimpleNamespace(
    model="tiny", version="1", images=1, queue_s=0.0001, compute_s=0.0002, batch_images=4
)
START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"json")]}
BODY = {"type": "http.response.body", "body": b"{}"}


async def endpoint(scope: dict[str, Any], receive: Any, send: Any) -> None:
    scope.setdefault("state", {})["inference"] = RECORD
    await send(START)
    await send(BODY)


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


async def send(message: Any) -> None:
    return None


def new_scope() -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/v1/models/tiny/predict",
        "headers": [(b"host", b"api"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
    }


async def microseconds_per_request(app: Any, requests: int = 20_000) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(requests):
            await app(new_scope(), receive, send)
        best = min(best, (time.perf_counter() - started) / requests * 1e6)
    return best


async def measure(log_stream: Any) -> tuple[float, float, float]:
    metrics = ServingMetrics()
    bare = await microseconds_per_request(endpoint)
    quiet = ObservabilityMiddleware(endpoint, metrics=metrics, access_log=False)
    without_log = await microseconds_per_request(quiet)
    configure_logging("info")
    for handler in logging.getLogger().handlers:
        handler.setStream(log_stream)  # type: ignore[attr-defined]
    logged = ObservabilityMiddleware(endpoint, metrics=metrics, access_log=True)
    return bare, without_log, await microseconds_per_request(logged)


def main() -> None:
    with open("/dev/null", "w") as devnull:
        bare, without_log, with_log = asyncio.run(measure(devnull))
    print(f"bare app:                          {bare:6.2f} µs/request")
    print(f"+ middleware, access log off:      {without_log - bare:+6.2f} µs")
    print(f"+ middleware, access log (JSON):   {with_log - bare:+6.2f} µs")


if __name__ == "__main__":
    main()
