"""The bench's measurements: wrk runs in alternating rounds, and 256-image requests
against raw ONNX Runtime.

``bench.py`` explains the method, starts the servers and prints the report; this module
loads them. Each concurrency is a row of short rounds that give every lane (one server,
one body) a slice in turn; the 256-image requests take turns with ``RawOnnxRuntime``
the same way. Load comes from ``wrk`` (1 thread, ``wrk_post.lua``), else from the
asyncio fallback in ``pyload.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from loadtest.payloads import Payload, PayloadBuilder
from loadtest.pyload import run_python_load
from loadtest.responses import parse_v1, parse_v2
from serving.codecs.v2 import HEADER_LENGTH

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_post.lua"
BIG_BATCH_IMAGES = 256
# Single-image bodies of the table; the reference servers take JSON only.
BODIES = ("json", "octet")


@dataclass(frozen=True)
class BigBatch:
    """256-image requests and raw ONNX Runtime, measured in alternating rounds."""

    points: list[Point]
    raw_images_per_s: float
    # Per body: each round's images/s divided by that round's raw images/s.
    round_ratios: dict[str, list[float]]

    def ratio(self, body: str) -> float:
        point = next(point for point in self.points if point.body == body)
        return point.images_per_s / self.raw_images_per_s


@dataclass(frozen=True)
class Point:
    """One measured load: what was served, how, and what came back."""

    server: str
    body: str
    concurrency: int
    images_per_request: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    # Each round's req/s, and when it started (seconds since the first round of the run).
    round_rps: tuple[float, ...] = ()
    round_started_s: tuple[float, ...] = ()

    @property
    def images_per_s(self) -> float:
        return self.rps * self.images_per_request


@dataclass(frozen=True)
class Contender:
    """A server of the table: its name in the report, its URL, the bodies it accepts."""

    name: str
    url: str
    bodies: tuple[str, ...]


@dataclass(frozen=True)
class Lane:
    """One server and one body: what a round of a row gives a slice of its time to."""

    contender: Contender
    body: str
    payload: Payload


def generate_load(
    url: str, payload: Payload, connections: int, duration_s: float, body_file: Path
) -> dict[str, float]:
    """Closed-loop POSTs of ``payload`` on ``connections`` connections: wrk's numbers."""
    if shutil.which("wrk") is None:
        return run_python_load(url, payload.body, payload.headers, connections, duration_s)
    body_file.write_bytes(payload.body)
    extra_headers = payload.extra_headers.items()
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--timeout", "10s",
        "-s", str(WRK_SCRIPT), url,
    ]  # fmt: skip
    env = {
        **os.environ,
        "BENCH_BODY_FILE": str(body_file),
        "BENCH_CONTENT_TYPE": payload.content_type,
        "BENCH_HEADERS": "\n".join(f"{name}: {value}" for name, value in extra_headers),
    }
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("BENCH_RESULT "))
    return json.loads(line.removeprefix("BENCH_RESULT "))


class BenchError(Exception):
    """The bench cannot be run; the message is one line for the person running it."""


