"""Where a batch runs: on the event loop when warm-up found it quicker than a hand-off, or
when it is a lone request on an idle server (run straight from ``submit``), else on the
ONNX Runtime thread; and not inline for a while once several ran far slower than promised."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import numpy as np
import pytest

from serving.batch_result import BatchResult
from serving.batcher import Batcher, BatcherConfig
from serving.errors import InferenceFailed
from serving.inline_policy import (
    INLINE_PAUSE_S,
    INLINE_STALL_WINDOW_S,
    ONE_CPU_INLINE_MAX_MS,
    SHARED_INLINE_MAX_MS,
    InlinePolicy,
    inline_compute_max_s,
)
from tests.serving.batcher_fakes import (
    IDLE_INLINE,
    POISON,
    GatedRun,
    ThreadRecordingRun,
    burn_cpu,
    images_of,
    occupy,
)
from tests.support import run_scenario, wait_until


def where_batches_ran(
    model: ThreadRecordingRun,
    requests: list[np.ndarray],
    *,
    is_server_idle: Callable[[], bool] | None = None,
    **figures: float,
) -> list[str]:
    """Submit each request in turn, ``figures`` the warm-up's; say where each batch ran:
    "loop" or "thread"."""

    async def scenario() -> int:
        config = BatcherConfig(max_batch_size=8, max_queue_delay_s=0.0)
        inline = InlinePolicy(**figures)  # type: ignore[arg-type]
        batcher = Batcher(model, config, name="fake", is_server_idle=is_server_idle, inline=inline)
        batcher.start()
        for images in requests:
            result = await batcher.submit(images)
            assert np.allclose(result.outputs, images.reshape(len(images), -1)[:, :10] * 2)
        await batcher.close()
        return threading.get_ident()

    loop_thread = run_scenario(scenario)
    return ["loop" if thread == loop_thread else "thread" for thread in model.threads]


def test_batches_quicker_than_a_hand_off_run_on_the_event_loop() -> None:
    where = where_batches_ran(
        ThreadRecordingRun(),
        [images_of(0.1, 2), images_of(0.1, 3)],
        max_images=2,
        max_s=1e-3,
    )

    assert where == ["loop", "thread"]


def test_lone_large_request_on_an_idle_server_runs_on_the_event_loop() -> None:
    # 256 images predicted at 4 ms: under the 10 ms bound, and nobody else to serve.
    where = where_batches_ran(ThreadRecordingRun(), [images_of(0.1, 256)], **IDLE_INLINE)

    assert where == ["loop"]


def test_large_request_runs_on_the_thread_while_the_server_serves_others() -> None:
    where = where_batches_ran(
        ThreadRecordingRun(),
        [images_of(0.1, 256)],
        is_server_idle=lambda: False,
        **IDLE_INLINE,
    )

    assert where == ["thread"]


def test_request_predicted_slower_than_the_idle_bound_runs_on_the_thread() -> None:
    # 1024 images at 16 µs: 16 ms, over the 10 ms bound.
    where = where_batches_ran(ThreadRecordingRun(), [images_of(0.1, 1024)], **IDLE_INLINE)

    assert where == ["thread"]


def test_without_warm_up_figures_nothing_large_runs_on_the_event_loop() -> None:
    where = where_batches_ran(ThreadRecordingRun(), [images_of(0.1, 256)], idle_max_s=0.01)

    assert where == ["thread"]


def idle_inline_batcher(model: GatedRun, **probes: Callable[..., object]) -> Batcher:
    """A batcher, not started, with warm-up's idle bound (IDLE_INLINE) and ``probes``."""
    config = BatcherConfig(max_batch_size=8, max_queue_delay_s=0.0)
    inline = InlinePolicy(**IDLE_INLINE)
    return Batcher(model, config, name="fake", inline=inline, **probes)  # type: ignore[arg-type]


def test_requests_gathered_into_one_batch_run_on_the_thread() -> None:
    model = ThreadRecordingRun()
    is_idle = False  # while the first request occupies the thread; then only the batch counts

    async def scenario() -> int:
        nonlocal is_idle
        batcher = idle_inline_batcher(model, is_server_idle=lambda: is_idle)
        batcher.start()
        first = await occupy(batcher, model)
        waiting = [asyncio.ensure_future(batcher.submit(images_of(0.1, 4))) for _ in range(2)]
        await wait_until(lambda: batcher.queued_images == 8)
        is_idle = True
        model.gate.set()
        await asyncio.gather(first, *waiting)
        await batcher.close()
        return threading.get_ident()

    loop_thread = run_scenario(scenario)
    assert model.batch_sizes == [1, 8]
    assert [thread == loop_thread for thread in model.threads] == [False, False]


