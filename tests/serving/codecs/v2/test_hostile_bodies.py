"""Hostile bodies (hypothesis): any bytes, a client's request corrupted, or any JSON
request decode to valid images or a 400, never a crash."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.codecs import v2, v2_client
from tests.serving.codecs.v2.helpers import MAX_IMAGES, decode, image_batches, unit_floats
from tests.support import ExampleTally


def assert_valid_request(decoded: v2.InferRequest) -> None:
    """What every decoded request holds, whatever was sent."""
    assert decoded.images.dtype == np.float32
    assert decoded.images.shape[1:] == (1, 28, 28)
    assert len(decoded.images) in range(1, MAX_IMAGES + 1)
    assert decoded.images.min() >= 0.0
    assert decoded.images.max() <= 1.0  # NaN fails both
    assert decoded.request_id is None or isinstance(decoded.request_id, str)
    assert [output.name for output in decoded.outputs] == ["logits"]
    assert decoded.timeout_s is None or decoded.timeout_s > 0


# Requests as clients send them: 1-3 images in every datatype, JSON or binary, an id, a
# timeout in microseconds (0 = the server's default; a negative one is refused) and the
# output's encoding.
encoded_requests = st.builds(
    v2_client.encode_infer_request,
    st.one_of(
        image_batches(np.float32, unit_floats),
        image_batches(np.float64, st.floats(0, 1)),
        image_batches(np.float16, st.floats(0, 1, width=16)),
        image_batches(np.uint8, st.integers(0, 255)),
    ),
    is_binary=st.booleans(),
    request_id=st.none() | st.text(max_size=8),
    binary_output=st.booleans(),
    timeout_us=st.none() | st.integers(-(10**8), 10**8),
)


@st.composite
def corrupted(draw: st.DrawFn, request: tuple[bytes, int | None]) -> tuple[bytes, str | None]:
    """``request`` with up to 3 bytes changed, maybe cut short, maybe a wrong header length."""
    body, header_length = bytearray(request[0]), request[1]
    for position, value in draw(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)))):
        body[position % len(body)] = value
    del body[draw(st.integers(1, 10**6)) :]
    return as_sent((bytes(body), draw(st.just(header_length) | st.integers(-1, 10**6))))


def as_sent(request: tuple[bytes, int | None]) -> tuple[bytes, str | None]:
    """A body and its Inference-Header-Content-Length, as the HTTP header's text."""
    body, header_length = request
    return body, None if header_length is None else str(header_length)


# Any bytes, or an encoded request intact or corrupted.
v2_bodies = st.one_of(
    st.tuples(st.binary(max_size=4096), st.none() | st.text(max_size=12)),
    encoded_requests.map(as_sent),
    encoded_requests.flatmap(corrupted),
)


def test_any_bytes_give_images_or_invalid_input() -> None:
    tally = ExampleTally()

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(v2_bodies)
    def check(request: tuple[bytes, str | None]) -> None:
        decoded = tally.decoded(decode, *request)
        if decoded is None:
            return
        assert_valid_request(decoded)

    check()
    tally.assert_both_at_least(0.1)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children)
    ),
    max_leaves=20,
)
tensor_fields = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["input", "x"]) | json_values,
        "shape": st.lists(st.integers(-2, 800), max_size=5) | json_values,
        "datatype": st.sampled_from(["FP32", "UINT8", "FP64", "INT8"]) | json_values,
        "data": st.lists(st.floats(-1, 300) | st.floats(-1e300, 1e300), max_size=800) | json_values,
        "parameters": st.fixed_dictionaries(
            {}, optional={"binary_data_size": st.integers(-8, 4000) | json_values}
        )
        | json_values,
    },
)
requests = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "inputs": st.lists(tensor_fields, max_size=2) | json_values,
        "outputs": st.lists(st.fixed_dictionaries({"name": json_values}), max_size=2) | json_values,
        "parameters": st.dictionaries(
            st.sampled_from(["timeout", "binary_data_output"]), json_values
        )
        | json_values,
    },
)


def header_and_binary(request: tuple[bytes, int | None]) -> tuple[dict[str, Any], bytes, bool]:
    """An encoded request as (its JSON header, the bytes after it, whether they are sent)."""
    body, header_length = request
    if header_length is None:
        return orjson.loads(body), b"", False
    return orjson.loads(body[:header_length]), body[header_length:], True


# Any request, or a valid one intact or with some of its fields replaced by any value.
request_parts = st.one_of(
    st.tuples(requests, st.binary(max_size=64), st.booleans()),
    encoded_requests.map(header_and_binary),
    st.tuples(encoded_requests.map(header_and_binary), requests).map(
        lambda pair: (pair[0][0] | pair[1], *pair[0][1:])
    ),
)


def test_any_json_request_gives_images_or_invalid_input() -> None:
    tally = ExampleTally()

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(request_parts)
    def check(parts: tuple[dict[str, Any], bytes, bool]) -> None:
        request_json, raw, send_raw = parts
        header = json.dumps(request_json).encode()  # stdlib: also writes NaN and huge integers
        body, header_length = (header + raw, len(header)) if send_raw else (header, None)
        decoded = tally.decoded(decode, body, header_length)
        if decoded is None:
            return
        assert_valid_request(decoded)

    check()
    tally.assert_both_at_least(0.1)
