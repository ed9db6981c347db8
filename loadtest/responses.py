"""Read the labels out of v1 and V2 response bodies; anything malformed raises BadResponse.

These are the load test's correctness checks on the wire format: a body that does
not parse, lacks a prediction, or answers for a different number of images fails
the request even when its status is 200.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

_BINARY_DTYPES = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
}
_LABEL_DATATYPES = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}


class BadResponse(Exception):
    """The body is not a well-formed answer for the images sent."""


@dataclass(frozen=True)
class Answer:
    labels: list[int]
    version: str | None


def parse_v1(body: bytes, images: int) -> Answer:
    """``{"model", "version", "predictions": [{"label", ...}]}`` with one prediction per image."""
    document = _object(body)
    predictions = document.get("predictions")
    if not isinstance(predictions, list):
        raise BadResponse(f"no 'predictions' list in {_excerpt(body)}")
    _check_count(len(predictions), images)
    labels = []
    for index, prediction in enumerate(predictions):
        label = prediction.get("label") if isinstance(prediction, dict) else None
        if not _is_label(label):
            raise BadResponse(f"predictions[{index}] has no label 0-9: {_excerpt(body)}")
        labels.append(label)
    return Answer(labels, _version(document.get("version")))


def parse_v2(body: bytes, images: int, header_length: int | None = None) -> Answer:
    """V2 ``outputs``: an integer label tensor ``[N]`` or ``[N,1]``, else argmax of ``[N,10]``.

    With ``header_length`` (the response's Inference-Header-Content-Length), the body is
    that much JSON followed by the binary outputs, in the order the header lists them.
    """
    document = _object(body if header_length is None else body[:header_length])
    outputs = document.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        raise BadResponse(f"no 'outputs' list in {_excerpt(body)}")
    binary = _BinarySection(memoryview(body)[header_length or len(body) :])
    tensors = [_tensor(output, index, binary) for index, output in enumerate(outputs)]
    binary.check_all_read()
    for name, datatype, shape, data in tensors:
        if datatype in _LABEL_DATATYPES and shape in ([images], [images, 1]):
            labels = [int(value) for value in data.reshape(-1)]
            if not all(_is_label(label) for label in labels):
                raise BadResponse(f"output {name!r} holds values outside 0-9")
            return Answer(labels, _version(document.get("model_version")))
    for _name, datatype, shape, data in tensors:
        if datatype.startswith("FP") and len(shape) == 2 and shape[1] == 10:
            _check_count(shape[0], images)
            labels = data.reshape(shape).argmax(axis=1).tolist()
            return Answer(labels, _version(document.get("model_version")))
    raise BadResponse(f"no [{images}, 10] scores or [{images}] labels among the outputs")


class _BinarySection:
    """The bytes after a V2 JSON header, handed out to binary outputs in order."""

    def __init__(self, data: memoryview) -> None:
        self._data = data
        self._offset = 0

    def take(self, size: Any, datatype: str, name: str) -> np.ndarray:
        dtype = _BINARY_DTYPES.get(datatype)
        if dtype is None:
            raise BadResponse(f"output {name!r}: binary datatype {datatype!r} is not readable")
        if type(size) is not int or size < 0 or size % dtype.itemsize:
            raise BadResponse(f"output {name!r}: bad binary_data_size {size!r}")
        if self._offset + size > len(self._data):
            raise BadResponse(
                f"output {name!r}: binary_data_size {size} but only "
                f"{len(self._data) - self._offset} bytes of binary data remain"
            )
        chunk = self._data[self._offset : self._offset + size]
        self._offset += size
        return np.frombuffer(chunk, dtype=dtype).astype(np.float64)

    def check_all_read(self) -> None:
        if self._offset != len(self._data):
            raise BadResponse(
                f"{len(self._data) - self._offset} bytes of binary data no output accounts for"
            )


def _tensor(
    output: Any, index: int, binary: _BinarySection
) -> tuple[str, str, list[int], np.ndarray]:
    if not isinstance(output, dict):
        raise BadResponse(f"outputs[{index}] is not an object")
    name, datatype = output.get("name"), output.get("datatype")
    shape, data = output.get("shape"), output.get("data")
    if not isinstance(name, str) or not isinstance(datatype, str):
        raise BadResponse(f"outputs[{index}] lacks a name or datatype")
    if not isinstance(shape, list) or not all(isinstance(size, int) for size in shape):
        raise BadResponse(f"outputs[{index}] ({name}) has no integer shape")
    parameters = output.get("parameters")
    if isinstance(parameters, dict) and "binary_data_size" in parameters:
        array = binary.take(parameters["binary_data_size"], datatype, name)
    elif isinstance(data, list):
        try:
            array = np.asarray(data, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise BadResponse(f"outputs[{index}] ({name}) data is not flat numbers") from None
    else:
        raise BadResponse(f"outputs[{index}] ({name}) has no data list")
    if array.size != int(np.prod(shape)) or not np.isfinite(array).all():
        raise BadResponse(f"outputs[{index}] ({name}) holds {array.size} values for shape {shape}")
    return name, datatype, shape, array


def _object(body: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadResponse(f"body is not JSON: {_excerpt(body)}") from None
    if not isinstance(document, dict):
        raise BadResponse(f"body is not a JSON object: {_excerpt(body)}")
    return document


def _check_count(answered: int, images: int) -> None:
    if answered != images:
        raise BadResponse(f"{answered} predictions for {images} images")


def _is_label(value: Any) -> bool:
    return type(value) is int and 0 <= value <= 9


def _version(value: Any) -> str | None:
    return None if value is None else str(value)


def _excerpt(body: bytes, limit: int = 120) -> str:
    text = body[:limit].decode("utf-8", "replace")
    return repr(text + ("..." if len(body) > limit else ""))
