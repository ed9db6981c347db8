"""What the v1 codec tests share: random images and the JSON body that carries them."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson


def random_images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 28, 28)).astype(np.float32)


def json_body(images: Any) -> bytes:
    return orjson.dumps({"images": images})
