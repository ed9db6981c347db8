"""The observability middleware around a tiny Starlette app: ids, timing, counts, access log."""

from __future__ import annotations

import logging
import re
import warnings
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

with warnings.catch_warnings():
    # Starlette 1.x would rather drive its TestClient with httpx2; httpx 0.28 works the same.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from serving.metrics import ServingMetrics, render_metrics
from serving.middleware import ObservabilityMiddleware, milliseconds, report_protocol_answer
from tests.support import metric_samples, metric_value

RECORD = SimpleNamespace(
    model="tiny", version="2", images=3, queue_s=0.00125, compute_s=0.0005, batch_images=8
)


def build_app(metrics: ServingMetrics, *, access_log: bool = True) -> Starlette:
    async def predict(request: Request) -> JSONResponse:
        request.state.inference = RECORD
        return JSONResponse({"request_id": request.state.request_id})

    async def in_flight(request: Request) -> PlainTextResponse:
        samples = metric_samples(render_metrics(metrics)[0].decode())
        gauge = metric_value(samples, "mnist_serve_requests_in_flight")
        return PlainTextResponse(f"{gauge} {metrics.requests_in_flight}")

    async def broken(request: Request) -> PlainTextResponse:
        raise RuntimeError("a bug")

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[
            Route("/v1/models/{model}/predict", predict, methods=["POST"]),
            Route("/in-flight", in_flight),
            Route("/broken", broken),
            Route("/v2/health/ready", health),
            Route("/metrics", in_flight),
        ]
    )
    app.add_middleware(ObservabilityMiddleware, metrics=metrics, access_log=access_log)
    return app


@pytest.fixture
def metrics() -> ServingMetrics:
    return ServingMetrics()


@pytest.fixture
def client(metrics: ServingMetrics) -> TestClient:
    return TestClient(build_app(metrics), raise_server_exceptions=False)


def test_client_request_id_is_echoed_and_given_to_the_handler(client: TestClient) -> None:
    response = client.post("/v1/models/tiny/predict", headers={"X-Request-ID": "abc-123"})

    assert response.headers["x-request-id"] == "abc-123"
    assert response.json() == {"request_id": "abc-123"}


def test_missing_request_id_is_generated_short_and_unique(client: TestClient) -> None:
    ids = {client.post("/v1/models/tiny/predict").headers["x-request-id"] for _ in range(3)}

    assert len(ids) == 3
    assert all(re.fullmatch(r"[0-9a-f]{16}", request_id) for request_id in ids)


@pytest.mark.parametrize("bad_id", ["x" * 129, "two words", "ünï".encode()])
def test_unsafe_request_id_is_replaced(client: TestClient, bad_id: str | bytes) -> None:
    response = client.post("/v1/models/tiny/predict", headers={"X-Request-ID": bad_id})

    assert re.fullmatch(r"[0-9a-f]{16}", response.headers["x-request-id"])


def test_server_timing_splits_queue_and_infer_after_an_inference(client: TestClient) -> None:
    timing = client.post("/v1/models/tiny/predict").headers["server-timing"]

    match = re.fullmatch(r"queue;dur=1\.250, infer;dur=0\.500, total;dur=(\d+\.\d{3})", timing)
    assert match is not None, timing
    assert float(match.group(1)) > 0


def test_server_timing_has_only_total_without_an_inference(client: TestClient) -> None:
    timing = client.get("/v2/health/ready").headers["server-timing"]

    assert re.fullmatch(r"total;dur=\d+\.\d{3}", timing)


def test_responses_are_counted_by_status_including_unhandled_errors(
    client: TestClient, metrics: ServingMetrics
) -> None:
    client.post("/v1/models/tiny/predict")
    client.get("/no/such/path")
    client.get("/broken")

    samples = metric_samples(render_metrics(metrics)[0].decode())

    responses = "mnist_serve_http_responses_total"
    assert metric_value(samples, responses, status_code="200") == 1
    assert metric_value(samples, responses, status_code="404") == 1
    assert metric_value(samples, responses, status_code="500") == 1


def test_in_flight_counts_the_request_being_handled(
    client: TestClient, metrics: ServingMetrics
) -> None:
    during = client.get("/in-flight").text
    client.get("/broken")

    after = metric_value(
        metric_samples(render_metrics(metrics)[0].decode()), "mnist_serve_requests_in_flight"
    )
    # The gauge, and the process's own count the batcher asks whether the server is idle.
    assert during == "1.0 1"
    assert (after, metrics.requests_in_flight) == (0.0, 0)


def test_in_flight_gauge_leaves_out_the_scrape_reading_it(client: TestClient) -> None:
    during = client.get("/metrics").text

    # An idle server reports 0; the process's own count still sees the scrape, which
    # needs the event loop as much as any request.
    assert during == "0.0 1"


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "mnist_serve.access"]


def test_one_access_line_per_request_with_its_inference(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mnist_serve.access")

    client.post(
        "/v1/models/tiny/predict", headers={"X-Request-ID": "req-7"}, content=b'{"secret": 1}'
    )

    [record] = access_records(caplog)
    fields = record.fields
    assert record.levelno == logging.INFO
    assert fields["total_ms"] > 0
    assert {key: value for key, value in fields.items() if key != "total_ms"} == {
        "request_id": "req-7",
        "method": "POST",
        "path": "/v1/models/tiny/predict",
        "route": "/v1/models/{model}/predict",
        "status": 200,
        "client": "testclient",
        "model": "tiny",
        "version": "2",
        "images": 3,
        "batch_images": 8,
        "queue_ms": 1.25,
        "compute_ms": 0.5,
    }


def test_probes_are_logged_at_debug_only(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mnist_serve.access")
    client.get("/v2/health/ready")
    assert access_records(caplog) == []

    caplog.set_level(logging.DEBUG, logger="mnist_serve.access")
    client.get("/v2/health/ready")
    assert [record.levelno for record in access_records(caplog)] == [logging.DEBUG]


def test_failed_request_is_logged_with_status_500(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mnist_serve.access")

    client.get("/broken")

    [record] = access_records(caplog)
    assert record.fields["status"] == 500
    assert "model" not in record.fields


def test_access_log_can_be_turned_off(
    metrics: ServingMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mnist_serve.access")
    client = TestClient(build_app(metrics, access_log=False))

    response = client.post("/v1/models/tiny/predict")

    assert response.headers["x-request-id"]
    assert access_records(caplog) == []


def test_a_head_timeout_is_counted_without_the_access_log(
    metrics: ServingMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mnist_serve.access")

    report_protocol_answer(metrics, False, 408, "head_timeout", ("127.0.0.1", 40000), [], 5.0)

    samples = metric_samples(render_metrics(metrics)[0].decode())
    assert metric_value(samples, "mnist_serve_http_responses_total", status_code="408") == 1
    assert access_records(caplog) == []


def test_lifespan_passes_through(metrics: ServingMetrics) -> None:
    with TestClient(build_app(metrics)) as client:
        assert client.get("/v2/health/ready").status_code == 200


@settings(max_examples=500)
@given(st.floats(min_value=0, max_value=3600, allow_nan=False))
def test_milliseconds_are_the_duration_rounded_to_microseconds(seconds: float) -> None:
    assert milliseconds(seconds) == pytest.approx(round(seconds * 1e3, 3), abs=1.0001e-3)
    assert milliseconds(seconds) == round(milliseconds(seconds), 3)
