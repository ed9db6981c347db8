"""Each metric moves by exactly what a known sequence of events should cause.

The first half drives ``ServingMetrics`` directly and reads ``render_metrics`` (the
/metrics body); the second goes through a real app with a real tiny model. Several
workers' metrics are in test_metrics_multiprocess.py.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client import generate_latest
from starlette.exceptions import StarletteDeprecationWarning

from serving import deferred_metrics
from serving.app import create_app
from serving.metrics import ServingMetrics, render_metrics
from serving.settings import Settings
from tests.support import (
    MetricSamples,
    exported_metric_names,
    metric_samples,
    metric_value,
)

with warnings.catch_warnings():
    # Starlette 1.x would rather drive its TestClient with httpx2; httpx 0.28 works the same.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

READY = {"model": "tiny", "version": "1"}


def scrape(metrics: ServingMetrics) -> MetricSamples:
    body, content_type = render_metrics(metrics)
    assert content_type.startswith("text/plain; version=0.0.4")
    return metric_samples(body.decode())


@pytest.fixture
def metrics() -> ServingMetrics:
    metrics = ServingMetrics()
    metrics.set_model_ready(**READY, provider="CPUExecutionProvider", is_ready=True)
    return metrics


def finish(metrics: ServingMetrics, outcome: str, images: int = 3, **timings: float) -> None:
    metrics.request_finished(
        **READY, endpoint="v1", outcome=outcome, images=images, duration_s=0.004, **timings
    )


def test_good_requests_count_requests_and_images_separately(metrics: ServingMetrics) -> None:
    for _ in range(5):
        finish(metrics, "success", images=3, queue_s=0.001, compute_s=0.002)

    samples = scrape(metrics)

    assert metric_value(samples, "mnist_serve_requests_total", **READY, outcome="success") == 5
    assert metric_value(samples, "mnist_serve_images_total", **READY) == 15
    assert metric_value(samples, "mnist_serve_request_duration_seconds_count", **READY) == 5
    assert metric_value(samples, "mnist_serve_queue_duration_seconds_count", **READY) == 5
    assert metric_value(
        samples, "mnist_serve_request_compute_duration_seconds_sum", **READY
    ) == pytest.approx(0.010)


def test_failed_requests_count_by_outcome_and_add_no_images(metrics: ServingMetrics) -> None:
    for outcome in ("client_error", "rejected", "rejected", "timeout", "server_error"):
        finish(metrics, outcome)

    samples = scrape(metrics)

    requests = "mnist_serve_requests_total"
    assert metric_value(samples, requests, **READY, outcome="client_error") == 1
    assert metric_value(samples, requests, **READY, outcome="rejected") == 2
    assert metric_value(samples, requests, **READY, outcome="timeout") == 1
    assert metric_value(samples, requests, **READY, outcome="server_error") == 1
    assert metric_value(samples, requests, **READY, outcome="success") == 0
    assert metric_value(samples, "mnist_serve_images_total", **READY) == 0
    assert metric_value(samples, "mnist_serve_request_duration_seconds_count", **READY) == 5


def test_batches_are_counted_apart_from_requests(metrics: ServingMetrics) -> None:
    for images in (1, 7, 64):
        metrics.batch_executed(**READY, images=images, compute_s=0.001)

    samples = scrape(metrics)

    assert metric_value(samples, "mnist_serve_batch_executions_total", **READY) == 3
    assert metric_value(samples, "mnist_serve_batch_size_images_count", **READY) == 3
    assert metric_value(samples, "mnist_serve_batch_size_images_sum", **READY) == 72
    assert metric_value(samples, "mnist_serve_batch_size_images_bucket", **READY, le="4.0") == 1
    assert metric_value(samples, "mnist_serve_batch_size_images_bucket", **READY, le="8.0") == 2
    assert metric_value(samples, "mnist_serve_compute_duration_seconds_count", **READY) == 3
    assert metric_value(samples, "mnist_serve_requests_total", **READY) == 0


def test_histogram_buckets_place_each_latency(metrics: ServingMetrics) -> None:
    for duration_s in (0.0002, 0.003, 0.003, 2.0):
        metrics.request_finished(
            **READY, endpoint="v2", outcome="success", images=1, duration_s=duration_s
        )

    samples = scrape(metrics)

    def at_most(le: str) -> float:
        return metric_value(
            samples, "mnist_serve_request_duration_seconds_bucket", **READY, endpoint="v2", le=le
        )

    assert (at_most("0.00025"), at_most("0.005"), at_most("2.5"), at_most("+Inf")) == (1, 3, 4, 4)


def test_loaded_model_exports_zeros_before_any_traffic(metrics: ServingMetrics) -> None:
    samples = scrape(metrics)

    keys = {(name, labels) for (name, labels) in samples if ("model", "tiny") in labels}
    assert (
        "mnist_serve_requests_total",
        frozenset({**READY, "endpoint": "v2", "outcome": "timeout"}.items()),
    ) in keys
    assert (
        metric_value(samples, "mnist_serve_model_ready", **READY, provider="CPUExecutionProvider")
        == 1
    )
    assert metric_value(samples, "nv_inference_request_success_total", **READY) == 0
    assert (
        metric_value(samples, "nv_inference_request_failure_total", **READY, reason="CANCELED") == 0
    )


def test_unloaded_model_reports_not_ready(metrics: ServingMetrics) -> None:
    metrics.set_model_ready(**READY, provider="CPUExecutionProvider", is_ready=False)

    samples = scrape(metrics)

    assert metric_value(samples, "mnist_serve_model_ready", **READY) == 0


def test_triton_names_mirror_ours(metrics: ServingMetrics) -> None:
    for _ in range(4):
        finish(metrics, "success", images=2, queue_s=0.0005, compute_s=0.00025)
    for outcome in ("rejected", "timeout", "server_error", "client_error", "client_error"):
        finish(metrics, outcome)
    metrics.batch_executed(**READY, images=8, compute_s=0.00025)
    metrics.set_queue_depth(**READY, images=40, requests=5)

    samples = scrape(metrics)

    # The parser adds _total to counter samples; Prometheus stores Triton's bare names.
    assert metric_value(samples, "nv_inference_request_success_total", **READY) == 4
    failures = "nv_inference_request_failure_total"
    assert metric_value(samples, failures, **READY, reason="REJECTED") == 2
    assert metric_value(samples, failures, **READY, reason="BACKEND") == 1
    assert metric_value(samples, failures, **READY, reason="OTHER") == 2
    assert metric_value(samples, failures, **READY, reason="CANCELED") == 0
    assert metric_value(samples, "nv_inference_count_total", **READY) == 8
    assert metric_value(samples, "nv_inference_exec_count_total", **READY) == 1
    assert metric_value(samples, "nv_inference_request_duration_us_total", **READY) == 9 * 4000
    assert metric_value(samples, "nv_inference_queue_duration_us_total", **READY) == 4 * 500
    assert metric_value(samples, "nv_inference_compute_infer_duration_us_total", **READY) == 1000
    assert metric_value(samples, "nv_inference_pending_request_count", **READY) == 5
    assert metric_value(samples, "mnist_serve_queue_depth_images", **READY) == 40


def test_triton_counters_are_exposed_without_a_total_suffix(metrics: ServingMetrics) -> None:
    body, _ = render_metrics(metrics)

    names = exported_metric_names(body.decode())

    assert {"nv_inference_request_success", "nv_inference_request_failure"} <= names
    assert "nv_inference_request_success_total" not in names


def test_http_responses_are_counted_by_status_code_only(metrics: ServingMetrics) -> None:
    for status in (200, 200, 404, 503):
        metrics.http_response(status)

    samples = scrape(metrics)

    responses = "mnist_serve_http_responses_total"
    assert metric_value(samples, responses, status_code="200") == 2
    assert metric_value(samples, responses, status_code="404") == 1
    assert metric_value(samples, responses) == 4
    assert {label for (name, labels) in samples if name == responses for label, _ in labels} == {
        "status_code"
    }


def test_each_metrics_object_counts_alone() -> None:
    first, second = ServingMetrics(), ServingMetrics()

    first.http_response(200)

    assert metric_value(scrape(first), "mnist_serve_http_responses_total") == 1
    assert metric_value(scrape(second), "mnist_serve_http_responses_total") == 0


def test_single_process_mode_exports_process_metrics(metrics: ServingMetrics) -> None:
    names = exported_metric_names(render_metrics(metrics)[0].decode())

    assert {"process_resident_memory_bytes", "process_cpu_seconds_total", "python_info"} <= names


# --- through a real app ------------------------------------------------------------------
# The latest version of the tiny repository is 2; requests name no version.
LATEST = {"model": "tiny", "version": "2"}


JSON = {"Content-Type": "application/json"}


def v1_body(images: int) -> bytes:
    return orjson.dumps({"images": [[0.5] * 784] * images})


def v2_body(images: int) -> dict[str, object]:
    tensor = {"name": "input", "shape": [images, 1, 28, 28], "datatype": "FP32"}
    return {"inputs": [{**tensor, "data": [0.5] * (784 * images)}]}


@pytest.fixture
def client(tiny_repo: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(models_dir=tiny_repo))) as test_client:
        yield test_client


class Deltas:
    """Scrape /metrics before and after; ``delta(name, **labels)`` is what changed."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.before = self.scrape()
        self.after: MetricSamples = {}

    def scrape(self) -> MetricSamples:
        return metric_samples(self.client.get("/metrics").text)

    def __enter__(self) -> Deltas:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.after = self.scrape()

    def delta(self, name: str, **labels: str) -> float:
        return metric_value(self.after, name, **labels) - metric_value(self.before, name, **labels)


