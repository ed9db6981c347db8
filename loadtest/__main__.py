"""Headless load-test runner: ``python -m loadtest [--host URL] [--run-time 60s] ...``.

Without ``--host`` it starts ``mnist-serve`` on a free port (``--server-env`` sets
its ``MNIST_SERVE_*`` variables) and stops it at the end. Locust runs headless,
in one process or as a master and ``--workers N`` worker processes; its CSV and
HTML reports, the logs and ``summary.json`` go to ``results/<timestamp>/``. The
summary table is printed; the exit code is 0 when every threshold is met, 1 when
one is missed, 2 when the run could not be made.

Arguments after ``--`` are passed to Locust unchanged.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

from loadtest.expectations import save_answers
from loadtest.fixtures import load_fixture
from loadtest.mix import DEFAULT_MIX, parse_mix
from loadtest.prepare import SetupError, choose_models, compute_answers
from loadtest.report import format_summary
from loadtest.server import free_port, running_server
from loadtest.thresholds import THRESHOLDS_PATH, load_thresholds

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
# Options --smoke changes, when not given: the defaults, and --smoke's values.
DEFAULTS = {"run_time": "60s", "users": 16, "profile": "default"}
SMOKE = {"run_time": "20s", "users": 4, "profile": "smoke"}
_THRESHOLD_FLAGS = (
    "max_failure_ratio",
    "max_p99_ms",
    "min_rps",
    "max_accuracy_drop_points",
    "max_png_accuracy_drop_points",
)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host", help="Server to test, e.g. http://127.0.0.1:8000; default: start one"
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path("models"),
        help="Model repository: served by the started server, and the offline answers",
    )
    parser.add_argument("--models", default="", help="Comma-separated models; default: all listed")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Environment of the started server, e.g. MNIST_SERVE_BATCHING=false",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="CI smoke run: 20 s, 4 users, the [smoke] thresholds; options given win",
    )
    # Default None: filled in below, so an option given explicitly wins over --smoke.
    parser.add_argument("--run-time", help="Locust --run-time (default 60s; --smoke: 20s)")
    parser.add_argument("-u", "--users", type=int, help="Concurrent users (default 16; --smoke: 4)")
    parser.add_argument(
        "-r",
        "--spawn-rate",
        type=float,
        default=None,
        help="Users started per second (default: all in the first second)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="Distributed mode: a Locust master and N worker processes",
    )
    parser.add_argument(
        "--mix", default=DEFAULT_MIX, help=f"Traffic weights (default {DEFAULT_MIX})"
    )
    parser.add_argument("--batch-max", type=int, default=32, help="Largest batch request")
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=Path("results"),
        help="Reports go to RESULTS_DIR/<timestamp>/",
    )
    parser.add_argument(
        "--profile", help="Thresholds table: default, smoke (default: default; --smoke: smoke)"
    )
    parser.add_argument("--thresholds", type=Path, default=THRESHOLDS_PATH, help="Thresholds file")
    for flag in _THRESHOLD_FLAGS:
        parser.add_argument(
            f"--{flag.replace('_', '-')}",
            type=float,
            default=None,
            help="Override the thresholds file",
        )
    args, rest = parser.parse_known_args(argv)
    if rest and rest[0] == "--":
        rest = rest[1:]
    for key, value in (SMOKE if args.smoke else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args, rest


def check_arguments(args: argparse.Namespace) -> None:
    """What can be checked before anything starts; ``SetupError`` names the problem."""
    try:
        parse_mix(args.mix)
        load_thresholds(args.profile, args.thresholds, threshold_overrides(args))
    except ValueError as error:
        raise SetupError(str(error)) from error


def threshold_overrides(args: argparse.Namespace) -> dict[str, float | None]:
    return {flag: getattr(args, flag) for flag in _THRESHOLD_FLAGS}


def prepare_answers(args: argparse.Namespace, host: str, out_dir: Path) -> Path:
    """Check the server and models, then compute the offline answers once, before Locust.

    Done here, the seconds it takes count in neither the run time nor the req/s, and
    the workers only read a file (a worker busy for seconds misses its heartbeats).
    """
    requested = [name for name in args.models.split(",") if name]
    models = choose_models(host, requested, args.models_dir)
    kinds, _ = parse_mix(args.mix)
    answers = compute_answers(load_fixture(), args.models_dir, models, "png" in kinds)
    path = out_dir / "offline_answers.npz"
    save_answers(path, answers)
    return path


def locustfile_options(
    args: argparse.Namespace, summary_path: Path, answers_path: Path | None = None
) -> list[str]:
    """Our locustfile's own options, for the master and every worker."""
    options = [
        "--models-dir", str(args.models_dir.resolve()),
        "--mix", args.mix,
        "--batch-max", str(args.batch_max),
        "--thresholds-profile", args.profile,
        "--thresholds", str(args.thresholds.resolve()),
        "--summary-json", str(summary_path),
    ]  # fmt: skip
    if args.models:
        options += ["--models", args.models]
    if answers_path is not None:
        options += ["--offline-answers", str(answers_path.resolve())]
    for flag in _THRESHOLD_FLAGS:
        if (value := getattr(args, flag)) is not None:
            options += [f"--{flag.replace('_', '-')}", str(value)]
    return options


