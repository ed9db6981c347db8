"""KServe V2 (Open Inference Protocol) inference bodies: JSON and binary tensors.

With Triton's binary tensor data extension a body is a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw little-endian bytes
of each binary tensor, in the order the header lists them, each sized by its
``parameters.binary_data_size``. Requests are decoded with one orjson call and
``np.frombuffer``; every malformed body raises InvalidInput (400), nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import orjson

from serving.codecs.tensors import IMAGE_SHAPES, check_json_counts, validate_images
from serving.errors import InvalidInput, quoted

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"

# V2 datatype -> little-endian wire dtype. Integers are raw 0-255 pixels, scaled here.
DTYPES: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "FP16": np.dtype("<f2"),
    "UINT8": np.dtype("u1"),
}
DATATYPE_OF = {dtype.name: datatype for datatype, dtype in DTYPES.items()}
_PIXEL_MAX = np.float32(255)
# Triton reads ``parameters.timeout`` in microseconds.
_MICROSECONDS_PER_S = 1_000_000
# The parameters of Triton's sequence batching; here each request is classified alone.
_SEQUENCE_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end")


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    is_binary: bool


@dataclass(frozen=True)
class InferRequest:
    """A decoded request: validated float32 ``(N, 1, 28, 28)`` images and how to answer."""

    images: np.ndarray
    request_id: str | None
    outputs: tuple[RequestedOutput, ...]
    timeout_s: float | None


def parse_header_length(value: str | None, body_bytes: int) -> int | None:
    """The JSON header's length from ``Inference-Header-Content-Length``, checked."""
    if value is None:
        return None
    digits = value.strip()
    # Digits only, as HTTP's own lengths: int() would also take "+20" and "2_0".
    if not (digits.isascii() and digits.isdigit()):
        raise InvalidInput(
            f"{HEADER_LENGTH} must be the length of the JSON header in bytes, as decimal "
            f"digits; got {value[:40]!r}"
        )
    length = int(digits)
    if not 0 < length <= body_bytes:
        raise InvalidInput(
            f"{HEADER_LENGTH} is {length} but the body has {body_bytes} bytes; "
            "it must be the length of the JSON header"
        )
    return length


def decode_infer_request(
    body: bytes,
    header_length: str | None,
    *,
    input_name: str,
    output_names: Sequence[str],
    max_images: int,
) -> InferRequest:
    """Decode a V2 inference request for a one-input model; raise InvalidInput if malformed."""
    json_bytes = parse_header_length(header_length, len(body))
    view = memoryview(body)
    header_end = len(view) if json_bytes is None else json_bytes
    check_json_counts(body, header_end, max_images, field="request")
    header = _load_json(view[:header_end], is_whole_body=json_bytes is None)
    binary = view[header_end:]
    parameters = _parameters(header, "parameters")
    if any(name in parameters for name in _SEQUENCE_PARAMETERS):
        raise InvalidInput(
            "sequences are not supported (parameters sequence_id, sequence_start, "
            "sequence_end): each request is classified on its own"
        )
    request_id = _request_id(header.get("id"))
    outputs = _requested_outputs(header, parameters, output_names)
    timeout_s = _timeout_s(parameters.get("timeout"))
    tensor = _only_input(header.get("inputs"), input_name)
    # A 1e300 sent as FP32 (or FP64 cast down) becomes inf, which the range check refuses.
    with np.errstate(over="ignore"):
        images = _decode_tensor(
            tensor,
            binary,
            has_binary_section=json_bytes is not None,
            may_hold_booleans=_has_boolean_literal(body, header_end),
        )
        images = validate_images(images, max_images, field=f"input '{input_name}'")
    return InferRequest(
        images=images,
        request_id=request_id,
        outputs=outputs,
        timeout_s=timeout_s,
    )


