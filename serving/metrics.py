"""Prometheus metrics of the service, on a registry each app makes for itself.

Names follow Prometheus conventions (base units, ``_total`` counters); the Triton
names (``nv_inference_*``) are exported too so dashboards written for Triton work.
Labels are bounded: model and version come from the repository, never from a
client's URL, so an unknown model name cannot create a new series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Sub-millisecond to seconds: a batched MLP call takes ~0.1-2 ms, a queued request ~1-50 ms.
LATENCY_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

OUTCOMES = ("success", "client_error", "rejected", "timeout", "server_error")


class ServingMetrics:
    """Every metric the service exports; callers report events, never touch collectors."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        model = ("model", "version")
        self.requests = Counter(
            "mnist_serve_requests", "Inference requests by outcome",
            [*model, "endpoint", "outcome"], registry=self.registry,
        )
        self.rejections = Counter(
            "mnist_serve_rejections", "Requests refused at the door, by reason",
            [*model, "reason"], registry=self.registry,
        )
        self.images = Counter(
            "mnist_serve_images", "Images inferred (successful requests)", model,
            registry=self.registry,
        )
        self.batches = Counter(
            "mnist_serve_batch_executions", "ONNX Runtime calls", model, registry=self.registry
        )
        self.request_duration = Histogram(
            "mnist_serve_request_duration_seconds", "End-to-end request time in the server",
            [*model, "endpoint"], buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )
        self.queue_duration = Histogram(
            "mnist_serve_queue_duration_seconds", "Time a request waited for its batch",
            model, buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )
        self.compute_duration = Histogram(
            "mnist_serve_compute_duration_seconds", "ONNX Runtime time per batch execution",
            model, buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )
        self.batch_size = Histogram(
            "mnist_serve_batch_size_images", "Images per batch execution",
            model, buckets=BATCH_SIZE_BUCKETS, registry=self.registry,
        )
        self.queue_depth = Gauge(
            "mnist_serve_queue_depth_images", "Images waiting in the batch queue", model,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "mnist_serve_requests_in_flight", "HTTP requests being handled",
            registry=self.registry,
        )
        self.model_ready = Gauge(
            "mnist_serve_model_ready", "1 when the model version serves, else 0",
            [*model, "provider"], registry=self.registry,
        )
        self.http_responses = Counter(
            "mnist_serve_http_responses", "HTTP responses by status code (no path label)",
            ["status_code"], registry=self.registry,
        )

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
    ) -> None:
        """Count one inference request that reached a known model, whatever its outcome."""
        self.requests.labels(model, version, endpoint, outcome).inc()
        self.request_duration.labels(model, version, endpoint).observe(duration_s)
        if outcome == "success":
            self.images.labels(model, version).inc(images)
        if queue_s is not None:
            self.queue_duration.labels(model, version).observe(queue_s)

    def request_rejected(self, *, model: str, version: str, reason: str) -> None:
        """Count a refusal at the door (queue full, deadline unreachable, shutting down)."""
        self.rejections.labels(model, version, reason).inc()

    def batch_executed(self, *, model: str, version: str, images: int, compute_s: float) -> None:
        """Count one ONNX Runtime call of ``images`` images."""
        self.batches.labels(model, version).inc()
        self.batch_size.labels(model, version).observe(images)
        self.compute_duration.labels(model, version).observe(compute_s)

    def set_queue_depth(self, *, model: str, version: str, images: int) -> None:
        self.queue_depth.labels(model, version).set(images)

    def set_model_ready(self, *, model: str, version: str, provider: str, is_ready: bool) -> None:
        self.model_ready.labels(model, version, provider).set(1 if is_ready else 0)

    def http_response(self, status_code: int) -> None:
        self.http_responses.labels(str(status_code)).inc()
