"""Throughput and latency table for the README: ``python -m loadtest.bench`` (``make bench``).

Single-image requests to one model (default mnist_mlp) at concurrency 1, 16 and 64,
JSON and octet-stream bodies, against mnist-serve with batching on and with it off,
against a "tutorial-style" FastAPI server (``loadtest/baseline_app.py``), and
against a plain ASGI app with a batcher (``loadtest/plain_app.py``, the ceiling that
shows what mnist-serve's framework and features cost per request), in the same run;
then 256-image requests (v1 octet-stream in, JSON out; and V2 with the binary tensor
extension, UINT8 in and FP32 out) sent back to back, against raw ONNX
Runtime on the same model file with the same thread settings.

Every server is started here at once, each on a free port (or give ``--host`` to
measure a running one), and measured side by side: each concurrency is split into short
rounds that go in turn to every server with every body it takes (its lanes), and the
256-image requests alternate with raw ONNX Runtime the same way. A shared machine's
speed drifts by a third within minutes; alternating makes the drift fall on every lane
alike, so the ratios between rows of one table hold even when the absolute numbers
move. Idle servers cost next to nothing: their timers take about 2 % of one core for
all four.

Load comes from ``wrk`` (1 thread, ``wrk_post.lua``), else from the asyncio
fallback in ``pyload.py``. The load generator shares the machine's cores with the
server: on a 2-core machine wrk takes most of one. This is not a test: it prints
numbers and checks them against the targets without failing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np

from loadtest.expectations import MODEL_FILE, latest_version
from loadtest.fixtures import load_fixture
from loadtest.payloads import Payload, PayloadBuilder
from loadtest.pyload import run_python_load
from loadtest.responses import parse_v1, parse_v2
from loadtest.server import running_server
from serving.codecs.v2 import HEADER_LENGTH

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_post.lua"
BIG_BATCH_IMAGES = 256
# Big-batch bodies measured against raw ONNX Runtime, and the one the target is about.
BIG_BATCH_BODIES = ("octet", "v2-binary")
BIG_BATCH_TARGET_BODY = "v2-binary"
# Single-image bodies of the table; the reference servers take JSON only.
BODIES = ("json", "octet")


def reference_server_command(factory: str) -> list[str]:
    """uvicorn running one of the reference apps (``module:factory``) on ``{port}``."""
    return [
        sys.executable, "-m", "uvicorn", "--factory", factory,
        "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip


BASELINE_COMMAND = reference_server_command("loadtest.baseline_app:create_app_from_env")
PLAIN_COMMAND = reference_server_command("loadtest.plain_app:create_app_from_env")


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


def server_env(args: argparse.Namespace, batching: bool) -> dict[str, str]:
    return {
        "MNIST_SERVE_BATCHING": "true" if batching else "false",
        "MNIST_SERVE_WORKERS": str(args.server_workers),
        "MNIST_SERVE_INTRA_OP_THREADS": str(args.threads),
        **dict(item.split("=", 1) for item in args.server_env),
    }


def run(args: argparse.Namespace, out_dir: Path) -> tuple[list[Point], BigBatch]:
    fixture = load_fixture()
    builder, labels = PayloadBuilder(fixture.images), fixture.labels.tolist()
    version = latest_version(args.models_dir, args.model)
    model_path = args.models_dir / args.model / version / MODEL_FILE
    raw = RawOnnxRuntime(model_path, fixture.pixels()[:BIG_BATCH_IMAGES], args.threads)
    with ExitStack() as servers:
        contenders = start_contenders(args, out_dir, model_path, servers)
        args.clock_origin = time.monotonic()
        points = (
            [] if args.big_batch_only else bench_side_by_side(contenders, builder, labels, args)
        )
        ours = contenders[0]
        return points, bench_big_batch(ours.name, ours.url, builder, labels, raw, args)


def start_contenders(
    args: argparse.Namespace, out_dir: Path, model_path: Path, servers: ExitStack
) -> list[Contender]:
    """The servers of the table, all running until ``servers`` closes; ours first."""
    if args.host:
        return [Contender("given server", args.host, BODIES)]
    models_dir = args.models_dir.resolve()

    def start(log: str, env: dict[str, str], command: list[str] | None = None) -> str:
        return servers.enter_context(
            running_server(models_dir, out_dir / log, env, command=command)
        )

    contenders = [
        Contender(
            "mnist-serve, batching on",
            start("server-batching-on.log", server_env(args, True)),
            BODIES,
        )
    ]
    if args.big_batch_only:
        return contenders
    contenders.append(
        Contender(
            "mnist-serve, batching off",
            start("server-batching-off.log", server_env(args, False)),
            BODIES,
        )
    )
    if not args.no_baseline:
        env = {"BASELINE_MODEL_PATH": str(model_path.resolve())}
        plain_command = [*PLAIN_COMMAND, "--workers", str(args.server_workers)]
        contenders += [
            Contender(
                "baseline (FastAPI+pydantic)",
                start("server-baseline.log", env, BASELINE_COMMAND),
                ("json",),
            ),
            Contender(
                "plain ASGI + batcher",
                start("server-plain.log", env, plain_command),
                ("json",),
            ),
        ]
    return contenders


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from serving.runtime import default_intra_op_threads

    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host", help="Measure this running server only (no batching on/off, no baseline)"
    )
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--model", default="mnist_mlp")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument(
        "--duration-s", type=float, default=10.0, help="Seconds per row (default 10)"
    )
    parser.add_argument(
        "--warmup-s", type=float, default=2.0, help="Unmeasured load before each row"
    )
    parser.add_argument("--server-workers", type=int, default=1, help="MNIST_SERVE_WORKERS")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="ORT intra-op threads, server and raw run (default: CPUs / workers)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="More MNIST_SERVE_* settings for the started servers",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="Rounds each concurrency is split into, alternating between the servers and"
        " bodies, and rounds of 256-image requests alternating with raw ONNX Runtime (default 5)",
    )
    parser.add_argument(
        "--big-batch-only",
        action="store_true",
        help="Only the 256-image requests against raw ONNX Runtime",
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="Skip the tutorial-style server and the plain ASGI ceiling",
    )
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    args.threads = args.threads or default_intra_op_threads(args.server_workers)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = args.results_dir / f"bench-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        args.scratch = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        try:
            points, big = run(args, out_dir)
        except BenchError as error:
            print(f"bench: {error}")
            return 2
    report = format_report(points, big, args)
    (out_dir / "bench.md").write_text(report + "\n")
    results = {"points": [asdict(p) for p in points], "big_batch": asdict(big)}
    (out_dir / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n" + report + f"\n\nsaved: {out_dir}/bench.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
