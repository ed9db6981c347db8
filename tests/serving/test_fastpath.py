"""The inference POSTs' short stack answers exactly as FastAPI's full stack does."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from serving import fastpath
from serving.api import v1
from serving.app import create_app
from serving.errors import Overloaded
from serving.settings import Settings

ONE_IMAGE = orjson.dumps({"images": [[0.5] * 784]})
V2_ONE_IMAGE = orjson.dumps(
    {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": [0.5] * 784}]}
)
JSON = {"content-type": "application/json"}
# Headers whose values differ per request: ids and timings.
PER_REQUEST_HEADERS = {"x-request-id", "server-timing"}

REQUESTS: list[tuple[str, bytes, dict[str, str]]] = [
    ("/v1/models/tiny/predict", ONE_IMAGE, JSON),
    ("/v1/models/tiny/versions/1/predict", ONE_IMAGE, JSON),
    ("/v1/models/tiny/predict", b"\x80" * 784, {"content-type": "application/octet-stream"}),
    ("/v1/models/tiny/predict", b'{"images": [[2.0]]}', JSON),
    ("/v1/models/tiny/predict", b"{", JSON),
    ("/v1/models/tiny/predict", ONE_IMAGE, {"content-type": "text/csv"}),
    ("/v1/models/nothing/predict", ONE_IMAGE, JSON),
    ("/v1/models/tiny/versions/9/predict", ONE_IMAGE, JSON),
    ("/v1/models/tiny/predict", b"\x00" * 5000, {"content-type": "application/octet-stream"}),
    ("/v2/models/tiny/infer", V2_ONE_IMAGE, JSON),
    ("/v2/models/tiny/versions/2/infer", b'{"inputs": []}', JSON),
    ("/v1/models/tiny/predict", ONE_IMAGE, {**JSON, "origin": "http://app.example"}),
    ("/v1/models/tiny/predict", ONE_IMAGE, {**JSON, "x-api-key": "wrong"}),
]


def started_client(tiny_repo: Path, **overrides: object) -> TestClient:
    settings = Settings(
        models_dir=tiny_repo,
        max_body_bytes=4096,
        cors_allow_origins=["http://app.example"],
        **overrides,
    )
    return TestClient(create_app(settings))


def answer(client: TestClient, path: str, body: bytes, headers: dict[str, str]) -> tuple:
    response = client.post(path, content=body, headers=headers)
    kept = {k: v for k, v in response.headers.items() if k not in PER_REQUEST_HEADERS}
    assert set(response.headers) >= PER_REQUEST_HEADERS
    return response.status_code, response.content, kept


@pytest.fixture
def full_stack_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """As when a tracer provider is configured: FastAPI's instrumentation sees every request."""
    monkeypatch.setattr(fastpath, "_is_native_telemetry_enabled", lambda app: True)


@pytest.mark.parametrize("api_key", [None, "s3cret"])
def test_short_stack_answers_as_the_full_stack_does(
    tiny_repo: Path, monkeypatch: pytest.MonkeyPatch, api_key: str | None
) -> None:
    with started_client(tiny_repo, api_key=api_key) as client:
        assert client.app.inference_stack is not None
        short = [answer(client, *request) for request in REQUESTS]
    monkeypatch.setattr(fastpath, "_is_native_telemetry_enabled", lambda app: True)
    with started_client(tiny_repo, api_key=api_key) as client:
        assert client.app.inference_stack is None
        full = [answer(client, *request) for request in REQUESTS]
    assert short == full
    statuses = [status for status, _, _ in short]
    if api_key is None:
        assert statuses == [200, 200, 200, 400, 400, 415, 404, 404, 413, 200, 400, 200, 200]
    else:
        assert statuses == [401] * len(REQUESTS)


