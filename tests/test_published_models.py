"""The committed models in models/ meet their accuracy targets and match their cards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from serving.card import MODEL_FILE, ModelCard, file_sha256
from tests.support import PUBLISHED_MODELS
from training.data import OFFICIAL, Mnist

# Official-test-set accuracy each published model family must reach.
TARGET_ACCURACY = {"mnist_mlp": 0.985, "mnist_cnn": 0.992}
PUBLISHED = sorted(path.parent for path in PUBLISHED_MODELS.glob(f"*/*/{MODEL_FILE}"))


@pytest.fixture(scope="module")
def measured_accuracy(mnist: Mnist) -> dict[Path, float]:
    """ONNX Runtime accuracy of every published version on the 10,000 test images."""
    images = (mnist.test_images.astype(np.float32) / 255.0)[:, None]
    accuracies = {}
    for version_dir in PUBLISHED:
        session = ort.InferenceSession(
            str(version_dir / MODEL_FILE), providers=["CPUExecutionProvider"]
        )
        logits = session.run(["logits"], {"input": images})[0]
        accuracies[version_dir] = float((logits.argmax(1) == mnist.test_labels).mean())
    return accuracies


def test_both_published_families_are_present() -> None:
    assert {path.parent.name for path in PUBLISHED} >= set(TARGET_ACCURACY)


@pytest.mark.parametrize("version_dir", PUBLISHED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_published_model_meets_its_accuracy_target(
    version_dir: Path, measured_accuracy: dict[Path, float]
) -> None:
    target = TARGET_ACCURACY.get(version_dir.parent.name, 0.9)

    assert measured_accuracy[version_dir] >= target


@pytest.mark.parametrize("version_dir", PUBLISHED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_published_card_matches_file_and_measurement(
    version_dir: Path, measured_accuracy: dict[Path, float]
) -> None:
    card = ModelCard.read(version_dir)

    assert card.name == version_dir.parent.name
    assert card.version == int(version_dir.name)
    assert card.model_sha256 == file_sha256(version_dir / MODEL_FILE)
    assert card.data_sha256 == OFFICIAL.sha256
    assert card.metrics["test_accuracy_onnxruntime"] == measured_accuracy[version_dir]
    assert card.parity["argmax_mismatches"] == 0
    assert card.parity["images"] == 10000
