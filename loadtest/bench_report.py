"""The bench's report: the markdown tables, the targets (measured, not asserted) and
their verdicts, and the files a run saves (``bench.md``, ``bench.json``)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from loadtest.bench_rounds import BIG_BATCH_IMAGES, BODIES, BigBatch, Point

# The big-batch body the target is about.
BIG_BATCH_TARGET_BODY = "v2-binary"


def find(points: list[Point], server_prefix: str, body: str, concurrency: int) -> Point | None:
    return next(
        (
            point
            for point in points
            if point.server.startswith(server_prefix)
            and point.body == body
            and point.concurrency == concurrency
        ),
        None,
    )


BIG_BATCH_LABELS = {
    "octet": "v1, octet-stream in, JSON out",
    "v2-binary": "V2 binary tensors, UINT8 in, FP32 out",
}


def format_report(points: list[Point], big: BigBatch, args: argparse.Namespace) -> str:
    lines = [
        f"Model {args.model}, single-image requests, {args.duration_s:g} s per server, body and "
        f"concurrency in {args.rounds} rounds alternating between the servers and bodies, "
        f"load from {'wrk (1 thread)' if shutil.which('wrk') else 'pyload.py (asyncio)'} "
        f"on the same {os.cpu_count()}-core machine; server: {args.server_workers} worker(s), "
        f"{args.threads} ORT intra-op thread(s).",
    ]
    if points:
        # Grouped by server as measured first (ours first), then body; concurrency in order.
        servers = list(dict.fromkeys(point.server for point in points))
        lines += [
            "",
            "| server | body | concurrency | req/s | rounds: min-max | p50 ms | p99 ms | errors |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {p.server} | {p.body} | {p.concurrency} | {p.rps:,.0f} "
            f"| {min(p.round_rps):,.0f}-{max(p.round_rps):,.0f} | {p.p50_ms:.2f} "
            f"| {p.p99_ms:.2f} | {p.errors} |"
            for p in sorted(points, key=lambda p: (servers.index(p.server), BODIES.index(p.body)))
        ]
    lines += [
        "",
        f"One {BIG_BATCH_IMAGES}-image request at a time, {args.rounds} rounds alternating with "
        "raw ONNX Runtime:",
        "",
        "| 256-image request | p50 ms | images/s | % of raw ONNX Runtime (rounds: min-max) "
        "| errors |",
        "|---|---:|---:|---:|---:|",
    ]
    for point in big.points:
        ratios = big.round_ratios[point.body]
        lines.append(
            f"| {BIG_BATCH_LABELS[point.body]} | {point.p50_ms:.2f} | {point.images_per_s:,.0f} "
            f"| {100 * big.ratio(point.body):.0f}% ({100 * min(ratios):.0f}-"
            f"{100 * max(ratios):.0f}%) | {point.errors} |"
        )
    lines.append(
        f"| raw ONNX Runtime session.run, same model file and threads | "
        f"{1000 * BIG_BATCH_IMAGES / big.raw_images_per_s:.2f} | {big.raw_images_per_s:,.0f} "
        "| 100% | |"
    )
    lines += ["", "Targets (measured, not asserted):"]
    lines += [f"- {line}" for line in target_lines(points, big)]
    return "\n".join(lines)


def target_lines(points: list[Point], big: BigBatch) -> list[str]:
    ours = (
        "given server"
        if any(p.server == "given server" for p in points)
        else "mnist-serve, batching on"
    )
    c64, c1 = find(points, ours, "json", 64), find(points, ours, "json", 1)
    baseline = find(points, "baseline", "json", 64)
    plain = find(points, "plain ASGI", "json", 64)
    lines = []
    if c64:
        met = c64.rps >= 6000 and c64.p99_ms <= 30
        lines.append(
            f"JSON, concurrency 64: {c64.rps:,.0f} req/s, p99 {c64.p99_ms:.1f} ms "
            f"(target >= 6,000 req/s, p99 <= 30 ms): {verdict(met, c64.errors)}"
        )
    if c1:
        lines.append(
            f"JSON, concurrency 1: {c1.rps:,.0f} req/s (target >= 1,500): "
            f"{verdict(c1.rps >= 1500, c1.errors)}"
        )
    ratio = big.ratio(BIG_BATCH_TARGET_BODY)
    target_point = next(p for p in big.points if p.body == BIG_BATCH_TARGET_BODY)
    lines.append(
        f"256-image binary request ({BIG_BATCH_LABELS[BIG_BATCH_TARGET_BODY]}): "
        f"{100 * ratio:.0f}% of raw ONNX Runtime images/s (target >= 70%): "
        f"{verdict(ratio >= 0.7, target_point.errors)}"
    )
    if c64 and plain:
        lines.append(
            f"vs the plain ASGI app with a batcher at concurrency 64 (the ceiling): "
            f"{100 * c64.rps / plain.rps:.0f}% of its req/s ({plain.rps:,.0f}), p99 "
            f"{plain.p99_ms:.1f} -> {c64.p99_ms:.1f} ms"
        )
    if c64 and baseline:
        lines.append(
            f"vs the tutorial-style baseline at concurrency 64: "
            f"{c64.rps / baseline.rps:.1f}x the req/s, p99 {baseline.p99_ms:.1f} -> "
            f"{c64.p99_ms:.1f} ms"
        )
    return lines


def verdict(is_met: bool, errors: int) -> str:
    """A target measured with errors is missed, whatever the numbers."""
    if errors:
        return f"MISSED ({errors} errors)"
    return "met" if is_met else "MISSED"


def save_results(out_dir: Path, report: str, points: list[Point], big: BigBatch) -> None:
    """The report as ``bench.md`` and every number as ``bench.json`` in ``out_dir``."""
    (out_dir / "bench.md").write_text(report + "\n")
    results = {"points": [asdict(p) for p in points], "big_batch": asdict(big)}
    (out_dir / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
