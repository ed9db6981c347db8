"""The V2 codec: JSON and binary tensors both ways, and every malformed body is a 400."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst
from tritonclient.http import InferResult

from serving.codecs import v2
from serving.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from tests.support import ExampleTally

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


@settings(max_examples=30, deadline=None)
@given(images=image_batches(np.float32, unit_floats), is_binary=st.booleans())
def test_float32_images_round_trip_exactly(images: np.ndarray, is_binary: bool) -> None:
    body, header_length = v2.encode_infer_request(images, is_binary=is_binary)

    decoded = decode(body, header_length)

    assert decoded.images.dtype == np.float32
    assert decoded.images.shape == (len(images), 1, 28, 28)
    np.testing.assert_array_equal(decoded.images.reshape(images.shape), images)


@settings(max_examples=30, deadline=None)
@given(pixels=image_batches(np.uint8, st.integers(0, 255)), is_binary=st.booleans())
def test_uint8_pixels_are_divided_by_255(pixels: np.ndarray, is_binary: bool) -> None:
    body, header_length = v2.encode_infer_request(pixels, is_binary=is_binary)

    decoded = decode(body, header_length)

    expected = pixels.astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(decoded.images.reshape(pixels.shape), expected)


def test_uint8_binary_costs_one_byte_per_pixel() -> None:
    pixels = np.zeros((8, 784), dtype=np.uint8)

    body, header_length = v2.encode_infer_request(pixels)

    assert header_length is not None
    assert len(body) - header_length == 8 * 784


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_other_float_widths_are_cast_to_float32(dtype: Any) -> None:
    images = np.linspace(0, 1, 784, dtype=dtype).reshape(1, 784)
    body, header_length = v2.encode_infer_request(images)

    decoded = decode(body, header_length)

    np.testing.assert_array_equal(decoded.images.reshape(1, 784), images.astype(np.float32))


def test_nested_json_data_is_read_row_major() -> None:
    images = np.random.default_rng(0).random((2, 28, 28)).astype(np.float32)
    body = json_body(inputs=[an_input(shape=[2, 28, 28], data=images.tolist())])

    decoded = decode(body)

    np.testing.assert_array_equal(decoded.images.reshape(2, 28, 28), images)


def test_id_and_timeout_are_read() -> None:
    body = json_body(id="req-7", parameters={"timeout": 250_000}, inputs=[an_input()])

    decoded = decode(body)

    assert decoded.request_id == "req-7"
    assert decoded.timeout_s == pytest.approx(0.25)


@pytest.mark.parametrize("timeout", [None, 0])
def test_absent_or_zero_timeout_leaves_the_server_default(timeout: int | None) -> None:
    parameters = {} if timeout is None else {"timeout": timeout}

    assert decode(json_body(parameters=parameters, inputs=[an_input()])).timeout_s is None


def test_all_outputs_are_returned_as_json_unless_asked() -> None:
    decoded = decode(json_body(inputs=[an_input()]))

    assert decoded.outputs == (v2.RequestedOutput("logits", is_binary=False),)


def test_an_empty_outputs_list_asks_for_all_outputs_as_triton_answers() -> None:
    decoded = decode(json_body(parameters={"binary_data_output": True}, inputs=[an_input()]))
    asked_none = decode(
        json_body(parameters={"binary_data_output": True}, inputs=[an_input()], outputs=[])
    )

    assert asked_none.outputs == decoded.outputs == (v2.RequestedOutput("logits", True),)


def test_binary_data_output_makes_every_output_binary() -> None:
    decoded = decode(json_body(parameters={"binary_data_output": True}, inputs=[an_input()]))

    assert decoded.outputs == (v2.RequestedOutput("logits", is_binary=True),)


@pytest.mark.parametrize("request_level", [True, False])
@pytest.mark.parametrize("output_level", [True, False])
def test_binary_data_on_an_output_overrides_the_request(
    request_level: bool, output_level: bool
) -> None:
    body = json_body(
        parameters={"binary_data_output": request_level},
        inputs=[an_input()],
        outputs=[{"name": "logits", "parameters": {"binary_data": output_level}}],
    )

    assert decode(body).outputs == (v2.RequestedOutput("logits", is_binary=output_level),)


def header_then(header: dict[str, Any], raw: bytes) -> tuple[bytes, int]:
    encoded = orjson.dumps(header)
    return encoded + raw, len(encoded)


def binary_input(size: int, **fields: Any) -> dict[str, Any]:
    return {
        "name": "input",
        "shape": [1, 784],
        "datatype": "FP32",
        "parameters": {"binary_data_size": size},
    } | fields


GOOD_RAW = np.full(784, 0.5, dtype="<f4").tobytes()


@pytest.mark.parametrize(
    ("header_length", "expected"),
    [
        ("abc", "must be an integer"),
        ("-5", "the length of the JSON header"),
        ("0", "the length of the JSON header"),
        ("99999999", "the length of the JSON header"),
        ("1e3", "must be an integer"),
        ("", "must be an integer"),
    ],
)
def test_lying_header_length_is_refused(header_length: str, expected: str) -> None:
    body, _ = header_then({"inputs": [binary_input(len(GOOD_RAW))]}, GOOD_RAW)

    with pytest.raises(InvalidInput, match=expected):
        decode(body, header_length)


def test_header_length_cutting_the_json_short_is_refused() -> None:
    body, header_length = header_then({"inputs": [binary_input(len(GOOD_RAW))]}, GOOD_RAW)

    with pytest.raises(InvalidInput, match="not valid JSON"):
        decode(body, header_length - 3)


@pytest.mark.parametrize("declared", [len(GOOD_RAW) - 4, len(GOOD_RAW) + 4, 0])
def test_binary_data_size_must_match_the_bytes_sent(declared: int) -> None:
    body, header_length = header_then({"inputs": [binary_input(declared)]}, GOOD_RAW)

    with pytest.raises(InvalidInput, match="binary_data_size"):
        decode(body, header_length)


@pytest.mark.parametrize("declared", [-1, "784", 3.0, True, None])
def test_binary_data_size_must_be_a_non_negative_integer(declared: Any) -> None:
    body, header_length = header_then(
        {"inputs": [binary_input(0, parameters={"binary_data_size": declared})]}, GOOD_RAW
    )

    with pytest.raises(InvalidInput, match="binary_data_size"):
        decode(body, header_length)


def test_binary_size_must_fit_the_datatype() -> None:
    raw = np.full(784, 128, dtype=np.uint8).tobytes()  # UINT8-sized but declared FP32
    body, header_length = header_then({"inputs": [binary_input(len(raw))]}, raw)

    with pytest.raises(InvalidInput, match="needs 3136 bytes"):
        decode(body, header_length)


@pytest.mark.parametrize("shape", [[2**62, 0], [0, 2**62], [0, 1, 2**40, 2**40]])
@pytest.mark.parametrize("is_binary", [False, True])
def test_shape_of_no_elements_but_a_huge_dimension_is_invalid_input(
    shape: list[int], is_binary: bool
) -> None:
    # Zero elements, so the data's count (0) and the binary size (0 bytes) match it.
    tensor = binary_input(0, datatype="UINT8") if is_binary else an_input(data=[])
    body, header_length = header_then({"inputs": [tensor | {"shape": shape}]}, b"")

    with pytest.raises(InvalidInput, match="is not \\[N, 1, 28, 28\\]"):
        decode(body, header_length if is_binary else None)


def test_binary_data_without_the_header_length_is_refused() -> None:
    body, _ = header_then({"inputs": [binary_input(len(GOOD_RAW))]}, GOOD_RAW)

    with pytest.raises(InvalidInput, match=v2.HEADER_LENGTH):
        decode(body[: body.index(GOOD_RAW)])


def test_binary_body_sent_without_the_header_length_is_refused_naming_it() -> None:
    body, _ = header_then({"inputs": [binary_input(len(GOOD_RAW))]}, GOOD_RAW)

    with pytest.raises(InvalidInput, match=f"needs the {v2.HEADER_LENGTH} header"):
        decode(body)  # as curl --data-binary sends it, the header forgotten


def test_bytes_after_a_json_only_request_are_refused() -> None:
    body, header_length = header_then({"inputs": [an_input()]}, b"\x00" * 8)

    with pytest.raises(InvalidInput, match="8 bytes follow"):
        decode(body, header_length)


BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("no inputs", {}, "'inputs'"),
    ("empty inputs", {"inputs": []}, "'inputs'"),
    ("two inputs", {"inputs": [an_input(), an_input()]}, "one input"),
    ("wrong input name", {"inputs": [an_input(name="x")]}, "model's input is 'input'"),
    ("input not object", {"inputs": [3]}, "inputs\\[0\\]"),
    ("unsupported datatype", {"inputs": [an_input(datatype="INT64")]}, "not supported"),
    ("BYTES datatype", {"inputs": [an_input(datatype="BYTES")]}, "not supported"),
    ("shape not list", {"inputs": [an_input(shape="1,784")]}, "shape"),
    ("negative dim", {"inputs": [an_input(shape=[-1, 784])]}, "shape"),
    ("bool dim", {"inputs": [an_input(shape=[True, 784])]}, "shape"),
    ("rank 1", {"inputs": [an_input(shape=[784])]}, "shape"),
    ("rank 5", {"inputs": [an_input(shape=[1, 1, 1, 28, 28])]}, "shape"),
    ("wrong image shape", {"inputs": [an_input(shape=[1, 392, 2])]}, "shape"),
    ("count mismatch", {"inputs": [an_input(shape=[2, 784])]}, "784 values"),
    ("no data", {"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32"}]}, "'data'"),
    ("data not list", {"inputs": [an_input(data="0.5")]}, "'data'"),
    ("ragged data", {"inputs": [an_input(data=[[0.5] * 784, [0.5]])]}, "regular array"),
    ("strings in data", {"inputs": [an_input(data=["a"] * 784)]}, "numbers only"),
    ("numeric strings", {"inputs": [an_input(data=["0.5"] * 784)]}, "numbers only"),
    ("one numeric string", {"inputs": [an_input(data=[0.5] * 783 + ["0"])]}, "numbers only"),
    ("booleans", {"inputs": [an_input(data=[True] * 784)]}, "numbers only"),
    ("one boolean", {"inputs": [an_input(data=[0.5] * 783 + [False])]}, "numbers only"),
    (
        "nested boolean",
        {"inputs": [an_input(shape=[1, 28, 28], data=[[0.5] * 28] * 27 + [[True] * 28])]},
        "numbers only",
    ),
    ("one null", {"inputs": [an_input(data=[0.5] * 783 + [None])]}, "numbers only"),
    ("uint8 strings", {"inputs": [an_input(datatype="UINT8", data=["7"] * 784)]}, "numbers only"),
    ("uint8 booleans", {"inputs": [an_input(datatype="UINT8", data=[True] * 784)]}, "UINT8"),
    ("objects in data", {"inputs": [an_input(data=[{}] * 784)]}, "numbers only"),
    ("integer past int64", {"inputs": [an_input(data=[2**64 - 1] * 784)]}, "\\[0, 1\\]"),
    ("pixel above 1", {"inputs": [an_input(data=[2.0] * 784)]}, "divide 0-255"),
    ("negative pixel", {"inputs": [an_input(data=[-0.5] * 784)]}, "\\[0, 1\\]"),
    ("null pixels", {"inputs": [an_input(data=[None] * 784)]}, "not strings, booleans or null"),
    ("uint8 above 255", {"inputs": [an_input(datatype="UINT8", data=[300] * 784)]}, "0, 255"),
    ("uint8 fraction", {"inputs": [an_input(datatype="UINT8", data=[3.5] * 784)]}, "0, 255"),
    ("uint8 negative", {"inputs": [an_input(datatype="UINT8", data=[-1] * 784)]}, "0, 255"),
    ("no images", {"inputs": [an_input(shape=[0, 784], data=[])]}, "at least one image"),
    ("too many images", {"inputs": [an_input(shape=[17, 784], data=[0.1] * 784 * 17)]}, "limit"),
    ("id not string", {"id": 7, "inputs": [an_input()]}, "'id'"),
    ("parameters not object", {"parameters": [1], "inputs": [an_input()]}, "'parameters'"),
    ("negative timeout", {"parameters": {"timeout": -1}, "inputs": [an_input()]}, "timeout"),
    ("string timeout", {"parameters": {"timeout": "5"}, "inputs": [an_input()]}, "timeout"),
    (
        "binary_data_output not bool",
        {"parameters": {"binary_data_output": "yes"}, "inputs": [an_input()]},
        "binary_data_output",
    ),
    ("unknown output", {"inputs": [an_input()], "outputs": [{"name": "probs"}]}, "'logits'"),
    ("outputs not list", {"inputs": [an_input()], "outputs": {"name": "logits"}}, "'outputs'"),
    (
        "output twice",
        {"inputs": [an_input()], "outputs": [{"name": "logits"}, {"name": "logits"}]},
        "'logits' is requested twice",
    ),
    (
        "classification",
        {
            "inputs": [an_input()],
            "outputs": [{"name": "logits", "parameters": {"classification": 3}}],
        },
        "not supported",
    ),
    (
        "shared memory",
        {"inputs": [an_input(parameters={"shared_memory_region": "r"})]},
        "shared-memory",
    ),
    (
        "sequence, as tritonclient sends one",
        {
            "parameters": {"sequence_id": 7, "sequence_start": True, "sequence_end": False},
            "inputs": [an_input()],
        },
        "sequence",
    ),
    (
        "sequence end only",
        {"parameters": {"sequence_end": True}, "inputs": [an_input()]},
        "sequence",
    ),
    (
        "data and binary",
        {"inputs": [an_input(parameters={"binary_data_size": 3136})]},
        "not both",
    ),
]


@pytest.mark.parametrize(
    ("request_json", "expected"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_malformed_request_is_invalid_input(request_json: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidInput, match=expected):
        decode(orjson.dumps(request_json))


def test_far_more_arrays_than_the_images_allowed_need_are_refused_unparsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 16 images need at most 16 x 30 arrays (1x28x28 each) in 'data': millions of empty
    # ones take orjson seconds, holding the GIL, so many times that must not reach it.
    body = json_body(inputs=[an_input(shape=[1, 784], data=[[]] * 3000)])

    def unparsed(document: bytes) -> Any:
        raise AssertionError("parsed")

    monkeypatch.setattr(orjson, "loads", unparsed)
    with pytest.raises(InvalidInput, match=r"^request: 3003 JSON arrays, far more than 16 images"):
        decode(body)


@pytest.mark.parametrize(
    ("datatype", "values"), [("FP32", [1e300] * 784), ("FP16", [70000.0] * 784)]
)
def test_json_value_overflowing_the_datatype_is_invalid_input(
    datatype: str, values: list[float]
) -> None:
    with pytest.raises(InvalidInput, match="finite"):
        decode(json_body(inputs=[an_input(datatype=datatype, data=values)]))


@settings(max_examples=200, deadline=None)
@given(
    datatype=st.sampled_from(["FP32", "FP64", "FP16", "UINT8"]),
    count=st.integers(1, 2),
    data=st.data(),
)
def test_any_binary_pixels_give_images_or_invalid_input(
    datatype: str, count: int, data: st.DataObject
) -> None:
    size = count * 784 * v2.DTYPES[datatype].itemsize
    raw = data.draw(st.binary(min_size=size, max_size=size))
    body, header_length = header_then(
        {"inputs": [binary_input(size, datatype=datatype, shape=[count, 784])]}, raw
    )
    try:
        decoded = decode(body, header_length)
    except InvalidInput:
        return
    assert decoded.images.min() >= 0
    assert decoded.images.max() <= 1


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'"inputs"', b"\xff\xfe"])
def test_body_that_is_not_a_json_object_is_invalid_input(body: bytes) -> None:
    with pytest.raises(InvalidInput):
        decode(body)


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
    v2.encode_infer_request,
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


logits_arrays = st.integers(1, 8).flatmap(
    lambda count: npst.arrays(np.float32, (count, 10), elements=st.floats(-1e6, 1e6, width=32))
)


@settings(max_examples=50, deadline=None)
@given(logits=logits_arrays, is_binary=st.booleans(), request_id=st.none() | st.text(max_size=8))
def test_response_round_trips_through_tritonclient(
    logits: np.ndarray, is_binary: bool, request_id: str | None
) -> None:
    body, header_length = v2.encode_infer_response(
        model_name="tiny",
        model_version="2",
        request_id=request_id,
        outputs={"logits": logits},
        requested=[v2.RequestedOutput("logits", is_binary)],
    )

    result = InferResult.from_response_body(body, header_length=header_length)

    np.testing.assert_array_equal(result.as_numpy("logits"), logits)
    np.testing.assert_array_equal(v2.decode_infer_response(body, header_length)["logits"], logits)
    response = result.get_response()
    assert (response["model_name"], response["model_version"]) == ("tiny", "2")
    assert response.get("id") == request_id


def test_binary_response_header_length_covers_only_the_json() -> None:
    logits = np.arange(20, dtype=np.float32).reshape(2, 10)

    body, header_length = v2.encode_infer_response(
        model_name="tiny",
        model_version="1",
        request_id=None,
        outputs={"logits": logits},
        requested=[v2.RequestedOutput("logits", is_binary=True)],
    )

    assert header_length is not None
    header = orjson.loads(body[:header_length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 80}
    assert "data" not in header["outputs"][0]
    assert body[header_length:] == logits.astype("<f4").tobytes()


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("GZip", gzip.compress)],
)
def test_compressed_body_is_inflated(encoding: str, compress: Any) -> None:
    body = json_body(inputs=[an_input()])

    assert v2.decompress_body(compress(body), encoding, max_bytes=len(body)) == body


@pytest.mark.parametrize("encoding", [None, "identity"])
def test_uncompressed_body_is_passed_through(encoding: str | None) -> None:
    assert v2.decompress_body(b"{}", encoding, max_bytes=1) == b"{}"


def test_body_inflating_past_the_limit_is_413() -> None:
    bomb = gzip.compress(b"\x00" * 1_000_000)

    with pytest.raises(PayloadTooLarge, match="inflates past the 4096-byte limit"):
        v2.decompress_body(bomb, "gzip", max_bytes=4096)


@pytest.mark.parametrize(
    "compressed", [b"not gzip", gzip.compress(b"{}")[:-4], gzip.compress(b"{}") + b"junk"]
)
def test_broken_compressed_body_is_invalid_input(compressed: bytes) -> None:
    with pytest.raises(InvalidInput, match="gzip"):
        v2.decompress_body(compressed, "gzip", max_bytes=4096)


def test_unknown_content_encoding_is_415() -> None:
    with pytest.raises(UnsupportedMediaType, match="'br'"):
        v2.decompress_body(b"...", "br", max_bytes=4096)
