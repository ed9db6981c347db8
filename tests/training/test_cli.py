"""The `python -m training` commands the Makefile and the docs show."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.card import ModelCard
from training.__main__ import main
from training.data import CACHE_FILE, OFFICIAL, Mnist


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


def run_failing(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """(exit status, stderr) of a command expected to stop with SystemExit."""
    with pytest.raises(SystemExit) as exited:
        main(arguments)
    return exited.value.code, capsys.readouterr().err


def corrupted_cache(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CACHE_FILE).write_bytes(b"PK\x03\x04 not really a zip")
    return directory


def test_unusable_out_is_refused_before_the_data_is_loaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.touch()
    out = blocker / "models"
    # A corrupted cache fails the run as soon as the data is loaded: out must be checked first.
    arguments = ["train", "--model", "mnist_linear", "--out", str(out)]
    arguments += ["--cache-dir", str(corrupted_cache(tmp_path / "cache"))]

    status, stderr = run_failing(arguments, capsys)

    assert status == 2
    assert stderr.splitlines() == [
        f"training: error: cannot publish to {out / 'mnist_linear'}: {blocker} is not a directory"
    ]


def test_corrupted_cache_is_one_error_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache_dir = corrupted_cache(tmp_path)

    status, stderr = run_failing(["data", "--cache-dir", str(cache_dir)], capsys)

    assert status == 2
    assert len(stderr.splitlines()) == 1
    assert stderr.startswith(
        f"training: error: cached MNIST at {cache_dir / CACHE_FILE} is corrupted"
    )


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--epochs", "0", "must be at least 1, got 0"),
        ("--batch-size", "0", "must be at least 1, got 0"),
        ("--threads", "0", "must be at least 1, got 0"),
        ("--hidden", "0", "must be at least 1, got 0"),
        ("--shift-px", "-1", "must be at least 0, got -1"),
        ("--seed", "-1", "must be at least 0, got -1"),
        ("--train-images-limit", "4000", "must be at least 5001 (the last 5000 training"),
        ("--epochs", "two", "expected an integer, got 'two'"),
        ("--max-lr", "0", "must be a finite number > 0, got 0"),
        ("--dropout", "1.5", "must be a finite number >= 0 and < 1, got 1.5"),
        ("--weight-decay", "nan", "must be a finite number >= 0, got nan"),
    ],
)
def test_out_of_range_number_is_a_usage_error(
    flag: str, value: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Quick settings, so a value that slipped through would fail or finish fast.
    arguments = ["train", "--model", "mnist_mlp", "--epochs", "1", "--hidden", "8"]
    arguments += ["--train-images-limit", "6000", "--out", str(tmp_path), flag, value]

    status, stderr = run_failing(arguments, capsys)

    assert status == 2
    assert f"error: argument {flag}: {message}" in stderr
    assert not (tmp_path / "mnist_mlp").exists()


def test_flag_the_model_does_not_take_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ["train", "--model", "mnist_linear", "--hidden", "512", "256", "--dropout", "0.5"]
    arguments += ["--epochs", "1", "--train-images-limit", "6000", "--out", str(tmp_path)]

    status, stderr = run_failing(arguments, capsys)

    assert status == 2
    assert stderr.splitlines() == [
        "training: error: mnist_linear does not take hidden, dropout (it takes none)"
    ]
    assert not (tmp_path / "mnist_linear").exists()
