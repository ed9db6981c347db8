"""Thresholds come from the TOML profile and flags; evaluate names every limit missed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loadtest.tally import PNG, RAW
from loadtest.thresholds import Thresholds, evaluate, load_thresholds


def summary(*, requests: int = 1000, failures: int = 0, p99_ms: float = 20.0, rps: float = 500.0,
            raw_drop: float = 0.0, png_drop: float = 0.0) -> dict[str, Any]:  # fmt: skip
    def accuracy(path: str, drop: float) -> dict[str, Any]:
        return {"model": "mnist_mlp", "path": path, "images": 500, "served_accuracy": 98.0 - drop,
                "offline_accuracy": 98.0, "drop_points": drop, "agreement": None}  # fmt: skip

    total = {"requests": requests, "failures": failures, "failure_ratio": failures / requests,
             "p99_ms": p99_ms, "rps": rps}  # fmt: skip
    return {"total": total, "accuracy": [accuracy(RAW, raw_drop), accuracy(PNG, png_drop)]}


LIMITS = Thresholds(
    max_failure_ratio=0.0,
    max_p99_ms=30.0,
    min_rps=100.0,
    max_accuracy_drop_points=0.5,
    max_png_accuracy_drop_points=3.0,
)


def test_a_run_within_every_limit_has_no_violations() -> None:
    assert evaluate(summary(raw_drop=0.5, png_drop=2.9), LIMITS) == []


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        (summary(failures=1), "failure ratio 0.0010 > 0.0"),
        (summary(p99_ms=31.0), "p99 31 ms > 30 ms"),
        (summary(rps=99.0), "99.0 requests/s < 100"),
        (summary(raw_drop=0.6), "mnist_mlp (raw pixels): served accuracy 97.40%"),
        (summary(png_drop=3.5), "mnist_mlp (png): served accuracy 94.50%"),
    ],
)
def test_each_missed_limit_is_reported(run: dict[str, Any], expected: str) -> None:
    violations = evaluate(run, LIMITS)

    assert len(violations) == 1
    assert violations[0].startswith(expected)


def test_unset_limits_are_not_checked() -> None:
    run = summary(failures=500, p99_ms=9e9, rps=0.1, raw_drop=50.0, png_drop=50.0)

    assert evaluate(run, Thresholds(None, None, None, None, None)) == []


def test_profile_keys_absent_from_the_file_are_unchecked_and_flags_override(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.toml"
    path.write_text("[ci]\nmax_failure_ratio = 0.01\nmax_p99_ms = 100\n")

    limits = load_thresholds("ci", path, {"max_p99_ms": 50.0, "min_rps": None})

    assert limits == Thresholds(0.01, 50.0, None, None, None)


def test_unknown_key_in_the_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.toml"
    path.write_text("[default]\nmax_p99 = 100\n")

    with pytest.raises(ValueError, match=r"unknown keys .*max_p99"):
        load_thresholds("default", path)


def test_a_value_that_is_not_a_number_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.toml"
    path.write_text('[default]\nmax_p99_ms = "fast"\n')

    with pytest.raises(ValueError, match=r"max_p99_ms = 'fast' .* not a number"):
        load_thresholds("default", path)


def test_committed_profiles_load() -> None:
    assert load_thresholds("smoke").max_failure_ratio == 0.0
    assert load_thresholds("default").max_accuracy_drop_points == 0.5
