"""Throughput and latency table for the README: ``python -m loadtest.bench`` (``make bench``).

Single-image requests to one model (default mnist_mlp) at concurrency 1, 16 and 64,
JSON and octet-stream bodies, against mnist-serve with batching on and with it off,
and against a "tutorial-style" FastAPI server (``loadtest/baseline_app.py``) in the
same run; then one 256-image octet-stream request's images/s against raw ONNX
Runtime on the same model file with the same thread settings. Each server is
started here, alone, on a free port (or give ``--host`` to measure a running one).

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
import urllib.request
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from loadtest.expectations import MODEL_FILE, latest_version
from loadtest.fixtures import load_fixture
from loadtest.payloads import Payload, PayloadBuilder
from loadtest.pyload import run_python_load
from loadtest.responses import parse_v1
from loadtest.server import running_server

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_post.lua"
BIG_BATCH_IMAGES = 256
BASELINE_COMMAND = [
    sys.executable, "-m", "uvicorn", "--factory", "loadtest.baseline_app:create_app_from_env",
    "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning", "--no-access-log",
]  # fmt: skip


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

    @property
    def images_per_s(self) -> float:
        return self.rps * self.images_per_request


def generate_load(
    url: str, payload: Payload, connections: int, duration_s: float, body_file: Path
) -> dict[str, float]:
    """Closed-loop POSTs of ``payload`` on ``connections`` connections: wrk's numbers."""
    if shutil.which("wrk") is None:
        return run_python_load(url, payload.body, payload.content_type, connections, duration_s)
    body_file.write_bytes(payload.body)
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--timeout", "10s",
        "-s", str(WRK_SCRIPT), url,
    ]  # fmt: skip
    env = {
        **os.environ,
        "BENCH_BODY_FILE": str(body_file),
        "BENCH_CONTENT_TYPE": payload.content_type,
    }
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("BENCH_RESULT "))
    return json.loads(line.removeprefix("BENCH_RESULT "))


