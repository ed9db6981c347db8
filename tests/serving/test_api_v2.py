"""The V2 routes through the real app: metadata, readiness, inference, and every 4xx."""

from __future__ import annotations

import gzip
import warnings
from collections.abc import Iterator
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from starlette.exceptions import StarletteDeprecationWarning

from serving.app import create_app
from serving.codecs import v2, v2_client
from serving.settings import Settings
from tests.support import tiny_logits

with warnings.catch_warnings():
    # Starlette 1.x asks for httpx2 to drive its TestClient; httpx 0.28 works the same.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

HEADER = v2.HEADER_LENGTH
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}  # ORT's Gemm may sum in another order than numpy


@pytest.fixture(scope="module")
def client(tiny_repo: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(models_dir=tiny_repo))) as test_client:
        yield test_client


def random_images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 1, 28, 28), dtype=np.float32)


def post_infer(
    client: TestClient, images: np.ndarray, path: str = "/v2/models/tiny/infer", **encoding: Any
) -> Any:
    body, header_length = v2_client.encode_infer_request(images, **encoding)
    headers = {} if header_length is None else {HEADER: str(header_length)}
    return client.post(path, content=body, headers=headers)


def logits_of(response: Any) -> np.ndarray:
    header_length = response.headers.get(HEADER)
    return v2_client.decode_infer_response(
        response.content, None if header_length is None else int(header_length)
    )["logits"]


def error_of(response: Any, status_code: int) -> str:
    assert response.status_code == status_code, response.text
    return response.json()["error"]


def test_server_metadata_lists_only_implemented_extensions(client: TestClient) -> None:
    metadata = client.get("/v2").json()

    assert metadata == {
        "name": "mnist-serve",
        "version": package_version("mnist-serve"),
        "extensions": [
            "binary_tensor_data",
            "model_configuration",
            "statistics",
            "model_repository",
        ],
    }


@pytest.mark.parametrize("path", ["/v2/models/tiny", "/v2/models/tiny/versions/1"])
def test_model_metadata_comes_from_the_card(client: TestClient, path: str) -> None:
    metadata = client.get(path).json()

    assert metadata == {
        "name": "tiny",
        "versions": ["1", "2"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
    }


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2/models/nope", "model 'nope' not found"),
        ("/v2/models/tiny/versions/9", "no version '9'"),
        ("/v2/models/nope/ready", "model 'nope' not found"),
        ("/v2/models/tiny/versions/abc/ready", "no version 'abc'"),
        ("/v2/models/nope/config", "model 'nope' not found"),
        ("/v2/models/nope/stats", "model 'nope' not found"),
        ("/v2/models/tiny/versions/9/stats", "no version '9'"),
    ],
)
def test_unknown_model_or_version_is_404(client: TestClient, path: str, expected: str) -> None:
    assert expected in error_of(client.get(path), 404)


@pytest.mark.parametrize(
    ("path", "version"),
    [("/v2/models/tiny/ready", "2"), ("/v2/models/tiny/versions/1/ready", "1")],
)
def test_ready_model_answers_200(client: TestClient, path: str, version: str) -> None:
    response = client.get(path)

    assert response.status_code == 200
    assert response.json() == {"name": "tiny", "version": version, "ready": True}


def test_model_not_ready_answers_503(client: TestClient) -> None:
    model = client.app.state.server.repository.get("tiny", "1")
    model.is_ready = False
    try:
        assert "not ready" in error_of(client.get("/v2/models/tiny/versions/1/ready"), 503)
        assert client.get("/v2/models/tiny/versions/2/ready").status_code == 200
    finally:
        model.is_ready = True


@pytest.mark.parametrize("count", [1, 5])
def test_json_inference_returns_the_models_logits(client: TestClient, count: int) -> None:
    images = random_images(count)

    response = post_infer(client, images, is_binary=False, request_id="abc")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert HEADER not in response.headers
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("tiny", "2", "abc")
    assert body["outputs"][0]["name"] == "logits"
    assert body["outputs"][0]["datatype"] == "FP32"
    assert body["outputs"][0]["shape"] == [count, 10]
    np.testing.assert_allclose(logits_of(response), tiny_logits(images, seed=1), **TOLERANCE)


