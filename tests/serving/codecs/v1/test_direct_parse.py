"""The direct parse of the usual body (flat lists of plain numbers): it reads the same
numbers as the general decoder, and anything else leaves it for the general decoder."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from serving.codecs.v1 import _occurs_exactly, _plain_flat_images
from tests.serving.codecs.v1.helpers import json_body, random_images


def general_decode(body: bytes) -> np.ndarray:
    """What the general decoder (orjson, then numpy) makes of the images."""
    return np.array(orjson.loads(body)["images"], dtype=np.float64)


def test_the_usual_body_takes_the_direct_parse_to_the_same_numbers() -> None:
    images = random_images(3).reshape(3, 784)
    body = json_body(images.tolist())

    parsed = _plain_flat_images(body)

    assert parsed is not None
    np.testing.assert_array_equal(parsed, general_decode(body))


ONE_IMAGE = [0.25] * 784
# Raw JSON put in place of one pixel.
SPOILERS = [
    b"true",
    b"false",
    b"null",
    b'"0.5"',
    b'{"x": 1}',
    b"[0.5]",
    b"[]",
    b"[[0.5]]",
    b"18446744073709551616",
    b"1e400",
    b"-0",
    b"-1",
    b"7",
    b"1e300",
]


@pytest.mark.parametrize("spoiler", SPOILERS, ids=lambda token: token.decode())
@pytest.mark.parametrize("position", [0, 391, 783])
def test_a_spoiled_image_leaves_the_direct_parse_or_parses_the_same(
    spoiler: bytes, position: int
) -> None:
    pixels = [b"0.25"] * 784
    pixels[position] = spoiler
    body = b'{"images": [[' + b",".join([b"0.25"] * 784) + b"], [" + b",".join(pixels) + b"]]}"

    parsed = _plain_flat_images(body)

    if parsed is not None:  # plain numbers only: out of range ones are validate_images's
        assert isinstance(orjson.loads(spoiler), (int, float))
        np.testing.assert_array_equal(parsed, general_decode(body))


@pytest.mark.parametrize(
    "body",
    [
        b'{"images": [[0.25]]}',
        json_body([[*ONE_IMAGE[:783], [0.25]]]),  # 784 elements, 784 numbers, one nested
        json_body([ONE_IMAGE[:392], ONE_IMAGE[:392] + ONE_IMAGE]),  # ragged, 1960 numbers
        json_body([ONE_IMAGE, 0.25]),
        json_body([np.full((28, 28), 0.25).tolist()]),  # a layout the general decoder takes
        orjson.dumps({"images": [ONE_IMAGE], "note": "x"}),
        b"\xef\xbb\xbf" + json_body([ONE_IMAGE]),
        json_body([ONE_IMAGE]) + b" x",
        b'["images"]',
        b'{"images": []}',
        b'{"images": 3}',
    ],
    ids=lambda body: body[:24].decode("utf-8", "replace"),
)
def test_anything_but_the_usual_layout_leaves_the_direct_parse(body: bytes) -> None:
    assert _plain_flat_images(body) is None


@settings(max_examples=100, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 4), st.just(784)),
        elements=st.floats(0, 1, width=32),
    )
)
def test_any_usual_body_parses_directly_to_what_the_general_decoder_reads(
    images: np.ndarray,
) -> None:
    body = json_body(images.tolist())

    parsed = _plain_flat_images(body)

    assert parsed is not None
    np.testing.assert_array_equal(parsed, general_decode(body))


@given(st.lists(st.sampled_from([b'"', b"[", b"0"]), max_size=12).map(b"".join), st.integers(0, 8))
def test_occurs_exactly_agrees_with_counting(body: bytes, times: int) -> None:
    for byte in (b'"', b"["):
        assert _occurs_exactly(body, byte, times) == (body.count(byte) == times)
