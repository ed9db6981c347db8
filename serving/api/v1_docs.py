"""OpenAPI descriptions of the v1 routes: what /docs shows and what schemathesis fuzzes.

The pydantic models only document bodies; the routes decode with orjson and numpy
and encode with orjson, never through these models.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from serving.api.v2_docs import ErrorBody

JSON = "application/json"
OCTET = "application/octet-stream"
MULTIPART = "multipart/form-data"
ACCEPTED_TYPES = (JSON, OCTET, "image/png", "image/jpeg", "image/* (BMP, GIF, WebP)", MULTIPART)


class Prediction(BaseModel):
    label: int = Field(description="The most probable digit", examples=[7])
    confidence: float = Field(description="Its probability", examples=[0.998])
    probabilities: list[float] = Field(description="Softmax over the 10 digits, 0 to 9")


class PredictResponse(BaseModel):
    model: str = Field(examples=["mnist_cnn"])
    version: str = Field(description="The version that answered", examples=["1"])
    predictions: list[Prediction] = Field(description="One per image, in request order")


class TensorContract(BaseModel):
    name: str
    datatype: str = Field(examples=["FP32"])
    shape: list[int] = Field(description="-1 is the variable batch dimension")


class VersionInfo(BaseModel):
    version: str
    ready: bool
    provider: str = Field(description="Active ONNX Runtime execution provider")
    accuracy: float | None = Field(description="Test accuracy from the model card")
    architecture: str | None
    created: str = Field(description="When the model was exported (ISO 8601)")


class ModelInfo(BaseModel):
    name: str
    versions: list[str] = Field(description="Loaded versions, oldest first")
    latest: str = Field(description="The version /v1/models/{model}/predict uses")
    ready: bool = Field(description="The latest version can take requests")
    provider: str = Field(description="Execution provider of the latest version")
    accuracy: float | None = Field(description="Test accuracy of the latest version")
    inputs: list[TensorContract]
    outputs: list[TensorContract]
    labels: list[str]
    preprocessing: str = Field(description="What the input pixels must be")
    by_version: list[VersionInfo]


class ModelList(BaseModel):
    models: list[ModelInfo]


def errors(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """Documented error responses, all ``{"error": "..."}``."""
    meaning = {
        400: "Malformed body: the message names the field, image or pixel and what was expected",
        404: "No such model or version",
        413: "Body over max_body_bytes",
        415: "Content-Type not one of: " + ", ".join(ACCEPTED_TYPES),
        429: "Overloaded (when overload_status_code is 429); see Retry-After",
        503: "Model not ready, or overloaded (see Retry-After)",
        504: "Deadline (request_timeout_s or X-Request-Timeout-Ms) passed while queued or decoding",
    }
    return {code: {"model": ErrorBody, "description": meaning[code]} for code in status_codes}


_PIXEL = {"type": "number", "minimum": 0, "maximum": 1}
_FLAT_IMAGE = {
    "type": "array",
    "items": _PIXEL,
    "minItems": 784,
    "maxItems": 784,
    "description": "784 pixels, row by row",
}
_NESTED_IMAGE = {
    "type": "array",
    "items": {"type": "array", "items": _PIXEL, "minItems": 28, "maxItems": 28},
    "minItems": 28,
    "maxItems": 28,
    "description": "28 rows of 28 pixels",
}
_BINARY = {"type": "string", "format": "binary"}

PREDICT_DESCRIPTION = """\
Classify one or more images of handwritten digits. The body's **Content-Type** picks
the format:

* `application/json`: `{"images": [...]}`, each image 784 numbers or 28x28 nested
  lists; pixels are floats in [0, 1] (raw/255), **0 = background** (white digit on black,
  as in MNIST). All images of one request use the same layout.
* `application/octet-stream`: N x 784 raw bytes (uint8 0-255, row-major, 0 = background);
  N is the body length / 784.
* `image/png`, `image/jpeg` (or BMP, GIF, WebP): one picture of one digit, any size,
  colours or background; it is cropped, scaled into 20x20 and centred by mass in 28x28,
  the way MNIST was made.
* `multipart/form-data`: one or more picture files (any field names), one digit each.

Predictions come back in request order. Send `X-Request-Timeout-Ms` to bound the wait;
the `Server-Timing` response header tells where the time went.
"""

_MODEL_PARAMETER = {
    "name": "model",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "Model name, e.g. mnist_cnn",
}
_VERSION_PARAMETER = {
    "name": "version",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "Model version (an integer folder name); without it the latest answers",
}


def predict_openapi(*, with_version: bool = False) -> dict[str, Any]:
    """Path parameters and request bodies of a predict route."""
    parameters = [_MODEL_PARAMETER, _VERSION_PARAMETER] if with_version else [_MODEL_PARAMETER]
    return {"parameters": parameters, **_PREDICT_BODY}


_PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            JSON: {
                "schema": {
                    "type": "object",
                    "required": ["images"],
                    "properties": {
                        "images": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"oneOf": [_FLAT_IMAGE, _NESTED_IMAGE]},
                        }
                    },
                },
                "example": {"images": [[0.0] * 784]},
            },
            OCTET: {"schema": {**_BINARY, "description": "N x 784 uint8 pixels"}},
            "image/png": {"schema": _BINARY},
            "image/jpeg": {"schema": _BINARY},
            MULTIPART: {
                "schema": {
                    "type": "object",
                    "properties": {"file": {**_BINARY, "description": "A picture of a digit"}},
                    "required": ["file"],
                }
            },
        },
    }
}

PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": PredictResponse, "description": "One prediction per image, in order"},
    **errors(400, 404, 413, 415, 429, 503, 504),
}
