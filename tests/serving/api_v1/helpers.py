"""What the v1 API tests share: the predict route, body headers, images, answer checks."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from serving.codecs.v1 import softmax
from tests.support import tiny_logits

PREDICT = "/v1/models/tiny/predict"
JSON = {"content-type": "application/json"}
OCTET = {"content-type": "application/octet-stream"}
PNG = {"content-type": "image/png"}
LATEST_SEED = 1  # tiny version 2 (the latest) was written with seed 1, version 1 with seed 0


def random_images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 28, 28)).astype(np.float32)


def png_of_digit(seed: int = 0) -> bytes:
    """A white-on-black stroke picture, its shape varying with ``seed``."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((60, 50), dtype=np.uint8)
    top, left = rng.integers(5, 20, size=2)
    pixels[top : top + 30, left : left + 6] = 255
    pixels[top : top + 6, left : left + rng.integers(10, 25)] = 200
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def assert_predictions_match(
    answer: dict[str, Any], images: np.ndarray, seed: int = LATEST_SEED
) -> None:
    expected = softmax(tiny_logits(images, seed=seed))
    predictions = answer["predictions"]
    assert [p["label"] for p in predictions] == expected.argmax(axis=1).tolist()
    served = np.array([p["probabilities"] for p in predictions])
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-6)
    confidences = [p["confidence"] for p in predictions]
    np.testing.assert_allclose(confidences, expected.max(axis=1), rtol=1e-4)


def assert_error(response: Any, status_code: int, message: str) -> None:
    assert response.status_code == status_code, response.text
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["error"]
