"""Pass/fail limits for a load-test run, from ``thresholds.toml`` and flags.

``evaluate`` turns a run summary into a list of violations; an empty list passes.
A limit left unset (None) is not checked.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from loadtest.tally import PNG, RAW

THRESHOLDS_PATH = Path(__file__).resolve().parent / "thresholds.toml"


@dataclass(frozen=True)
class Thresholds:
    max_failure_ratio: float | None = 0.0
    max_p99_ms: float | None = None
    min_rps: float | None = None
    max_accuracy_drop_points: float | None = 0.5
    max_png_accuracy_drop_points: float | None = None


def load_thresholds(
    profile: str = "default",
    path: Path = THRESHOLDS_PATH,
    overrides: dict[str, float | None] | None = None,
) -> Thresholds:
    """The ``[profile]`` table of ``path``, then every non-None override on top.

    Raises ``ValueError`` naming the problem: no such file or table, bad TOML, an unknown
    key, a value that is not a number.
    """
    try:
        tables = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"thresholds file {path}: {error}") from error
    if profile not in tables:
        raise ValueError(f"no [{profile}] table in {path}; have {sorted(tables)}")
    known = {item.name for item in fields(Thresholds)}
    unknown = set(tables[profile]) - known
    if unknown:
        raise ValueError(f"unknown keys in [{profile}] of {path}: {sorted(unknown)}")
    for key, value in tables[profile].items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"[{profile}] of {path}: {key} = {value!r} is not a number")
    # A key absent from the table is not checked, whatever the dataclass default.
    values: dict[str, Any] = dict.fromkeys(known)
    values.update(tables[profile])
    values.update({key: value for key, value in (overrides or {}).items() if value is not None})
    return replace(Thresholds(), **values)


def evaluate(summary: dict[str, Any], limits: Thresholds) -> list[str]:
    """Every limit the run missed, as a sentence; ``summary`` is what the locustfile writes."""
    total = summary["total"]
    violations = []
    if total["requests"] == 0:
        violations.append("no requests were made")
    if limits.max_failure_ratio is not None and total["failure_ratio"] > limits.max_failure_ratio:
        violations.append(
            f"failure ratio {total['failure_ratio']:.4f} > {limits.max_failure_ratio} "
            f"({total['failures']} of {total['requests']} requests failed)"
        )
    if limits.max_p99_ms is not None and total["p99_ms"] > limits.max_p99_ms:
        violations.append(f"p99 {total['p99_ms']:.0f} ms > {limits.max_p99_ms:g} ms")
    if limits.min_rps is not None and total["rps"] < limits.min_rps:
        violations.append(f"{total['rps']:.1f} requests/s < {limits.min_rps:g}")
    for row in summary["accuracy"]:
        limit = {
            RAW: limits.max_accuracy_drop_points,
            PNG: limits.max_png_accuracy_drop_points,
        }[row["path"]]
        if limit is not None and row["drop_points"] > limit:
            violations.append(
                f"{row['model']} ({row['path']}): served accuracy {row['served_accuracy']:.2f}% "
                f"is {row['drop_points']:.2f} points below offline "
                f"{row['offline_accuracy']:.2f}% (limit {limit:g}) over {row['images']} images"
            )
    return violations
