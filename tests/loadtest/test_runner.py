"""The headless runner fails a wrong server on correctness and passes the real one."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from loadtest.__main__ import locustfile_options, main, parse_args
from loadtest.server import free_port, running_server
from loadtest.thresholds import load_thresholds
from tests.support import PUBLISHED_MODELS, REPO_ROOT, unanswered_port, write_tiny_model

RUN_TIME = "8s"  # short: CI has 2 cores shared with the rest of the suite


def run_loadtest(*args: str, results: Path) -> tuple[int, str, dict]:
    """``python -m loadtest ...``: exit code, printed output, and the run's summary.json."""
    finished = subprocess.run(
        [sys.executable, "-m", "loadtest", "--results-dir", str(results), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    summaries = list(results.glob("*/summary.json"))
    summary = json.loads(summaries[0].read_text()) if summaries else {}
    return finished.returncode, finished.stdout + finished.stderr, summary


def test_server_answering_label_zero_fails_a_distributed_run_on_correctness(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "models"
    write_tiny_model(repo, "tiny", version=1)  # the broken server claims version 1
    broken = [sys.executable, "-m", "tests.loadtest.broken_server"]
    with running_server(repo, tmp_path / "server.log", command=broken) as host:
        code, output, summary = run_loadtest(
            "--host", host, "--models-dir", str(repo), "--run-time", RUN_TIME,
            "--users", "2", "--workers", "2", "--profile", "smoke", results=tmp_path / "results",
        )  # fmt: skip

    assert code == 1, output
    assert "served label differs from the offline ONNX Runtime label" in output
    assert any(v.startswith("failure ratio") for v in summary["violations"]), output
    assert summary["total"]["failures"] > 0
    # The workers' accuracy counts reached the master.
    raw = next(row for row in summary["accuracy"] if row["path"] == "raw pixels")
    assert raw["images"] > 0
    assert raw["agreement"] < 100.0


def test_smoke_run_against_the_real_server_and_models_passes(tmp_path: Path) -> None:
    models = sorted(path.parent.parent.name for path in PUBLISHED_MODELS.glob("*/*/model.onnx"))
    if not models:
        pytest.fail(f"no published models under {PUBLISHED_MODELS} (make train)")

    code, output, summary = run_loadtest(
        "--smoke", "--run-time", RUN_TIME, "--models-dir", str(PUBLISHED_MODELS),
        results=tmp_path / "results",
    )  # fmt: skip

    assert code == 0, output
    assert summary["thresholds"] == vars(load_thresholds("smoke"))
    assert summary["violations"] == []
    assert summary["total"]["requests"] > 0
    assert summary["total"]["failures"] == 0
    raw_rows = [row for row in summary["accuracy"] if row["path"] == "raw pixels"]
    assert sorted(row["model"] for row in raw_rows) == models
    assert all(row["agreement"] == 100.0 for row in raw_rows), summary["accuracy"]


def test_distributed_run_with_the_published_models_sends_load_and_passes(tmp_path: Path) -> None:
    code, output, summary = run_loadtest(
        "--smoke", "--run-time", "3s", "--users", "2", "--workers", "2",
        "--models-dir", str(PUBLISHED_MODELS), results=tmp_path / "results",
    )  # fmt: skip

    assert code == 0, output
    assert summary["total"]["requests"] > 0
    assert summary["violations"] == []


def test_setup_is_done_before_the_run_time_starts(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    write_tiny_model(repo, "tiny", version=1)
    broken = [sys.executable, "-m", "tests.loadtest.broken_server"]
    with running_server(repo, tmp_path / "server.log", command=broken) as host:
        run_loadtest(
            "--host", host, "--models-dir", str(repo), "--run-time", "1s", "--users", "1",
            "--max-failure-ratio", "1", results=tmp_path / "results",
        )  # fmt: skip

    log = next((tmp_path / "results").glob("*/locust.log")).read_text().splitlines()
    timer_started = next(i for i, line in enumerate(log) if "Run time limit set" in line)
    timer_fired = next(i for i, line in enumerate(log) if "--run-time limit reached" in line)
    setup = [i for i, line in enumerate(log) if "offline ORT" in line]
    assert setup, log
    assert max(setup) < timer_started, log
    # A lower bound a timer guarantees, not a speed: the whole run time was load.
    assert logged_at(log[timer_fired]) - logged_at(log[timer_started]) >= timedelta(seconds=1)


def logged_at(line: str) -> datetime:
    """The time of a Locust log line: ``[2026-01-01 12:00:00,123] host/INFO/...``."""
    return datetime.strptime(line[1 : line.index("]")], "%Y-%m-%d %H:%M:%S,%f")


def test_failures_within_the_thresholds_pass_with_exit_code_zero(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    write_tiny_model(repo, "tiny", version=1)
    broken = [sys.executable, "-m", "tests.loadtest.broken_server"]
    with running_server(repo, tmp_path / "server.log", command=broken) as host:
        code, output, summary = run_loadtest(
            "--host", host, "--models-dir", str(repo), "--run-time", "2s", "--users", "1",
            "--profile", "smoke", "--max-failure-ratio", "1", "--max-accuracy-drop-points", "100",
            "--max-png-accuracy-drop-points", "100", results=tmp_path / "results",
        )  # fmt: skip

    assert summary["total"]["failures"] > 0, output
    assert summary["violations"] == []
    assert "PASSED all thresholds" in output
    assert code == 0, output


def test_no_server_at_the_host_is_exit_code_2_at_once_naming_the_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with unanswered_port() as port:
        host = f"http://127.0.0.1:{port}"
        code = main(["--host", host, "--results-dir", str(tmp_path)])

    message = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 2
    assert host in message
    assert "refused" in message
    assert not list(tmp_path.glob("*/locust.log"))  # Locust never started


def test_a_bad_mix_is_exit_code_2_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--mix", "foo=1", "--results-dir", str(tmp_path / "results")])

    assert code == 2
    assert "--mix item 'foo=1'" in capsys.readouterr().out
    assert not (tmp_path / "results").exists()  # no server started, no run made


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        ("nosuch", "{host} does not serve nosuch (it serves tiny)"),
        ("", "no offline answers for tiny: {repo}/tiny holds no <version>/model.onnx"),
    ],
)
def test_a_model_missing_from_server_or_repository_is_exit_code_2_at_once(
    models: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served, empty_repo = tmp_path / "served", tmp_path / "empty"
    write_tiny_model(served, "tiny", version=1)
    empty_repo.mkdir()
    broken = [sys.executable, "-m", "tests.loadtest.broken_server"]
    with running_server(served, tmp_path / "server.log", command=broken) as host:
        code = main(
            ["--host", host, "--models-dir", str(empty_repo), "--models", models,
             "--results-dir", str(tmp_path / "results")]
        )  # fmt: skip

    message = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 2
    assert message == "load test: " + expected.format(host=host, repo=empty_repo)
    assert not list(tmp_path.glob("results/*/locust.log"))


@pytest.mark.parametrize(
    ("table", "profile", "expected"),
    [
        ("[default]\nmin_rps = 1\n", "nosuch", "no [nosuch] table in"),
        ("[default]\nmax_p99 = 100\n", "default", "unknown keys in [default]"),
        ("[default\n", "default", "thresholds file"),
    ],
)
def test_bad_thresholds_are_exit_code_2_before_anything_starts(
    table: str, profile: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "thresholds.toml").write_text(table)

    code = main(
        ["--profile", profile, "--thresholds", str(tmp_path / "thresholds.toml"),
         "--results-dir", str(tmp_path / "results")]
    )  # fmt: skip

    assert code == 2
    assert expected in capsys.readouterr().out
    assert not (tmp_path / "results").exists()


def test_locust_run_directly_stops_on_a_bad_profile_before_the_run(tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py", "--headless",
         "--host", f"http://127.0.0.1:{free_port()}", "--run-time", "30s",
         "--thresholds-profile", "nosuch", "--summary-json", str(tmp_path / "summary.json")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert finished.returncode == 2, finished.stderr
    assert "no [nosuch] table in" in finished.stderr
    assert "Run time limit set" not in finished.stderr


def test_smoke_flag_sets_short_run_and_smoke_thresholds_unless_overridden(tmp_path: Path) -> None:
    args, _ = parse_args(["--smoke", "--users", "8"])

    options = locustfile_options(args, tmp_path / "summary.json")

    assert (args.run_time, args.users) == ("20s", 8)
    assert options[options.index("--thresholds-profile") + 1] == "smoke"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--smoke"], ("20s", 4, "smoke")),
        ([], ("60s", 16, "default")),
        (["--smoke", "--users", "16"], ("20s", 16, "smoke")),
        (["--smoke", "--run-time", "60s"], ("60s", 4, "smoke")),
        (["--smoke", "--profile", "default"], ("20s", 4, "default")),
    ],
)
def test_explicit_options_win_over_smoke_even_when_equal_to_the_defaults(
    argv: list[str], expected: tuple[str, int, str]
) -> None:
    args, _ = parse_args(argv)

    assert (args.run_time, args.users, args.profile) == expected


def test_arguments_after_double_dash_go_to_locust_unchanged() -> None:
    _, extra = parse_args(["--run-time", "5s", "--", "--loglevel", "DEBUG"])

    assert extra == ["--loglevel", "DEBUG"]
