"""Encoding the answer: each prediction's label, confidence and probabilities, the same
bytes whether a request's rows are encoded alone or sliced from its batch's."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from serving.codecs.v1 import encode_predictions, encode_probabilities, labels_of, softmax


def test_predictions_hold_label_confidence_and_probabilities() -> None:
    logits = np.array([[0.0] * 7 + [5.0, 0.0, 0.0], [9.0] + [0.0] * 9], dtype=np.float32)

    document = orjson.loads(encode_predictions("mnist_cnn", "3", logits))

    assert document["model"] == "mnist_cnn"
    assert document["version"] == "3"
    labels = [prediction["label"] for prediction in document["predictions"]]
    assert labels == [7, 0]
    first = document["predictions"][0]
    expected = np.exp(logits[0]) / np.exp(logits[0]).sum()
    np.testing.assert_allclose(first["probabilities"], expected, rtol=1e-6)
    assert first["confidence"] == pytest.approx(expected[7], rel=1e-6)
    assert sum(first["probabilities"]) == pytest.approx(1.0, abs=1e-6)


def test_softmax_of_huge_logits_does_not_overflow() -> None:
    probabilities = softmax(np.array([[1000.0, 999.0, -1000.0]], dtype=np.float32))

    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities[0, :2], [0.7310586, 0.2689414], rtol=1e-5)


@settings(max_examples=50, deadline=None)
@given(
    logits=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 64), st.just(10)),
        elements=st.floats(-50, 50, width=32),
    ),
    data=st.data(),
)
def test_a_requests_answer_is_the_same_bytes_whether_its_batch_is_encoded_whole_or_alone(
    logits: np.ndarray, data: st.DataObject
) -> None:
    start = data.draw(st.integers(0, len(logits) - 1))
    stop = data.draw(st.integers(start + 1, len(logits)))
    probabilities, labels = softmax(logits), labels_of(logits)

    from_batch = encode_probabilities("m", "1", probabilities[start:stop], labels[start:stop])

    assert from_batch == encode_predictions("m", "1", logits[start:stop])
