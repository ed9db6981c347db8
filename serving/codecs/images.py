"""Pictures of handwritten digits -> 28x28 MNIST-style pixels.

A photo, a scan or a canvas drawing becomes what the models were trained on, made
the way MNIST itself was made (LeCun et al.): the digit's ink is cropped to its
bounding box, scaled to fit a 20x20 box keeping its aspect ratio (anti-aliased),
and placed in a 28x28 field so that its centre of mass sits at the centre
(pixel (14, 14); the official test set's mean is (13.99, 14.00)). Ink is 1, the
background 0, whatever the picture's colours.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageOps, UnidentifiedImageError

from serving.errors import InvalidInput

# Formats with mature, fuzzed Pillow decoders; TIFF, EPS, PSD etc. are refused.
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
# Large pictures are max-pooled to this side first: enough resolution for any digit,
# bounded work and memory (max-pooling keeps thin strokes that averaging would fade).
WORKING_SIDE = 1024
# The decoded picture is converted and pooled a band of rows of about this many pixels
# at a time: a 25-MP RGBA picture's arrays then peak at ~6 MB, not ~150 MB (tracemalloc),
# in the same time as bands of 1-2 MP (~0.35 s on one core).
BAND_PIXELS = 1 << 18
# The cropped digit is max-pooled again to at most this side before stroke analysis.
DIGIT_SIDE = 160
DIGIT_BOX = 20  # MNIST: the digit fits a 20x20 box ...
CANVAS = 28  # ... in a 28x28 image,
CENTRE = 14.0  # with its centre of mass at pixel (14, 14).
MIN_CONTRAST = 32  # of 255: below it the picture is blank (or only JPEG noise)
# An opaque region filling this much of its bounding box, inside transparency, is a card
# (a screenshot, a sticker) whose own colours hold the digit, not a stroke.
CARD_FILL = 0.9
# How far in from the edges the background is looked for when the edges differ from it:
# a frame, a scanner's dark margin, the table around a sheet.
FRAME_DEPTH_OF_SIDE = 0.08
INK_FLOOR = 0.2  # of the contrast: fainter is background noise, zeroed before cropping
# MNIST strokes: median width 2.6 px in the 20 px box (2.1 at the 5th percentile),
# measured on the test set. Thinner strokes (a thin pen on a big canvas) would fade
# to nothing when scaled down, so they are dilated to the median first.
MIN_STROKE_OF_BOX = 0.09
TARGET_STROKE_OF_BOX = 0.13

# What Pillow raises on corrupt, truncated or hostile files (found by fuzzing too).
_DECODE_ERRORS = (
    OSError,  # includes UnidentifiedImageError and "image file is truncated"
    ValueError,
    SyntaxError,  # Pillow's plugins signal malformed headers with it
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombWarning,  # raised, not warned, when warnings are errors
)


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """A picture (PNG, JPEG, BMP, GIF, WebP) of one digit -> float32 (28, 28) in [0, 1]."""
    ink = _working_ink(open_image(data, max_pixels))  # the full-size picture is freed here
    contrast = int(ink.max())
    if contrast < MIN_CONTRAST:
        raise InvalidInput("image has no ink: it is blank or has too little contrast")
    digit = _crop_to_ink(ink, threshold=contrast * INK_FLOOR)
    digit = _pool(digit, _pool_factor(max(digit.shape), DIGIT_SIDE), np.maximum)
    strokes = digit.astype(np.float32) / np.float32(contrast)
    strokes[strokes < INK_FLOOR] = 0.0
    strokes = _thicken_thin_strokes(strokes)
    return _centre_by_mass(_fit_box(strokes, DIGIT_BOX))


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode the first frame, refusing oversized pictures before their pixels are decoded."""
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
        width, height = image.size
        if width * height > max_pixels:
            raise InvalidInput(
                f"image: {width}x{height} is {width * height} pixels; "
                f"the limit is {max_pixels} pixels"
            )
        if image.format == "JPEG":
            image.draft("L", (WORKING_SIDE, WORKING_SIDE))  # decode at 1/2-1/8 scale: faster
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # phone photos are stored rotated
    except UnidentifiedImageError:
        raise InvalidInput(
            "image: not a picture in a supported format (" + ", ".join(FORMATS) + ")"
        ) from None
    except Image.DecompressionBombError:
        # Pillow refuses a picture over twice its MAX_IMAGE_PIXELS as it opens it, before
        # the check above, in words naming its own limit rather than the server's.
        pillow_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise InvalidInput(
            f"image: over {pillow_limit} pixels; "
            f"the limit is {min(max_pixels, pillow_limit)} pixels"
        ) from None
    except _DECODE_ERRORS as error:
        raise InvalidInput(f"image: cannot be decoded ({error})") from None
    return image


