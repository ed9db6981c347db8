"""Dynamic batching: a bounded queue of requests feeding one run function.

The batcher knows nothing of HTTP or ONNX Runtime: it takes float arrays and a
``run(images) -> outputs`` function and hands each request its slice of the
outputs. It runs a batch at once when the model is idle and gathers requests
while the model is busy, so batching costs nothing at low load. When a batch
fails it re-runs the halves, so only the request that poisons it gets the error.

Batches run on one worker thread, except those its inline policy
(``serving/inline_policy.py``) lets run on the event loop: the ones quicker than the
hand-off itself, and a lone request's while the server has nothing else in flight.
A lone request whose caller knows it is alone, on an idle batcher, skips the queue
too: it runs straight from ``submit``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from serving.batch_result import BatchOutputs, BatchResult
from serving.batcher_stats import BatcherStats, ComputeStats
from serving.errors import DeadlineExceeded, InferenceFailed, Overloaded
from serving.inline_policy import IdleProbe, InlinePolicy

logger = logging.getLogger("mnist_serve.batcher")

RunFunction = Callable[[np.ndarray], np.ndarray]


@dataclass(eq=False)
class _Pending:
    images: np.ndarray
    future: asyncio.Future[BatchResult]
    enqueued_at: float
    deadline: float | None
    is_taken: bool = False


@dataclass
class BatcherConfig:
    max_batch_size: int = 64
    max_queue_delay_s: float = 0.001
    max_queue_size: int = 2048
    batching: bool = True
    overload_status_code: int = 503


BatchObserver = Callable[[int, float], None]
DepthObserver = Callable[[int, int], None]  # images, requests waiting


class Batcher:
    """Queue requests (counted in images) and run them in batches on one worker thread."""

    def __init__(
        self,
        run: RunFunction,
        config: BatcherConfig,
        *,
        name: str = "model",
        on_batch: BatchObserver | None = None,
        on_queue_depth: DepthObserver | None = None,
        is_server_idle: IdleProbe | None = None,
        inline: InlinePolicy | None = None,
    ) -> None:
        self._run = run
        self.config = config
        self.name = name
        # Warm-up sets its figures once it has measured the model (repository.py).
        self.inline = inline if inline is not None else InlinePolicy()
        self._on_batch = on_batch or (lambda images, compute_s: None)
        self._on_queue_depth = on_queue_depth or (lambda images, requests: None)
        # Without a probe only this batcher's own queue says whether the server is idle.
        self._is_server_idle = is_server_idle or (lambda: True)
        self._queue: deque[_Pending] = deque()
        self._queued_images = 0
        self._queued_requests = 0
        self._is_depth_report_due = False
        self._wakeup = asyncio.Event()
        self._is_closing = False
        self._is_busy = False
        self._last_batch_images = 0
        # When the batch on the worker thread started (perf_counter), and its images.
        self._thread_batch_started: float | None = None
        self._thread_batch_images = 0
        # Seconds per batch, smoothed; seeds the admission control's wait prediction.
        self._batch_time_s = 0.0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ort-{name}")
        self._loop_task: asyncio.Task[None] | None = None
        self.stats = BatcherStats()

    @property
    def queued_images(self) -> int:
        return self._queued_images

    @property
    def is_idle(self) -> bool:
        return not self._queue and not self._is_busy

    @property
    def running_s(self) -> float:
        """How long the batch on the worker thread has run; 0 when none runs there."""
        started = self._thread_batch_started
        return 0.0 if started is None else time.perf_counter() - started

    @property
    def running_images(self) -> int:
        """Images in the batch on the worker thread; 0 when none runs there."""
        return self._thread_batch_images if self._thread_batch_started is not None else 0

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._loop_task = asyncio.get_running_loop().create_task(
            self._batching_loop(), name=f"batcher-{self.name}"
        )

    def record_batch_time(self, seconds: float) -> None:
        """Feed a measured batch time (warm-up uses this before traffic arrives)."""
        self._batch_time_s = (
            seconds if self._batch_time_s == 0 else (0.8 * self._batch_time_s + 0.2 * seconds)
        )

    def predicted_wait_s(self, images: int) -> float:
        """Seconds a request of ``images`` would take if admitted now.

        A running batch is expected to run at least as long again as it already has: one
        far past its usual time (a stalled ONNX Runtime call) then refuses requests at once
        rather than letting each wait out its timeout.
        """
        batches_ahead = math.ceil((self._queued_images + images) / self.config.max_batch_size)
        predicted_s = batches_ahead * self._batch_time_s
        if self._is_busy:
            predicted_s += max(self._batch_time_s, self.running_s)
        return predicted_s

    async def submit(
        self, images: np.ndarray, *, deadline: float | None = None, is_alone: bool = False
    ) -> BatchResult:
        """Queue ``images`` (N, ...) and wait for their outputs.

        A request larger than ``max_batch_size`` runs alone, as one call. ``deadline`` is a
        ``time.monotonic()`` instant: a request that cannot make it is refused at the door,
        and one that expires while queued is dropped unrun (504). ``is_alone``: the caller
        knows no other request waits to be handled, not even one yet to start; with the
        batcher idle the batch of one then runs here and now (see :meth:`_lone_promise_s`).
        """
        count = len(images)
        self._admit(count, deadline)
        started = time.perf_counter()
        try:
            lone_promise_s = self._lone_promise_s(count) if is_alone else None
            if lone_promise_s is not None:
                result = self._run_lone(images, lone_promise_s, started)
            else:
                result = await self._wait(self._enqueue(images, deadline), deadline)
        except (DeadlineExceeded, InferenceFailed):
            self.stats.fail.add(time.perf_counter() - started)
            raise
        self.stats.success.add(time.perf_counter() - started)
        self.stats.queue.add(result.queue_s)
        self.stats.inference_count += count
        return result

    def _admit(self, count: int, deadline: float | None) -> None:
        status = self.config.overload_status_code
        if self._is_closing:
            raise Overloaded(
                "the server is shutting down", reason="shutting_down", status_code=status
            )
        if self._queued_images + count > self.config.max_queue_size:
            raise Overloaded(
                f"queue full: {self._queued_images} images waiting for model {self.name!r} "
                f"(max_queue_size {self.config.max_queue_size}); retry later",
                reason="queue_full",
                retry_after_s=self.predicted_wait_s(count),
                status_code=status,
            )
        if deadline is not None:
            now = time.monotonic()
            if now >= deadline:  # reading and decoding the body took all its time: 504
                raise DeadlineExceeded(
                    f"request timed out before it reached model {self.name!r}: reading and "
                    "decoding it used up its timeout; nothing was run"
                )
            # An idle model has nothing ahead of the request to predict from, only a past
            # batch's time: the request runs, and the estimate learns from it. Refusing on
            # that alone would refuse forever once one slow batch (a stall) inflated it.
            if self.is_idle:
                return
            predicted_s = self.predicted_wait_s(count)
            if now + predicted_s > deadline:
                raise Overloaded(
                    f"cannot finish before the request's deadline: about {predicted_s * 1e3:.1f}"
                    " ms of queued work ahead of it",
                    reason="deadline",
                    retry_after_s=predicted_s,
                    status_code=status,
                )

    def _enqueue(self, images: np.ndarray, deadline: float | None) -> _Pending:
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        pending = _Pending(images, future, time.perf_counter(), deadline)
        self._queue.append(pending)
        self._queued_images += len(images)
        self._queued_requests += 1
        self._report_depth()
        self._wakeup.set()
        return pending

    async def _wait(self, pending: _Pending, deadline: float | None) -> BatchResult:
        # One timer on the loop; asyncio.wait_for costs three times as much per request.
        expiry = None
        if deadline is not None:
            expiry = asyncio.get_running_loop().call_later(
                max(0.0, deadline - time.monotonic()), self._expire, pending
            )
        try:
            return await pending.future
        except asyncio.CancelledError:
            self._discard(pending)
            if pending.future.done() and not pending.future.cancelled():
                pending.future.exception()  # its 504 or 500 has no reader left: not a leak
            raise
        finally:
            if expiry is not None:
                expiry.cancel()

    def _expire(self, pending: _Pending) -> None:
        """A request's deadline passed before its answer: 504, and drop it if still queued."""
        if pending.future.done():
            return
        self._discard(pending)
        pending.future.set_exception(
            DeadlineExceeded(
                f"request timed out after waiting {time.perf_counter() - pending.enqueued_at:.3f}"
                " s; its work was dropped"
            )
        )

    def _discard(self, pending: _Pending) -> None:
        """Forget a request its caller gave up on, so it is never computed."""
        if not pending.is_taken:
            pending.is_taken = True
            self._queued_images -= len(pending.images)
            self._queued_requests -= 1
            self._report_depth()

    async def _batching_loop(self) -> None:
        while True:
            if not self._queue:
                if self._is_closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._should_gather():
                await self._gather_more()
            batch = self._take_batch()
            if batch:
                self._is_busy = True
                try:
                    await self._execute(batch)
                finally:
                    self._is_busy = False

    def _should_gather(self) -> bool:
        """Wait for batch-mates only under load: the last batch had company, this one is small."""
        return (
            self.config.batching
            and self.config.max_queue_delay_s > 0
            and self._last_batch_images > 1
            and self._queued_images < min(self.config.max_batch_size, self._last_batch_images)
        )

    async def _gather_more(self) -> None:
        """Wait up to the delay for as many images as the last batch had (what load brings)."""
        target = min(self.config.max_batch_size, self._last_batch_images)
        deadline = time.perf_counter() + self.config.max_queue_delay_s
        while self._queued_images < target and not self._is_closing:
            remaining_s = deadline - time.perf_counter()
            if remaining_s <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining_s)
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Pending]:
        """Pop requests up to ``max_batch_size`` images; expired ones get their 504 here."""
        batch: list[_Pending] = []
        images = 0
        limit = self.config.max_batch_size if self.config.batching else 1
        now = time.monotonic()
        while self._queue:
            pending = self._queue[0]
            if pending.is_taken or pending.future.done():
                self._queue.popleft()
                continue
            size = len(pending.images)
            if batch and (images + size > self.config.max_batch_size or len(batch) >= limit):
                break
            self._queue.popleft()
            pending.is_taken = True
            self._queued_images -= size
            self._queued_requests -= 1
            if pending.deadline is not None and pending.deadline < now:
                pending.future.set_exception(
                    DeadlineExceeded("request expired in the queue; its work was dropped unrun")
                )
                continue
            batch.append(pending)
            images += size
        self._report_depth()
        return batch

    def _report_depth(self) -> None:
        """Report the queue's depth once per event-loop turn, however often it changed:
        a batch's worth of arrivals costs one gauge update, not one each."""
        if not self._is_depth_report_due:
            self._is_depth_report_due = True
            asyncio.get_running_loop().call_soon(self._send_depth)

    def _send_depth(self) -> None:
        self._is_depth_report_due = False
        self._on_queue_depth(self._queued_images, self._queued_requests)

    def _lone_promise_s(self, images: int) -> float | None:
        """The time a lone request may take on the event loop straight from ``submit``,
        or None.

        With nothing queued or running it is the batch the batching loop would form next,
        and running it here saves the hand-off there and back (two task switches, a
        future, a timer, two queue-depth reports): 12 % of a lone request's CPU over HTTP.
        ``submit`` asks only when its caller knows no other request waits to start: one
        that finished within ``submit`` while others waited would leave each next one
        alone in turn, and batches would never form again.
        """
        if self._queue or self._is_busy or self._is_closing or not self._is_server_idle():
            return None
        return self.inline.promise_s(1, images, self._queued_requests, self._is_server_idle)

    def _run_lone(self, images: np.ndarray, promised_s: float, started: float) -> BatchResult:
        try:
            outputs = self.inline.run(self._run, images, promised_s, self.name)
        except Exception as error:  # the model failed on this request's images alone
            self._on_batch(len(images), time.perf_counter() - started)
            logger.error("inference failed for model %s: %r", self.name, error)
            raise _inference_failed(error) from None
        compute_s = time.perf_counter() - started
        self._record_batch(len(images), compute_s)  # the images are the input, as they came
        return BatchResult(outputs, 0.0, compute_s, len(images))

    async def _execute(self, batch: list[_Pending]) -> None:
        """Run one batch; on failure bisect it so only the poisoned request fails."""
        started = time.perf_counter()
        images = (
            batch[0].images
            if len(batch) == 1
            else np.concatenate([pending.images for pending in batch])
        )
        input_s = time.perf_counter() - started
        inline_promise_s = self.inline.promise_s(
            len(batch), len(images), self._queued_requests, self._is_server_idle
        )
        try:
            if inline_promise_s is not None:
                outputs = self.inline.run(self._run, images, inline_promise_s, self.name)
            else:
                self._thread_batch_started, self._thread_batch_images = started, len(images)
                try:
                    outputs = await asyncio.get_running_loop().run_in_executor(
                        self._executor, self._run, images
                    )
                finally:
                    self._thread_batch_started = None
        except Exception as error:  # the one boundary where a model error must not stop the loop
            self._on_batch(len(images), time.perf_counter() - started)
            if len(batch) > 1:
                middle = len(batch) // 2
                await self._execute(batch[:middle])
                await self._execute(batch[middle:])
                return
            logger.error("inference failed for model %s: %r", self.name, error)
            self._fail(batch[0], error)
            return
        inferred = time.perf_counter()
        compute_s = inferred - started
        self._deliver(batch, outputs, started, compute_s)
        self._record_batch(len(images), compute_s, input_s, time.perf_counter() - inferred)

    def _record_batch(
        self, images: int, compute_s: float, input_s: float = 0.0, output_s: float = 0.0
    ) -> None:
        """``compute_s`` (what metrics and Server-Timing call compute) includes ``input_s``."""
        self._on_batch(images, compute_s)
        self.stats.execution_count += 1
        self.stats.last_inference_ms = int(time.time() * 1000)  # once a batch, not a request
        self.stats.add(input_s, compute_s - input_s, output_s)
        by_size = self.stats.batch_sizes.get(images)
        if by_size is None:
            by_size = self.stats.batch_sizes[images] = ComputeStats()
        by_size.add(input_s, compute_s - input_s, output_s)
        self.record_batch_time(compute_s)
        self._last_batch_images = images

    def _deliver(
        self, batch: list[_Pending], outputs: np.ndarray, started: float, compute_s: float
    ) -> None:
        offset = 0
        batch_images = len(outputs)
        shared = BatchOutputs(outputs)
        for pending in batch:
            size = len(pending.images)
            if not pending.future.done():
                rows = slice(offset, offset + size)
                pending.future.set_result(
                    BatchResult(
                        outputs[rows],
                        started - pending.enqueued_at,
                        compute_s,
                        batch_images,
                        shared,
                        rows,
                    )
                )
            offset += size

    def _fail(self, pending: _Pending, error: Exception) -> None:
        if not pending.future.done():
            pending.future.set_exception(_inference_failed(error))

    async def close(self) -> None:
        """Refuse new requests, finish every queued one, then stop the loop and its thread."""
        self._is_closing = True
        self._wakeup.set()
        if self._loop_task is not None:
            await self._loop_task
        self._executor.shutdown(wait=True)


def _inference_failed(error: Exception) -> InferenceFailed:
    return InferenceFailed(
        f"ONNX Runtime failed on this request's images ({type(error).__name__}); "
        "the other requests of its batch were answered"
    )
