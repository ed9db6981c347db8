"""Every body the load test sends decodes, via the server's own codecs, to the fixture pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from loadtest.fixtures import load_fixture
from loadtest.payloads import OCTET_TYPE, PNG_TYPE, PayloadBuilder
from serving.codecs.v1 import decode_json_images, decode_octet_images
from serving.codecs.v2 import decode_infer_request

INDICES = (0, 7, 1999)


@pytest.fixture(scope="module")
def builder() -> PayloadBuilder:
    return PayloadBuilder(load_fixture().images)


@pytest.fixture(scope="module")
def expected_pixels() -> np.ndarray:
    return load_fixture().pixels()[list(INDICES)]


def test_v1_json_body_decodes_to_the_exact_float32_pixels(builder, expected_pixels) -> None:
    payload = builder.v1_json("mnist_mlp", INDICES)

    decoded = decode_json_images(payload.body, max_images=64)

    assert payload.path == "/v1/models/mnist_mlp/predict"
    np.testing.assert_array_equal(decoded, expected_pixels)


def test_octet_body_decodes_to_the_exact_float32_pixels(builder, expected_pixels) -> None:
    payload = builder.v1_octet("mnist_cnn", INDICES)

    decoded = decode_octet_images(payload.body, max_images=64)

    assert payload.content_type == OCTET_TYPE
    np.testing.assert_array_equal(decoded, expected_pixels)


@pytest.mark.parametrize("datatype", ["FP32", "UINT8"])
def test_v2_json_body_decodes_to_the_exact_float32_pixels(
    builder, expected_pixels, datatype: str
) -> None:
    payload = builder.v2_json("mnist_mlp", INDICES, datatype)

    request = decode_infer_request(
        payload.body, None, input_name="input", output_names=["logits"], max_images=64
    )

    assert payload.path == "/v2/models/mnist_mlp/infer"
    np.testing.assert_array_equal(request.images, expected_pixels)


def test_v2_binary_body_decodes_to_the_exact_float32_pixels(builder, expected_pixels) -> None:
    payload = builder.v2_binary("mnist_cnn", INDICES)

    request = decode_infer_request(
        payload.body,
        payload.headers["Inference-Header-Content-Length"],
        input_name="input",
        output_names=["logits"],
        max_images=64,
    )

    assert payload.path == "/v2/models/mnist_cnn/infer"
    assert payload.headers["Content-Type"] == OCTET_TYPE
    assert len(payload.body) > len(INDICES) * 784  # a JSON header, then one byte per pixel
    np.testing.assert_array_equal(request.images, expected_pixels)
    assert [(output.name, output.is_binary) for output in request.outputs] == [("logits", True)]


def test_png_body_holds_the_image_unchanged(builder) -> None:
    payload = builder.v1_png("mnist_mlp", 7)

    picture = Image.open(io.BytesIO(payload.body))

    assert (payload.content_type, picture.format, picture.mode) == (PNG_TYPE, "PNG", "L")
    np.testing.assert_array_equal(np.asarray(picture), load_fixture().images[7])