def _working_ink(image: Image.Image) -> np.ndarray:
    """uint8 map of ink (255 = strongest), whatever the colours, max-pooled to at most
    WORKING_SIDE a side; background is 0.

    The picture is read a band of rows at a time. Ink falls as the grey rises (or rises
    with it, for light ink), so pooling the grey's minimum and maximum and taking the
    ink of those equals max-pooling the ink of every pixel.
    """
    factor = _pool_factor(max(image.size), WORKING_SIDE)
    gray = _PooledPlane(image.size, factor, (np.minimum, np.maximum))  # flattened onto white
    opacity = _PooledPlane(image.size, factor, (np.minimum, np.maximum))
    for band_gray, band_alpha in _bands(image, factor):
        gray.add(_flatten_onto_white(band_gray, band_alpha))
        if band_alpha is not None:
            opacity.add(band_alpha)
    darkest, lightest = gray.pooled()
    if opacity.is_read and np.median(opacity.border()) < 128:
        least_opaque, most_opaque = opacity.pooled()
        card = _opaque_card(least_opaque, darkest, lightest)
        if card is None:
            return most_opaque  # strokes on a transparent canvas: the opacity is the ink
        darkest, lightest = darkest[card], lightest[card]
        background = _ring_median(darkest, lightest, depth=0)
    else:
        background = int(np.median(gray.border()))
    darkest, lightest, background = _without_frame(darkest, lightest, background)
    # uint8 arithmetic with saturation at 0.
    if background - int(darkest.min()) >= int(lightest.max()) - background:  # dark ink
        return np.subtract(background, np.minimum(darkest, background), dtype=np.uint8)
    return np.subtract(np.maximum(lightest, background), background, dtype=np.uint8)


