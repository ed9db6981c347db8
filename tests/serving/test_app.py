"""The app as a whole: health, errors, body limit, API key, CORS, timeouts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from serving import fastpath
from serving.app import create_app
from serving.settings import Settings
from tests.support import metric_samples, metric_value, tiny_logits

ONE_IMAGE = orjson.dumps({"images": [[0.5] * 784]})
PAGE_ORIGIN = "http://app.example"
# What a browser sends before a page's POST with a key: no credentials, only their names.
PREFLIGHT = {
    "origin": PAGE_ORIGIN,
    "access-control-request-method": "POST",
    "access-control-request-headers": "authorization, content-type",
}


@pytest.fixture
def client(tiny_repo: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(models_dir=tiny_repo))) as test_client:
        yield test_client


def client_with(tiny_repo: Path, **overrides: object) -> TestClient:
    return TestClient(create_app(Settings(models_dir=tiny_repo, **overrides)))


def test_live_and_ready_once_models_are_warm(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}


def test_draining_server_is_live_but_not_ready(client: TestClient) -> None:
    client.app.state.server.is_draining = True
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 503


def test_unknown_route_is_a_json_404(client: TestClient) -> None:
    response = client.get("/v3/nothing")
    assert response.status_code == 404
    assert "no route GET /v3/nothing" in response.json()["error"]


def test_wrong_method_is_a_json_405_naming_the_methods_allowed(client: TestClient) -> None:
    response = client.put("/v2/models/tiny/infer")

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json() == {
        "error": "method PUT is not allowed on /v2/models/tiny/infer; allowed: POST"
    }


def test_body_over_the_limit_by_content_length_is_refused_with_413(tiny_repo: Path) -> None:
    with client_with(tiny_repo, max_body_bytes=1000) as client:
        response = client.post(
            "/v1/models/tiny/predict",
            content=b"x" * 5000,
            headers={"content-type": "application/octet-stream"},
        )
        assert response.status_code == 413
        assert "1000-byte limit" in response.json()["error"]


def test_streamed_body_over_the_limit_is_refused_with_413(tiny_repo: Path) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"x" * 784

    with client_with(tiny_repo, max_body_bytes=2000) as client:
        response = client.post(
            "/v1/models/tiny/predict",
            content=chunks(),
            headers={"content-type": "application/octet-stream"},
        )
        assert response.status_code == 413


def test_api_key_guards_inference_but_not_health(tiny_repo: Path) -> None:
    with client_with(tiny_repo, api_key="s3cret") as client:
        json_headers = {"content-type": "application/json"}
        refused = client.post("/v1/models/tiny/predict", content=ONE_IMAGE, headers=json_headers)
        assert refused.status_code == 401
        assert refused.json() == {"error": "missing or invalid API key"}
        bearer = {**json_headers, "authorization": "Bearer s3cret"}
        assert client.post("/v1/models/tiny/predict", content=ONE_IMAGE, headers=bearer).is_success
        assert client.get("/v1/models", headers={"x-api-key": "s3cret"}).is_success
        assert client.get("/v1/models", headers={"x-api-key": "wrong"}).status_code == 401
        assert client.get("/v2/health/ready").status_code == 200
        assert client.get("/metrics").status_code == 200


def test_api_key_can_also_guard_metrics(tiny_repo: Path) -> None:
    with client_with(tiny_repo, api_key="s3cret", api_key_protects_metrics=True) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"authorization": "Bearer s3cret"}).is_success


def test_cors_is_off_by_default(client: TestClient) -> None:
    response = client.get("/v1/models", headers={"origin": "http://elsewhere.example"})
    assert "access-control-allow-origin" not in response.headers


def test_cors_allows_configured_origins(tiny_repo: Path) -> None:
    with client_with(tiny_repo, cors_allow_origins=["http://app.example"]) as client:
        response = client.get("/v1/models", headers={"origin": "http://app.example"})
        assert response.headers["access-control-allow-origin"] == "http://app.example"


@pytest.fixture(params=["short stack", "full stack"])
def stack(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Inference POSTs through fastpath's short stack, or (as with telemetry on) FastAPI's."""
    if request.param == "full stack":
        monkeypatch.setattr(fastpath, "_is_native_telemetry_enabled", lambda app: True)
    return request.param


def test_cors_preflight_from_an_allowed_origin_needs_no_api_key(tiny_repo: Path) -> None:
    # Browsers never send credentials on a preflight: refusing it blocks every POST.
    with client_with(tiny_repo, api_key="s3cret", cors_allow_origins=[PAGE_ORIGIN]) as client:
        response = client.options("/v1/models/tiny/predict", headers=PREFLIGHT)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == PAGE_ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"].lower()


def test_cors_preflight_from_another_origin_is_not_allowed(tiny_repo: Path) -> None:
    with client_with(tiny_repo, api_key="s3cret", cors_allow_origins=[PAGE_ORIGIN]) as client:
        headers = {**PREFLIGHT, "origin": "http://elsewhere.example"}
        response = client.options("/v1/models/tiny/predict", headers=headers)
    assert response.status_code == 400
    assert response.json() == {
        "error": "CORS preflight refused: origin 'http://elsewhere.example' is not one of "
        "cors_allow_origins"
    }
    assert "access-control-allow-origin" not in response.headers


