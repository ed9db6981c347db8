"""Large pictures are read in bands and pooled down: bounded memory and time, the same
result as read whole, the digit a small picture gives; pooling keeps each block's extreme."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from serving.codecs import images
from serving.codecs.images import decode_image
from tests.serving.codecs.images.helpers import MAX_PIXELS, assert_mnist_like, draw_digit, encoded

HUGE_SIDE = 5000  # 25 MP: the largest picture the default max_image_pixels lets in


@pytest.fixture(scope="module")
def huge_png() -> bytes:
    """A 5000x5000 RGBA photo-sized seven: 100 MB once decoded, ~0.5 MB as a PNG."""
    drawing = draw_digit(
        7, (HUGE_SIDE, HUGE_SIDE), (0.2, 0.1, 0.8, 0.9), (0, 0, 0, 255), (255,) * 4, "RGBA", 200
    )
    return encoded(drawing, compress_level=1)


def test_a_huge_picture_is_never_copied_whole_into_arrays(huge_png: bytes) -> None:
    tracemalloc.start()  # sees numpy's arrays, not the picture Pillow decodes into
    try:
        pixels = decode_image(huge_png, max_pixels=HUGE_SIDE**2)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert_mnist_like(pixels)
    assert peak_bytes < HUGE_SIDE**2 // 2  # half of one full-size grey copy


@pytest.mark.parametrize("size", [(HUGE_SIDE**2, 1), (1, HUGE_SIDE**2)], ids=["row", "column"])
def test_a_picture_one_pixel_thin_decodes_in_bounded_time_and_memory(
    size: tuple[int, int],
) -> None:
    # Within max_image_pixels, and pooled by 24,415 along its length: padding each band to
    # that on both sides once took 568 GiB for the row, and 6 GB a band for the column.
    width, height = size
    line = Image.new("1", size)
    left, top = width // 3, height // 3
    line.paste(255, (left, top, left + max(1, width // 10), top + max(1, height // 10)))
    picture = encoded(line, optimize=True)

    tracemalloc.start()
    try:
        pixels = decode_image(picture, max_pixels=HUGE_SIDE**2)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert pixels.shape == (28, 28)
    # Its border is the whole picture, kept and sorted for its median: ~200 MB, not the
    # gigabytes padding took.
    assert peak_bytes < 256 * 2**20


def test_a_huge_picture_gives_the_digit_a_small_one_does(huge_png: bytes) -> None:
    small = draw_digit(7, (500, 500), (0.2, 0.1, 0.8, 0.9), (0, 0, 0, 255), (255,) * 4, "RGBA", 20)

    np.testing.assert_allclose(
        decode_image(huge_png, max_pixels=HUGE_SIDE**2),
        decode_image(encoded(small), MAX_PIXELS),
        atol=0.1,
    )


BANDED_PICTURES: dict[str, Callable[[], Image.Image]] = {
    "translucent ink on white": lambda: draw_digit(
        4, (2300, 1700), (0.3, 0.1, 0.7, 0.9), (0, 0, 90, 160), (255,) * 4, "RGBA", 40
    ),
    "transparent canvas": lambda: draw_digit(
        7, (1700, 2300), (0.2, 0.1, 0.8, 0.9), (0, 0, 0, 255), (0,) * 4, "RGBA", 40
    ),
    "light on dark grey": lambda: draw_digit(
        2, (3100, 1100), (0.4, 0.1, 0.6, 0.9), (230,), (40,), "L", 30
    ),
}


@pytest.mark.parametrize("picture", BANDED_PICTURES)
def test_reading_a_picture_in_bands_does_not_change_the_result(
    picture: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = encoded(BANDED_PICTURES[picture]())
    monkeypatch.setattr(images, "BAND_PIXELS", 10**9)
    whole = decode_image(data, MAX_PIXELS)

    monkeypatch.setattr(images, "BAND_PIXELS", 5_000)  # bands of a few rows
    in_bands = decode_image(data, MAX_PIXELS)

    np.testing.assert_array_equal(in_bands, whole)


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40))),
    st.integers(1, 50),
    st.sampled_from([np.maximum, np.minimum]),
)
def test_pooling_keeps_each_blocks_extreme_whatever_the_shape_and_factor(
    pixels: np.ndarray, factor: int, reducer: np.ufunc
) -> None:
    # Blocks of factor x factor from the top left; those at the right and bottom edges
    # hold what is left, however little (a factor beyond a side included).
    expected = reducer.reduceat(pixels, np.arange(0, pixels.shape[0], factor), axis=0)
    expected = reducer.reduceat(expected, np.arange(0, pixels.shape[1], factor), axis=1)

    np.testing.assert_array_equal(images._pool(pixels, factor, reducer), expected)
