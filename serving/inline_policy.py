"""Which batches run on the event loop rather than on the batcher's ONNX Runtime thread.

Handing a batch to the thread and back costs two cross-CPU thread wake-ups. Two kinds of
batch skip that: those warm-up measured as quicker than the hand-off itself, and a lone
request's batch while the server has nothing else in flight (nobody waits for the loop
then), bounded by the time warm-up predicts for it. Warm-up runs on blank images, though,
and nothing else is served while an inline batch runs: one far slower than promised
turns both kinds off.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# The batcher's logger: what this module reports is about one model's batches.
logger = logging.getLogger("mnist_serve.batcher")

# An inline batch this many times slower than warm-up promised stalls the event loop,
# if it took at least INLINE_STALL_MIN_S: a cold cache or a page fault can make a 40 µs
# call take 400, which stalls nothing.
INLINE_STALL_FACTOR = 10
INLINE_STALL_MIN_S = 0.002

IdleProbe = Callable[[], bool]  # True when the batch's request is all the server is handling

# The default bound on a batch run on the event loop, by the CPUs a worker has. With one,
# a hand-off to the ONNX Runtime thread overlaps nothing and costs two wake-ups and the
# GIL's return: two workers on 2 CPUs served 8 % more requests/s at concurrency 64 with
# 2 ms than with 0.2 (p99 28 against 38 ms), 4 % more at 16. With two CPUs to one worker
# the loop reads requests while ONNX Runtime computes on the other: 2 ms gained nothing at
# 64 and doubled p99, so only batches quicker than the hand-off (~0.1 ms) run inline.
ONE_CPU_INLINE_MAX_MS = 2.0
SHARED_INLINE_MAX_MS = 0.2


def inline_compute_max_s(configured_ms: float | None, cpus_per_worker: int) -> float:
    """The bound on a batch warm-up may let run on the event loop: the setting
    ``inline_compute_max_ms`` if given, else by the CPUs each worker has."""
    if configured_ms is None:
        configured_ms = ONE_CPU_INLINE_MAX_MS if cpus_per_worker <= 1 else SHARED_INLINE_MAX_MS
    return configured_ms / 1000


@dataclass
class InlinePolicy:
    """Warm-up's figures and the bounds they are held to; all 0 (nothing inline) until
    warm-up sets them."""

    # Batches this small run on the event loop (see inline_compute_max_s).
    max_images: int = 0
    # What such a batch took at warm-up, at most; one far slower turns the inline path off.
    max_s: float = 0.0
    # A lone request's batch predicted to take at most this runs on the event loop while
    # the server has nothing else in flight; a request arriving meanwhile waits that long.
    idle_max_s: float = 0.0
    # Compute time per image, measured at warm-up: predicts a batch's time (0: unknown).
    seconds_per_image: float = 0.0

    def promise_s(
        self, requests: int, images: int, queued_requests: int, is_server_idle: IdleProbe
    ) -> float | None:
        """The time a batch may take on the event loop, or None: it runs on the thread.

        Only a batch of one request, with none queued behind it, may use the idle bound;
        ``is_server_idle`` is asked last, only when the answer turns on it.
        """
        if images <= self.max_images:
            return self.max_s
        predicted_s = images * self.seconds_per_image
        if (
            0 < predicted_s <= self.idle_max_s
            and requests == 1
            and queued_requests == 0
            and is_server_idle()
        ):
            return predicted_s
        return None

    def run(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        images: np.ndarray,
        promised_s: float,
        model: str,
    ) -> np.ndarray:
        """``run(images)`` on the calling thread (the event loop); a batch far slower than
        ``promised_s`` turns inlining off for good.

        A model's cost can depend on its input (loops, early exits), which warm-up on
        blank images does not see, and nothing else is served while an inline batch runs.
        CPU time, not wall time, so a busy machine preempting the loop does not count.
        """
        cpu_started = time.thread_time()
        outputs = run(images)
        cpu_s = time.thread_time() - cpu_started
        if cpu_s > max(INLINE_STALL_FACTOR * promised_s, INLINE_STALL_MIN_S):
            logger.warning(
                "model %s: an inline batch took %.1f ms of CPU (warm-up promised under %.1f ms);"
                " batches run on the ONNX Runtime thread from now on",
                model,
                cpu_s * 1e3,
                promised_s * 1e3,
            )
            self.max_images = 0
            self.idle_max_s = 0.0
        return outputs
