"""The run summary: Locust's numbers and the served accuracy, as JSON and as a table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importing locust monkey-patches the process with gevent: types only
    from locust.stats import RequestStats, StatsEntry

_MAX_ERRORS_SHOWN = 10


def entry_row(entry: StatsEntry) -> dict[str, Any]:
    requests = entry.num_requests
    return {
        "name": entry.name,
        "method": entry.method or "",
        "requests": requests,
        "failures": entry.num_failures,
        "failure_ratio": entry.num_failures / requests if requests else 0.0,
        "rps": round(entry.total_rps, 2),
        "p50_ms": entry.get_response_time_percentile(0.50) if requests else 0.0,
        "p95_ms": entry.get_response_time_percentile(0.95) if requests else 0.0,
        "p99_ms": entry.get_response_time_percentile(0.99) if requests else 0.0,
    }


def summarise_stats(stats: RequestStats) -> dict[str, Any]:
    """Per request name, the total, and the most frequent failure messages."""
    rows = [entry_row(entry) for _, entry in sorted(stats.entries.items())]
    errors = sorted(stats.errors.values(), key=lambda error: -error.occurrences)
    return {
        "requests": rows,
        "total": entry_row(stats.total),
        "errors": [
            {"name": error.name, "error": str(error.error), "occurrences": error.occurrences}
            for error in errors[:_MAX_ERRORS_SHOWN]
        ],
    }


def format_summary(summary: dict[str, Any]) -> str:
    """Markdown tables: requests, then served accuracy, then errors and the verdict."""
    lines = [
        "| request | requests | failures | req/s | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in [*summary["requests"], {**summary["total"], "name": "**total**"}]:
        lines.append(
            f"| {row['name']} | {row['requests']} | {row['failures']} | {row['rps']:.1f} "
            f"| {row['p50_ms']:.0f} | {row['p95_ms']:.0f} | {row['p99_ms']:.0f} |"
        )
    lines += [
        "",
        "| model | input path | images | served accuracy % | offline raw-pixel accuracy % "
        "| drop (points) | same label as offline % |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in summary["accuracy"]:
        lines.append(
            f"| {row['model']} | {row['path']} | {row['images']} | {row['served_accuracy']:.2f} "
            f"| {row['offline_accuracy']:.2f} | {row['drop_points']:.2f} | {row['agreement']:.2f} |"
        )
    if summary["errors"]:
        lines += ["", "Failures (most frequent first):"]
        lines += [
            f"- {error['occurrences']} x {error['name']}: {error['error']}"
            for error in summary["errors"]
        ]
    lines.append("")
    if summary["violations"]:
        lines.append("FAILED thresholds:")
        lines += [f"- {violation}" for violation in summary["violations"]]
    else:
        lines.append("PASSED all thresholds.")
    return "\n".join(lines)