def test_a_tiny_batch_slower_than_its_promise_but_quick_keeps_running_on_the_event_loop() -> None:
    # Promised 16 µs (1 x 16 µs); takes 1 ms of CPU, as a cold call can: over 10x the
    # promise, yet too short to stall anything.
    model = ThreadRecordingRun(cpu_s=0.001)

    where = where_batches_ran(model, [images_of(0.1, 1), images_of(0.1, 1)], **IDLE_INLINE)

    assert where == ["loop", "loop"]


def test_batches_far_slower_than_promised_again_and_again_leave_the_event_loop() -> None:
    # Promised 4 ms (256 x 16 µs); each takes 50 ms of CPU, over 10x the promise.
    model = ThreadRecordingRun(cpu_s=0.05)

    where = where_batches_ran(
        model,
        [images_of(0.1, 256)] * 4 + [images_of(0.1, 1)],
        max_images=1,
        max_s=1e-3,
        **IDLE_INLINE,
    )

    assert where == ["loop", "loop", "loop", "thread", "thread"]


class ManualClock:
    """A monotonic clock that moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def warmed_policy(clock: ManualClock) -> InlinePolicy:
    """Warm-up's figures: one-image batches and lone requests run on the event loop."""
    return InlinePolicy(max_images=1, max_s=1e-3, clock=clock, **IDLE_INLINE)  # type: ignore[arg-type]


def runs_inline(policy: InlinePolicy) -> tuple[bool, bool]:
    """Whether a one-image batch, and a lone 256-image request, would run on the loop."""
    return (
        policy.promise_s(2, 1, 0, lambda: False) is not None,
        policy.promise_s(1, 256, 0, lambda: True) is not None,
    )


def stall(policy: InlinePolicy) -> None:
    """An inline batch promised 1 ms that takes 50 ms of CPU: a stall."""

    def slow_model(images: np.ndarray) -> np.ndarray:
        burn_cpu(0.05)
        return images.reshape(len(images), -1)[:, :10]

    policy.run(slow_model, images_of(0.1), 1e-3, "fake/1")


def test_one_stall_leaves_batches_on_the_event_loop() -> None:
    # A VM charges the loop's thread for the time its host takes the CPU: one slow batch
    # among hundreds of thousands is the machine's, and must not cost the inline path.
    policy = warmed_policy(ManualClock())

    stall(policy)

    assert runs_inline(policy) == (True, True)


