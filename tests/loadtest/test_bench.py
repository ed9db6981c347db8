"""The benchmark script runs end to end and measures every configuration it promises."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.bench import main
from loadtest.bench_report import format_report, target_lines
from loadtest.bench_rounds import BigBatch, Point, successful_rps, to_point
from loadtest.fixtures import load_fixture
from loadtest.payloads import PayloadBuilder
from tests.support import PUBLISHED_MODELS, REPO_ROOT, unanswered_port

ALL_SERVERS = [
    "mnist-serve, batching on",
    "mnist-serve, batching off",
    "baseline (FastAPI+pydantic)",
    "plain ASGI + batcher",
]


@pytest.mark.slow
def test_bench_measures_every_configuration_without_errors(tmp_path: Path) -> None:
    if not (PUBLISHED_MODELS / "mnist_mlp").is_dir():
        pytest.fail(f"no published mnist_mlp under {PUBLISHED_MODELS} (make train)")

    finished = subprocess.run(
        [sys.executable, "-m", "loadtest.bench", "--duration-s", "1", "--warmup-s", "0",
         "--concurrency", "1", "4", "--rounds", "2", "--results-dir", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip

    assert finished.returncode == 0, finished.stdout + finished.stderr
    results = json.loads(next(tmp_path.glob("bench-*/bench.json")).read_text())
    measured = {(p["server"], p["body"], p["concurrency"]) for p in results["points"]}
    assert measured == {
        (server, body, concurrency)
        for server in ALL_SERVERS[:2]
        for body in ("json", "octet")
        for concurrency in (1, 4)
    } | {(server, "json", concurrency) for server in ALL_SERVERS[2:] for concurrency in (1, 4)}
    assert all(p["errors"] == 0 and p["rps"] > 0 for p in results["points"]), results
    # Side by side: each concurrency's two rounds go to every server with every body it
    # takes in turn, ours first, so that bodies too are compared seconds apart.
    lanes = [
        (server, body) for server in ALL_SERVERS for body in ("json", "octet")
        if body == "json" or server in ALL_SERVERS[:2]
    ]  # fmt: skip
    for concurrency in (1, 4):
        row = [p for p in results["points"] if p["concurrency"] == concurrency]
        assert all(len(p["round_rps"]) == 2 and min(p["round_rps"]) > 0 for p in row), row
        slices = sorted(
            (started, (p["server"], p["body"])) for p in row for started in p["round_started_s"]
        )
        assert [lane for _, lane in slices] == [*lanes, *lanes], slices
    big = results["big_batch"]
    assert [(p["body"], p["images_per_request"], p["errors"]) for p in big["points"]] == [
        ("octet", 256, 0),
        ("v2-binary", 256, 0),
    ]
    assert big["raw_images_per_s"] > 0
    assert {body: len(ratios) for body, ratios in big["round_ratios"].items()} == {
        "octet": 2,
        "v2-binary": 2,
    }
    table = [line for line in finished.stdout.splitlines() if line.startswith("| mnist-serve")]
    assert [line.split(" | ")[:3] for line in table] == [
        ["| " + server, body, str(concurrency)]
        for server in ALL_SERVERS[:2]
        for body in ("json", "octet")
        for concurrency in (1, 4)
    ]
    assert "| V2 binary tensors, UINT8 in, FP32 out |" in finished.stdout
    assert "256-image binary request" in finished.stdout
    assert "vs the plain ASGI app with a batcher" not in finished.stdout  # no concurrency 64


def wrk_result(requests: int, status_errors: int = 0, duration_s: float = 1.0) -> dict[str, float]:
    """What wrk_post.lua prints: ``requests`` counts every answer, refused ones too."""
    return {
        "requests": requests, "duration_us": duration_s * 1e6, "status_errors": status_errors,
        "connect_errors": 0, "read_errors": 0, "write_errors": 0, "timeouts": 0,
        "p50_us": 1000.0, "p90_us": 2000.0, "p99_us": 3000.0, "max_us": 4000.0, "mean_us": 1.5e3,
    }  # fmt: skip


def point(concurrency: int, rps: float, errors: int = 0, p99_ms: float = 10.0) -> Point:
    server = "mnist-serve, batching on"
    return Point(server, "json", concurrency, 1, rps, 1.0, p99_ms, errors, round_rps=(rps,))


def big_batch(errors: int = 0) -> BigBatch:
    points = [
        Point("mnist-serve, batching on", body, 1, 256, 40.0, 5.0, 6.0, errors)
        for body in ("octet", "v2-binary")
    ]
    return BigBatch(points, 256 * 45.0, {"octet": [0.9], "v2-binary": [0.9]})


def test_refused_answers_do_not_count_in_req_per_s() -> None:
    payload = PayloadBuilder(load_fixture().images[:1]).v1_json("mnist_mlp", (0,))

    measured = to_point("s", "json", 64, payload, wrk_result(10_000, status_errors=9_000))

    assert (measured.rps, measured.errors) == (1_000.0, 9_000)
    assert successful_rps(wrk_result(10_000, status_errors=9_000, duration_s=2.0)) == 500.0


@pytest.mark.parametrize("errors", [0, 1])
def test_a_target_is_met_only_without_errors(errors: int) -> None:
    lines = target_lines([point(64, 7_000, errors), point(1, 2_000, errors)], big_batch(errors))

    verdicts = [line.rsplit(": ", 1)[1] for line in lines]
    assert verdicts == (["met"] * 3 if errors == 0 else ["MISSED (1 errors)"] * 3), lines


def test_the_big_batch_table_shows_errors() -> None:
    args = argparse.Namespace(model="mnist_mlp", duration_s=1.0, rounds=1, server_workers=1,
                              threads=1)  # fmt: skip

    report = format_report([point(64, 7_000, 3)], big_batch(2), args)

    assert "| 64 | 7,000 | 7,000-7,000 | 1.00 | 10.00 | 3 |" in report
    big_rows = [line for line in report.splitlines() if line.startswith("| V2 binary tensors")]
    assert big_rows[0].endswith("| 2 |"), big_rows


def test_no_server_at_the_host_is_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with unanswered_port() as port:
        host = f"http://127.0.0.1:{port}"
        code = main(["--host", host, "--models-dir", str(PUBLISHED_MODELS), "--duration-s",
                     "1", "--rounds", "1", "--results-dir", str(tmp_path)])  # fmt: skip

    output = capsys.readouterr().out.strip().splitlines()
    assert code == 2
    assert output[-1] == f"bench: no server answering at {host} ([Errno 111] Connection refused)"