def test_app_counts_requests_images_and_batches_exactly(client: TestClient) -> None:
    with Deltas(client) as deltas:
        for _ in range(3):
            assert (
                client.post("/v1/models/tiny/predict", content=v1_body(4), headers=JSON).status_code
                == 200
            )
        for _ in range(2):
            assert client.post("/v2/models/tiny/infer", json=v2_body(5)).status_code == 200

    requests = "mnist_serve_requests_total"
    assert deltas.delta(requests, **LATEST, endpoint="v1", outcome="success") == 3
    assert deltas.delta(requests, **LATEST, endpoint="v2", outcome="success") == 2
    assert deltas.delta(requests, **LATEST) == 5
    assert deltas.delta("mnist_serve_images_total", **LATEST) == 3 * 4 + 2 * 5
    # One request at a time: each runs alone in its own batch.
    assert deltas.delta("mnist_serve_batch_executions_total", **LATEST) == 5
    assert deltas.delta("mnist_serve_batch_size_images_sum", **LATEST) == 22
    assert deltas.delta("mnist_serve_request_duration_seconds_count", **LATEST) == 5
    assert deltas.delta("mnist_serve_queue_duration_seconds_count", **LATEST) == 5
    assert deltas.delta("nv_inference_request_success_total", **LATEST) == 5
    assert deltas.delta("nv_inference_count_total", **LATEST) == 22
    assert deltas.delta("nv_inference_exec_count_total", **LATEST) == 5
    # ... and the first scrape's own 200, counted once its body was sent.
    assert deltas.delta("mnist_serve_http_responses_total", status_code="200") == 5 + 1


