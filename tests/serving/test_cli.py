"""The command line: every setting is a flag and an environment variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from serving.__main__ import (
    main,
    parse_settings,
    settings_as_environment,
    settings_problems,
    uvicorn_options,
)
from serving.settings import Settings
from tests.support import log_entries, running_server, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_setting() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "serving", "--help"], capture_output=True, text=True, check=True
    )
    for name in Settings.model_fields:
        assert f"--{name.replace('_', '-')}" in completed.stdout


def test_flags_override_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNIST_SERVE_PORT", "9001")
    monkeypatch.setenv("MNIST_SERVE_MAX_BATCH_SIZE", "16")
    settings = parse_settings(["--port", "9002", "--models", "elsewhere", "--no-batching"])
    assert settings.port == 9002
    assert settings.max_batch_size == 16
    assert settings.models_dir == Path("elsewhere")
    assert settings.batching is False


def test_environment_rebuilds_the_same_settings_in_a_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = Settings(
        port=9100,
        batching=False,
        cors_allow_origins=["http://a.example"],
        api_key="secret",
        max_queue_delay_ms=2.5,
    )
    for name, value in settings_as_environment(original).items():
        monkeypatch.setenv(name, value)
    assert Settings().model_dump() == original.model_dump()


@pytest.mark.parametrize(
    "value",
    [
        "http://a.example,http://b.example",
        " http://a.example , http://b.example ",
        '["http://a.example", "http://b.example"]',
    ],
)
def test_cors_origins_variable_is_comma_separated_or_a_json_list(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("MNIST_SERVE_CORS_ALLOW_ORIGINS", value)
    assert Settings().cors_allow_origins == ["http://a.example", "http://b.example"]


def test_one_cors_origin_needs_no_list_syntax(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNIST_SERVE_CORS_ALLOW_ORIGINS", "http://a.example")
    assert parse_settings([]).cors_allow_origins == ["http://a.example"]


def test_empty_cors_origins_variable_leaves_cors_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNIST_SERVE_CORS_ALLOW_ORIGINS", "")
    assert Settings().cors_allow_origins == []


@pytest.mark.parametrize(
    "args",
    [
        ["--cors-allow-origins", "http://a.example,http://b.example"],
        ["--cors-allow-origins", "http://a.example", "--cors-allow-origins", "http://b.example"],
        ["--cors-allow-origins", '["http://a.example","http://b.example"]'],
    ],
)
def test_cors_origins_flag_is_comma_separated_repeated_or_a_json_list(args: list[str]) -> None:
    assert parse_settings(args).cors_allow_origins == ["http://a.example", "http://b.example"]


def test_forwarded_allow_ips_default_to_uvicorns_and_reach_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert uvicorn_options(Settings())["forwarded_allow_ips"] == ["127.0.0.1", "::1"]
    monkeypatch.setenv("MNIST_SERVE_FORWARDED_ALLOW_IPS", "10.0.0.7, 172.16.0.0/12")
    assert uvicorn_options(parse_settings([]))["forwarded_allow_ips"] == [
        "10.0.0.7",
        "172.16.0.0/12",
    ]
    assert parse_settings(["--forwarded-allow-ips", "*"]).forwarded_allow_ips == ["*"]


def error_lines_of_exit_2(capsys: pytest.CaptureFixture[str], args: list[str]) -> list[str]:
    """Run the CLI, expect exit status 2 (a bad setting), and return its stderr lines."""
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    return capsys.readouterr().err.splitlines()


def test_malformed_json_origins_say_how_to_write_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MNIST_SERVE_CORS_ALLOW_ORIGINS", '["http://a.example"')

    [line] = error_lines_of_exit_2(capsys, [])
    assert "--cors-allow-origins (MNIST_SERVE_CORS_ALLOW_ORIGINS)" in line
    assert "comma-separated" in line


def test_settings_error_from_pydantic_settings_is_reported_as_it_is() -> None:
    error = SettingsError('error parsing value for field "port" from source "EnvSettingsSource"')
    assert settings_problems(error) == [str(error)]


@pytest.mark.parametrize("value", ["proxy", "10.0.0.1/8", "*,10.0.0.1"])
def test_forwarded_allow_ips_that_could_never_match_a_peer_are_refused(value: str) -> None:
    # uvicorn would keep a host name or a network with host bits as a literal string,
    # which no peer address ever equals: the proxy's header would be ignored silently.
    with pytest.raises(ValidationError) as refused:
        Settings(forwarded_allow_ips=value)

    [problem] = settings_problems(refused.value)
    assert problem.startswith("--forwarded-allow-ips (MNIST_SERVE_FORWARDED_ALLOW_IPS): ")
    assert "IP address" in problem


def test_request_limit_larger_than_the_queue_is_refused() -> None:
    with pytest.raises(ValidationError, match="could never be queued"):
        Settings(max_images_per_request=100, max_queue_size=10)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serving", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=60,
    )


def test_bad_flag_value_is_one_line_naming_the_option_and_exits_2() -> None:
    completed = run_cli("--port", "abc")

    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    [line] = completed.stderr.splitlines()
    assert line.startswith("mnist-serve: error: --port (MNIST_SERVE_PORT): ")
    assert "valid integer" in line
    assert "'abc'" in line


def test_queue_smaller_than_the_request_limit_is_one_line_naming_both_settings() -> None:
    completed = run_cli("--max-queue-size", "4")

    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    [line] = completed.stderr.splitlines()
    assert "--max-images-per-request (MNIST_SERVE_MAX_IMAGES_PER_REQUEST)" in line
    assert "1024" in line
    assert "max_queue_size (4)" in line


def test_bad_environment_variable_is_named_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MNIST_SERVE_DEVICE", "tpu")

    [line] = error_lines_of_exit_2(capsys, [])
    assert line.startswith("mnist-serve: error: --device (MNIST_SERVE_DEVICE): ")
    assert "'tpu'" in line


def test_every_bad_setting_gets_its_own_line(capsys: pytest.CaptureFixture[str]) -> None:
    lines = error_lines_of_exit_2(capsys, ["--port", "abc", "--overload-status-code", "500"])
    assert len(lines) == 2
    assert lines[0].startswith("mnist-serve: error: --port (MNIST_SERVE_PORT): ")
    assert lines[1] == (
        "mnist-serve: error: --overload-status-code (MNIST_SERVE_OVERLOAD_STATUS_CODE): "
        "must be 503 or 429, got 500"
    )


def test_model_control_with_several_workers_is_one_line_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A load or unload reaches only the worker that took the request: clients would see
    # each worker's own repository in turn. (If it were accepted, fail rather than serve.)
    monkeypatch.setattr(
        "serving.__main__.uvicorn.run", lambda *args, **kwargs: pytest.fail("it started")
    )

    [line] = error_lines_of_exit_2(capsys, ["--model-control", "--workers", "2"])
    assert line.startswith("mnist-serve: error: --model-control (MNIST_SERVE_MODEL_CONTROL): ")
    assert "workers (2)" in line


def test_model_control_with_one_worker_is_allowed() -> None:
    assert Settings(model_control=True, workers=1).model_control is True


def test_importing_serving_never_imports_torch() -> None:
    code = (
        "import sys, serving.app, serving.__main__, serving.batcher, serving.runtime;"
        "assert 'torch' not in sys.modules, 'serving imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def access_client(log_path: Path, request_id: str) -> str:
    """The ``client`` of the access line of the request with ``request_id``."""
    [line] = wait_for(
        lambda: [entry for entry in log_entries(log_path) if entry.get("request_id") == request_id],
        timeout_s=10,
        what=f"the access line of {request_id}",
    )
    return str(line["client"])


@pytest.mark.parametrize(
    ("forwarded_allow_ips", "logged_client"),
    [(None, "127.0.0.2"), ("127.0.0.2", "203.0.113.7"), ("*", "203.0.113.7")],
)
def test_the_access_line_names_the_forwarded_client_only_behind_a_trusted_proxy(
    tiny_repo: Path, tmp_path: Path, forwarded_allow_ips: str | None, logged_client: str
) -> None:
    """A "proxy" at 127.0.0.2 (the default trusts only 127.0.0.1 and ::1) forwards a
    request from 203.0.113.7."""
    log_path = tmp_path / "server.log"
    env = {"MNIST_SERVE_FORWARDED_ALLOW_IPS": forwarded_allow_ips} if forwarded_allow_ips else {}
    headers = {"X-Forwarded-For": "203.0.113.7", "X-Request-ID": "forwarded-1"}
    proxy = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10)
    with proxy, running_server(tiny_repo, env=env, log_path=log_path) as (url, _):
        assert proxy.get(f"{url}/v1/models", headers=headers).status_code == 200
        client = access_client(log_path, "forwarded-1")

    assert client == logged_client
