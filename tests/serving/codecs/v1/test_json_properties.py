"""Properties of the JSON decoder (hypothesis): any body gives images or a 400, a
pixel is decoded only if it is a number in [0, 1], and float32 pixels round-trip."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from serving.codecs.v1 import decode_json_images
from serving.errors import InvalidInput
from tests.serving.codecs.v1.helpers import json_body
from tests.support import ExampleTally

json_values = st.recursive(
    # orjson writes integers within 64 bits only.
    st.none()
    | st.booleans()
    | st.floats()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=3),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@settings(deadline=None)  # wall-clock limits are flaky on a shared machine
@given(st.binary(max_size=2000))
def test_any_bytes_decode_or_are_invalid_input(body: bytes) -> None:
    with contextlib.suppress(InvalidInput):
        decode_json_images(body, max_images=4)


def json_images(shape: tuple[int, ...]) -> st.SearchStrategy[list[Any]]:
    """Images of ``shape`` as nested lists of pixels in [0, 1] (floats, or 0 and 1)."""
    pixels = st.floats(0, 1) | st.integers(0, 1)
    return hnp.arrays(np.float64, shape, elements=pixels).map(np.ndarray.tolist)


# Lists of 0-5 images of one layout with pixels in [0, 1] (valid ones, when 1-4), or of
# any values, or images and any values mixed.
json_images_lists = (
    st.tuples(st.integers(0, 5), st.sampled_from([(784,), (28, 28)])).flatmap(
        lambda spec: st.lists(json_images(spec[1]), min_size=spec[0], max_size=spec[0])
    )
    | st.lists(json_values, max_size=4)
    | st.lists(json_images((784,)) | json_values, max_size=4)
)


def test_any_json_images_list_decodes_or_is_invalid_input() -> None:
    tally = ExampleTally()

    @settings(deadline=None)  # wall-clock limits are flaky on a shared machine
    @given(json_images_lists)
    def check(images: list[Any]) -> None:
        decoded = tally.decoded(decode_json_images, json_body(images), max_images=4)
        if decoded is None:
            return
        assert decoded.shape == (len(images), 1, 28, 28)
        assert len(decoded) in range(1, 5)
        assert decoded.dtype == np.float32
        assert {type(pixel) for pixel in np.array(images, dtype=object).flat} <= {int, float}
        np.testing.assert_array_equal(
            decoded.reshape(len(images), 784),
            np.array(images, dtype=np.float32).reshape(len(images), 784),
        )

    check()
    tally.assert_both_at_least(0.1)


@settings(deadline=None)  # wall-clock limits are flaky on a shared machine
@given(st.integers(0, 27), st.integers(0, 27), json_values, st.booleans())
def test_one_bad_pixel_anywhere_is_decoded_only_if_it_is_a_valid_number(
    row: int, column: int, value: Any, is_flat: bool
) -> None:
    image: list[Any] = [[0.5] * 28 for _ in range(28)]
    image[row][column] = value
    body = json_body([[pixel for pixels in image for pixel in pixels] if is_flat else image])
    is_valid_pixel = type(value) in (int, float) and 0 <= value <= 1

    if is_valid_pixel:
        assert decode_json_images(body, max_images=4)[0, 0, row, column] == np.float32(value)
    else:
        with pytest.raises(InvalidInput, match=r"^images\[0\]"):
            decode_json_images(body, max_images=4)


@settings(deadline=None)  # wall-clock limits are flaky on a shared machine
@given(
    hnp.arrays(
        np.float32, st.tuples(st.integers(1, 4), st.just(784)), elements=st.floats(0, 1, width=32)
    )
)
def test_json_round_trips_float32_pixels(images: np.ndarray) -> None:
    decoded = decode_json_images(json_body(images.tolist()), max_images=4)

    np.testing.assert_array_equal(decoded.reshape(-1, 784), images)
