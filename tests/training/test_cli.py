"""The `python -m training` commands the Makefile and the docs show."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.card import ModelCard
from training.__main__ import main
from training.data import OFFICIAL, Mnist


def test_data_command_prints_the_verified_sha256(
    mnist: Mnist, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data"]) == 0

    assert OFFICIAL.sha256 in capsys.readouterr().out


def test_train_command_publishes_a_version_with_the_flags_it_was_given(
    mnist: Mnist, tmp_path: Path
) -> None:
    arguments = ["train", "--model", "mnist_mlp", "--hidden", "32", "--epochs", "1"]
    arguments += ["--train-images-limit", "7000", "--seed", "7", "--out", str(tmp_path)]

    assert main(arguments) == 0

    card = ModelCard.read(tmp_path / "mnist_mlp" / "1")
    assert card.architecture["hidden"] == [32]
    assert (card.training["epochs"], card.training["seed"]) == (1, 7)
    assert card.training["train_images_limit"] == 7000
    assert card.metrics["test_accuracy_onnxruntime"] > 0.2  # chance is 0.1