def check_answer(base_url: str, payload: Payload, labels: list[int]) -> None:
    """One request first: the server must answer the right number of digits in 0-9."""
    request = urllib.request.Request(
        base_url + payload.path, data=payload.body, headers={"Content-Type": payload.content_type}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = parse_v1(response.read(), len(payload.indices))
    correct = sum(
        served == labels[index]
        for served, index in zip(answer.labels, payload.indices, strict=True)
    )
    if correct < 0.9 * len(payload.indices):
        raise RuntimeError(f"{base_url}: only {correct} of {len(payload.indices)} labels correct")


def measure(
    server: str,
    base_url: str,
    payload: Payload,
    body: str,
    concurrency: int,
    args: argparse.Namespace,
) -> Point:
    url = base_url + payload.path
    if args.warmup_s > 0:
        generate_load(url, payload, concurrency, args.warmup_s, args.scratch / "body")
    result = generate_load(url, payload, concurrency, args.duration_s, args.scratch / "body")
    errors = sum(
        int(result[key])
        for key in ("status_errors", "connect_errors", "read_errors", "write_errors", "timeouts")
    )
    point = Point(
        server=server,
        body=body,
        concurrency=concurrency,
        images_per_request=len(payload.indices),
        rps=result["requests"] / (result["duration_us"] / 1e6),
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        errors=errors,
    )
    print(
        f"  {server:<28} {body:<6} c={concurrency:<3} {point.rps:9.0f} req/s  "
        f"p50 {point.p50_ms:6.2f} ms  p99 {point.p99_ms:6.2f} ms  errors {errors}",
        flush=True,
    )
    return point


def raw_onnxruntime_images_per_s(
    model_path: Path, images: np.ndarray, threads: int, min_s: float
) -> float:
    """ONNX Runtime alone on one batch, same thread settings as the server, timed over many runs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: images}
    for _ in range(10):
        session.run(None, feed)
    runs, started = 0, time.perf_counter()
    while runs < 50 or time.perf_counter() - started < min_s:
        session.run(None, feed)
        runs += 1
    return runs * len(images) / (time.perf_counter() - started)


def bench_server(
    server: str,
    base_url: str,
    builder: PayloadBuilder,
    labels: list[int],
    bodies: list[str],
    args: argparse.Namespace,
) -> list[Point]:
    payloads = {
        "json": builder.v1_json(args.model, (0,)),
        "octet": builder.v1_octet(args.model, (0,)),
    }
    points = []
    for body in bodies:
        check_answer(base_url, payloads[body], labels)
        points += [
            measure(server, base_url, payloads[body], body, concurrency, args)
            for concurrency in args.concurrency
        ]
    return points


def bench_big_batch(
    server: str, base_url: str, builder: PayloadBuilder, labels: list[int], args: argparse.Namespace
) -> Point:
    payload = builder.v1_octet(args.model, tuple(range(BIG_BATCH_IMAGES)))
    check_answer(base_url, payload, labels)
    return measure(server, base_url, payload, "octet", 1, args)


def server_env(args: argparse.Namespace, batching: bool) -> dict[str, str]:
    return {
        "MNIST_SERVE_BATCHING": "true" if batching else "false",
        "MNIST_SERVE_WORKERS": str(args.server_workers),
        "MNIST_SERVE_INTRA_OP_THREADS": str(args.threads),
        **dict(item.split("=", 1) for item in args.server_env),
    }


def run(args: argparse.Namespace, out_dir: Path) -> tuple[list[Point], Point | None, float]:
    fixture = load_fixture()
    builder, labels = PayloadBuilder(fixture.images), fixture.labels.tolist()
    version = latest_version(args.models_dir, args.model)
    model_path = args.models_dir / args.model / version / MODEL_FILE
    points: list[Point] = []
    big: Point | None = None
    if args.host:
        points += bench_server("given server", args.host, builder, labels, ["json", "octet"], args)
        big = bench_big_batch("given server", args.host, builder, labels, args)
    for batching in [] if args.host else [True, False]:
        name = f"mnist-serve, batching {'on' if batching else 'off'}"
        log = out_dir / f"server-batching-{'on' if batching else 'off'}.log"
        with running_server(args.models_dir.resolve(), log, server_env(args, batching)) as url:
            points += bench_server(name, url, builder, labels, ["json", "octet"], args)
            if batching:
                big = bench_big_batch(name, url, builder, labels, args)
    if not args.host and not args.no_baseline:
        env = {"BASELINE_MODEL_PATH": str(model_path.resolve())}
        log = out_dir / "server-baseline.log"
        with running_server(args.models_dir, log, env, command=BASELINE_COMMAND) as url:
            points += bench_server(
                "baseline (FastAPI+pydantic)", url, builder, labels, ["json"], args
            )
    print(f"  raw ONNX Runtime, {BIG_BATCH_IMAGES}-image batch, {args.threads} threads", flush=True)
    raw = raw_onnxruntime_images_per_s(
        model_path, fixture.pixels()[:BIG_BATCH_IMAGES], args.threads, args.duration_s
    )
    return points, big, raw


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


def format_report(
    points: list[Point], big: Point | None, raw: float, args: argparse.Namespace
) -> str:
    lines = [
        f"Model {args.model}, single-image requests, {args.duration_s:g} s per row, "
        f"load from {'wrk (1 thread)' if shutil.which('wrk') else 'pyload.py (asyncio)'} "
        f"on the same {os.cpu_count()}-core machine; server: {args.server_workers} worker(s), "
        f"{args.threads} ORT intra-op thread(s).",
        "",
        "| server | body | concurrency | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {p.server} | {p.body} | {p.concurrency} | {p.rps:,.0f} | {p.p50_ms:.2f} "
        f"| {p.p99_ms:.2f} | {p.errors} |"
        for p in points
    ]
    lines += ["", "| one 256-image octet-stream request, back to back | images/s |", "|---|---:|"]
    if big is not None:
        lines.append(f"| {big.server} (p50 {big.p50_ms:.2f} ms) | {big.images_per_s:,.0f} |")
    lines.append(f"| raw ONNX Runtime session.run, same model file and threads | {raw:,.0f} |")
    lines += ["", "Targets (measured, not asserted):"]
    lines += [f"- {line}" for line in target_lines(points, big, raw)]
    return "\n".join(lines)


def target_lines(points: list[Point], big: Point | None, raw: float) -> list[str]:
    ours = (
        "given server"
        if any(p.server == "given server" for p in points)
        else "mnist-serve, batching on"
    )
    c64, c1 = find(points, ours, "json", 64), find(points, ours, "json", 1)
    baseline = find(points, "baseline", "json", 64)
    lines = []
    if c64:
        met = c64.rps >= 6000 and c64.p99_ms <= 30
        lines.append(
            f"JSON, concurrency 64: {c64.rps:,.0f} req/s, p99 {c64.p99_ms:.1f} ms "
            f"(target >= 6,000 req/s, p99 <= 30 ms): {'met' if met else 'MISSED'}"
        )
    if c1:
        lines.append(
            f"JSON, concurrency 1: {c1.rps:,.0f} req/s (target >= 1,500): "
            f"{'met' if c1.rps >= 1500 else 'MISSED'}"
        )
    if big:
        ratio = big.images_per_s / raw
        lines.append(
            f"256-image request: {100 * ratio:.0f}% of raw ONNX Runtime images/s "
            f"(target >= 70%): {'met' if ratio >= 0.7 else 'MISSED'}"
        )
    if c64 and baseline:
        lines.append(
            f"vs the tutorial-style baseline at concurrency 64: "
            f"{c64.rps / baseline.rps:.1f}x the req/s, p99 {baseline.p99_ms:.1f} -> "
            f"{c64.p99_ms:.1f} ms"
        )
    return lines


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
    parser.add_argument("--no-baseline", action="store_true", help="Skip the tutorial-style server")
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
        points, big, raw = run(args, out_dir)
    report = format_report(points, big, raw, args)
    (out_dir / "bench.md").write_text(report + "\n")
    results = {
        "points": [asdict(p) for p in points],
        "big_batch": big and asdict(big),
        "raw_onnxruntime_images_per_s": raw,
    }
    (out_dir / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n" + report + f"\n\nsaved: {out_dir}/bench.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
