"""Picture decoding on a few threads, with a short line and the request's deadline.

A 25-MP picture costs ~0.5 s of CPU and ~100 MB while it decodes, and it decodes before
its request reaches the batcher's queue, so the queue's limits cannot protect it.
This pool does: at most ``threads`` pictures decode at once (sized from the usable
CPUs); a request waits for a thread only while fewer than ``max_waiting`` others
wait, else it is refused at once with :class:`Overloaded` (503 or 429, Retry-After);
and it stops at its deadline, before a picture and between pictures, with
:class:`DeadlineExceeded`. It knows nothing of HTTP or pictures: it runs callables.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from serving.errors import DeadlineExceeded, Overloaded

T = TypeVar("T")

REASON = "decoders_busy"  # the refusal's label in mnist_serve_rejections_total
# Weight of the newest job in the moving average of a job's time (for Retry-After).
_SMOOTHING = 0.2


class DecodePool:
    """Runs each request's decode jobs one at a time on a bounded set of threads."""

    def __init__(self, threads: int, max_waiting: int, *, overload_status_code: int = 503) -> None:
        self.threads = threads
        self.max_waiting = max_waiting
        self.overload_status_code = overload_status_code
        self.admitted = 0  # requests decoding or waiting for a thread
        self._jobs_left = 0  # their jobs not yet done
        self._job_s = 0.0  # moving average of one job's time
        self._open()

    def _open(self) -> None:
        self._slots = asyncio.Semaphore(self.threads)
        # Threads start on first use: building an app starts none.
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="decode")

    def close(self) -> None:
        """Stop the threads once their jobs end; a later run starts afresh (an app's
        lifespan may run again, on another event loop, as in tests)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._open()

    async def run(self, jobs: Sequence[Callable[[], T]], deadline: float) -> list[T]:
        """Each job's result, in order; ``deadline`` is a ``time.monotonic()`` instant."""
        self._admit()
        self.admitted += 1
        self._jobs_left += len(jobs)
        results: list[T] = []
        try:
            for job in jobs:
                results.append(await self._run_one(job, deadline, len(results), len(jobs)))
                self._jobs_left -= 1
        finally:
            self.admitted -= 1
            self._jobs_left -= len(jobs) - len(results)
        return results

    def _admit(self) -> None:
        if self.admitted < self.threads + self.max_waiting:
            return
        raise Overloaded(
            f"busy decoding pictures: {self.admitted} requests are decoding or waiting for "
            f"one of {self.threads} decode threads (max_waiting_decodes {self.max_waiting}); "
            "retry later",
            reason=REASON,
            retry_after_s=self._jobs_left * self._job_s / self.threads,
            status_code=self.overload_status_code,
        )

    async def _run_one(self, job: Callable[[], T], deadline: float, done: int, total: int) -> T:
        slots = self._slots
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await slots.acquire()
        except TimeoutError:
            raise _timed_out(done, total, "waiting for a decode thread") from None
        if time.monotonic() >= deadline:
            slots.release()
            raise _timed_out(done, total, "decoding")
        started = time.perf_counter()
        future = asyncio.get_running_loop().run_in_executor(self._executor, job)
        # The thread is given back when the job ends, even if this request is cancelled.
        future.add_done_callback(lambda finished: self._job_done(finished, slots, started))
        return await asyncio.shield(future)

    def _job_done(
        self, future: asyncio.Future[T], slots: asyncio.Semaphore, started: float
    ) -> None:
        slots.release()
        job_s = time.perf_counter() - started
        self._job_s += (job_s - self._job_s) * (_SMOOTHING if self._job_s else 1.0)
        if not future.cancelled():
            future.exception()  # retrieved: a cancelled request's error is not logged


def _timed_out(done: int, total: int, doing: str) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"the request timed out while its pictures were decoded ({doing}; "
        f"{done} of {total} done by its deadline)"
    )
