"""The benchmark script runs end to end and measures every configuration it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import PUBLISHED_MODELS, REPO_ROOT

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
