"""Prometheus metrics of the service, on a registry each app makes for itself.

Names follow Prometheus conventions (base units, ``_total`` counters); the Triton
names (``nv_inference_*``) are derived from them when ``/metrics`` is rendered (see
``serving.triton_metrics``), so dashboards written for Triton work. Labels are
bounded: model and version come from the repository, never from a client's URL, so
an unknown model name cannot create a new series.

With several uvicorn workers, prometheus-client's multiprocess mode adds up the
workers' values: see :mod:`serving.metrics_multiprocess` and ``render_metrics``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from serving.deferred_metrics import DeferredUpdates
from serving.metrics_multiprocess import MULTIPROC_ENV, forget_dead_workers
from serving.triton_metrics import render_triton_metrics

# Sub-millisecond to seconds: a batched MLP call takes ~0.1-2 ms, a queued request ~1-50 ms,
# and the request timeout defaults to 10 s.
LATENCY_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# Powers of two: max_batch_size defaults to 64; one request may bring up to 1024 images.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

ENDPOINTS = ("v1", "v2")
OUTCOMES = ("success", "client_error", "rejected", "timeout", "server_error")
REJECTION_REASONS = ("queue_full", "deadline", "shutting_down", "decoders_busy")


class _RequestSeries:
    """The children one (model, version, endpoint) touches per request, looked up once.

    ``labels()`` costs ~1.5 µs a call; a dict hit on this bundle costs ~0.1 µs.
    """

    def __init__(self, metrics: ServingMetrics, model: str, version: str, endpoint: str) -> None:
        self.by_outcome = {
            outcome: metrics.requests.labels(model, version, endpoint, outcome)
            for outcome in OUTCOMES
        }
        self.duration = metrics.request_duration.labels(model, version, endpoint)
        self.images = metrics.images.labels(model, version)
        self.queue = metrics.queue_duration.labels(model, version)
        self.compute = metrics.request_compute_duration.labels(model, version)


class ServingMetrics:
    """Every metric the service exports; callers report events, never touch collectors.

    In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before prometheus-client is
    imported) values live in files shared by the workers and ``registry`` is only used
    to hold the collectors; ``render_metrics`` reads the files instead.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, multiprocess_dir: str | None = None
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir or os.environ.get(MULTIPROC_ENV) or None
        self._define_counters()
        self._define_histograms()
        self._define_gauges()
        if self.multiprocess_dir is None:
            # Per-process figures cannot be summed over workers, so only in single-process mode.
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self._request_series: dict[tuple[str, str, str], _RequestSeries] = {}
        self._queue_depth_series: dict[tuple[str, str], tuple[Gauge, Gauge]] = {}
        self._batch_series: dict[tuple[str, str], tuple[Counter, Histogram, Histogram]] = {}
        self._status_series: dict[int, Counter] = {}
        # The versions loaded now: /metrics exports only their series (see forget_model).
        self._loaded_versions: set[tuple[str, str]] = set()
        # This process's requests being handled (the gauge may sum several workers).
        self.requests_in_flight = 0
        # Per-request updates on the event loop, applied together (deferred_metrics).
        self._deferred = DeferredUpdates()

    def _define_counters(self) -> None:
        model = ("model", "version")
        self.requests = Counter(
            "mnist_serve_requests",
            "Inference requests that reached a known model, by endpoint and outcome",
            [*model, "endpoint", "outcome"],
            registry=self.registry,
        )
        self.rejections = Counter(
            "mnist_serve_rejections",
            "Requests refused at the door, by reason "
            "(queue_full, deadline, shutting_down, decoders_busy)",
            [*model, "reason"],
            registry=self.registry,
        )
        self.images = Counter(
            "mnist_serve_images",
            "Images inferred (successful requests)",
            model,
            registry=self.registry,
        )
        self.batches = Counter(
            "mnist_serve_batch_executions",
            "ONNX Runtime calls (batch executions)",
            model,
            registry=self.registry,
        )
        self.http_responses = Counter(
            "mnist_serve_http_responses",
            "HTTP responses by status code (no path label)",
            ["status_code"],
            registry=self.registry,
        )

    def _define_histograms(self) -> None:
        model = ("model", "version")
        self.request_duration = Histogram(
            "mnist_serve_request_duration_seconds",
            "End-to-end inference request time in the server, every outcome",
            [*model, "endpoint"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.queue_duration = Histogram(
            "mnist_serve_queue_duration_seconds",
            "Time a request waited in the queue for its batch",
            model,
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.request_compute_duration = Histogram(
            "mnist_serve_request_compute_duration_seconds",
            "ONNX Runtime time of the batch(es) a request ran in, per request",
            model,
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.compute_duration = Histogram(
            "mnist_serve_compute_duration_seconds",
            "ONNX Runtime time per batch execution",
            model,
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "mnist_serve_batch_size_images",
            "Images per batch execution",
            model,
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )

    def _define_gauges(self) -> None:
        model = ("model", "version")
        # livesum/livemin: each worker has its own queue and its own copy of each model.
        self.queue_depth = Gauge(
            "mnist_serve_queue_depth_images",
            "Images waiting in the batch queue",
            model,
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.queue_depth_requests = Gauge(
            "mnist_serve_queue_depth_requests",
            "Requests (or chunks of large ones) waiting in the batch queue",
            model,
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "mnist_serve_requests_in_flight",
            "HTTP requests being handled, other than health probes and /metrics scrapes",
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.model_ready = Gauge(
            "mnist_serve_model_ready",
            "1 when the model version serves (in every worker), else 0",
            ["model", "version", "provider"],
            multiprocess_mode="livemin",
            registry=self.registry,
        )

    def request_started(self, *, is_probe: bool = False) -> None:
        """A request arrived. A probe or scrape (``is_probe``) is left out of the gauge, so
        an idle server reports 0, but counts as in flight for this process's idleness."""
        if not is_probe:
            self._deferred.tally().inc(self.in_flight, 1)
        self.requests_in_flight += 1

    def request_ended(self, *, is_probe: bool = False) -> None:
        if not is_probe:
            self._deferred.tally().inc(self.in_flight, -1)
        self.requests_in_flight -= 1

    def flush(self) -> None:
        """Apply the updates tallied so far (``render_metrics`` and the app's shutdown do)."""
        self._deferred.flush()

    def request_finished(
        self,
        *,
        model: str,
        version: str,
        endpoint: str,
        outcome: str,
        images: int,
        duration_s: float,
        queue_s: float | None = None,
        compute_s: float | None = None,
    ) -> None:
        """Count one inference request that reached a known model, whatever its outcome.

        ``queue_s``/``compute_s``: where the request's time went, when it reached a batch.
        """
        key = (model, version, endpoint)
        series = self._request_series.get(key)
        if series is None:
            series = self._request_series[key] = _RequestSeries(self, model, version, endpoint)
        tally = self._deferred.tally()
        tally.inc(series.by_outcome[outcome])
        tally.observe(series.duration, duration_s)
        if outcome == "success":
            tally.inc(series.images, images)
        if queue_s is not None:
            tally.observe(series.queue, queue_s)
        if compute_s is not None:
            tally.observe(series.compute, compute_s)

    def request_rejected(self, *, model: str, version: str, reason: str) -> None:
        """Count a refusal at the door (queue full, deadline unreachable, shutting down,
        too many pictures waiting to be decoded)."""
        self.rejections.labels(model, version, reason).inc()

    def batch_executed(self, *, model: str, version: str, images: int, compute_s: float) -> None:
        """Count one ONNX Runtime call of ``images`` images."""
        key = (model, version)
        series = self._batch_series.get(key)
        if series is None:
            series = self._batch_series[key] = (
                self.batches.labels(model, version),
                self.batch_size.labels(model, version),
                self.compute_duration.labels(model, version),
            )
        tally = self._deferred.tally()
        tally.inc(series[0])
        tally.observe(series[1], images)
        tally.observe(series[2], compute_s)

    def set_queue_depth(
        self, *, model: str, version: str, images: int, requests: int | None = None
    ) -> None:
        """Report what waits in a model's queue (``requests`` feeds Triton's pending count)."""
        key = (model, version)
        gauges = self._queue_depth_series.get(key)
        if gauges is None:
            gauges = self._queue_depth_series[key] = (
                self.queue_depth.labels(model, version),
                self.queue_depth_requests.labels(model, version),
            )
        gauges[0].set(images)
        if requests is not None:
            gauges[1].set(requests)

    def set_model_ready(self, *, model: str, version: str, provider: str, is_ready: bool) -> None:
        """Report a model version's state: ready, or draining before it is unloaded. Being
        ready (again) also (re-)exports its series, zeros included."""
        if is_ready:
            self._loaded_versions.add((model, version))
            self._initialise_series(model, version)
        self.model_ready.labels(model, version, provider).set(1 if is_ready else 0)

    def forget_model(self, *, model: str, version: str) -> None:
        """Stop exporting an unloaded version's series (its ready gauge, ours and Triton's).

        They are left out when /metrics is rendered rather than removed from the
        collectors: in multiprocess mode the values live in files prometheus-client cannot
        remove them from. The children stay, so a version loaded again counts on from
        where it was, as counters must; only versions found on disk ever have any.
        """
        self._loaded_versions.discard((model, version))

    def http_response(self, status_code: int) -> None:
        """Count one HTTP response by status code (a bounded set: no path label)."""
        child = self._status_series.get(status_code)
        if child is None:
            child = self._status_series[status_code] = self.http_responses.labels(str(status_code))
        self._deferred.tally().inc(child)

    def _initialise_series(self, model: str, version: str) -> None:
        """Export zeros for a loaded model, so rate() and alerts see it before traffic."""
        for endpoint in ENDPOINTS:
            if (model, version, endpoint) not in self._request_series:
                self._request_series[(model, version, endpoint)] = _RequestSeries(
                    self, model, version, endpoint
                )
        for reason in REJECTION_REASONS:
            self.rejections.labels(model, version, reason)
        self.batches.labels(model, version)
        self.batch_size.labels(model, version)
        self.compute_duration.labels(model, version)
        self.set_queue_depth(model=model, version=version, images=0, requests=0)


def render_metrics(metrics: ServingMetrics) -> tuple[bytes, str]:
    """The ``/metrics`` body and content type: this process's registry, or every worker's."""
    metrics.flush()
    families = _loaded_versions_only(_collect(metrics), metrics._loaded_versions)
    body = generate_latest(_Families(families)) + render_triton_metrics(families)
    return body, CONTENT_TYPE_PLAIN_0_0_4


def _collect(metrics: ServingMetrics) -> Iterable[Metric]:
    if metrics.multiprocess_dir is None:
        return metrics.registry.collect()
    forget_dead_workers(metrics.multiprocess_dir)
    collector = prometheus_multiprocess.MultiProcessCollector(None, path=metrics.multiprocess_dir)
    return [*collector.collect(), *PlatformCollector(registry=None).collect()]


def _loaded_versions_only(
    families: Iterable[Metric], loaded_versions: set[tuple[str, str]]
) -> list[Metric]:
    """The families without the samples of model versions that are not loaded."""
    kept = list(families)
    for family in kept:
        family.samples = [
            sample
            for sample in family.samples
            if "model" not in sample.labels
            or (sample.labels["model"], sample.labels.get("version")) in loaded_versions
        ]
    return kept


class _Families:
    """Already-collected families, in the shape ``generate_latest`` reads."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families
