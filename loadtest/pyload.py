"""A small closed-loop HTTP/1.1 load generator: the benchmark's fallback when wrk is absent.

``connections`` keep-alive connections each send the same pre-built POST back to
back for ``duration_s``; the result has the fields wrk_post.lua prints. Pure
asyncio in one process, so it saturates a fast server much sooner than wrk does:
numbers from it are a lower bound.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import numpy as np


async def _connection_loop(
    host: str, port: int, request: bytes, deadline: float, latencies_us: list[float]
) -> tuple[int, int]:
    """Send ``request`` until ``deadline``; return (responses that were not 2xx, read errors)."""
    reader, writer = await asyncio.open_connection(host, port)
    status_errors = read_errors = 0
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            try:
                head = await reader.readuntil(b"\r\n\r\n")
                length = _content_length(head)
                await reader.readexactly(length)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                read_errors += 1
                break
            latencies_us.append((time.perf_counter() - started) * 1e6)
            status_errors += not head.startswith(b"HTTP/1.1 2")
    finally:
        writer.close()
    return status_errors, read_errors


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise ConnectionError("response without Content-Length")


async def _run(url: str, body: bytes, headers: dict[str, str], connections: int, duration_s: float):
    parts = urlsplit(url)
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{lines}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies_us: list[float] = []
    started = time.perf_counter()
    deadline = started + duration_s
    results = await asyncio.gather(
        *(
            _connection_loop(
                parts.hostname or "127.0.0.1", parts.port or 80, request, deadline, latencies_us
            )
            for _ in range(connections)
        )
    )
    return latencies_us, results, time.perf_counter() - started


def run_python_load(
    url: str, body: bytes, headers: dict[str, str], connections: int, duration_s: float
) -> dict[str, float]:
    latencies_us, results, elapsed_s = asyncio.run(
        _run(url, body, headers, connections, duration_s)
    )
    latencies = np.asarray(latencies_us or [0.0])
    return {
        "requests": len(latencies_us),
        "duration_us": elapsed_s * 1e6,
        "status_errors": sum(status for status, _ in results),
        "read_errors": sum(errors for _, errors in results),
        "connect_errors": 0,
        "write_errors": 0,
        "timeouts": 0,
        "p50_us": float(np.percentile(latencies, 50)),
        "p90_us": float(np.percentile(latencies, 90)),
        "p99_us": float(np.percentile(latencies, 99)),
        "max_us": float(latencies.max()),
        "mean_us": float(latencies.mean()),
    }