def _load_json(header: memoryview, *, is_whole_body: bool) -> dict[str, Any]:
    try:
        document = orjson.loads(header)
    except orjson.JSONDecodeError as error:
        # Binary bytes after the JSON, sent without the header saying where it ends.
        if is_whole_body and b'"binary_data_size"' in header.tobytes():
            raise InvalidInput(
                f"the body holds binary tensor data (binary_data_size), which needs the "
                f"{HEADER_LENGTH} header: the JSON's length in bytes ({error})"
            ) from None
        raise InvalidInput(f"the request header is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidInput("the request must be a JSON object with an 'inputs' array")
    return document


def _only_input(inputs: Any, input_name: str) -> dict[str, Any]:
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput(f"'inputs' must be a non-empty array holding the input '{input_name}'")
    if len(inputs) != 1:
        raise InvalidInput(f"the model has one input, '{input_name}'; got {len(inputs)} inputs")
    tensor = inputs[0]
    if not isinstance(tensor, dict):
        raise InvalidInput("'inputs[0]' must be an object with name, shape, datatype, data")
    if tensor.get("name") != input_name:
        raise InvalidInput(
            f"unexpected input {quoted(str(tensor.get('name')))}: the model's input is "
            f"'{input_name}'"
        )
    return tensor


def _has_boolean_literal(body: bytes, header_end: int) -> bool:
    """Whether the JSON header holds a ``true`` or ``false`` anywhere (parameters too)."""
    return body.find(b"true", 0, header_end) >= 0 or body.find(b"false", 0, header_end) >= 0


def _decode_tensor(
    tensor: dict[str, Any],
    binary: memoryview,
    *,
    has_binary_section: bool,
    may_hold_booleans: bool,
) -> Any:
    """The input as an array of its declared shape and dtype (not yet range-checked)."""
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in DTYPES:
        raise InvalidInput(
            f"input datatype {str(datatype)[:32]!r} is not supported; use one of "
            f"{', '.join(DTYPES)} (UINT8 pixels are 0-255, floats are 0-1)"
        )
    shape = _shape(tensor.get("shape"))
    parameters = _parameters(tensor, "inputs[0].parameters")
    if "shared_memory_region" in parameters:
        raise InvalidInput("the shared-memory extension is not supported; send data or binary")
    dtype = DTYPES[datatype]
    if "binary_data_size" in parameters:
        if "data" in tensor:
            raise InvalidInput("give the input either 'data' or 'binary_data_size', not both")
        if not has_binary_section:
            raise InvalidInput(f"binary_data_size needs the {HEADER_LENGTH} header")
        array = _binary_array(parameters["binary_data_size"], binary, dtype, shape)
    else:
        if len(binary):
            raise InvalidInput(
                f"{len(binary)} bytes follow the JSON header but no input has binary_data_size"
            )
        if "data" not in tensor:
            raise InvalidInput("the input needs 'data' (or binary data with binary_data_size)")
        array = _json_array(tensor["data"], dtype, shape, may_hold_booleans=may_hold_booleans)
    if datatype == "UINT8":
        return np.divide(array, _PIXEL_MAX, dtype=np.float32)
    return array


def _shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(type(dim) is int and dim >= 0 for dim in shape[:8]):
        raise InvalidInput("input 'shape' must be an array of non-negative integers")
    # Checked before any array is made: a shape of no elements (a 0 in it) passes the
    # data's count, and numpy refuses one with a huge dimension beside the 0.
    if len(shape) < 2 or tuple(shape[1:]) not in IMAGE_SHAPES:
        raise InvalidInput(
            f"input shape {shape[:8]} is not [N, 1, 28, 28], [N, 28, 28] or [N, 784]"
        )
    return tuple(shape)


def _binary_array(
    size: Any, binary: memoryview, dtype: np.dtype[Any], shape: tuple[int, ...]
) -> np.ndarray:
    if type(size) is not int or size < 0:
        raise InvalidInput(f"binary_data_size must be a non-negative integer, got {size!r:.40}")
    if size != len(binary):
        raise InvalidInput(
            f"binary_data_size is {size} but {len(binary)} bytes follow the JSON header"
        )
    expected = math.prod(shape) * dtype.itemsize
    if size != expected:
        raise InvalidInput(
            f"binary_data_size is {size} bytes but shape {list(shape)} of "
            f"{dtype.itemsize}-byte elements needs {expected} bytes"
        )
    return np.frombuffer(binary, dtype=dtype).reshape(shape)


def _json_array(
    data: Any, dtype: np.dtype[Any], shape: tuple[int, ...], *, may_hold_booleans: bool
) -> np.ndarray:
    """``data`` (flat or nested numbers) as an array of ``shape``; strings, booleans and
    null are refused, as Triton refuses them, rather than read as numbers."""
    if not isinstance(data, list):
        raise InvalidInput("input 'data' must be an array of numbers (flat or nested)")
    try:
        # Left to discover the type, numpy shows a string, a null or all-booleans in the
        # dtype, for 8 µs an image; booleans among numbers it reads as 1 and 0, so those
        # are looked for one by one, only when the header has a true or a false at all.
        discovered = np.array(data)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput("input 'data' must be a regular array of numbers") from None
    if discovered.dtype.kind not in "iuf" or (may_hold_booleans and _holds_boolean(data)):
        raise InvalidInput(
            f"input 'data' must hold numbers only (datatype {DATATYPE_OF[dtype.name]}), "
            "not strings, booleans or null"
        )
    if discovered.size != math.prod(shape):
        raise InvalidInput(
            f"input 'data' has {discovered.size} values but shape {list(shape)} needs "
            f"{math.prod(shape)}"
        )
    if dtype.kind == "u":  # 0-255 pixels are checked as read, to reject 3.5 or 300
        if not (
            np.all(discovered >= 0)
            and np.all(discovered <= 255)
            and np.array_equal(discovered, np.floor(discovered))
        ):
            raise InvalidInput("UINT8 input 'data' must hold integers in [0, 255]")
        return discovered.astype(dtype).reshape(shape)
    return discovered.astype(dtype, copy=False).reshape(shape)


def _holds_boolean(data: list[Any]) -> bool:
    """Whether a regular nested list (numpy refused ragged ones before) holds a bool."""
    level: list[Any] = data
    while level and type(level[0]) is list:
        level = list(chain.from_iterable(level))
    return bool in set(map(type, level))


def _parameters(owner: dict[str, Any], field: str) -> dict[str, Any]:
    parameters = owner.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput(f"'{field}' must be an object")
    return parameters


def _request_id(request_id: Any) -> str | None:
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    return request_id


def _flag(parameters: dict[str, Any], name: str, default: bool = False) -> bool:
    value = parameters.get(name, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"parameter '{name}' must be true or false")
    return value


def _requested_outputs(
    header: dict[str, Any], parameters: dict[str, Any], output_names: Sequence[str]
) -> tuple[RequestedOutput, ...]:
    """Outputs to return; ``binary_data`` on one overrides request-level ``binary_data_output``."""
    is_binary = _flag(parameters, "binary_data_output")
    requested = header.get("outputs")
    if requested is None or requested == []:  # none asked for: all, as Triton answers
        return tuple(RequestedOutput(name, is_binary) for name in output_names)
    if not isinstance(requested, list) or not all(isinstance(item, dict) for item in requested):
        raise InvalidInput("'outputs' must be an array of objects with a 'name'")
    outputs = []
    for item in requested:
        name = item.get("name")
        if not isinstance(name, str) or name not in output_names:
            raise InvalidInput(
                f"unknown output {quoted(str(name))}: the model's outputs are "
                f"{', '.join(repr(known) for known in output_names)}"
            )
        if any(output.name == name for output in outputs):
            raise InvalidInput(f"output {quoted(str(name))} is requested twice")
        output_parameters = _parameters(item, "outputs[].parameters")
        if "classification" in output_parameters or "shared_memory_region" in output_parameters:
            raise InvalidInput("the classification and shared-memory extensions are not supported")
        outputs.append(RequestedOutput(name, _flag(output_parameters, "binary_data", is_binary)))
    return tuple(outputs)


def _timeout_s(timeout_us: Any) -> float | None:
    """Triton's ``parameters.timeout`` (microseconds; 0 or absent = the server's default)."""
    if timeout_us is None:
        return None
    if type(timeout_us) not in (int, float) or not 0 <= timeout_us < math.inf:
        raise InvalidInput("parameter 'timeout' must be a non-negative number of microseconds")
    return timeout_us / _MICROSECONDS_PER_S if timeout_us > 0 else None


def encode_infer_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Mapping[str, np.ndarray],
    requested: Sequence[RequestedOutput],
) -> tuple[bytes, int | None]:
    """The response body and, if any output is binary, the JSON header's length."""
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        response["id"] = request_id
    tensors, binary_parts = [], []
    for output in requested:
        array = np.ascontiguousarray(outputs[output.name], dtype=np.float32)
        tensor: dict[str, Any] = {"name": output.name, "datatype": "FP32", "shape": array.shape}
        if output.is_binary:
            binary_parts.append(array.astype("<f4", copy=False).tobytes())
            tensor["parameters"] = {"binary_data_size": len(binary_parts[-1])}
        else:
            tensor["data"] = array.reshape(-1)
        tensors.append(tensor)
    response["outputs"] = tensors
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not binary_parts:
        return header, None
    return b"".join([header, *binary_parts]), len(header)


__all__ = [
    "BINARY_CONTENT_TYPE",
    "DATATYPE_OF",
    "DTYPES",
    "HEADER_LENGTH",
    "JSON_CONTENT_TYPE",
    "InferRequest",
    "RequestedOutput",
    "decode_infer_request",
    "encode_infer_response",
    "parse_header_length",
]