def test_response_has_no_id_when_the_request_gave_none(client: TestClient) -> None:
    response = post_infer(client, random_images(1), is_binary=False)

    assert "id" not in response.json()


@pytest.mark.parametrize(("version", "seed"), [("1", 0), ("2", 1)])
def test_version_in_the_path_pins_the_weights(client: TestClient, version: str, seed: int) -> None:
    images = random_images(3)

    response = post_infer(client, images, path=f"/v2/models/tiny/versions/{version}/infer")

    assert response.json()["model_version"] == version
    np.testing.assert_allclose(logits_of(response), tiny_logits(images, seed=seed), **TOLERANCE)


@pytest.mark.parametrize("shape", [(2, 784), (2, 28, 28), (2, 1, 28, 28)])
def test_nested_json_data_in_every_image_shape(client: TestClient, shape: tuple[int, ...]) -> None:
    images = random_images(2)
    request = {
        "inputs": [
            {
                "name": "input",
                "shape": list(shape),
                "datatype": "FP32",
                "data": images.reshape(shape).tolist(),
            }
        ]
    }

    response = client.post("/v2/models/tiny/infer", content=orjson.dumps(request))

    np.testing.assert_allclose(logits_of(response), tiny_logits(images, seed=1), **TOLERANCE)


def test_binary_request_and_binary_response(client: TestClient) -> None:
    images = random_images(64)

    response = post_infer(client, images, binary_output=True)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    header_length = int(response.headers[HEADER])
    header = orjson.loads(response.content[:header_length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 64 * 10 * 4}
    assert len(response.content) == header_length + 64 * 10 * 4
    np.testing.assert_allclose(logits_of(response), tiny_logits(images, seed=1), **TOLERANCE)


def test_binary_request_with_json_response(client: TestClient) -> None:
    images = random_images(4)

    response = post_infer(client, images, binary_output=False)

    assert response.headers["content-type"] == "application/json"
    np.testing.assert_allclose(logits_of(response), tiny_logits(images, seed=1), **TOLERANCE)


@pytest.mark.parametrize("is_binary", [True, False])
def test_uint8_pixels_are_scaled_on_the_server(client: TestClient, is_binary: bool) -> None:
    pixels = np.random.default_rng(3).integers(0, 256, size=(6, 784), dtype=np.uint8)

    response = post_infer(client, pixels, is_binary=is_binary)

    expected = tiny_logits(pixels.astype(np.float32) / np.float32(255), seed=1)
    np.testing.assert_allclose(logits_of(response), expected, **TOLERANCE)


def test_binary_data_on_the_output_overrides_the_request(client: TestClient) -> None:
    request = {
        "parameters": {"binary_data_output": True},
        "inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}],
        "outputs": [{"name": "logits", "parameters": {"binary_data": False}}],
    }

    response = client.post("/v2/models/tiny/infer", content=orjson.dumps(request))

    assert response.headers["content-type"] == "application/json"
    assert len(response.json()["outputs"][0]["data"]) == 10


def test_gzip_request_body_is_inflated(client: TestClient) -> None:
    images = random_images(2)
    body, header_length = v2_client.encode_infer_request(images)

    response = client.post(
        "/v2/models/tiny/infer",
        content=gzip.compress(body),
        headers={HEADER: str(header_length), "content-encoding": "gzip"},
    )

    np.testing.assert_allclose(logits_of(response), tiny_logits(images, seed=1), **TOLERANCE)


def test_generous_timeout_parameter_is_met(client: TestClient) -> None:
    response = post_infer(client, random_images(1), timeout_us=10_000_000)

    assert response.status_code == 200


def test_impossible_timeout_parameter_is_refused_not_run(client: TestClient) -> None:
    response = post_infer(client, random_images(1), timeout_us=1)

    # Refused at the door (503) or dropped from the queue (504): never computed late.
    assert response.status_code in (503, 504)
    assert "deadline" in response.json()["error"] or "timed out" in response.json()["error"]


def an_input(**fields: Any) -> dict[str, Any]:
    return {"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.5] * 784} | fields


@pytest.mark.parametrize(
    ("request_json", "expected"),
    [
        ({"inputs": [an_input(name="image")]}, "the model's input is 'input'"),
        ({"inputs": [an_input()], "outputs": [{"name": "probs"}]}, "outputs are 'logits'"),
        ({"inputs": [an_input(datatype="INT32")]}, "not supported"),
        ({"inputs": [an_input(shape=[1, 785])]}, "785"),
        ({"inputs": [an_input(shape=[2, 784])]}, "784 values"),
        ({"inputs": [an_input(data=[1.5] * 784)]}, "pixels must be in [0, 1]"),
        ({"inputs": [an_input(datatype="UINT8", data=[256] * 784)]}, "[0, 255]"),
        ({"inputs": []}, "'inputs'"),
    ],
)
def test_malformed_json_request_is_400(
    client: TestClient, request_json: dict[str, Any], expected: str
) -> None:
    response = client.post("/v2/models/tiny/infer", content=orjson.dumps(request_json))

    assert expected in error_of(response, 400)


def binary_body(size: int | None = None, datatype: str = "FP32") -> tuple[bytes, int]:
    raw = np.full(784, 0.5, dtype=np.float32).tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 784],
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(raw) if size is None else size},
                }
            ]
        }
    )
    return header + raw, len(header)