def _bands(image: Image.Image, factor: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """The picture's grey and opacity, a band of rows (whole pooling blocks) at a time."""
    width, height = image.size
    rows = factor * max(1, BAND_PIXELS // (width * factor))
    if rows >= height:
        yield _gray_and_alpha(image)  # one band: no cropped copy
        return
    for top in range(0, height, rows):
        yield _gray_and_alpha(image.crop((0, top, width, min(top + rows, height))))


class _PooledPlane:
    """One plane of a picture (grey or opacity), fed a band of rows at a time: pooled by
    ``factor`` with each reducer into arrays made once, and its outermost pixels kept."""

    def __init__(self, size: tuple[int, int], factor: int, reducers: tuple[np.ufunc, ...]) -> None:
        self.shape = (-(-size[1] // factor), -(-size[0] // factor))  # ceiling division
        self.factor = factor
        self.reducers = reducers
        self._pooled: list[np.ndarray] = []  # made on the first band
        self._pooled_rows = 0
        self._top = np.empty(0, dtype=np.uint8)  # the first band's first row
        self._bottom = np.empty(0, dtype=np.uint8)  # the last band's last row
        self._sides: list[np.ndarray] = []  # every band's first and last columns

    @property
    def is_read(self) -> bool:
        return bool(self._sides)

    def add(self, band: np.ndarray) -> None:
        if not self._sides:
            self._pooled = [np.empty(self.shape, dtype=band.dtype) for _ in self.reducers]
            self._top = band[0].copy()
        rows = slice(self._pooled_rows, self._pooled_rows + -(-len(band) // self.factor))
        for pooled, reducer in zip(self._pooled, self.reducers, strict=True):
            pooled[rows] = _pool(band, self.factor, reducer)
        self._pooled_rows = rows.stop
        self._bottom = band[-1].copy()
        self._sides.append(band[:, [0, -1]])

    def pooled(self) -> list[np.ndarray]:
        return self._pooled

    def border(self) -> np.ndarray:
        """Every outermost pixel once: the top and bottom rows, then the sides between."""
        sides = np.concatenate(self._sides)[1:-1]
        return np.concatenate([self._top, self._bottom, sides.ravel()])


def _flatten_onto_white(gray: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Grey as seen on white paper: the background is opaque, translucent ink is fainter."""
    if alpha is None:
        return gray
    return (255 - (255 - gray.astype(np.uint16)) * alpha // 255).astype(np.uint8)


def _opaque_card(
    least_opaque: np.ndarray, darkest: np.ndarray, lightest: np.ndarray
) -> tuple[slice, slice] | None:
    """Where the opaque card inside a transparent margin is, if the picture is one: its
    wholly opaque blocks fill their bounding box and differ in colour (strokes on a
    transparent canvas are one colour, however thick)."""
    is_opaque = least_opaque >= 128
    rows = np.flatnonzero(is_opaque.any(axis=1))
    columns = np.flatnonzero(is_opaque.any(axis=0))
    if rows.size == 0:
        return None
    box = (slice(rows[0], rows[-1] + 1), slice(columns[0], columns[-1] + 1))
    if is_opaque[box].mean() < CARD_FILL:
        return None
    inside = is_opaque[box]
    if int(lightest[box][inside].max()) - int(darkest[box][inside].min()) < MIN_CONTRAST:
        return None
    return box


def _without_frame(
    darkest: np.ndarray, lightest: np.ndarray, background: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """The pooled grey less the edge rows and columns unlike the background a little
    further in, and that background.

    The background is the colour of the picture's border, unless a frame, a scanner's
    margin or the table around a sheet runs along the edges: then it is the colour of the
    ring ``FRAME_DEPTH_OF_SIDE`` in, and the lines outside it that differ are cut off.
    """
    depth = round(FRAME_DEPTH_OF_SIDE * min(darkest.shape))
    if depth < 2:
        return darkest, lightest, background
    inner = _ring_median(darkest, lightest, depth)
    if abs(background - inner) < MIN_CONTRAST:
        return darkest, lightest, background

    def is_frame(line: tuple[int | slice, int | slice]) -> bool:
        # A block on the frame's inner edge holds frame and background: either differs.
        return any(abs(int(np.median(plane[line])) - inner) >= MIN_CONTRAST
                   for plane in (darkest, lightest))  # fmt: skip

    height, width = darkest.shape
    top, bottom, left, right = 0, height, 0, width
    while top < depth and is_frame((top, slice(left, right))):
        top += 1
    while height - bottom < depth and is_frame((bottom - 1, slice(left, right))):
        bottom -= 1
    while left < depth and is_frame((slice(top, bottom), left)):
        left += 1
    while width - right < depth and is_frame((slice(top, bottom), right - 1)):
        right -= 1
    box = (slice(top, bottom), slice(left, right))
    return darkest[box], lightest[box], inner


def _ring_median(darkest: np.ndarray, lightest: np.ndarray, depth: int) -> int:
    """The median grey of the ring ``depth`` blocks in from the edges."""
    rows = slice(depth, darkest.shape[0] - depth)
    columns = slice(depth, darkest.shape[1] - depth)
    ring = [_border(plane[rows, columns]) for plane in (darkest, lightest)]
    return int(np.median(np.concatenate(ring)))


def _border(pixels: np.ndarray) -> np.ndarray:
    return np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])


def _gray_and_alpha(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    if image.mode.startswith("I"):  # 16-bit grayscale PNG: scale to 8 bits
        return (np.asarray(image, dtype=np.uint32) // 257).clip(0, 255).astype(np.uint8), None
    if "A" in image.getbands() or "transparency" in image.info:
        gray_alpha = np.asarray(image.convert("RGBA").convert("LA"))
        return gray_alpha[..., 0], gray_alpha[..., 1]
    return np.asarray(image.convert("L")), None


def _pool_factor(side: int, target_side: int) -> int:
    return -(-side // target_side)  # ceiling division


def _pool(pixels: np.ndarray, factor: int, reducer: np.ufunc) -> np.ndarray:
    """Shrink by an integer factor keeping each block's maximum (``np.maximum``: thin
    strokes survive) or minimum (``np.minimum``); blocks at the edges may be smaller.

    Columns, then rows: a block's reduction is that of its rows' (separable). Nothing is
    padded: a picture one pixel thin is pooled by up to ~24,000 along its length, and
    padding its width to that took gigabytes.
    """
    if factor <= 1:
        return pixels
    # Columns: a running reduction over the strided views (at most one per column), 3-8x
    # faster than reducing a reshaped (..., factor) axis for the usual small factors.
    columns = pixels[:, ::factor].copy()
    for offset in range(1, min(factor, pixels.shape[1])):
        view = pixels[:, offset::factor]
        reducer(columns[:, : view.shape[1]], view, out=columns[:, : view.shape[1]])
    # Rows: the whole blocks reshaped and reduced in one call, then the rows left over.
    whole = len(columns) - len(columns) % factor
    blocks = columns[:whole].reshape(whole // factor, factor, columns.shape[1])
    pooled = [reducer.reduce(blocks, axis=1)]
    if whole < len(columns):
        pooled.append(reducer.reduce(columns[whole:], axis=0, keepdims=True))
    return pooled[0] if len(pooled) == 1 else np.concatenate(pooled)


def _crop_to_ink(ink: np.ndarray, threshold: float) -> np.ndarray:
    is_ink = ink > threshold
    rows = np.flatnonzero(is_ink.any(axis=1))
    columns = np.flatnonzero(is_ink.any(axis=0))
    return ink[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]


def _thicken_thin_strokes(strokes: np.ndarray) -> np.ndarray:
    """Dilate strokes much thinner than MNIST's (relative to the digit's size)."""
    side = max(strokes.shape)
    width = _stroke_width(strokes > 0.5)
    if width >= MIN_STROKE_OF_BOX * side:
        return strokes
    size = 2 * round((TARGET_STROKE_OF_BOX * side - width) / 2) + 1
    return _dilate(strokes, size)


def _stroke_width(is_ink: np.ndarray) -> float:
    """Mean stroke width in pixels: area / half the boundary (a stroke has two sides)."""
    padded = np.pad(is_ink, 1)
    interior = (
        padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2]
    ) & padded[1:-1, 2:]
    boundary = int((is_ink & ~interior).sum())
    return 2.0 * int(is_ink.sum()) / max(boundary, 1)


def _dilate(pixels: np.ndarray, size: int) -> np.ndarray:
    """Grey dilation by a size x size square: separable, so two sliding maxima."""
    radius = size // 2
    padded = np.pad(pixels, radius)
    rows = sliding_window_view(padded, size, axis=0).max(axis=-1)
    return sliding_window_view(rows, size, axis=1).max(axis=-1)


def _fit_box(strokes: np.ndarray, box: int) -> np.ndarray:
    """Scale so the longer side is ``box`` pixels, keeping the aspect ratio; max = 1."""
    height, width = strokes.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(strokes).resize(size, Image.Resampling.LANCZOS)
    fitted = np.clip(np.asarray(resized), 0.0, 1.0)  # Lanczos rings slightly outside [0, 1]
    return fitted / fitted.max()


def _centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Paste into a 28x28 field so that the centre of mass lands on pixel (14, 14)."""
    height, width = digit.shape
    mass = digit.sum()
    centre_row = float(digit.sum(axis=1) @ np.arange(height)) / mass
    centre_column = float(digit.sum(axis=0) @ np.arange(width)) / mass
    top, left = round(CENTRE - centre_row), round(CENTRE - centre_column)
    canvas = np.zeros((CANVAS, CANVAS), dtype=np.float32)
    # Clip the paste to the canvas: a lopsided digit may hang over an edge.
    rows = slice(max(top, 0), min(top + height, CANVAS))
    columns = slice(max(left, 0), min(left + width, CANVAS))
    canvas[rows, columns] = digit[
        rows.start - top : rows.stop - top, columns.start - left : columns.stop - left
    ]
    return canvas
