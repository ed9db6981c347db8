"""What the batcher tests share: a fake run function we own, its images, a started
batcher, and a model kept busy so requests queue behind it."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from serving.batch_result import BatchResult
from serving.batcher import Batcher, BatcherConfig
from tests.support import GUARD_S, wait_until

POISON = 0.5


class GatedRun:
    """A run function that records its batches and blocks while the gate is closed."""

    def __init__(self) -> None:
        self.calls: list[np.ndarray] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.entered.set()
        self.gate.wait(GUARD_S)
        self.calls.append(images.copy())
        if np.any(images == POISON):
            raise RuntimeError("poisoned input")
        # A stand-in model: the "logits" are the first ten pixels, so each request's
        # answer shows whose images it was computed from.
        return images.reshape(len(images), -1)[:, :10] * 2

    @property
    def batch_sizes(self) -> list[int]:
        return [len(call) for call in self.calls]


def images_of(value: float, count: int = 1) -> np.ndarray:
    return np.full((count, 1, 28, 28), value, dtype=np.float32)


def make_batcher(model: GatedRun, **overrides: object) -> Batcher:
    config = BatcherConfig(
        **{"max_batch_size": 8, "max_queue_delay_s": 0.0, "max_queue_size": 64, **overrides}
    )
    batcher = Batcher(model, config, name="fake")
    batcher.start()
    return batcher


async def occupy(batcher: Batcher, model: GatedRun) -> asyncio.Task:
    """Close the gate and start one request so the model is busy."""
    model.gate.clear()
    model.entered.clear()
    task = asyncio.ensure_future(batcher.submit(images_of(0.01)))
    await wait_until(model.entered.is_set)
    return task


async def run_behind_a_busy_model(
    batcher: Batcher, model: GatedRun, requests: list[np.ndarray]
) -> list[BatchResult]:
    """Keep the model busy with one request, queue ``requests`` behind it, let them all
    run, close the batcher: the answers, the first request's included."""
    first = await occupy(batcher, model)
    waiting = [asyncio.ensure_future(batcher.submit(images)) for images in requests]
    await wait_until(lambda: batcher.queued_images == sum(len(images) for images in requests))
    model.gate.set()
    results = await asyncio.gather(first, *waiting)
    await batcher.close()
    return results


class ThreadRecordingRun(GatedRun):
    """Also records which thread ran each batch: the event loop's or the ORT thread."""

    def __init__(self, cpu_s: float = 0.0) -> None:
        super().__init__()
        self.threads: list[int] = []
        self.cpu_s = cpu_s

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.threads.append(threading.get_ident())
        burn_cpu(self.cpu_s)
        return super().__call__(images)


def burn_cpu(seconds: float) -> None:
    started = time.thread_time()
    while time.thread_time() - started < seconds:
        pass


# Warm-up's figures for a model whose 64-image batch takes 1 ms: 16 µs an image.
IDLE_INLINE = {"seconds_per_image": 1e-3 / 64, "idle_max_s": 0.01}