def test_short_stack_counts_requests_and_writes_access_lines(
    tiny_repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with started_client(tiny_repo) as client, caplog.at_level(logging.INFO, "mnist_serve.access"):
        client.post("/v1/models/tiny/predict", content=ONE_IMAGE, headers=JSON)
        client.post("/v1/models/tiny/predict", content=b"{", headers=JSON)
        metrics = client.get("/metrics").text
    access = [record.fields for record in caplog.records if record.name == "mnist_serve.access"]
    assert [(line["path"], line["status"]) for line in access][:2] == [
        ("/v1/models/tiny/predict", 200),
        ("/v1/models/tiny/predict", 400),
    ]
    assert access[0]["model"] == "tiny"
    assert access[0]["images"] == 1
    assert 'outcome="success",version="2"} 1.0' in metrics
    assert 'outcome="client_error",version="2"} 1.0' in metrics


ROUTE_TEMPLATES = {
    "/v1/models/tiny/predict": "/v1/models/{model}/predict",
    "/v1/models/tiny/versions/1/predict": "/v1/models/{model}/versions/{version}/predict",
    "/v2/models/tiny/infer": "/v2/models/{model}/infer",
    "/v2/models/tiny/versions/1/infer": "/v2/models/{model}/versions/{version}/infer",
}


def logged_routes(client: TestClient, caplog: pytest.LogCaptureFixture) -> dict[str, object]:
    caplog.clear()
    with caplog.at_level(logging.INFO, "mnist_serve.access"):
        for path in ROUTE_TEMPLATES:
            body = ONE_IMAGE if path.startswith("/v1/") else V2_ONE_IMAGE
            assert client.post(path, content=body, headers=JSON).status_code == 200
    access = [record.fields for record in caplog.records if record.name == "mnist_serve.access"]
    return {line["path"]: line.get("route") for line in access}


def test_short_stack_access_lines_name_the_route_template_as_the_full_stack_does(
    tiny_repo: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with started_client(tiny_repo) as client:
        short = logged_routes(client, caplog)
    monkeypatch.setattr(fastpath, "_is_native_telemetry_enabled", lambda app: True)
    with started_client(tiny_repo) as client:
        full = logged_routes(client, caplog)

    assert short == full == ROUTE_TEMPLATES


def error_lines(client: TestClient, caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    """The access lines of a 400, a 504, a 404, a 413, a refusal and a success, in order."""
    server = client.app.state.server

    async def refuse(*args: object, **kwargs: object) -> None:
        raise Overloaded("queue full", reason="queue_full")

    caplog.clear()
    with caplog.at_level(logging.INFO, "mnist_serve.access"):
        client.post("/v1/models/tiny/predict", content=b"{", headers=JSON)
        expired = {**JSON, "X-Request-Timeout-Ms": "0.001"}
        client.post("/v2/models/tiny/versions/1/infer", content=V2_ONE_IMAGE, headers=expired)
        client.post("/v1/models/nothing/predict", content=ONE_IMAGE, headers=JSON)
        client.post("/v1/models/tiny/predict", content=b"\x00" * 5000, headers=JSON)
        batcher = server.repository.get("tiny").batcher
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(batcher, "submit", refuse)
            client.post("/v1/models/tiny/predict", content=ONE_IMAGE, headers=JSON)
        client.post("/v1/models/tiny/predict", content=ONE_IMAGE, headers=JSON)
    return [record.fields for record in caplog.records if record.name == "mnist_serve.access"]


@pytest.mark.parametrize("stack", ["short", "full"])
def test_error_access_lines_name_the_cause_and_the_model(
    tiny_repo: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, stack: str
) -> None:
    if stack == "full":
        monkeypatch.setattr(fastpath, "_is_native_telemetry_enabled", lambda app: True)
    with started_client(tiny_repo) as client:
        lines = error_lines(client, caplog)

    causes = [
        (line["status"], line.get("error"), line.get("model"), line.get("version"))
        for line in lines
    ]
    assert causes == [
        (400, "invalid_input", "tiny", "2"),
        (504, "timeout", "tiny", "1"),
        (404, "model_not_found", None, None),
        (413, "payload_too_large", None, None),
        (503, "queue_full", "tiny", "2"),
        (200, None, "tiny", "2"),
    ]


def test_unexpected_error_on_the_short_stack_is_a_logged_json_500(
    tiny_repo: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken_predict(request: object) -> None:
        raise RuntimeError("a bug")

    with started_client(tiny_repo) as client:
        monkeypatch.setattr(v1, "predict", broken_predict)
        with caplog.at_level(logging.ERROR, "mnist_serve.app"):
            response = client.post("/v1/models/tiny/predict", content=ONE_IMAGE, headers=JSON)
        pinned = client.post("/v1/models/tiny/versions/1/predict", content=ONE_IMAGE, headers=JSON)
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error; the server log has the details"}
    assert "RuntimeError: a bug" in caplog.text
    assert f"(request {response.headers['x-request-id']})" in caplog.text
    assert pinned.status_code == 200


def test_without_start_up_every_request_takes_the_full_stack(tiny_repo: Path) -> None:
    app = create_app(Settings(models_dir=tiny_repo))
    assert app.inference_stack is None
