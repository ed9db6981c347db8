"""Pictures of digits become MNIST-style 28x28 inputs the real models recognise: whatever
the format, colours, polarity, transparency, frame or orientation, the digit is cropped,
scaled and centred the way MNIST's were, and the published models read it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from serving.codecs.images import decode_image
from tests.serving.codecs.images.helpers import (
    DIGIT_STROKES,
    MAX_PIXELS,
    assert_mnist_like,
    centre_of_mass,
    draw_digit,
    encoded,
    ink_box,
)
from tests.support import PUBLISHED_MODELS
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