@pytest.mark.parametrize(
    ("header_value", "expected"),
    [
        ("100000", "the length of the JSON header"),
        ("-3", "the length of the JSON header"),
        ("twelve", "as decimal digits"),
        ("7", "not valid JSON"),
    ],
)
def test_lying_header_length_is_400(client: TestClient, header_value: str, expected: str) -> None:
    body, _ = binary_body()

    response = client.post("/v2/models/tiny/infer", content=body, headers={HEADER: header_value})

    assert expected in error_of(response, 400)


@pytest.mark.parametrize(
    ("size", "datatype", "expected"),
    [
        (3000, "FP32", "3136 bytes follow"),
        (4000, "FP32", "3136 bytes follow"),
        (None, "UINT8", "needs 784 bytes"),
        (None, "FP64", "needs 6272 bytes"),
    ],
)
def test_binary_size_must_match_the_bytes_and_the_datatype(
    client: TestClient, size: int | None, datatype: str, expected: str
) -> None:
    body, header_length = binary_body(size, datatype)

    response = client.post(
        "/v2/models/tiny/infer", content=body, headers={HEADER: str(header_length)}
    )

    assert expected in error_of(response, 400)


def test_too_many_images_is_400(tiny_repo: Path) -> None:
    with TestClient(create_app(Settings(models_dir=tiny_repo, max_images_per_request=4))) as small:
        response = post_infer(small, random_images(5))

    assert "limit of 4 images" in error_of(response, 400)


def test_body_over_the_limit_is_413_even_when_gzipped(tiny_repo: Path) -> None:
    blank = np.zeros((2, 1, 28, 28), dtype=np.float32)
    body, header_length = v2_client.encode_infer_request(blank)  # 6 KiB that gzip makes tiny
    settings = Settings(models_dir=tiny_repo, max_body_bytes=4096)
    with TestClient(create_app(settings)) as small:
        plain = small.post("/v2/models/tiny/infer", content=body, headers={HEADER: "1"})
        zipped = small.post(
            "/v2/models/tiny/infer",
            content=gzip.compress(body),
            headers={HEADER: str(header_length), "content-encoding": "gzip"},
        )

    assert plain.status_code == 413
    assert "inflates past" in error_of(zipped, 413)


def test_unknown_content_encoding_is_415(client: TestClient) -> None:
    response = client.post(
        "/v2/models/tiny/infer", content=b"...", headers={"content-encoding": "br"}
    )

    assert "'br'" in error_of(response, 415)


def test_inference_on_an_unknown_model_is_404(client: TestClient) -> None:
    response = post_infer(client, random_images(1), path="/v2/models/nope/infer")

    assert "'nope' not found" in error_of(response, 404)


def test_every_v2_route_is_documented(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    v2_operations = [
        (path, operation)
        for path, operations in schema["paths"].items()
        if path.startswith("/v2") and not path.startswith("/v2/health")
        for operation in operations.values()
    ]

    assert len(v2_operations) == 15
    for path, operation in v2_operations:
        assert operation["summary"], path
        if "{model}" in path:
            assert operation["responses"]["404"]["description"], path
    infer = schema["paths"]["/v2/models/{model}/infer"]["post"]
    assert set(infer["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    assert HEADER in [parameter["name"] for parameter in infer["parameters"]]
