"""Request bodies for every traffic kind, built from the fixture once and joined per request.

Each image's pixels are serialised once at start-up (float32 in its shortest exact
form, so the server parses back the very float32 the offline check used); a request
only joins pre-built pieces, which keeps the load generator's CPU for sending.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import orjson
from PIL import Image

from serving.codecs.v2 import HEADER_LENGTH
from serving.codecs.v2_client import encode_infer_request

OCTET_TYPE = "application/octet-stream"
PNG_TYPE = "image/png"
JSON_TYPE = "application/json"


@dataclass(frozen=True)
class Payload:
    """One request: where it goes, its body and Content-Type, and which fixture images it holds."""

    path: str
    body: bytes
    content_type: str
    indices: tuple[int, ...]
    extra_headers: dict[str, str] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        """Every header the request needs: its Content-Type and any protocol header."""
        return {"Content-Type": self.content_type, **self.extra_headers}


class PayloadBuilder:
    """Builds v1 JSON / octet / PNG and V2 FP32 / UINT8 / binary bodies for any fixture indices."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = np.ascontiguousarray(images, dtype=np.uint8).reshape(-1, 784)
        pixels = self.images.astype(np.float32) / np.float32(255.0)
        # "a,b,c" per image (no brackets): the v1 body wraps each, V2 concatenates them.
        self._float_rows = [_numbers(row) for row in pixels]
        self._int_rows = [_numbers(row) for row in self.images]
        self._pngs: dict[int, bytes] = {}

    def __len__(self) -> int:
        return len(self.images)

    def v1_json(self, model: str, indices: tuple[int, ...]) -> Payload:
        rows = b"],[".join(self._float_rows[index] for index in indices)
        body = b'{"images":[[' + rows + b"]]}"
        return Payload(f"/v1/models/{model}/predict", body, JSON_TYPE, indices)

    def v1_octet(self, model: str, indices: tuple[int, ...]) -> Payload:
        body = self.images[list(indices)].tobytes()
        return Payload(f"/v1/models/{model}/predict", body, OCTET_TYPE, indices)

    def v1_png(self, model: str, index: int) -> Payload:
        return Payload(f"/v1/models/{model}/predict", self.png(index), PNG_TYPE, (index,))

    def v2_json(self, model: str, indices: tuple[int, ...], datatype: str = "FP32") -> Payload:
        rows = self._float_rows if datatype == "FP32" else self._int_rows
        data = b",".join(rows[index] for index in indices)
        header = orjson.dumps({"name": "input", "shape": [len(indices), 1, 28, 28]})
        body = b'{"inputs":[' + header[:-1] + b',"datatype":"' + datatype.encode()
        body += b'","data":[' + data + b"]}]}"
        return Payload(f"/v2/models/{model}/infer", body, JSON_TYPE, indices)

    def v2_binary(self, model: str, indices: tuple[int, ...]) -> Payload:
        """The binary tensor extension both ways: UINT8 pixels in, FP32 logits out as bytes."""
        images = self.images[list(indices)].reshape(-1, 1, 28, 28)
        body, header_length = encode_infer_request(images, binary_output=True)
        return Payload(
            f"/v2/models/{model}/infer",
            body,
            OCTET_TYPE,
            indices,
            {HEADER_LENGTH: str(header_length)},
        )

    def png(self, index: int) -> bytes:
        """The image as an 8-bit greyscale PNG, exactly its pixels (white digit on black)."""
        if index not in self._pngs:
            self._pngs[index] = encode_png(self.images[index].reshape(28, 28))
        return self._pngs[index]


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def _numbers(row: np.ndarray) -> bytes:
    """``b"0.0,0.1882353,..."``: orjson writes float32 in its shortest round-trip form."""
    return orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1]
