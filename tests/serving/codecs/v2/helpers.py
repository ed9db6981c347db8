"""What the V2 codec tests share: the server's decode call, JSON request bodies, and
strategies for image batches in every datatype."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst

from serving.codecs import v2

MAX_IMAGES = 16
IMAGE_SHAPES = ((1, 28, 28), (28, 28), (784,))


def decode(body: bytes, header_length: int | str | None = None) -> v2.InferRequest:
    return v2.decode_infer_request(
        body,
        None if header_length is None else str(header_length),
        input_name="input",
        output_names=["logits"],
        max_images=MAX_IMAGES,
    )


def json_body(**request: Any) -> bytes:
    return orjson.dumps(request)


def an_input(**fields: Any) -> dict[str, Any]:
    return {"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.5] * 784} | fields


def image_batches(dtype: Any, elements: st.SearchStrategy[Any]) -> st.SearchStrategy[np.ndarray]:
    return st.tuples(st.integers(1, 3), st.sampled_from(IMAGE_SHAPES)).flatmap(
        lambda spec: npst.arrays(dtype, (spec[0], *spec[1]), elements=elements)
    )


unit_floats = st.floats(0, 1, width=32)
