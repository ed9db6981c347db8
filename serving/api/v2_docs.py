"""OpenAPI descriptions of the V2 routes: what /docs shows and what schemathesis fuzzes.

These models document bodies; the routes build their JSON with orjson and never
validate through them (the hot path stays one decode and one encode).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from serving.codecs.v2 import DTYPES, HEADER_LENGTH


class ErrorBody(BaseModel):
    error: str = Field(description="What was wrong, naming the field or header")


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str] = Field(description="Protocol extensions this server implements")


class MetadataTensor(BaseModel):
    name: str
    datatype: str = Field(description="V2 datatype, e.g. FP32")
    shape: list[int] = Field(description="-1 is the variable batch dimension")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(description="Loaded versions; the highest is the default")
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class ModelReady(BaseModel):
    name: str
    version: str
    ready: bool


class ModelState(BaseModel):
    name: str
    state: str = Field(description="UNLOADED once the model's queued requests finished")


class ResponseOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = Field(
        None, description="binary_data_size when the tensor follows the JSON as raw bytes"
    )
    data: list[float] | None = Field(None, description="Row-major values (JSON outputs)")


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = Field(None, description="The request's id, when it gave one")
    outputs: list[ResponseOutput]


class DurationStat(BaseModel):
    count: int
    ns: int = Field(description="Total duration in nanoseconds")


class InferenceStats(BaseModel):
    success: DurationStat = Field(description="Answered requests, enqueue to answer")
    fail: DurationStat = Field(description="Requests whose ONNX Runtime call failed")
    queue: DurationStat = Field(description="Time requests waited for their batch")
    compute_input: DurationStat = Field(description="Batches' input tensors assembled")
    compute_infer: DurationStat = Field(description="ONNX Runtime calls")
    compute_output: DurationStat = Field(description="Batches' outputs handed to each request")
    cache_hit: DurationStat = Field(description="Always 0: there is no response cache")
    cache_miss: DurationStat = Field(description="Always 0: there is no response cache")


class BatchStat(BaseModel):
    batch_size: int
    compute_input: DurationStat
    compute_infer: DurationStat
    compute_output: DurationStat


class ModelStat(BaseModel):
    name: str
    version: str
    last_inference: int = Field(description="Milliseconds since the epoch; 0 = never")
    inference_count: int = Field(description="Images inferred")
    execution_count: int = Field(description="ONNX Runtime calls (batches)")
    inference_stats: InferenceStats
    batch_stats: list[BatchStat]


class ModelStats(BaseModel):
    model_stats: list[ModelStat]


class RepositoryIndexEntry(BaseModel):
    name: str
    version: str
    state: str = Field(description="READY, UNAVAILABLE or UNLOADED")
    reason: str


def errors(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """Documented error responses, all ``{"error": "..."}``."""
    meaning = {
        400: "Malformed request: the message names the field or header",
        404: "No such model or version",
        403: "Model control is disabled (start with --model-control)",
        413: "Body over max_body_bytes (also once inflated)",
        415: "Content-Encoding other than gzip or deflate",
        429: "Overloaded (when overload_status_code is 429); see Retry-After",
        503: "Model not ready, or overloaded (see Retry-After)",
        504: "Deadline passed while queued; the work was dropped unrun",
    }
    return {code: {"model": ErrorBody, "description": meaning[code]} for code in status_codes}


_EXAMPLE_REQUEST = {
    "id": "42",
    "parameters": {"binary_data_output": False},
    "inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}],
    "outputs": [{"name": "logits"}],
}

_INFER_REQUEST_SCHEMA = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string", "description": "Echoed in the response"},
        "parameters": {
            "type": "object",
            # ``timeout`` (microseconds, as Triton) is described, not typed: a fuzzer's
            # 1 us would be a correct 503, which it would report as a server error.
            "description": "Also 'timeout': a deadline in microseconds, as Triton reads it",
            "properties": {
                "binary_data_output": {
                    "type": "boolean",
                    "description": "Return every output as raw bytes after the JSON",
                },
            },
        },
        "inputs": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype"],
                "properties": {
                    "name": {"type": "string", "enum": ["input"]},
                    "shape": {
                        "type": "array",
                        "minItems": 2,
                        "maxItems": 4,
                        "items": {"type": "integer", "minimum": 0},
                        "description": "[N, 1, 28, 28], [N, 28, 28] or [N, 784]",
                    },
                    "datatype": {
                        "type": "string",
                        "enum": list(DTYPES),
                        "description": "Floats are pixels in [0, 1]; UINT8 are 0-255",
                    },
                    "parameters": {
                        "type": "object",
                        "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
                    },
                    "data": {
                        "type": "array",
                        "items": {},
                        "description": "Row-major values, flat or nested",
                    },
                },
            },
        },
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "enum": ["logits"]},
                    "parameters": {
                        "type": "object",
                        "properties": {"binary_data": {"type": "boolean"}},
                    },
                },
            },
        },
    },
}

INFER_OPENAPI: dict[str, Any] = {
    "parameters": [
        {
            "name": HEADER_LENGTH,
            "in": "header",
            "required": False,
            "schema": {"type": "integer", "minimum": 1},
            "description": "Binary tensor data extension: length of the JSON header that "
            "starts the body; the input's raw bytes follow it",
        },
    ],
    "requestBody": {
        "required": True,
        "description": "A V2 inference request. JSON alone, or (binary tensor data extension) "
        f"the JSON header then the raw little-endian tensor bytes, with {HEADER_LENGTH} giving "
        "the header's length and inputs[0].parameters.binary_data_size the bytes' length.",
        "content": {
            "application/json": {"schema": _INFER_REQUEST_SCHEMA, "example": _EXAMPLE_REQUEST},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}

INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": InferResponse,
        "description": f"Logits; raw bytes after the JSON header when binary output was asked "
        f"({HEADER_LENGTH} gives the header's length)",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
    **errors(400, 404, 413, 415, 429, 503, 504),
}

MODEL_CONFIG_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Triton ModelConfig JSON: max_batch_size, input, output, "
        "dynamic_batching, instance_group",
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
    **errors(404, 503),
}

OPTIONAL_BODY_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "description": "Empty, or a JSON object (tritonclient sends one)",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}

INDEX_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "description": 'Empty, or {"ready": true} to list only ready versions',
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
            }
        },
    }
}
