"""Which batches run on the event loop rather than on the batcher's ONNX Runtime thread.

Handing a batch to the thread and back costs two cross-CPU thread wake-ups. Two kinds of
batch skip that: those warm-up measured as quicker than the hand-off itself, and a lone
request's batch while the server has nothing else in flight (nobody waits for the loop
then), bounded by the time warm-up predicts for it. Warm-up runs on blank images, though,
and nothing else is served while an inline batch runs: batches far slower than promised,
again and again, pause both kinds for a while (see :meth:`InlinePolicy.run`).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

# The batcher's logger: what this module reports is about one model's batches.
logger = logging.getLogger("mnist_serve.batcher")

# An inline batch this many times slower than warm-up promised stalls the event loop,
# if it took at least INLINE_STALL_MIN_S: a cold cache or a page fault can make a 40 µs
# call take 400, which stalls nothing.
INLINE_STALL_FACTOR = 10
INLINE_STALL_MIN_S = 0.002
# Stalls that pause inline batches, and the time they must fall within. One alone is more
# likely the machine than the model: a VM charges the thread for the time its host takes
# the CPU (one 4.1 ms "batch" of one image, after 450,000 quick ones, turned the inline path
# off for good and cost 40 % of requests/s at concurrency 1); a model's slow inputs recur.
INLINE_STALL_STRIKES = 3
INLINE_STALL_WINDOW_S = 60.0
# How long a pause lasts; each pause doubles the next, up to the maximum.
INLINE_PAUSE_S = 60.0
INLINE_PAUSE_MAX_S = 3600.0

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
    # The clock of stalls and pauses; a test's own, to pass a minute in no time.
    clock: Callable[[], float] = time.monotonic
    # While the clock is before this, every batch runs on the thread (0: no pause).
    paused_until: float = 0.0
    next_pause_s: float = INLINE_PAUSE_S
    _stalls: deque[float] = field(
        default_factory=lambda: deque(maxlen=INLINE_STALL_STRIKES), repr=False
    )

    def promise_s(
        self, requests: int, images: int, queued_requests: int, is_server_idle: IdleProbe
    ) -> float | None:
        """The time a batch may take on the event loop, or None: it runs on the thread.

        Only a batch of one request, with none queued behind it, may use the idle bound;
        ``is_server_idle`` is asked last, only when the answer turns on it.
        """
        if self.paused_until:
            if self.clock() < self.paused_until:
                return None
            self.paused_until = 0.0
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
        """``run(images)`` on the calling thread (the event loop), noting a stall: a batch
        that took over 10x ``promised_s`` (and at least 2 ms) of CPU.

        A model's cost can depend on its input (loops, early exits), which warm-up on
        blank images does not see, and nothing else is served while an inline batch runs.
        CPU time, not wall time, so a busy machine preempting the loop does not count,
        though a VM's host taking the CPU can. So one stall is noted, and only
        ``INLINE_STALL_STRIKES`` within ``INLINE_STALL_WINDOW_S`` pause inline batches:
        for ``INLINE_PAUSE_S`` the first time, twice as long each time after.
        """
        cpu_started = time.thread_time()
        outputs = run(images)
        cpu_s = time.thread_time() - cpu_started
        if cpu_s > max(INLINE_STALL_FACTOR * promised_s, INLINE_STALL_MIN_S):
            self._note_stall(model, cpu_s, promised_s)
        return outputs

    def _note_stall(self, model: str, cpu_s: float, promised_s: float) -> None:
        now = self.clock()
        self._stalls.append(now)
        stalls = sum(now - at <= INLINE_STALL_WINDOW_S for at in self._stalls)
        if stalls < INLINE_STALL_STRIKES:
            logger.info(
                "model %s: an inline batch took %.1f ms of CPU (warm-up promised under %.1f ms):"
                " %d of the %d such batches within %g s that pause inline batches",
                model,
                cpu_s * 1e3,
                promised_s * 1e3,
                stalls,
                INLINE_STALL_STRIKES,
                INLINE_STALL_WINDOW_S,
            )
            return
        pause_s = self.next_pause_s
        self.paused_until = now + pause_s
        self.next_pause_s = min(2 * pause_s, INLINE_PAUSE_MAX_S)
        self._stalls.clear()
        logger.warning(
            "model %s: %d inline batches within %g s took over %dx the CPU warm-up promised"
            " (the last %.1f ms, promised under %.1f ms); every batch runs on the ONNX Runtime"
            " thread for the next %g s",
            model,
            stalls,
            INLINE_STALL_WINDOW_S,
            INLINE_STALL_FACTOR,
            cpu_s * 1e3,
            promised_s * 1e3,
            pause_s,
        )