def test_cors_preflight_for_a_method_not_served_names_the_methods_allowed(
    tiny_repo: Path,
) -> None:
    with client_with(tiny_repo, cors_allow_origins=[PAGE_ORIGIN]) as client:
        headers = {**PREFLIGHT, "access-control-request-method": "DELETE"}
        response = client.options("/v1/models/tiny/predict", headers=headers)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": "CORS preflight refused: method 'DELETE' is not one of GET, POST"
    }
    assert response.headers["access-control-allow-origin"] == PAGE_ORIGIN


def test_api_key_refusal_is_readable_by_an_allowed_origin(tiny_repo: Path, stack: str) -> None:
    with client_with(tiny_repo, api_key="s3cret", cors_allow_origins=[PAGE_ORIGIN]) as client:
        headers = {"content-type": "application/json", "origin": PAGE_ORIGIN}
        refused = client.post("/v1/models/tiny/predict", content=ONE_IMAGE, headers=headers)
        listing = client.get("/v1/models", headers={"origin": PAGE_ORIGIN})
    for response in (refused, listing):
        assert response.status_code == 401
        assert response.json() == {"error": "missing or invalid API key"}
        assert response.headers["access-control-allow-origin"] == PAGE_ORIGIN


def test_api_key_is_still_required_from_an_allowed_origin(tiny_repo: Path, stack: str) -> None:
    with client_with(tiny_repo, api_key="s3cret", cors_allow_origins=[PAGE_ORIGIN]) as client:
        headers = {"content-type": "application/json", "origin": PAGE_ORIGIN}
        refused = client.post("/v1/models/tiny/predict", content=ONE_IMAGE, headers=headers)
        keyed = {**headers, "authorization": "Bearer s3cret"}
        answered = client.post("/v1/models/tiny/predict", content=ONE_IMAGE, headers=keyed)
    assert refused.status_code == 401
    assert answered.status_code == 200
    assert answered.headers["access-control-allow-origin"] == PAGE_ORIGIN


def test_preflights_and_refusals_are_observed(tiny_repo: Path, stack: str) -> None:
    with client_with(tiny_repo, api_key="s3cret", cors_allow_origins=[PAGE_ORIGIN]) as client:
        preflight = client.options("/v1/models/tiny/predict", headers=PREFLIGHT)
        headers = {"content-type": "application/json", "origin": PAGE_ORIGIN}
        refused = client.post("/v1/models/tiny/predict", content=ONE_IMAGE, headers=headers)
        samples = metric_samples(client.get("/metrics").text)
    for response in (preflight, refused):
        assert "x-request-id" in response.headers
        assert "server-timing" in response.headers
    responses = "mnist_serve_http_responses_total"
    assert metric_value(samples, responses, status_code="200") == 1  # the preflight
    assert metric_value(samples, responses, status_code="401") == 1


def predict_with_timeout(client: TestClient, timeout_ms: str) -> httpx.Response:
    headers = {"content-type": "application/json", "x-request-timeout-ms": timeout_ms}
    return client.post("/v1/models/tiny/predict", content=ONE_IMAGE, headers=headers)


# A timeout is a positive decimal count of milliseconds; float() would also read "1_000",
# "inf" and "1e3".
@pytest.mark.parametrize("timeout_ms", ["soon", "1_000", "inf", "1e3", "0x10", "-5", "0"])
def test_bad_timeout_header_is_a_400(client: TestClient, timeout_ms: str) -> None:
    response = predict_with_timeout(client, timeout_ms)

    assert response.status_code == 400
    assert response.json()["error"].startswith("header X-Request-Timeout-Ms: ")
    assert repr(timeout_ms) in response.json()["error"]


@pytest.mark.parametrize("timeout_ms", ["1000", "2500.5", " 1000 ", "5000."])
def test_a_decimal_timeout_header_is_accepted(client: TestClient, timeout_ms: str) -> None:
    assert predict_with_timeout(client, timeout_ms).status_code == 200


def test_good_requests_are_answered_after_bad_ones(client: TestClient) -> None:
    headers = {"content-type": "application/json"}
    for bad in [b"{", b'{"images": [[2.0]]}', b'{"images": []}']:
        response = client.post("/v1/models/tiny/predict", content=bad, headers=headers)
        assert response.status_code == 400
    response = client.post("/v1/models/tiny/predict", content=ONE_IMAGE, headers=headers)
    expected = tiny_logits(np.full((1, 784), 0.5, dtype=np.float32), seed=1).argmax()
    assert response.json()["predictions"][0]["label"] == expected


def test_static_page_is_served_at_the_root(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]


def test_api_docs_work_offline_from_assets_the_app_serves(client: TestClient) -> None:
    for page in ["/docs", "/redoc"]:
        html = client.get(page).text
        assert "cdn." not in html
        assets = re.findall(r'(?:src|href)="(/docs-assets/[^"]+)"', html)
        assert assets
        for asset in assets:
            assert client.get(asset).status_code == 200
