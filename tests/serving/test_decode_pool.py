"""The decode pool alone: gated jobs we own, asyncio, no HTTP, no pictures."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from serving.decode_pool import DecodePool
from serving.errors import DeadlineExceeded, InvalidInput, Overloaded
from tests.support import GUARD_S, block_until_past, run_scenario, wait_until


class GatedJobs:
    """Jobs that count how many run at once and block while the gate is closed."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.running = 0
        self.most_running = 0
        self.started: list[str] = []
        self._lock = threading.Lock()

    def job(self, name: str) -> Callable[[], str]:
        def run() -> str:
            with self._lock:
                self.started.append(name)
                self.running += 1
                self.most_running = max(self.most_running, self.running)
            self.gate.wait(GUARD_S)
            with self._lock:
                self.running -= 1
            return name

        return run


def far_deadline() -> float:
    return time.monotonic() + GUARD_S


def test_a_requests_jobs_run_in_order_on_the_pools_threads() -> None:
    pool = DecodePool(threads=2, max_waiting=0)

    def where(number: int) -> Callable[[], tuple[int, str]]:
        return lambda: (number, threading.current_thread().name)

    results = run_scenario(lambda: pool.run([where(number) for number in range(3)], far_deadline()))

    assert [number for number, _ in results] == [0, 1, 2]
    assert all(thread.startswith("decode") for _, thread in results)
    pool.close()


def test_no_more_jobs_run_at_once_than_the_pool_has_threads() -> None:
    pool, jobs = DecodePool(threads=2, max_waiting=8), GatedJobs()

    async def scenario() -> list[list[str]]:
        requests = [
            asyncio.create_task(pool.run([jobs.job(f"{n}a"), jobs.job(f"{n}b")], far_deadline()))
            for n in range(5)
        ]
        await wait_until(lambda: jobs.running == 2)
        jobs.gate.set()
        return await asyncio.gather(*requests)

    results = run_scenario(scenario)

    assert results == [[f"{n}a", f"{n}b"] for n in range(5)]
    assert jobs.most_running == 2
    pool.close()


def test_a_request_beyond_the_line_is_refused_at_once_with_the_overload_status() -> None:
    pool, jobs = DecodePool(threads=1, max_waiting=1, overload_status_code=429), GatedJobs()

    async def scenario() -> tuple[Overloaded, list[list[str]]]:
        admitted = [
            asyncio.create_task(pool.run([jobs.job(name)], far_deadline()))
            for name in ("running", "waiting")
        ]
        await wait_until(lambda: jobs.started == ["running"] and pool.admitted == 2)
        with pytest.raises(Overloaded) as refused:
            await pool.run([jobs.job("refused")], far_deadline())  # returns with the gate shut
        jobs.gate.set()
        return refused.value, await asyncio.gather(*admitted)

    refusal, results = run_scenario(scenario)

    assert results == [["running"], ["waiting"]]
    assert "refused" not in jobs.started
    assert (refusal.status_code, refusal.reason) == (429, "decoders_busy")
    assert int(refusal.headers["Retry-After"]) >= 1
    assert "busy decoding pictures" in refusal.message
    pool.close()


def test_the_deadline_stops_a_request_between_its_pictures() -> None:
    pool = DecodePool(threads=1, max_waiting=0)
    # Far enough for the first job to start even on a stalled machine; it ends past it.
    deadline = time.monotonic() + 1.0
    ran: list[str] = []

    def outlasts_the_deadline() -> None:
        ran.append("first")
        block_until_past(deadline)

    with pytest.raises(DeadlineExceeded) as timed_out:
        run_scenario(
            lambda: pool.run([outlasts_the_deadline, lambda: ran.append("second")], deadline)
        )

    assert ran == ["first"]
    assert timed_out.value.status_code == 504
    assert "timed out while its pictures were decoded" in timed_out.value.message
    assert "1 of 2 done" in timed_out.value.message
    pool.close()


def test_an_expired_deadline_starts_no_job() -> None:
    pool = DecodePool(threads=1, max_waiting=0)
    ran: list[str] = []

    with pytest.raises(DeadlineExceeded, match="0 of 1 done"):
        run_scenario(lambda: pool.run([lambda: ran.append("job")], time.monotonic() - 1.0))

    assert ran == []
    pool.close()


def test_a_request_waiting_for_a_thread_times_out_at_its_deadline() -> None:
    pool, jobs = DecodePool(threads=1, max_waiting=1), GatedJobs()

    async def scenario() -> tuple[DeadlineExceeded, list[str]]:
        blocker = asyncio.create_task(pool.run([jobs.job("blocker")], far_deadline()))
        await wait_until(lambda: jobs.running == 1)
        with pytest.raises(DeadlineExceeded) as timed_out:
            await pool.run([jobs.job("late")], time.monotonic() + 0.05)
        jobs.gate.set()
        return timed_out.value, await blocker

    timed_out, blocker_result = run_scenario(scenario)

    assert "waiting for a decode thread" in timed_out.message
    assert jobs.started == ["blocker"]
    assert blocker_result == ["blocker"]
    assert pool.admitted == 0
    pool.close()


def test_a_failing_job_fails_only_its_request() -> None:
    pool = DecodePool(threads=1, max_waiting=0)

    def bad_picture() -> None:
        raise InvalidInput("image: cannot be decoded")

    async def scenario() -> list[str]:
        with pytest.raises(InvalidInput, match="cannot be decoded"):
            await pool.run([bad_picture], far_deadline())
        return await pool.run([lambda: "next"], far_deadline())

    assert run_scenario(scenario) == ["next"]
    pool.close()


def test_a_closed_pool_serves_a_later_event_loop() -> None:
    pool = DecodePool(threads=1, max_waiting=0)
    assert run_scenario(lambda: pool.run([lambda: "first"], far_deadline())) == ["first"]

    pool.close()

    assert run_scenario(lambda: pool.run([lambda: "again"], far_deadline())) == ["again"]
    pool.close()
