"""What the reliability tests share: V2 bodies, answer checks, metrics, memory, polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np
import orjson

from tests.support import MetricSamples, metric_samples, metric_value, tiny_logits

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Quiet, single-threaded servers: the machine is shared, and one ORT thread keeps a
# slow batch's duration steady. The marker model's cost depends on its input, so no
# batch its warm-up (on blank images) finds quick may run on the event loop.
QUIET_ENV = {
    "MNIST_SERVE_ACCESS_LOG": "false",
    "MNIST_SERVE_INTRA_OP_THREADS": "1",
    "MNIST_SERVE_INLINE_COMPUTE_MAX_MS": "0",
    "MNIST_SERVE_IDLE_INLINE_MAX_MS": "0",
}


def v2_body(images: np.ndarray, *, timeout_us: int | None = None) -> bytes:
    """A V2 JSON inference request for float32 images (N, 1, 28, 28)."""
    request: dict[str, object] = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": list(images.shape),
                "data": images.reshape(-1).tolist(),
            }
        ]
    }
    if timeout_us is not None:
        request["parameters"] = {"timeout": timeout_us}
    return orjson.dumps(request)


def logits_of(response: httpx.Response) -> np.ndarray:
    """The logits of a V2 JSON inference response."""
    output = response.json()["outputs"][0]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def is_correct(response: httpx.Response, images: np.ndarray, seed: int = 0) -> bool:
    """A 200 whose logits are what the tiny model computes for ``images``."""
    if response.status_code != 200:
        return False
    return bool(np.allclose(logits_of(response), tiny_logits(images, seed), atol=1e-4))


def scrape(base_url: str) -> MetricSamples:
    return metric_samples(httpx.get(f"{base_url}/metrics", timeout=10).text)


def gauge(base_url: str, name: str, **labels: str) -> float:
    return metric_value(scrape(base_url), name, **labels)


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc/<pid>/status (VmRSS, in kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def reset_peak_rss(pid: int) -> None:
    """Set a process's peak resident memory (VmHWM) to its current VmRSS (Linux >= 4.0)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_bytes(pid: int) -> int:
    """Peak resident memory of a process since it started or since ``reset_peak_rss``,
    from /proc/<pid>/status (VmHWM, in kB): memory used and freed between two reads
    shows here, not in VmRSS."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


async def until(
    condition: Callable[[], Awaitable[bool]], *, timeout_s: float = 30, what: str
) -> None:
    """Await ``condition`` until it holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        await asyncio.sleep(0.005)


def write_report(name: str, text: str) -> Path:
    """Save a test's measured figures under test-artifacts/ (and print them, for -s)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.write_text(text)
    print(text)
    return path
