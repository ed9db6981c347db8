"""Validate image batches once decoded: the one check every API path shares.

Whatever the wire format (v1 JSON, octet-stream, pictures, V2 tensors), the
batcher receives a float32 ``(N, 1, 28, 28)`` C-contiguous array of finite pixels
in ``[0, 1]``. Everything here is vectorised: the per-pixel work is numpy's.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from serving.errors import InvalidInput

IMAGE_SIDE = 28
IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE
# Native float dtypes -> (the unsigned integer of their width, the bits of 1.0).
_UNIT_BITS = {
    np.dtype(np.float64): (np.uint64, 0x3FF0000000000000),
    np.dtype(np.float32): (np.uint32, 0x3F800000),
}
# Trailing shapes accepted after the batch dimension.
IMAGE_SHAPES = ((IMAGE_PIXELS,), (IMAGE_SIDE, IMAGE_SIDE), (1, IMAGE_SIDE, IMAGE_SIDE))


class JsonCount(NamedTuple):
    """A token counted in a JSON body before it is parsed, and how many of it are allowed."""

    token: bytes
    name: str  # as the refusal calls them
    per_image: int  # the most one image takes
    beside_images: int  # the most a request's other fields may add
    # Up to this many times what the allowed images need is left to the parse, whose
    # refusal says more (how many images, which one is at fault); beyond, it is refused.
    tolerance: int

    def needed(self, max_images: int) -> int:
        return self.beside_images + self.per_image * max_images


JSON_COUNTS = (
    # An image's arrays: itself, its channel and its rows (1x28x28); beside them, the
    # images' list, V2's inputs and shape.
    JsonCount(b"[", "JSON arrays", 2 + IMAGE_SIDE, 8, tolerance=4),
    # An image's commas: 783 between its numbers and one after it; beside them, V2's
    # shape, outputs and parameters. Commas bound the values a parse makes, and twice what
    # the allowed images need costs about what the largest request does (0.2-0.4 s).
    JsonCount(b",", "commas (JSON values)", IMAGE_PIXELS, 256, tolerance=2),
)


def check_image_count(count: int, max_images: int, field: str = "images") -> None:
    """Refuse empty batches and batches above the per-request limit."""
    if count == 0:
        raise InvalidInput(f"{field}: expected at least one image, got none")
    if count > max_images:
        raise InvalidInput(
            f"{field}: {count} images exceed the limit of {max_images} images per request"
        )


def check_json_counts(body: bytes, end: int, max_images: int, field: str) -> None:
    """Refuse, before it is parsed, JSON with far more arrays or values than
    ``max_images`` images need (``body[:end]``).

    orjson holds the GIL while it makes a Python object of every value: 16 MiB of zeros
    or of ``{}`` took it 1-2 s, and millions of empty arrays as long again in numpy, the
    whole server stalled meanwhile. Counting brackets and commas takes milliseconds.
    """
    for count in JSON_COUNTS:
        allowed = count.tolerance * count.needed(max_images)
        if end <= allowed:  # fewer bytes hold fewer tokens: the usual request pays nothing
            continue
        found = body.count(count.token, 0, end)
        if found > allowed:
            raise InvalidInput(
                f"{field}: {found} {count.name}, far more than {max_images} images "
                f"(the limit per request) can need ({count.needed(max_images)})"
            )


def validate_images(array: np.ndarray, max_images: int, field: str = "images") -> np.ndarray:
    """Return ``array`` as float32 ``(N, 1, 28, 28)``; raise InvalidInput naming the problem.

    Accepts ``(N, 784)``, ``(N, 28, 28)`` or ``(N, 1, 28, 28)`` of any real dtype;
    pixels must be finite and in ``[0, 1]`` (raw 0-255 pixels divided by 255).
    """
    if array.dtype.kind not in "fiu":
        raise InvalidInput(f"{field}: expected numbers, got an array of dtype {array.dtype}")
    if array.ndim >= 1 and array.shape[0] == 0:
        check_image_count(0, max_images, field)
    if array.ndim == 0 or array.shape[1:] not in IMAGE_SHAPES:
        raise InvalidInput(
            f"{field}: expected shape (N, 784), (N, 28, 28) or (N, 1, 28, 28), "
            f"got {tuple(array.shape)}"
        )
    check_image_count(array.shape[0], max_images, field)
    # Checked before the cast so that a huge float64 is reported, not overflowed to inf.
    # min/max propagate NaN, so one comparison covers NaN, inf and range.
    if not _is_in_unit_range(array):
        raise InvalidInput(_describe_bad_pixel(array, field))
    return np.ascontiguousarray(array, dtype=np.float32).reshape(
        array.shape[0], 1, IMAGE_SIDE, IMAGE_SIDE
    )


def _is_in_unit_range(array: np.ndarray) -> bool:
    """Every value finite and in [0, 1]; checked before a cast, so a huge float64 is
    reported as itself rather than overflowed to inf."""
    bits = _UNIT_BITS.get(array.dtype)
    if bits is not None and array.flags.c_contiguous:
        unsigned, one = bits
        # One reduction instead of two: non-negative floats order as their bit patterns
        # do, and negatives (-0.0 too), NaN and inf all read above 1.0's. Only -0.0 passes
        # the float comparison below after failing this one.
        if np.maximum.reduce(array.view(unsigned), axis=None) <= one:
            return True
    # The ufuncs' reduce, not ndarray.min/max: those add a Python frame each.
    minimum = np.minimum.reduce(array, axis=None)
    return bool(minimum >= 0 and np.maximum.reduce(array, axis=None) <= 1)


def _describe_bad_pixel(array: np.ndarray, field: str) -> str:
    """Name the first image and pixel that is not finite or not in [0, 1] (error path only)."""
    flat = array.reshape(len(array), IMAGE_PIXELS)
    not_finite = ~np.isfinite(flat)
    if not_finite.any():
        image, pixel = np.argwhere(not_finite)[0]
        return f"{field}[{image}]: pixel {pixel} is {flat[image, pixel]}; pixels must be finite"
    image, pixel = np.argwhere((flat < 0.0) | (flat > 1.0))[0]
    value = flat[image, pixel]
    # From 2 up it may be a raw 0-255 pixel; just above 1 it is a float's rounding.
    hint = " (divide 0-255 pixels by 255)" if 2.0 <= value <= 255.0 else ""
    # Its dtype's shortest exact form: six digits showed 1.0000001 as "1", in range.
    shown = str(value).removesuffix(".0")
    return f"{field}[{image}]: pixel {pixel} is {shown}; pixels must be in [0, 1]{hint}"
