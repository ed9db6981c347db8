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
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

from loadtest.bench_report import format_report, save_results
from loadtest.bench_rounds import (
    BIG_BATCH_IMAGES,
    BODIES,
    BenchError,
    BigBatch,
    Contender,
    Point,
    RawOnnxRuntime,
    bench_big_batch,
    bench_side_by_side,
)
from loadtest.expectations import MODEL_FILE, latest_version
from loadtest.fixtures import load_fixture
from loadtest.payloads import PayloadBuilder
from loadtest.server import running_server


def reference_server_command(factory: str) -> list[str]:
    """uvicorn running one of the reference apps (``module:factory``) on ``{port}``."""
    return [
        sys.executable, "-m", "uvicorn", "--factory", factory,
        "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip


BASELINE_COMMAND = reference_server_command("loadtest.baseline_app:create_app_from_env")
PLAIN_COMMAND = reference_server_command("loadtest.plain_app:create_app_from_env")


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
    save_results(out_dir, report, points, big)
    print("\n" + report + f"\n\nsaved: {out_dir}/bench.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
