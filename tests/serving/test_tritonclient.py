"""NVIDIA's own ``tritonclient.http`` against a real ``mnist-serve`` process.

If Triton's client works unchanged, so will perf_analyzer-style tooling and any
code written for Triton: this is the compatibility claim of the V2 API, tested.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.support import running_server, tiny_logits, write_tiny_model

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def server_address(tiny_repo: Path) -> Iterator[str]:
    with running_server(tiny_repo) as (base_url, _):
        yield base_url.removeprefix("http://")


@pytest.fixture
def client(server_address: str) -> Iterator[httpclient.InferenceServerClient]:
    with httpclient.InferenceServerClient(server_address) as triton:
        yield triton


def images_input(images: np.ndarray, *, binary: bool) -> httpclient.InferInput:
    datatype = "UINT8" if images.dtype == np.uint8 else "FP32"
    tensor = httpclient.InferInput("input", list(images.shape), datatype)
    tensor.set_data_from_numpy(images, binary_data=binary)
    return tensor


def random_images(count: int) -> np.ndarray:
    return np.random.default_rng(count).random((count, 1, 28, 28), dtype=np.float32)


def test_health_and_readiness(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("tiny")
    assert client.is_model_ready("tiny", "1")
    assert not client.is_model_ready("nope")


def test_server_and_model_metadata(client: httpclient.InferenceServerClient) -> None:
    server = client.get_server_metadata()
    model = client.get_model_metadata("tiny", "1")

    assert server["name"] == "mnist-serve"
    assert "binary_tensor_data" in server["extensions"]
    assert model["versions"] == ["1", "2"]
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert model["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]


def test_model_config(client: httpclient.InferenceServerClient) -> None:
    config = client.get_model_config("tiny")

    assert config["max_batch_size"] == 64
    assert config["input"][0]["dims"] == [1, 28, 28]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 1000


def test_json_inference_of_one_image(client: httpclient.InferenceServerClient) -> None:
    images = random_images(1)

    result = client.infer(
        "tiny",
        [images_input(images, binary=False)],
        outputs=[httpclient.InferRequestedOutput("logits", binary_data=False)],
        request_id="one",
    )

    np.testing.assert_allclose(result.as_numpy("logits"), tiny_logits(images, seed=1), **TOLERANCE)
    response = result.get_response()
    assert (response["id"], response["model_version"]) == ("one", "2")
    assert "data" in response["outputs"][0]


def test_binary_inference_of_a_batch_of_64(client: httpclient.InferenceServerClient) -> None:
    images = random_images(64)

    result = client.infer("tiny", [images_input(images, binary=True)])  # all outputs binary

    assert result.get_response()["outputs"][0]["parameters"] == {"binary_data_size": 64 * 40}
    np.testing.assert_allclose(result.as_numpy("logits"), tiny_logits(images, seed=1), **TOLERANCE)


@pytest.mark.parametrize("binary", [True, False])
def test_uint8_pixels(client: httpclient.InferenceServerClient, binary: bool) -> None:
    pixels = np.random.default_rng(9).integers(0, 256, size=(8, 784), dtype=np.uint8)

    result = client.infer("tiny", [images_input(pixels, binary=binary)])

    expected = tiny_logits(pixels.astype(np.float32) / np.float32(255), seed=1)
    np.testing.assert_allclose(result.as_numpy("logits"), expected, **TOLERANCE)


def test_version_pinning(client: httpclient.InferenceServerClient) -> None:
    images = random_images(3)

    result = client.infer("tiny", [images_input(images, binary=True)], model_version="1")

    assert result.get_response()["model_version"] == "1"
    np.testing.assert_allclose(result.as_numpy("logits"), tiny_logits(images, seed=0), **TOLERANCE)


def test_gzip_request_and_timeout_parameter(client: httpclient.InferenceServerClient) -> None:
    images = random_images(2)

    result = client.infer(
        "tiny",
        [images_input(images, binary=True)],
        timeout=5_000_000,  # microseconds, as Triton reads it
        request_compression_algorithm="gzip",
    )

    np.testing.assert_allclose(result.as_numpy("logits"), tiny_logits(images, seed=1), **TOLERANCE)


def test_statistics_count_the_inferences(client: httpclient.InferenceServerClient) -> None:
    def counts() -> tuple[int, int]:
        (stats,) = client.get_inference_statistics("tiny", "1")["model_stats"]
        return stats["inference_count"], stats["inference_stats"]["success"]["count"]

    images_before, requests_before = counts()
    for _ in range(2):
        client.infer("tiny", [images_input(random_images(5), binary=True)], model_version="1")

    assert counts() == (images_before + 10, requests_before + 2)


def test_unknown_model_is_404(client: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as raised:
        client.infer("nope", [images_input(random_images(1), binary=True)])

    assert raised.value.status() == "404"
    assert "'nope' not found" in raised.value.message()


def test_wrong_input_name_is_400_naming_the_input(
    client: httpclient.InferenceServerClient,
) -> None:
    tensor = httpclient.InferInput("image", [1, 784], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 784), dtype=np.float32))

    with pytest.raises(InferenceServerException) as raised:
        client.infer("tiny", [tensor])

    assert raised.value.status() == "400"
    assert "the model's input is 'input'" in raised.value.message()


def test_repository_unload_and_load(tmp_path: Path) -> None:
    write_tiny_model(tmp_path, "tiny", version=1, seed=0)
    write_tiny_model(tmp_path, "other", version=1, seed=2)
    with (
        running_server(tmp_path, env={"MNIST_SERVE_MODEL_CONTROL": "true"}) as (base_url, _),
        httpclient.InferenceServerClient(base_url.removeprefix("http://")) as client,
    ):
        client.unload_model("tiny")
        assert not client.is_model_ready("tiny")
        index = {entry["name"]: entry["state"] for entry in client.get_model_repository_index()}
        assert index == {"other": "READY", "tiny": "UNLOADED"}

        client.load_model("tiny")

        assert client.is_model_ready("tiny")
        result = client.infer("tiny", [images_input(random_images(1), binary=True)])
        assert result.as_numpy("logits").shape == (1, 10)
