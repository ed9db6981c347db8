"""Pictures of digits become MNIST-style 28x28 inputs the real models recognise."""

from __future__ import annotations

import struct
import tracemalloc
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageOps

from serving.codecs import images
from serving.codecs.images import decode_image
from serving.errors import InvalidInput
from tests.serving.images.helpers import (
    DIGIT_STROKES,
    MAX_PIXELS,
    assert_mnist_like,
    centre_of_mass,
    draw_digit,
    encoded,
    ink_box,
)
from tests.support import PUBLISHED_MODELS, ExampleTally
from training.data import Mnist

SQUARE_BOX = (0.2, 0.15, 0.8, 0.85)  # a digit's box on a square picture, inside any frame


def framed(image: Image.Image, width: int, colour: tuple[int, ...]) -> Image.Image:
    """``image`` with its outer ``width`` pixels painted ``colour``: a frame, a scan's margin."""
    inner = image.crop((width, width, image.width - width, image.height - width))
    return ImageOps.expand(inner, width, fill=colour)


def in_transparent_margin(card: Image.Image, margin: int) -> Image.Image:
    """An opaque ``card`` inside a fully transparent margin: a screenshot, a sticker."""
    sheet = Image.new("RGBA", (card.width + 2 * margin, card.height + 2 * margin), (0, 0, 0, 0))
    sheet.paste(card.convert("RGBA"), (margin, margin))
    return sheet


PICTURES: dict[str, Callable[[int], bytes]] = {
    "dark blue on light yellow 300x200 png": lambda digit: encoded(draw_digit(digit)),
    "white on black 120x160 png": lambda digit: encoded(
        draw_digit(digit, (120, 160), (0.2, 0.2, 0.7, 0.8), (255, 255, 255), (0, 0, 0))
    ),
    "small 40x40 grayscale png": lambda digit: encoded(
        draw_digit(digit, (40, 40), (0.25, 0.1, 0.75, 0.9), (0,), (255,), "L", stroke_width=3)
    ),
    "black strokes on a transparent canvas": lambda digit: encoded(
        draw_digit(digit, (280, 280), (0.2, 0.1, 0.8, 0.9), (0, 0, 0, 255), (0, 0, 0, 0), "RGBA")
    ),
    "white strokes on a transparent canvas": lambda digit: encoded(
        draw_digit(
            digit,
            (280, 280),
            (0.3, 0.1, 0.7, 0.9),
            (255, 255, 255, 255),
            (255, 255, 255, 0),
            "RGBA",
        )
    ),
    "red on white jpeg off-centre": lambda digit: encoded(
        draw_digit(digit, (400, 300), (0.05, 0.05, 0.35, 0.6), (200, 0, 0), (255, 255, 255)),
        "JPEG",
        quality=80,
    ),
    "thin 2 px pen on a 1000x1000 canvas": lambda digit: encoded(
        draw_digit(digit, (1000, 1000), (0.2, 0.1, 0.8, 0.9), (0,), (255,), "L", stroke_width=2)
    ),
    "black on white inside a 4 px black frame": lambda digit: encoded(
        framed(draw_digit(digit, (200, 200), SQUARE_BOX, (0, 0, 0), (255,) * 3), 4, (0, 0, 0))
    ),
    "white on black inside a white margin": lambda digit: encoded(
        framed(draw_digit(digit, (200, 200), SQUARE_BOX, (255,) * 3, (0,) * 3), 12, (255,) * 3)
    ),
    "white card with a black digit in a transparent margin": lambda digit: encoded(
        in_transparent_margin(draw_digit(digit, (240, 240), SQUARE_BOX, (0, 0, 0), (255,) * 3), 20)
    ),
    "the same card flattened onto black": lambda digit: encoded(
        in_transparent_margin(
            draw_digit(digit, (240, 240), SQUARE_BOX, (0, 0, 0), (255,) * 3), 20
        ).convert("RGB")
    ),
    "palette gif": lambda digit: encoded(draw_digit(digit, (90, 90), (0.2, 0.1, 0.8, 0.9)), "GIF"),
    "bmp": lambda digit: encoded(draw_digit(digit, (64, 64), (0.25, 0.1, 0.75, 0.9)), "BMP"),
    "webp": lambda digit: encoded(draw_digit(digit, (64, 64), (0.25, 0.1, 0.75, 0.9)), "WEBP"),
}


@pytest.mark.parametrize("picture", PICTURES)
@pytest.mark.parametrize("digit", [0, 1, 4, 7])
def test_pictures_are_normalised_the_way_mnist_was(picture: str, digit: int) -> None:
    pixels = decode_image(PICTURES[picture](digit), MAX_PIXELS)

    assert_mnist_like(pixels)


