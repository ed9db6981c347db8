"""Metric updates tallied on the event loop land exactly where immediate ones would."""

from __future__ import annotations

import asyncio
import math

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from serving.deferred_metrics import FLUSH_AFTER_S, observe_all
from serving.metrics import LATENCY_BUCKETS_S, ServingMetrics, render_metrics
from tests.support import MetricSamples, metric_samples, metric_value

READY = {"model": "tiny", "version": "1"}
# On bounds, between them, zero, above the top bound (+Inf only), and NaN (no bucket).
AMOUNTS = [0.0, 0.0001, 0.00011, 0.001, 0.0049, 0.005, 7.5, 10.0, 12.0, 0.0001, math.nan]


def histogram_samples(observe: object) -> MetricSamples:
    registry = CollectorRegistry()
    histogram = Histogram("h_seconds", "test", buckets=LATENCY_BUCKETS_S, registry=registry)
    observe(histogram)  # type: ignore[operator]
    return metric_samples(generate_latest(registry).decode())


def without_sums_and_timestamps(samples: MetricSamples) -> MetricSamples:
    return {
        key: value
        for key, value in samples.items()
        if not key[0].endswith(("_sum", "_created", "_created_seconds"))
    }


def test_observe_all_fills_the_buckets_observe_would() -> None:
    def one_by_one(histogram: Histogram) -> None:
        for amount in AMOUNTS:
            histogram.observe(amount)

    expected = histogram_samples(one_by_one)
    together = histogram_samples(lambda histogram: observe_all(histogram, AMOUNTS))

    assert without_sums_and_timestamps(together) == without_sums_and_timestamps(expected)
    assert metric_value(together, "h_seconds_bucket", le="0.0001") == 3
    assert metric_value(together, "h_seconds_bucket", le="+Inf") == len(AMOUNTS) - 1


def test_observe_all_adds_the_sum_observe_would() -> None:
    finite = [amount for amount in AMOUNTS if not math.isnan(amount)]

    samples = histogram_samples(lambda histogram: observe_all(histogram, finite))

    assert metric_value(samples, "h_seconds_sum") == pytest.approx(sum(finite))


def drive(metrics: ServingMetrics, requests: int) -> None:
    """What a batch's worth of requests reports, as the middleware and handlers do."""
    for index in range(requests):
        metrics.request_started()
        metrics.request_finished(
            **READY,
            endpoint="v1",
            outcome="success" if index % 4 else "client_error",
            images=index % 3 + 1,
            duration_s=AMOUNTS[index % 10],
            queue_s=AMOUNTS[(index + 3) % 10],
            compute_s=AMOUNTS[(index + 5) % 10],
        )
        metrics.http_response(200 if index % 4 else 400)
        metrics.request_ended()
        if index % 8 == 0:  # a batch of eight, or a lone request's
            metrics.batch_executed(**READY, images=index % 9 + 1, compute_s=AMOUNTS[index % 10])


def new_metrics() -> ServingMetrics:
    metrics = ServingMetrics()
    metrics.set_model_ready(**READY, provider="CPUExecutionProvider", is_ready=True)
    return metrics


def scrape(metrics: ServingMetrics) -> MetricSamples:
    return without_sums_and_timestamps(metric_samples(render_metrics(metrics)[0].decode()))


def process_figures_dropped(samples: MetricSamples) -> MetricSamples:
    return {key: value for key, value in samples.items() if key[0].startswith("mnist_serve_")}


def test_updates_on_the_event_loop_end_where_immediate_ones_do() -> None:
    immediate = new_metrics()
    drive(immediate, 64)
    drive(immediate, 64)
    tallied = new_metrics()

    async def two_turns() -> None:
        drive(tallied, 64)
        await asyncio.sleep(0)
        drive(tallied, 64)
        await asyncio.sleep(0)

    asyncio.run(two_turns())

    expected = process_figures_dropped(scrape(immediate))
    assert process_figures_dropped(scrape(tallied)) == expected
    labels = {**READY, "endpoint": "v1", "outcome": "success"}
    assert metric_value(expected, "mnist_serve_requests_total", **labels) == 96
    assert metric_value(expected, "mnist_serve_batch_executions_total", **READY) == 16
    assert metric_value(expected, "mnist_serve_batch_size_images_count", **READY) == 16


def test_updates_wait_past_their_turn_then_reach_the_registry_unasked() -> None:
    metrics = new_metrics()
    success = {**READY, "endpoint": "v1", "outcome": "success"}

    def registry_count() -> float:  # the registry as is, without render_metrics's flush
        samples = metric_samples(generate_latest(metrics.registry).decode())
        return metric_value(samples, "mnist_serve_requests_total", **success)

    async def counts_over_time() -> tuple[float, float, float]:
        metrics.request_finished(**success, images=1, duration_s=0.01)
        during = registry_count()
        await asyncio.sleep(0)
        after_the_turn = registry_count()
        # A timer due later than the tally's: the loop runs the tally's first.
        await asyncio.sleep(2 * FLUSH_AFTER_S)
        return during, after_the_turn, registry_count()

    assert asyncio.run(counts_over_time()) == (0, 0, 1)


def test_a_scrape_sees_the_updates_its_own_turn_made() -> None:
    metrics = new_metrics()

    async def in_flight_seen_by_a_scrape() -> float:
        metrics.request_started()
        return metric_value(scrape(metrics), "mnist_serve_requests_in_flight")

    assert asyncio.run(in_flight_seen_by_a_scrape()) == 1