def check_answer(base_url: str, payload: Payload, labels: list[int]) -> None:
    """One request first: the server must answer the right number of digits in 0-9."""
    url = base_url + payload.path
    request = urllib.request.Request(url, data=payload.body, headers=payload.headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body, header_length = response.read(), response.headers.get(HEADER_LENGTH)
    except urllib.error.HTTPError as error:
        raise BenchError(f"{url} answered {error.code} to the check request") from error
    except urllib.error.URLError as error:
        raise BenchError(f"no server answering at {base_url} ({error.reason})") from error
    if payload.path.startswith("/v2/"):
        length = None if header_length is None else int(header_length)
        answer = parse_v2(body, len(payload.indices), header_length=length)
    else:
        answer = parse_v1(body, len(payload.indices))
    correct = sum(
        served == labels[index]
        for served, index in zip(answer.labels, payload.indices, strict=True)
    )
    if correct < 0.9 * len(payload.indices):
        raise BenchError(f"{base_url}: only {correct} of {len(payload.indices)} labels correct")


def measure_row(lanes: list[Lane], concurrency: int, args: argparse.Namespace) -> list[Point]:
    """One concurrency on every lane: warm each up, then ``args.rounds`` rounds, each giving
    every lane one slice of the row's duration in turn, so that servers and bodies alike
    are compared within seconds of each other."""
    if args.warmup_s > 0:
        for lane in lanes:
            url = lane.contender.url + lane.payload.path
            generate_load(url, lane.payload, concurrency, args.warmup_s, args.scratch / "body")
    slice_s = max(1.0, args.duration_s / args.rounds)
    results: list[list[dict[str, float]]] = [[] for _ in lanes]
    started: list[list[float]] = [[] for _ in lanes]
    for _ in range(args.rounds):
        for lane, lane_results, lane_started in zip(lanes, results, started, strict=True):
            lane_started.append(time.monotonic() - args.clock_origin)
            url = lane.contender.url + lane.payload.path
            load = generate_load(url, lane.payload, concurrency, slice_s, args.scratch / "body")
            lane_results.append(load)
    points = []
    for lane, rounds, lane_started in zip(lanes, results, started, strict=True):
        point = replace(
            to_point(lane.contender.name, lane.body, concurrency, lane.payload, combine(rounds)),
            round_rps=tuple(successful_rps(load) for load in rounds),
            round_started_s=tuple(lane_started),
        )
        print(
            f"  {point.server:<28} {lane.body:<6} c={concurrency:<3} {point.rps:9.0f} req/s "
            f"(rounds {min(point.round_rps):.0f}-{max(point.round_rps):.0f})  "
            f"p50 {point.p50_ms:6.2f} ms  p99 {point.p99_ms:6.2f} ms  errors {point.errors}",
            flush=True,
        )
        points.append(point)
    return points


def to_point(
    server: str, body: str, concurrency: int, payload: Payload, result: dict[str, float]
) -> Point:
    """One load's wrk numbers as a row of the report."""
    errors = sum(
        int(result[key])
        for key in ("status_errors", "connect_errors", "read_errors", "write_errors", "timeouts")
    )
    return Point(
        server=server,
        body=body,
        concurrency=concurrency,
        images_per_request=len(payload.indices),
        rps=successful_rps(result),
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        errors=errors,
    )


def successful_rps(result: dict[str, float]) -> float:
    """Answers with a 2xx status per second: wrk (and pyload) count refused ones in
    ``requests`` and in ``status_errors`` both; a 503 is not throughput."""
    return (result["requests"] - result["status_errors"]) / (result["duration_us"] / 1e6)


class RawOnnxRuntime:
    """ONNX Runtime alone on one batch, with the server's session settings: the yardstick."""

    def __init__(self, model_path: Path, images: np.ndarray, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )
        self._feed = {self._session.get_inputs()[0].name: images}
        self.measure(0.0)  # warm-up

    def measure(self, min_s: float) -> tuple[int, float]:
        """Back-to-back runs for at least ``min_s`` (and 10 runs): (images, seconds)."""
        runs, started = 0, time.perf_counter()
        while runs < 10 or time.perf_counter() - started < min_s:
            self._session.run(None, self._feed)
            runs += 1
        return runs * len(next(iter(self._feed.values()))), time.perf_counter() - started


def bench_side_by_side(
    contenders: list[Contender],
    builder: PayloadBuilder,
    labels: list[int],
    args: argparse.Namespace,
) -> list[Point]:
    """Every concurrency, measured on every contender with every body it accepts, alternating."""
    payloads = {
        "json": builder.v1_json(args.model, (0,)),
        "octet": builder.v1_octet(args.model, (0,)),
    }
    lanes = [
        Lane(contender, body, payloads[body])
        for contender in contenders
        for body in BODIES
        if body in contender.bodies
    ]
    for lane in lanes:
        check_answer(lane.contender.url, lane.payload, labels)
    points = []
    for concurrency in args.concurrency:
        points += measure_row(lanes, concurrency, args)
    return points


def bench_big_batch(
    server: str,
    base_url: str,
    builder: PayloadBuilder,
    labels: list[int],
    raw: RawOnnxRuntime,
    args: argparse.Namespace,
) -> BigBatch:
    """256-image requests, one at a time, alternating with raw ONNX Runtime in rounds."""
    indices = tuple(range(BIG_BATCH_IMAGES))
    payloads = {
        "octet": builder.v1_octet(args.model, indices),
        "v2-binary": builder.v2_binary(args.model, indices),
    }
    for body, payload in payloads.items():
        check_answer(base_url, payload, labels)
        if args.warmup_s > 0:
            generate_load(base_url + payload.path, payload, 1, args.warmup_s, args.scratch / body)
    slice_s = max(1.0, args.duration_s / args.rounds)
    results: dict[str, list[dict[str, float]]] = {body: [] for body in payloads}
    raw_rounds: list[tuple[int, float]] = []
    for _ in range(args.rounds):
        for body, payload in payloads.items():
            url = base_url + payload.path
            results[body].append(generate_load(url, payload, 1, slice_s, args.scratch / body))
        raw_rounds.append(raw.measure(slice_s))
    raw_images_per_s = sum(images for images, _ in raw_rounds) / sum(s for _, s in raw_rounds)
    points, round_ratios = [], {}
    for body, rounds in results.items():
        points.append(to_point(server, body, 1, payloads[body], combine(rounds)))
        round_ratios[body] = [
            BIG_BATCH_IMAGES * successful_rps(result) / (images / s)
            for result, (images, s) in zip(rounds, raw_rounds, strict=True)
        ]
    big = BigBatch(points, raw_images_per_s, round_ratios)
    for point in points:
        print(
            f"  {server:<28} {point.body:<9} 256 images  {point.images_per_s:9.0f} images/s  "
            f"p50 {point.p50_ms:6.2f} ms  {100 * big.ratio(point.body):.0f}% of raw ONNX Runtime "
            f"({raw_images_per_s:.0f} images/s)",
            flush=True,
        )
    return big


def combine(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Several wrk runs of one load as one: summed counts, the median round's percentiles."""
    combined = {key: sum(result[key] for result in rounds) for key in rounds[0]}
    for key in ("p50_us", "p90_us", "p99_us", "mean_us"):
        combined[key] = float(np.median([result[key] for result in rounds]))
    combined["max_us"] = max(result["max_us"] for result in rounds)
    return combined
