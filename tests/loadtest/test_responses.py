"""The response checks accept what the server's encoders write and reject malformed bodies."""

from __future__ import annotations

import re

import numpy as np
import orjson
import pytest

from loadtest.responses import BadResponse, parse_v1, parse_v2
from serving.codecs.v1 import encode_predictions
from serving.codecs.v2 import RequestedOutput, encode_infer_response

LOGITS = np.eye(10, dtype=np.float32)[[3, 1, 4]] * 5.0


def v2_response(*, is_binary: bool) -> tuple[bytes, int | None]:
    """The server's V2 answer for LOGITS, as JSON or with the binary extension."""
    return encode_infer_response(
        model_name="mnist_mlp",
        model_version="1",
        request_id=None,
        outputs={"logits": LOGITS},
        requested=[RequestedOutput("logits", is_binary=is_binary)],
    )


def test_v1_labels_are_read_from_the_servers_encoding() -> None:
    answer = parse_v1(encode_predictions("mnist_mlp", "2", LOGITS), images=3)

    assert (answer.labels, answer.version) == ([3, 1, 4], "2")


def test_v2_labels_are_the_argmax_of_the_servers_logits() -> None:
    body, _ = v2_response(is_binary=False)

    answer = parse_v2(body, images=3)

    assert (answer.labels, answer.version) == ([3, 1, 4], "1")


def test_v2_binary_logits_are_read_from_the_servers_binary_section() -> None:
    body, header_length = v2_response(is_binary=True)
    assert header_length is not None

    answer = parse_v2(body, images=3, header_length=header_length)

    assert (answer.labels, answer.version) == ([3, 1, 4], "1")


def test_v2_binary_output_shorter_than_announced_is_refused() -> None:
    body, header_length = v2_response(is_binary=True)

    with pytest.raises(BadResponse, match="binary"):
        parse_v2(body[:-4], images=3, header_length=header_length)


def test_v2_integer_label_output_is_used_when_present() -> None:
    output = {"name": "label", "datatype": "INT64", "shape": [2], "data": [7, 2]}

    answer = parse_v2(orjson.dumps({"outputs": [output]}), images=2)

    assert answer.labels == [7, 2]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>oops</html>", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"predictions": {}}', "no 'predictions' list"),
        (b'{"predictions": [{"label": 1}]}', "1 predictions for 3 images"),
        (b'{"predictions": [{"label": 1}, {"label": 2}, {}]}', "predictions[2] has no label"),
        (b'{"predictions": [{"label": 1}, {"label": 12}, {"label": 3}]}', "no label 0-9"),
        (b'{"predictions": [{"label": 1}, {"label": true}, {"label": 3}]}', "no label 0-9"),
    ],
)
def test_malformed_v1_body_is_rejected_with_the_reason(body: bytes, reason: str) -> None:
    with pytest.raises(BadResponse, match=re.escape(reason)):
        parse_v1(body, images=3)


@pytest.mark.parametrize(
    ("outputs", "reason"),
    [
        ([], "no 'outputs' list"),
        (
            [{"name": "logits", "datatype": "FP32", "shape": [2, 10], "data": [0.0] * 19}],
            "19 values",
        ),
        (
            [{"name": "logits", "datatype": "FP32", "shape": [1, 10], "data": [0.0] * 10}],
            "1 predict",
        ),
        ([{"name": "logits", "datatype": "FP32", "shape": [2, 10], "data": ["a"] * 20}], "numbers"),
        (
            [{"name": "logits", "datatype": "FP32", "shape": [2, 3], "data": [0.0] * 6}],
            "no [2, 10]",
        ),
    ],
)
def test_malformed_v2_body_is_rejected_with_the_reason(outputs: list, reason: str) -> None:
    with pytest.raises(BadResponse, match=re.escape(reason)):
        parse_v2(orjson.dumps({"model_name": "m", "outputs": outputs}), images=2)
