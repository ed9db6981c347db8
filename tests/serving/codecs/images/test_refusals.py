"""Hostile pictures and limits: a blank, undecodable, truncated or unsupported picture, one
over the pixel limit or a decompression bomb, is InvalidInput naming the problem, and any
bytes at all decode or are InvalidInput, never a crash."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from serving.codecs.images import decode_image
from serving.errors import InvalidInput
from tests.serving.codecs.images.helpers import MAX_PIXELS, draw_digit, encoded
from tests.support import ExampleTally


@pytest.mark.parametrize(
    "picture",
    [
        Image.new("L", (50, 50), 255),
        Image.new("RGB", (50, 50), (10, 200, 30)),
        Image.new("RGBA", (50, 50), (0, 0, 0, 0)),
        # Faint marks under the contrast floor: paper texture, not a digit.
        draw_digit(1, (60, 60), (0.3, 0.1, 0.7, 0.9), (235,), (250,), "L"),
    ],
    ids=["white", "green", "transparent", "too-faint"],
)
def test_blank_pictures_have_no_ink(picture: Image.Image) -> None:
    with pytest.raises(InvalidInput, match="image has no ink"):
        decode_image(encoded(picture), MAX_PIXELS)


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
def test_picture_over_the_pixel_limit_is_refused_before_decoding(
    image_format: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = encoded(draw_digit(7, (2000, 1000)), image_format)
    loaded: list[Image.Image] = []
    load = Image.Image.load

    def spied_load(image: Image.Image) -> object:
        loaded.append(image)
        return load(image)

    # A spy on Pillow's decoding step, which every file format's load goes through.
    monkeypatch.setattr(Image.Image, "load", spied_load)

    with pytest.raises(InvalidInput, match=r"2000x1000 is 2000000 pixels; the limit is 1999999"):
        decode_image(data, max_pixels=1_999_999)
    assert loaded == []
    decode_image(data, max_pixels=2_000_000)  # the spy sees a decode once one is allowed
    assert loaded != []


def test_decompression_bomb_is_refused() -> None:
    # 20000 x 20000 zeros compress to a few hundred kB; decoding would take 400 MB.
    bomb = encoded(Image.new("1", (20000, 20000)), optimize=True)

    with pytest.raises(InvalidInput, match=r"^image: "):
        decode_image(bomb, max_pixels=25_000_000)


def png_claiming(width: int, height: int) -> bytes:
    """A few dozen bytes of PNG claiming width x height 1-bit pixels (its data is a stub)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    stub = zlib.compress(bytes(64))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stub) + chunk(b"IEND", b"")
    )


def test_picture_pillow_refuses_on_opening_names_the_servers_limit() -> None:
    # 100,000 x 100,000 is over twice Pillow's MAX_IMAGE_PIXELS: it refuses it as it opens
    # it, before the server's own check, in words naming Pillow's limit.
    bomb = png_claiming(100_000, 100_000)

    with pytest.raises(InvalidInput) as refusal:
        decode_image(bomb, max_pixels=25_000_000)

    assert refusal.value.message == (
        f"image: over {2 * Image.MAX_IMAGE_PIXELS} pixels; the limit is 25000000 pixels"
    )


@pytest.mark.parametrize(
    "data",
    [b"", b"not a picture", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"GIF89a"],
    ids=["empty", "text", "png-signature-only", "gif-header-only"],
)
def test_undecodable_bytes_are_invalid_input(data: bytes) -> None:
    with pytest.raises(InvalidInput, match=r"^image: "):
        decode_image(data, MAX_PIXELS)


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
def test_truncated_picture_is_invalid_input(image_format: str) -> None:
    data = encoded(draw_digit(7, (120, 120), (0.2, 0.1, 0.8, 0.9)).convert("RGB"), image_format)

    with pytest.raises(InvalidInput, match=r"^image: "):
        decode_image(data[: len(data) * 2 // 3], MAX_PIXELS)


def test_unsupported_format_is_named() -> None:
    data = encoded(draw_digit(7, (60, 60), (0.2, 0.1, 0.8, 0.9)), "TIFF")

    with pytest.raises(InvalidInput, match=r"not a picture in a supported format \(PNG, JPEG"):
        decode_image(data, MAX_PIXELS)


SEED_PICTURES = [
    encoded(draw_digit(7, (48, 48), (0.2, 0.1, 0.8, 0.9)).convert("RGB"), image_format)
    for image_format in ["PNG", "JPEG", "GIF", "BMP", "WEBP"]
]
# Real pictures of any grey or colour pixels (blank ones too), up to 64 px a side, in every
# format read.
noise_pictures = st.builds(
    lambda pixels, image_format: encoded(Image.fromarray(pixels), image_format),
    hnp.arrays(
        np.uint8,
        st.tuples(st.integers(1, 64), st.integers(1, 64)).flatmap(
            lambda size: st.just(size) | st.just((*size, 3))
        ),
    ),
    st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "WEBP"]),
)
# Any bytes, or a real picture of a digit or of noise, as it is or followed by any bytes.
any_picture_bytes = st.one_of(
    st.binary(max_size=3000),
    st.sampled_from(SEED_PICTURES) | noise_pictures,
    st.tuples(st.sampled_from(SEED_PICTURES) | noise_pictures, st.binary(max_size=64)).map(
        b"".join
    ),
)


def test_any_bytes_decode_or_are_invalid_input() -> None:
    tally = ExampleTally()

    @settings(deadline=None)  # wall-clock limits are flaky on a shared machine
    @given(any_picture_bytes)
    def check(data: bytes) -> None:
        pixels = tally.decoded(decode_image, data, MAX_PIXELS)
        if pixels is None:
            return
        assert pixels.shape == (28, 28)
        assert pixels.dtype == np.float32
        assert 0.0 <= pixels.min() <= pixels.max() <= 1.0  # NaN fails
        assert pixels.max() > 0.0  # a picture with no ink is refused

    check()
    tally.assert_both_at_least(0.1)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300, deadline=None)
@given(
    st.sampled_from(SEED_PICTURES),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    st.integers(0, 10**6),
)
def test_corrupted_pictures_decode_or_are_invalid_input(
    picture: bytes, corruptions: Sequence[tuple[int, int]], keep_bytes: int
) -> None:
    data = bytearray(picture[: max(keep_bytes, 1)])
    for position, value in corruptions:
        data[position % len(data)] = value
    try:
        pixels = decode_image(bytes(data), MAX_PIXELS)
    except InvalidInput:
        return
    assert pixels.shape == (28, 28)
    assert 0.0 <= pixels.min() <= pixels.max() <= 1.0