def test_three_stalls_within_a_minute_pause_event_loop_batches(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    policy = warmed_policy(clock)

    with caplog.at_level(logging.INFO, logger="mnist_serve.batcher"):
        for _ in range(3):
            stall(policy)
            clock.now += 20

    assert runs_inline(policy) == (False, False)
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "3 inline batches within 60 s" in warnings[0]
    assert "on the ONNX Runtime thread for the next 60 s" in warnings[0]


def test_stalls_further_apart_than_a_minute_do_not_pause_event_loop_batches() -> None:
    clock = ManualClock()
    policy = warmed_policy(clock)

    for _ in range(4):
        stall(policy)
        clock.now += INLINE_STALL_WINDOW_S / 2 + 1

    assert runs_inline(policy) == (True, True)


def test_a_pause_ends_and_the_next_one_lasts_twice_as_long() -> None:
    clock = ManualClock()
    policy = warmed_policy(clock)
    where: list[tuple[bool, bool]] = []

    for pause_s in (INLINE_PAUSE_S, 2 * INLINE_PAUSE_S):
        for _ in range(3):
            stall(policy)
        clock.now += pause_s - 1
        where.append(runs_inline(policy))
        clock.now += 1
        where.append(runs_inline(policy))

    assert where == [(False, False), (True, True), (False, False), (True, True)]


def lone_batcher(model: GatedRun, **probes: Callable[..., object]) -> Batcher:
    """A batcher whose batching loop never starts: only a request run straight from
    ``submit`` can be answered (any other would wait for GUARD_S and fail the test)."""
    return idle_inline_batcher(model, **probes)


def test_a_lone_request_on_an_idle_batcher_is_answered_without_the_batching_loop() -> None:
    model = ThreadRecordingRun()
    batches: list[int] = []

    async def scenario() -> tuple[BatchResult, int]:
        batcher = lone_batcher(model, on_batch=lambda images, compute_s: batches.append(images))
        result = await batcher.submit(images_of(0.1, 3), is_alone=True)
        stats = batcher.stats
        assert (stats.inference_count, stats.execution_count, stats.success.count) == (3, 1, 1)
        assert (stats.queue.count, stats.queue.ns) == (1, 0)
        assert {size: s.compute_infer.count for size, s in stats.batch_sizes.items()} == {3: 1}
        return result, threading.get_ident()

    result, loop_thread = run_scenario(scenario)
    assert np.allclose(result.outputs, 0.2)
    assert result.outputs.shape == (3, 10)
    assert (result.queue_s, result.batch_images) == (0.0, 3)
    assert model.threads == [loop_thread]
    assert batches == [3]


def test_a_request_not_known_to_be_alone_goes_through_the_queue() -> None:
    model = ThreadRecordingRun()

    async def scenario() -> None:
        batcher = lone_batcher(model)
        waiting = asyncio.ensure_future(batcher.submit(images_of(0.1)))
        await wait_until(lambda: batcher.queued_images == 1)
        assert model.calls == []
        batcher.start()
        await waiting
        await batcher.close()

    run_scenario(scenario)
    assert model.batch_sizes == [1]


def test_a_lone_request_waits_for_the_queue_when_the_server_is_busy() -> None:
    model = ThreadRecordingRun()

    async def scenario() -> None:
        batcher = lone_batcher(model, is_server_idle=lambda: False)
        batcher.inline.max_images = 1  # quicker than a hand-off, were it idle
        batcher.inline.max_s = 1e-3
        waiting = asyncio.ensure_future(batcher.submit(images_of(0.1), is_alone=True))
        await wait_until(lambda: batcher.queued_images == 1)
        batcher.start()
        await waiting
        await batcher.close()

    run_scenario(scenario)
    assert model.batch_sizes == [1]


def test_a_lone_request_arriving_while_a_batch_runs_queues_behind_it() -> None:
    model = ThreadRecordingRun()
    is_idle = False  # while the first request occupies the thread

    async def scenario() -> None:
        nonlocal is_idle
        batcher = idle_inline_batcher(model, is_server_idle=lambda: is_idle)
        batcher.start()
        first = await occupy(batcher, model)
        is_idle = True  # as the probe may say; the batcher itself is busy
        second = asyncio.ensure_future(batcher.submit(images_of(0.3), is_alone=True))
        await wait_until(lambda: batcher.queued_images == 1)
        model.gate.set()
        assert np.allclose((await second).outputs, 0.6)
        await first
        await batcher.close()

    run_scenario(scenario)
    assert [call[0, 0, 0, 0] for call in model.calls] == pytest.approx([0.01, 0.3])


def test_a_lone_request_the_model_fails_on_gets_its_error_and_the_next_is_answered() -> None:
    model = ThreadRecordingRun()
    batches: list[int] = []

    async def scenario() -> Batcher:
        batcher = lone_batcher(model, on_batch=lambda images, compute_s: batches.append(images))
        with pytest.raises(InferenceFailed, match="ONNX Runtime failed"):
            await batcher.submit(images_of(POISON, 2), is_alone=True)
        assert np.allclose((await batcher.submit(images_of(0.1), is_alone=True)).outputs, 0.2)
        return batcher

    stats = run_scenario(scenario).stats
    assert (stats.fail.count, stats.success.count, stats.execution_count) == (1, 1, 1)
    assert batches == [2, 1]


def test_a_lone_request_too_large_for_the_event_loop_goes_through_the_queue() -> None:
    # 1024 images at 16 µs: 16 ms, over the 10 ms bound; the thread runs it.
    model = ThreadRecordingRun()

    async def scenario() -> int:
        batcher = lone_batcher(model)
        waiting = asyncio.ensure_future(batcher.submit(images_of(0.1, 1024), is_alone=True))
        await wait_until(lambda: batcher.queued_images == 1024)
        batcher.start()
        await waiting
        await batcher.close()
        return threading.get_ident()

    loop_thread = run_scenario(scenario)
    assert model.batch_sizes == [1024]
    assert model.threads != [loop_thread]


@pytest.mark.parametrize(
    ("cpus_per_worker", "expected_ms"), [(1, ONE_CPU_INLINE_MAX_MS), (2, SHARED_INLINE_MAX_MS)]
)
def test_by_default_a_worker_with_one_cpu_runs_larger_batches_on_the_event_loop(
    cpus_per_worker: int, expected_ms: float
) -> None:
    # With one CPU a hand-off overlaps nothing; with more, the loop reads requests while
    # ONNX Runtime computes on another CPU.
    assert inline_compute_max_s(None, cpus_per_worker) == expected_ms / 1000
    assert ONE_CPU_INLINE_MAX_MS > SHARED_INLINE_MAX_MS


@pytest.mark.parametrize("cpus_per_worker", [1, 4])
def test_a_configured_inline_bound_applies_whatever_the_cpus(cpus_per_worker: int) -> None:
    assert inline_compute_max_s(0.0, cpus_per_worker) == 0.0
    assert inline_compute_max_s(5.0, cpus_per_worker) == 0.005
