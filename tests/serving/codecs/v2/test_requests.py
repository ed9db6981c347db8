"""Decoding V2 requests: images in every datatype round-trip, JSON or binary; the id and
timeout are read; every malformed JSON tensor is a 400 that names the problem."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.codecs import v2_client
from serving.errors import InvalidInput
from tests.serving.codecs.v2.helpers import an_input, decode, image_batches, json_body, unit_floats
from tests.support import never_parse


@settings(max_examples=30, deadline=None)
@given(images=image_batches(np.float32, unit_floats), is_binary=st.booleans())
def test_float32_images_round_trip_exactly(images: np.ndarray, is_binary: bool) -> None:
    body, header_length = v2_client.encode_infer_request(images, is_binary=is_binary)

    decoded = decode(body, header_length)

    assert decoded.images.dtype == np.float32
    assert decoded.images.shape == (len(images), 1, 28, 28)
    np.testing.assert_array_equal(decoded.images.reshape(images.shape), images)


@settings(max_examples=30, deadline=None)
@given(pixels=image_batches(np.uint8, st.integers(0, 255)), is_binary=st.booleans())
def test_uint8_pixels_are_divided_by_255(pixels: np.ndarray, is_binary: bool) -> None:
    body, header_length = v2_client.encode_infer_request(pixels, is_binary=is_binary)

    decoded = decode(body, header_length)

    expected = pixels.astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(decoded.images.reshape(pixels.shape), expected)


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_other_float_widths_are_cast_to_float32(dtype: Any) -> None:
    images = np.linspace(0, 1, 784, dtype=dtype).reshape(1, 784)
    body, header_length = v2_client.encode_infer_request(images)

    decoded = decode(body, header_length)

    np.testing.assert_array_equal(decoded.images.reshape(1, 784), images.astype(np.float32))


def test_nested_json_data_is_read_row_major() -> None:
    images = np.random.default_rng(0).random((2, 28, 28)).astype(np.float32)
    body = json_body(inputs=[an_input(shape=[2, 28, 28], data=images.tolist())])

    decoded = decode(body)

    np.testing.assert_array_equal(decoded.images.reshape(2, 28, 28), images)


def test_id_and_timeout_are_read() -> None:
    body = json_body(id="req-7", parameters={"timeout": 250_000}, inputs=[an_input()])

    decoded = decode(body)

    assert decoded.request_id == "req-7"
    assert decoded.timeout_s == pytest.approx(0.25)


@pytest.mark.parametrize("timeout", [None, 0])
def test_absent_or_zero_timeout_leaves_the_server_default(timeout: int | None) -> None:
    parameters = {} if timeout is None else {"timeout": timeout}

    assert decode(json_body(parameters=parameters, inputs=[an_input()])).timeout_s is None


BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("no inputs", {}, "'inputs'"),
    ("empty inputs", {"inputs": []}, "'inputs'"),
    ("two inputs", {"inputs": [an_input(), an_input()]}, "one input"),
    ("wrong input name", {"inputs": [an_input(name="x")]}, "model's input is 'input'"),
    ("input not object", {"inputs": [3]}, "inputs\\[0\\]"),
    ("unsupported datatype", {"inputs": [an_input(datatype="INT64")]}, "not supported"),
    ("BYTES datatype", {"inputs": [an_input(datatype="BYTES")]}, "not supported"),
    ("shape not list", {"inputs": [an_input(shape="1,784")]}, "shape"),
    ("negative dim", {"inputs": [an_input(shape=[-1, 784])]}, "shape"),
    ("bool dim", {"inputs": [an_input(shape=[True, 784])]}, "shape"),
    ("rank 1", {"inputs": [an_input(shape=[784])]}, "shape"),
    ("rank 5", {"inputs": [an_input(shape=[1, 1, 1, 28, 28])]}, "shape"),
    ("wrong image shape", {"inputs": [an_input(shape=[1, 392, 2])]}, "shape"),
    ("count mismatch", {"inputs": [an_input(shape=[2, 784])]}, "784 values"),
    ("no data", {"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32"}]}, "'data'"),
    ("data not list", {"inputs": [an_input(data="0.5")]}, "'data'"),
    ("ragged data", {"inputs": [an_input(data=[[0.5] * 784, [0.5]])]}, "regular array"),
    ("strings in data", {"inputs": [an_input(data=["a"] * 784)]}, "numbers only"),
    ("numeric strings", {"inputs": [an_input(data=["0.5"] * 784)]}, "numbers only"),
    ("one numeric string", {"inputs": [an_input(data=[0.5] * 783 + ["0"])]}, "numbers only"),
    ("booleans", {"inputs": [an_input(data=[True] * 784)]}, "numbers only"),
    ("one boolean", {"inputs": [an_input(data=[0.5] * 783 + [False])]}, "numbers only"),
    (
        "nested boolean",
        {"inputs": [an_input(shape=[1, 28, 28], data=[[0.5] * 28] * 27 + [[True] * 28])]},
        "numbers only",
    ),
    ("one null", {"inputs": [an_input(data=[0.5] * 783 + [None])]}, "numbers only"),
    ("uint8 strings", {"inputs": [an_input(datatype="UINT8", data=["7"] * 784)]}, "numbers only"),
    ("uint8 booleans", {"inputs": [an_input(datatype="UINT8", data=[True] * 784)]}, "UINT8"),
    ("objects in data", {"inputs": [an_input(data=[{}] * 784)]}, "numbers only"),
    ("integer past int64", {"inputs": [an_input(data=[2**64 - 1] * 784)]}, "\\[0, 1\\]"),
    ("pixel above 1", {"inputs": [an_input(data=[2.0] * 784)]}, "divide 0-255"),
    ("negative pixel", {"inputs": [an_input(data=[-0.5] * 784)]}, "\\[0, 1\\]"),
    ("null pixels", {"inputs": [an_input(data=[None] * 784)]}, "not strings, booleans or null"),
    ("uint8 above 255", {"inputs": [an_input(datatype="UINT8", data=[300] * 784)]}, "0, 255"),
    ("uint8 fraction", {"inputs": [an_input(datatype="UINT8", data=[3.5] * 784)]}, "0, 255"),
    ("uint8 negative", {"inputs": [an_input(datatype="UINT8", data=[-1] * 784)]}, "0, 255"),
    ("no images", {"inputs": [an_input(shape=[0, 784], data=[])]}, "at least one image"),
    ("too many images", {"inputs": [an_input(shape=[17, 784], data=[0.1] * 784 * 17)]}, "limit"),
    ("id not string", {"id": 7, "inputs": [an_input()]}, "'id'"),
    ("parameters not object", {"parameters": [1], "inputs": [an_input()]}, "'parameters'"),
    ("negative timeout", {"parameters": {"timeout": -1}, "inputs": [an_input()]}, "timeout"),
    ("string timeout", {"parameters": {"timeout": "5"}, "inputs": [an_input()]}, "timeout"),
    (
        "binary_data_output not bool",
        {"parameters": {"binary_data_output": "yes"}, "inputs": [an_input()]},
        "binary_data_output",
    ),
    ("unknown output", {"inputs": [an_input()], "outputs": [{"name": "probs"}]}, "'logits'"),
    ("outputs not list", {"inputs": [an_input()], "outputs": {"name": "logits"}}, "'outputs'"),
    (
        "output twice",
        {"inputs": [an_input()], "outputs": [{"name": "logits"}, {"name": "logits"}]},
        "'logits' is requested twice",
    ),
    (
        "classification",
        {
            "inputs": [an_input()],
            "outputs": [{"name": "logits", "parameters": {"classification": 3}}],
        },
        "not supported",
    ),
    (
        "shared memory",
        {"inputs": [an_input(parameters={"shared_memory_region": "r"})]},
        "shared-memory",
    ),
    (
        "sequence, as tritonclient sends one",
        {
            "parameters": {"sequence_id": 7, "sequence_start": True, "sequence_end": False},
            "inputs": [an_input()],
        },
        "sequence",
    ),
    (
        "sequence end only",
        {"parameters": {"sequence_end": True}, "inputs": [an_input()]},
        "sequence",
    ),
    (
        "data and binary",
        {"inputs": [an_input(parameters={"binary_data_size": 3136})]},
        "not both",
    ),
]


@pytest.mark.parametrize(
    ("request_json", "expected"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_malformed_request_is_invalid_input(request_json: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidInput, match=expected):
        decode(orjson.dumps(request_json))


def test_far_more_arrays_than_the_images_allowed_need_are_refused_unparsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 16 images need at most 16 x 30 arrays (1x28x28 each) in 'data': millions of empty
    # ones take orjson seconds, holding the GIL, so many times that must not reach it.
    body = json_body(inputs=[an_input(shape=[1, 784], data=[[]] * 3000)])

    never_parse(monkeypatch)
    with pytest.raises(InvalidInput, match=r"^request: 3003 JSON arrays, far more than 16 images"):
        decode(body)


def test_far_more_values_than_the_images_allowed_need_are_refused_unparsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 16 images need at most 256 + 16 x 784 commas in the header: 16 MiB of zeros took
    # orjson 1-2 s, holding the GIL, so twice that must not reach it.
    body = json_body(inputs=[an_input(shape=[26_000], data=[0] * 26_000)])

    never_parse(monkeypatch)
    expected = r"^request: 26\d{3} commas \(JSON values\), far more than 16 images"
    with pytest.raises(InvalidInput, match=expected):
        decode(body)


@pytest.mark.parametrize(
    ("datatype", "values"), [("FP32", [1e300] * 784), ("FP16", [70000.0] * 784)]
)
def test_json_value_overflowing_the_datatype_is_invalid_input(
    datatype: str, values: list[float]
) -> None:
    with pytest.raises(InvalidInput, match="finite"):
        decode(json_body(inputs=[an_input(datatype=datatype, data=values)]))


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'"inputs"', b"\xff\xfe"])
def test_body_that_is_not_a_json_object_is_invalid_input(body: bytes) -> None:
    with pytest.raises(InvalidInput):
        decode(body)
