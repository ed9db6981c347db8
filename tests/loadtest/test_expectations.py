"""Offline answers are ONNX Runtime's on the model file, with near-ties accepting either label."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from loadtest.expectations import (
    Expectation,
    latest_version,
    load_answers,
    offline_answers,
    offline_expectation,
    save_answers,
)
from loadtest.fixtures import load_fixture
from loadtest.payloads import encode_png
from serving.codecs.images import decode_image
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


def test_png_answers_are_the_models_argmax_on_the_decoded_pictures(tiny_repo: Path) -> None:
    images = load_fixture().images[:50]
    pixels = images.reshape(-1, 1, 28, 28).astype(np.float32) / np.float32(255.0)

    answers = offline_answers(tiny_repo, ["tiny"], pixels, [encode_png(i) for i in images])

    assert answers.models == ["tiny"]
    assert answers.png["tiny"].version == answers.raw["tiny"].version == "2"
    decoded = np.stack([decode_image(encode_png(image), max_pixels=784) for image in images])
    np.testing.assert_array_equal(
        answers.png["tiny"].labels, tiny_logits(decoded.reshape(-1, 1, 28, 28), seed=1).argmax(1)
    )


def test_saved_answers_load_back_unchanged(tiny_repo: Path, tmp_path: Path) -> None:
    images = load_fixture().images[:20]
    pixels = images.reshape(-1, 1, 28, 28).astype(np.float32) / np.float32(255.0)
    answers = offline_answers(tiny_repo, ["tiny"], pixels, [encode_png(i) for i in images])

    save_answers(tmp_path / "answers.npz", answers)
    loaded = load_answers(tmp_path / "answers.npz")

    for table, loaded_table in ((answers.raw, loaded.raw), (answers.png, loaded.png)):
        assert list(loaded_table) == list(table)
        expected, got = table["tiny"], loaded_table["tiny"]
        assert (got.model, got.version) == (expected.model, expected.version)
        np.testing.assert_array_equal(got.labels, expected.labels)
        np.testing.assert_array_equal(got.runner_up, expected.runner_up)
