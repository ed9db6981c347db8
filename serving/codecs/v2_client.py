"""The client's side of the V2 codec: request bodies out, response bodies read back.

For clients, the load test and the tests; the server decodes requests and encodes
answers with :mod:`serving.codecs.v2`, and never calls these.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from serving.codecs.v2 import DATATYPE_OF, DTYPES


def encode_infer_request(
    images: np.ndarray,
    *,
    input_name: str = "input",
    is_binary: bool = True,
    request_id: str | None = None,
    binary_output: bool = False,
    timeout_us: int | None = None,
) -> tuple[bytes, int | None]:
    """A request body for ``images`` (float32/float64/float16 in [0, 1] or uint8 0-255).

    For clients, load tests and tests; the shape is sent as given.
    """
    datatype = DATATYPE_OF[images.dtype.name]
    tensor: dict[str, Any] = {"name": input_name, "shape": images.shape, "datatype": datatype}
    raw = np.ascontiguousarray(images, dtype=DTYPES[datatype]).tobytes() if is_binary else None
    if raw is None:
        tensor["data"] = np.ascontiguousarray(images).reshape(-1)
    else:
        tensor["parameters"] = {"binary_data_size": len(raw)}
    request: dict[str, Any] = {"inputs": [tensor]}
    if request_id is not None:
        request["id"] = request_id
    parameters: dict[str, Any] = {"binary_data_output": binary_output}
    if timeout_us is not None:
        parameters["timeout"] = timeout_us
    request["parameters"] = parameters
    header = orjson.dumps(request, option=orjson.OPT_SERIALIZE_NUMPY)
    return (header, None) if raw is None else (header + raw, len(header))


def decode_infer_response(body: bytes, header_length: int | None) -> dict[str, np.ndarray]:
    """Output arrays by name from a response body (JSON or binary); for clients and tests."""
    header = orjson.loads(body if header_length is None else body[:header_length])
    offset = header_length or 0
    arrays = {}
    for output in header["outputs"]:
        dtype = DTYPES[output["datatype"]]
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:
            array = np.array(output["data"], dtype=dtype)
        else:
            array = np.frombuffer(body, dtype=dtype, count=size // dtype.itemsize, offset=offset)
            offset += size
        arrays[output["name"]] = array.reshape(output["shape"])
    return arrays
