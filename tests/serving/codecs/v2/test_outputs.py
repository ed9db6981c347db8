"""Requested outputs and the response: which outputs come back, JSON or binary, and
responses tritonclient reads back exactly."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst
from tritonclient.http import InferResult

from serving.codecs import v2, v2_client
from tests.serving.codecs.v2.helpers import an_input, decode, json_body


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
    np.testing.assert_array_equal(
        v2_client.decode_infer_response(body, header_length)["logits"], logits
    )
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
