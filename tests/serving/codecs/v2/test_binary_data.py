"""The binary data extension: the JSON header's length and each binary_data_size must
match the bytes sent, and any bytes as pixels give images or a 400."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.codecs import v2, v2_client
from serving.errors import InvalidInput
from tests.serving.codecs.v2.helpers import an_input, decode


def test_uint8_binary_costs_one_byte_per_pixel() -> None:
    pixels = np.zeros((8, 784), dtype=np.uint8)

    body, header_length = v2_client.encode_infer_request(pixels)

    assert header_length is not None
    assert len(body) - header_length == 8 * 784


def header_then(header: dict[str, Any], raw: bytes) -> tuple[bytes, int]:
    encoded = orjson.dumps(header)
    return encoded + raw, len(encoded)


def binary_input(size: int, **fields: Any) -> dict[str, Any]:
    return {
        "name": "input",
        "shape": [1, 784],
        "datatype": "FP32",
        "parameters": {"binary_data_size": size},
    } | fields


GOOD_RAW = np.full(784, 0.5, dtype="<f4").tobytes()


@pytest.mark.parametrize(
    ("header_length", "expected"),
    [
        ("abc", "as decimal digits"),
        ("-5", "the length of the JSON header"),
        ("0", "the length of the JSON header"),
        ("99999999", "the length of the JSON header"),
        ("1e3", "as decimal digits"),
        ("", "as decimal digits"),
        # Python's int() reads these as numbers; HTTP's lengths are digits only.
        ("+20", "as decimal digits"),
        ("2_0", "as decimal digits"),
    ],
)
def test_lying_header_length_is_refused(header_length: str, expected: str) -> None:
    body, _ = header_then({"inputs": [binary_input(len(GOOD_RAW))]}, GOOD_RAW)

    with pytest.raises(InvalidInput, match=expected):
        decode(body, header_length)


def test_header_length_cutting_the_json_short_is_refused() -> None:
    body, header_length = header_then({"inputs": [binary_input(len(GOOD_RAW))]}, GOOD_RAW)

    with pytest.raises(InvalidInput, match="not valid JSON"):
        decode(body, header_length - 3)


@pytest.mark.parametrize("declared", [len(GOOD_RAW) - 4, len(GOOD_RAW) + 4, 0])
def test_binary_data_size_must_match_the_bytes_sent(declared: int) -> None:
    body, header_length = header_then({"inputs": [binary_input(declared)]}, GOOD_RAW)

    with pytest.raises(InvalidInput, match="binary_data_size"):
        decode(body, header_length)


@pytest.mark.parametrize("declared", [-1, "784", 3.0, True, None])
def test_binary_data_size_must_be_a_non_negative_integer(declared: Any) -> None:
    body, header_length = header_then(
        {"inputs": [binary_input(0, parameters={"binary_data_size": declared})]}, GOOD_RAW
    )

    with pytest.raises(InvalidInput, match="binary_data_size"):
        decode(body, header_length)


def test_binary_size_must_fit_the_datatype() -> None:
    raw = np.full(784, 128, dtype=np.uint8).tobytes()  # UINT8-sized but declared FP32
    body, header_length = header_then({"inputs": [binary_input(len(raw))]}, raw)

    with pytest.raises(InvalidInput, match="needs 3136 bytes"):
        decode(body, header_length)


@pytest.mark.parametrize("shape", [[2**62, 0], [0, 2**62], [0, 1, 2**40, 2**40]])
@pytest.mark.parametrize("is_binary", [False, True])
def test_shape_of_no_elements_but_a_huge_dimension_is_invalid_input(
    shape: list[int], is_binary: bool
) -> None:
    # Zero elements, so the data's count (0) and the binary size (0 bytes) match it.
    tensor = binary_input(0, datatype="UINT8") if is_binary else an_input(data=[])
    body, header_length = header_then({"inputs": [tensor | {"shape": shape}]}, b"")

    with pytest.raises(InvalidInput, match="is not \\[N, 1, 28, 28\\]"):
        decode(body, header_length if is_binary else None)


def test_binary_data_without_the_header_length_is_refused() -> None:
    body, _ = header_then({"inputs": [binary_input(len(GOOD_RAW))]}, GOOD_RAW)

    with pytest.raises(InvalidInput, match=v2.HEADER_LENGTH):
        decode(body[: body.index(GOOD_RAW)])


def test_binary_body_sent_without_the_header_length_is_refused_naming_it() -> None:
    body, _ = header_then({"inputs": [binary_input(len(GOOD_RAW))]}, GOOD_RAW)

    with pytest.raises(InvalidInput, match=f"needs the {v2.HEADER_LENGTH} header"):
        decode(body)  # as curl --data-binary sends it, the header forgotten


def test_bytes_after_a_json_only_request_are_refused() -> None:
    body, header_length = header_then({"inputs": [an_input()]}, b"\x00" * 8)

    with pytest.raises(InvalidInput, match="8 bytes follow"):
        decode(body, header_length)


@settings(max_examples=200, deadline=None)
@given(
    datatype=st.sampled_from(["FP32", "FP64", "FP16", "UINT8"]),
    count=st.integers(1, 2),
    data=st.data(),
)
def test_any_binary_pixels_give_images_or_invalid_input(
    datatype: str, count: int, data: st.DataObject
) -> None:
    size = count * 784 * v2.DTYPES[datatype].itemsize
    raw = data.draw(st.binary(min_size=size, max_size=size))
    body, header_length = header_then(
        {"inputs": [binary_input(size, datatype=datatype, shape=[count, 784])]}, raw
    )
    try:
        decoded = decode(body, header_length)
    except InvalidInput:
        return
    assert decoded.images.min() >= 0
    assert decoded.images.max() <= 1
