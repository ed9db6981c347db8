"""Octet-stream bodies: 784 bytes an image, scaled to [0, 1]; any other length is a 400."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.codecs.v1 import decode_octet_images, encode_octet_images
from serving.errors import InvalidInput
from tests.support import ExampleTally


def exact_bytes(length: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=length, max_size=length)


def test_octet_pixels_are_scaled_to_0_1() -> None:
    pixels = np.arange(784 * 2, dtype=np.uint32).astype(np.uint8).reshape(2, 784)

    decoded = decode_octet_images(pixels.tobytes(), max_images=8)

    assert decoded.shape == (2, 1, 28, 28)
    assert decoded.dtype == np.float32
    np.testing.assert_allclose(decoded.reshape(2, 784), pixels / 255.0, rtol=1e-6)
    assert decoded.max() == 1.0


@pytest.mark.parametrize("length", [0, 1, 783, 785, 784 * 2 + 1])
def test_octet_length_not_a_positive_multiple_of_784_is_refused(length: int) -> None:
    with pytest.raises(InvalidInput, match=rf"positive multiple of 784 bytes .*got {length} bytes"):
        decode_octet_images(b"\x00" * length, max_images=8)


def test_octet_too_many_images_names_the_limit() -> None:
    with pytest.raises(InvalidInput, match="3 images exceed the limit of 2"):
        decode_octet_images(b"\x00" * 784 * 3, max_images=2)


def test_any_bytes_decode_as_octet_or_are_invalid_input() -> None:
    tally = ExampleTally()

    @settings(deadline=None)  # wall-clock limits are flaky on a shared machine
    # Any length, or as often a multiple of 784 (0 to 5 images).
    @given(
        st.binary(max_size=784 * 5) | st.integers(0, 5).map(lambda n: 784 * n).flatmap(exact_bytes)
    )
    def check(body: bytes) -> None:
        decoded = tally.decoded(decode_octet_images, body, max_images=4)
        if decoded is None:
            return
        assert decoded.shape == (len(body) // 784, 1, 28, 28)
        assert len(decoded) in range(1, 5)
        np.testing.assert_array_equal(
            decoded.reshape(-1), np.frombuffer(body, np.uint8) / np.float32(255)
        )

    check()
    tally.assert_both_at_least(0.1)


@settings(deadline=None)  # wall-clock limits are flaky on a shared machine
@given(st.integers(1, 4).map(lambda count: 784 * count).flatmap(exact_bytes))
def test_octet_round_trips(body: bytes) -> None:
    assert encode_octet_images(decode_octet_images(body, max_images=4)) == body