def test_16_bit_grayscale_png_is_read() -> None:
    drawing = np.asarray(draw_digit(7, (60, 60), (0.2, 0.1, 0.8, 0.9), (0,), (255,), "L"))
    deep = Image.fromarray((drawing.astype(np.uint16) * 257).astype(np.uint16))

    assert_mnist_like(decode_image(encoded(deep), MAX_PIXELS))


def test_polarity_and_colour_do_not_change_the_result() -> None:
    dark_on_light = decode_image(
        encoded(draw_digit(4, ink=(0, 0, 0), background=(255,) * 3)), 10**6
    )
    light_on_dark = decode_image(
        encoded(draw_digit(4, ink=(255,) * 3, background=(0, 0, 0))), 10**6
    )

    np.testing.assert_allclose(dark_on_light, light_on_dark, atol=1e-6)


def test_transparent_canvas_equals_the_same_strokes_on_white() -> None:
    args = ((280, 280), (0.2, 0.1, 0.8, 0.9))
    on_canvas = draw_digit(7, *args, ink=(0, 0, 0, 255), background=(0, 0, 0, 0), mode="RGBA")
    on_white = draw_digit(7, *args, ink=(0, 0, 0), background=(255, 255, 255))

    np.testing.assert_allclose(
        decode_image(encoded(on_canvas), MAX_PIXELS),
        decode_image(encoded(on_white), MAX_PIXELS),
        atol=1e-6,
    )


def test_exif_orientation_is_applied() -> None:
    upright = draw_digit(7, (120, 90), (0.3, 0.1, 0.7, 0.9))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the stored pixels must be turned 90 degrees clockwise
    stored_sideways = upright.transpose(Image.Transpose.ROTATE_90)

    np.testing.assert_array_equal(
        decode_image(encoded(stored_sideways, exif=exif), MAX_PIXELS),
        decode_image(encoded(upright), MAX_PIXELS),
    )


def test_mnist_image_itself_is_almost_unchanged() -> None:
    original = np.zeros((28, 28), dtype=np.uint8)
    original[4:24, 12:17] = 255  # a 20 px tall bar centred on (13.5, 14)

    pixels = decode_image(encoded(Image.fromarray(original)), MAX_PIXELS)

    assert ink_box(pixels, threshold=0.5) == (20, 5)
    assert centre_of_mass(pixels) == pytest.approx((14.0, 14.0), abs=0.5)


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


# --- recognised by the published models (committed in models/, made by `make train`) ---


def latest_published(name: str) -> Path:
    versions = sorted(
        (path for path in (PUBLISHED_MODELS / name).glob("*") if path.name.isdigit()),
        key=lambda path: int(path.name),
    )
    if not versions or not (versions[-1] / "model.onnx").exists():
        pytest.fail(f"no published {name} model in {PUBLISHED_MODELS} (run `make train`)")
    return versions[-1] / "model.onnx"


@pytest.fixture(scope="module", params=["mnist_cnn", "mnist_mlp"])
def classify(request: pytest.FixtureRequest) -> Callable[[np.ndarray], np.ndarray]:
    """The labels a published model gives, run with ONNX Runtime directly."""
    import onnxruntime

    session = onnxruntime.InferenceSession(
        latest_published(request.param), providers=["CPUExecutionProvider"]
    )

    def labels_of(images: np.ndarray) -> np.ndarray:
        batch = images.reshape(-1, 1, 28, 28).astype(np.float32)
        return session.run(["logits"], {"input": batch})[0].argmax(axis=1)

    return labels_of


@pytest.mark.parametrize("picture", PICTURES)
def test_drawn_digits_are_recognised_by_the_published_model(
    picture: str, classify: Callable[[np.ndarray], np.ndarray]
) -> None:
    digits = sorted(set(DIGIT_STROKES) | {0})
    images = np.stack([decode_image(PICTURES[picture](digit), MAX_PIXELS) for digit in digits])

    assert classify(images).tolist() == digits


def test_official_test_images_as_pngs_are_still_recognised(
    classify: Callable[[np.ndarray], np.ndarray], mnist: Mnist
) -> None:
    originals, labels = mnist.test_images[:300], mnist.test_labels[:300]
    decoded = np.stack(
        [decode_image(encoded(Image.fromarray(image)), MAX_PIXELS) for image in originals]
    )

    accuracy = float((classify(decoded) == labels).mean())
    original_accuracy = float((classify(originals / 255.0) == labels).mean())
    assert accuracy >= 0.97
    assert accuracy >= original_accuracy - 0.01


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
