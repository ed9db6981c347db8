"""Offline answers are ONNX Runtime's on the model file, with near-ties accepting either label."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from loadtest.expectations import Expectation, latest_version, offline_expectation
from loadtest.fixtures import load_fixture
from tests.support import tiny_logits


def test_offline_labels_are_the_models_argmax(tiny_repo: Path) -> None:
    pixels = load_fixture().pixels()[:200]

    expectation = offline_expectation(tiny_repo, "tiny", "1", pixels)

    np.testing.assert_array_equal(expectation.labels, tiny_logits(pixels, seed=0).argmax(axis=1))


def test_latest_version_is_the_highest_number(tiny_repo: Path) -> None:
    assert latest_version(tiny_repo, "tiny") == "2"


def test_runner_up_is_accepted_only_for_a_near_tie() -> None:
    expectation = Expectation("m", "1", labels=np.array([4, 4]), runner_up=np.array([9, -1]))

    assert [expectation.accepts(0, 4), expectation.accepts(0, 9), expectation.accepts(0, 1)] == [
        True,
        True,
        False,
    ]
    assert [expectation.accepts(1, 4), expectation.accepts(1, 9)] == [True, False]