def test_app_shutdown_applies_the_updates_still_tallied(
    tiny_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deferred_metrics, "FLUSH_AFTER_S", 3600.0)  # only shutdown applies
    app = create_app(Settings(models_dir=tiny_repo))
    registry = app.state.server.metrics.registry

    def served() -> float:  # the registry as is, without render_metrics's flush
        samples = metric_samples(generate_latest(registry).decode())
        return metric_value(samples, "mnist_serve_requests_total", **LATEST, outcome="success")

    with TestClient(app) as test_client:
        for _ in range(3):
            response = test_client.post("/v1/models/tiny/predict", content=v1_body(1), headers=JSON)
            assert response.status_code == 200
        still_tallied = served()

    assert (still_tallied, served()) == (0, 3)


def test_app_counts_bad_requests_as_client_errors(client: TestClient) -> None:
    with Deltas(client) as deltas:
        assert (
            client.post("/v1/models/tiny/predict", content=b"{not", headers=JSON).status_code == 400
        )
        assert client.post("/v2/models/tiny/infer", json={"inputs": []}).status_code == 400

    requests = "mnist_serve_requests_total"
    assert deltas.delta(requests, **LATEST, outcome="client_error") == 2
    assert deltas.delta(requests, **LATEST, outcome="success") == 0
    assert deltas.delta("mnist_serve_images_total", **LATEST) == 0
    assert deltas.delta("nv_inference_request_failure_total", **LATEST, reason="OTHER") == 2
    assert deltas.delta("mnist_serve_http_responses_total", status_code="400") == 2


