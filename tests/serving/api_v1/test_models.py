"""The v1 models: listed and described with their contract, a version chosen by its route,
a 404 for an unknown model or version, and the OpenAPI document of the routes."""

from __future__ import annotations

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.serving.api_v1.helpers import (
    JSON,
    PREDICT,
    assert_error,
    assert_predictions_match,
    random_images,
)


def test_models_lists_every_model_with_its_contract_and_state(client: TestClient) -> None:
    response = client.get("/v1/models")

    assert response.status_code == 200
    (tiny,) = response.json()["models"]
    assert tiny["name"] == "tiny"
    assert tiny["versions"] == ["1", "2"]
    assert tiny["latest"] == "2"
    assert tiny["ready"] is True
    assert tiny["provider"] == "CPUExecutionProvider"
    assert tiny["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert tiny["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert tiny["labels"] == [str(digit) for digit in range(10)]
    assert [entry["version"] for entry in tiny["by_version"]] == ["1", "2"]
    assert {entry["architecture"] for entry in tiny["by_version"]} == {"linear"}


def test_one_model_is_described(client: TestClient) -> None:
    listed = client.get("/v1/models").json()["models"][0]

    response = client.get("/v1/models/tiny")

    assert response.status_code == 200
    assert response.json() == listed


def test_unknown_model_description_is_a_404(client: TestClient) -> None:
    assert_error(client.get("/v1/models/nope"), 404, "model 'nope' not found")


def test_version_route_uses_that_version(client: TestClient) -> None:
    images = random_images(3, seed=4)
    body = orjson.dumps({"images": images.tolist()})

    response = client.post("/v1/models/tiny/versions/1/predict", content=body, headers=JSON)

    assert response.json()["version"] == "1"
    assert_predictions_match(response.json(), images, seed=0)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v1/models/nope/predict", "model 'nope' not found; available: ['tiny']"),
        ("/v1/models/tiny/versions/3/predict", "model 'tiny' has no version '3'"),
        ("/v1/models/tiny/versions/x/predict", "has no version 'x'"),
    ],
)
def test_unknown_model_or_version_is_a_404(client: TestClient, path: str, message: str) -> None:
    body = orjson.dumps({"images": random_images(1).tolist()})

    assert_error(client.post(path, content=body, headers=JSON), 404, message)


@pytest.mark.parametrize("path", ["/v1/models/{}/predict", "/v1/models/{}", "/v2/models/{}"])
def test_a_404_quotes_a_long_model_name_shortened(client: TestClient, path: str) -> None:
    name = "n" * 20_000
    body = orjson.dumps({"images": random_images(1).tolist()})

    response = client.request(
        "POST" if path.endswith("predict") else "GET",
        path.format(name),
        content=body,
        headers=JSON,
    )

    assert_error(response, 404, f"model '{'n' * 64}…' ")
    assert len(response.json()["error"]) < 200


def test_openapi_documents_every_body_type_and_error(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()

    for path in (
        PREDICT.replace("tiny", "{model}"),
        "/v1/models/{model}/versions/{version}/predict",
    ):
        operation = spec["paths"][path]["post"]
        assert set(operation["requestBody"]["content"]) == {
            "application/json",
            "application/octet-stream",
            "image/png",
            "image/jpeg",
            "multipart/form-data",
        }
        assert {"200", "400", "404", "413", "415", "503", "504"} <= set(operation["responses"])
    assert "/v1/models" in spec["paths"]
