"""Metric updates made on the event loop, tallied and applied together shortly after.

Under load one turn answers a whole batch: 64 requests each add 1 to the same
counters and observe the same histograms. With several workers every update is a
locked write to a memory-mapped file (~1.4 µs, and ~4 µs a histogram observation), so
the per-request metrics cost 30 µs, a twentieth of a request. At low load each turn
holds one request, and its dozen writes, cold in the caches, cost more still. Tallied
for :data:`FLUSH_AFTER_S`, updates cost one write per counter and per histogram bucket
touched in that time, whatever the request count.

Only the moment a value reaches the registry changes: ``render_metrics`` applies
the tally first, so a scrape of this process sees every update made before it; another
worker's scrape sees them at most :data:`FLUSH_AFTER_S` late. The app's shutdown
applies what is left.
"""

from __future__ import annotations

import asyncio
import math
from bisect import bisect_left
from collections import Counter
from typing import Any

# prometheus-client's metric children (Counter, Gauge and Histogram after .labels()).
MetricChild = Any

# How long a tally gathers updates before they reach the registry. Side by side at
# concurrency 1 with 2 workers, a tally per 10 ms gave 6-17 % more requests/s than one
# per turn (one request); Prometheus scrapes every few seconds.
FLUSH_AFTER_S = 0.01


class Tally:
    """Increments and observations waiting to be applied."""

    __slots__ = ("increments", "loop", "observations")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.increments: dict[MetricChild, float] = {}
        self.observations: dict[MetricChild, list[float]] = {}

    def inc(self, child: MetricChild, amount: float = 1.0) -> None:
        self.increments[child] = self.increments.get(child, 0.0) + amount

    def observe(self, child: MetricChild, amount: float) -> None:
        amounts = self.observations.get(child)
        if amounts is None:
            self.observations[child] = [amount]
        else:
            amounts.append(amount)

    def apply(self) -> None:
        for child, amount in self.increments.items():
            if amount:  # a gauge's +1 and -1 in one turn leave it where it was
                child.inc(amount)
        for child, amounts in self.observations.items():
            observe_all(child, amounts)


def observe_all(histogram: MetricChild, amounts: list[float]) -> None:
    """``histogram.observe(amount)`` for each amount, one write per bucket touched.

    Uses the child's ``_upper_bounds``, ``_buckets`` and ``_sum``: prometheus-client has
    no public bulk observation. ``tests/serving/test_deferred_metrics.py`` checks the
    result against ``observe`` on the pinned version; without them, it calls ``observe``.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None:
        for amount in amounts:
            histogram.observe(amount)
        return
    # observe() counts an amount in the first bucket whose bound is >= it; NaN in none.
    counts = Counter(bisect_left(bounds, amount) for amount in amounts if not math.isnan(amount))
    for index, count in counts.items():
        buckets[index].inc(count)
    total.inc(sum(amounts))


class ImmediateUpdates:
    """The tally's interface, applied at once: for updates made off the event loop."""

    __slots__ = ()

    def inc(self, child: MetricChild, amount: float = 1.0) -> None:
        child.inc(amount)

    def observe(self, child: MetricChild, amount: float) -> None:
        child.observe(amount)


IMMEDIATE = ImmediateUpdates()


class DeferredUpdates:
    """A :class:`Tally` for the updates made on the event loop, applied
    :data:`FLUSH_AFTER_S` after its first; updates made elsewhere (a thread, a test
    without a loop) are applied at once."""

    def __init__(self) -> None:
        self._tally: Tally | None = None

    def tally(self) -> Tally | ImmediateUpdates:
        """Where an update made now goes: the open tally, or straight to the metric."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return IMMEDIATE
        tally = self._tally
        if tally is None:
            tally = self._tally = Tally(loop)
            loop.call_later(FLUSH_AFTER_S, self._flush_due, tally)
        elif tally.loop is not loop:  # another loop's tally is open: do not share it
            return IMMEDIATE
        return tally

    def flush(self) -> None:
        """Apply what is tallied so far (its timer does; so do a scrape and shutdown)."""
        tally, self._tally = self._tally, None
        if tally is not None:
            tally.apply()

    def _flush_due(self, tally: Tally) -> None:
        if self._tally is tally:
            self.flush()
