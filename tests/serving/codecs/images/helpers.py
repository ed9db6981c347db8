"""What the picture tests share: digits drawn like a person would, encoded, and the
checks that a decoded picture looks like an MNIST image."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

MAX_PIXELS = 4_000_000
Point = tuple[float, float]
# Each digit as polylines in a unit box (x right, y down), drawn like a person would.
DIGIT_STROKES: dict[int, list[list[Point]]] = {
    1: [[(0.35, 0.2), (0.55, 0.0), (0.55, 1.0)]],
    4: [[(0.65, 1.0), (0.65, 0.0), (0.05, 0.68), (0.95, 0.68)]],
    7: [[(0.05, 0.05), (0.95, 0.05), (0.4, 1.0)]],
    2: [
        [
            (0.1, 0.25),
            (0.3, 0.03),
            (0.7, 0.03),
            (0.9, 0.25),
            (0.85, 0.45),
            (0.1, 0.97),
            (0.95, 0.97),
        ]
    ],
    3: [
        [(0.1, 0.05), (0.85, 0.05), (0.45, 0.45), (0.8, 0.55), (0.9, 0.8), (0.7, 0.97), (0.1, 0.9)]
    ],
}


def draw_digit(
    digit: int,
    size: tuple[int, int] = (300, 200),
    box: tuple[float, float, float, float] = (0.35, 0.15, 0.6, 0.85),
    ink: tuple[int, ...] = (20, 30, 120),
    background: tuple[int, ...] = (250, 245, 180),
    mode: str = "RGB",
    stroke_width: int = 12,
) -> Image.Image:
    """``digit`` drawn with a pen of ``stroke_width`` px into ``box`` (fractions of the size)."""
    image = Image.new(mode, size, background)
    pen = ImageDraw.Draw(image)
    left, top = box[0] * size[0], box[1] * size[1]
    width, height = (box[2] - box[0]) * size[0], (box[3] - box[1]) * size[1]
    if digit == 0:
        pen.ellipse((left, top, left + width, top + height), outline=ink, width=stroke_width)
    for line in DIGIT_STROKES.get(digit, []):
        points = [(left + x * width, top + y * height) for x, y in line]
        pen.line(points, fill=ink, width=stroke_width, joint="curve")
    return image


def encoded(image: Image.Image, image_format: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def centre_of_mass(pixels: np.ndarray) -> tuple[float, float]:
    rows, columns = np.indices(pixels.shape)
    return (
        float((pixels * rows).sum() / pixels.sum()),
        float((pixels * columns).sum() / pixels.sum()),
    )


def ink_box(pixels: np.ndarray, threshold: float = 0.05) -> tuple[int, int]:
    """Height and width of the bounding box of pixels above ``threshold``."""
    rows = np.flatnonzero((pixels > threshold).any(axis=1))
    columns = np.flatnonzero((pixels > threshold).any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(columns[-1] - columns[0] + 1)


def assert_mnist_like(pixels: np.ndarray) -> None:
    assert pixels.shape == (28, 28)
    assert pixels.dtype == np.float32
    assert pixels.min() >= 0.0
    assert pixels.max() == pytest.approx(1.0)
    height, width = ink_box(pixels)
    assert max(height, width) in (20, 21)  # 20 px, plus anti-aliasing's faint fringe
    assert min(height, width) >= 3
    row, column = centre_of_mass(pixels)
    # Shifted by whole pixels, as MNIST was: within half a pixel of the centre.
    assert abs(row - 14.0) <= 0.501
    assert abs(column - 14.0) <= 0.501