def headless_options(args: argparse.Namespace, out_dir: Path) -> list[str]:
    """Locust's own options for a headless run that writes its reports to ``out_dir``."""
    return [
        "--headless",
        "--users", str(args.users),
        "--spawn-rate", str(args.spawn_rate or args.users),
        "--run-time", args.run_time,
        "--stop-timeout", "10",
        "--csv", str(out_dir / "locust"),
        "--html", str(out_dir / "report.html"),
        "--only-summary",
    ]  # fmt: skip


def run_locust(
    args: argparse.Namespace, host: str, out_dir: Path, answers_path: Path, extra: list[str]
) -> int:
    """Run Locust (and its workers) to completion; return the master's exit code."""
    locust = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", host]
    locust += locustfile_options(args, out_dir / "summary.json", answers_path)
    role: list[str] = []
    with ExitStack() as stack:
        workers: list[subprocess.Popen[bytes]] = []
        if args.workers:
            port = str(free_port())
            role = [
                "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
                "--expect-workers", str(args.workers), "--expect-workers-max-wait", "60",
            ]  # fmt: skip
            worker = [*locust, "--worker", "--master-host", "127.0.0.1", "--master-port", port]
            for index in range(args.workers):
                log = stack.enter_context((out_dir / f"locust-worker-{index}.log").open("wb"))
                workers.append(subprocess.Popen(worker, stdout=log, stderr=subprocess.STDOUT))
        log = stack.enter_context((out_dir / "locust.log").open("wb"))
        master = subprocess.run(
            [*locust, *headless_options(args, out_dir), *role, *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
        for process in workers:
            stop_worker(process)
    return master.returncode


def stop_worker(process: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    """Workers quit when the master tells them; kill one that has not after ``grace_s``."""
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    try:
        check_arguments(args)
    except SetupError as error:
        print(f"load test: {error}")
        return 2
    out_dir = args.results_dir / datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"load test: {args.users} users for {args.run_time}, reports in {out_dir}/", flush=True)
    with ExitStack() as stack:
        host = args.host
        if host is None:
            env = dict(item.split("=", 1) for item in args.server_env)
            try:
                host = stack.enter_context(
                    running_server(args.models_dir.resolve(), out_dir / "server.log", env)
                )
            except (OSError, RuntimeError, TimeoutError) as error:
                print(f"could not start the server: {error}; see {out_dir}/server.log")
                return 2
        host = host.rstrip("/")
        try:
            answers_path = prepare_answers(args, host, out_dir)
        except SetupError as error:
            print(f"load test: {error}")
            return 2
        exit_code = run_locust(args, host, out_dir, answers_path, extra)
    summary_path = out_dir / "summary.json"
    if not summary_path.exists():
        print(f"Locust exited with {exit_code} and wrote no summary; see {out_dir}/locust.log")
        return 2
    print(format_summary(json.loads(summary_path.read_text())))
    print(f"\nreports: {out_dir}/report.html, {out_dir}/locust_stats.csv")
    return exit_code if exit_code in (0, 2) else 1


if __name__ == "__main__":
    sys.exit(main())