def test_app_counts_a_request_whose_deadline_passed_before_the_queue_as_timed_out(
    client: TestClient,
) -> None:
    with Deltas(client) as deltas:
        response = client.post(
            "/v1/models/tiny/predict",
            content=v1_body(1),
            headers={**JSON, "X-Request-Timeout-Ms": "0.001"},
        )

    assert response.status_code == 504
    assert "retry-after" not in response.headers
    assert deltas.delta("mnist_serve_requests_total", **LATEST, outcome="timeout") == 1
    assert deltas.delta("mnist_serve_rejections_total", **LATEST, reason="deadline") == 0
    assert deltas.delta("mnist_serve_batch_executions_total", **LATEST) == 0
    assert deltas.delta("mnist_serve_http_responses_total", status_code="504") == 1


def test_unknown_model_names_create_no_series(client: TestClient) -> None:
    with Deltas(client) as deltas:
        for name in ("nope", "x" * 40, "tiny2"):
            response = client.post(f"/v1/models/{name}/predict", content=v1_body(1), headers=JSON)
            assert response.status_code == 404
            assert client.post(f"/v2/models/{name}/infer", json=v2_body(1)).status_code == 404

    models = {dict(labels).get("model") for _, labels in deltas.after} - {None}
    assert models == {"tiny"}
    assert deltas.delta("mnist_serve_requests_total") == 0
    assert deltas.delta("mnist_serve_http_responses_total", status_code="404") == 6


def test_every_loaded_version_is_ready_with_its_provider(client: TestClient) -> None:
    samples = metric_samples(client.get("/metrics").text)

    ready = {
        (labels["version"], labels["provider"]): value
        for (name, label_set), value in samples.items()
        if name == "mnist_serve_model_ready"
        for labels in [dict(label_set)]
    }
    assert ready == {("1", "CPUExecutionProvider"): 1, ("2", "CPUExecutionProvider"): 1}


def test_idle_server_has_no_request_in_flight(client: TestClient) -> None:
    samples = metric_samples(client.get("/metrics").text)

    assert metric_value(samples, "mnist_serve_requests_in_flight") == 0


def test_inference_response_carries_server_timing_and_request_id(client: TestClient) -> None:
    response = client.post(
        "/v1/models/tiny/predict", content=v1_body(2), headers={**JSON, "X-Request-ID": "trace-42"}
    )

    assert response.headers["x-request-id"] == "trace-42"
    assert re.fullmatch(
        r"queue;dur=\d+\.\d{3}, infer;dur=\d+\.\d{3}, total;dur=\d+\.\d{3}",
        response.headers["server-timing"],
    )
