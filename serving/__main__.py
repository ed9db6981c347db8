"""``mnist-serve`` / ``python -m serving``: every setting as a flag or an MNIST_SERVE_* variable."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence

import uvicorn
from pydantic import SecretStr, ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import CliApp, SettingsConfigDict, SettingsError

from serving.app import create_app
from serving.logs import configure_logging, logging_config
from serving.metrics_multiprocess import MULTIPROC_ENV, prepare_multiprocess_dir
from serving.protocol import ServingHttpProtocol
from serving.settings import Settings
from serving.shutdown import DrainingServer

logger = logging.getLogger("mnist_serve.cli")

# uvicorn's knobs that protect the server from slow or idle clients.
KEEP_ALIVE_TIMEOUT_S = 5
BACKLOG = 2048
PROG = "mnist-serve"
USAGE_ERROR = 2  # argparse's status for a bad command line


class CliSettings(Settings):
    """The settings, parsed from flags first, then MNIST_SERVE_* variables, then defaults."""

    model_config = SettingsConfigDict(
        env_prefix="MNIST_SERVE_",
        extra="forbid",
        cli_prog_name=PROG,
        cli_kebab_case=True,
        cli_implicit_flags=True,
    )


def parse_settings(argv: Sequence[str]) -> Settings:
    # ``--models`` is the short spelling the README uses for ``--models-dir``.
    args = ["--models-dir" if arg == "--models" else arg for arg in argv]
    args = [f"--models-dir={arg[9:]}" if arg.startswith("--models=") else arg for arg in args]
    parsed = CliApp.run(CliSettings, cli_args=args)
    return Settings.model_validate(parsed.model_dump())


def settings_problems(error: ValidationError | SettingsError) -> list[str]:
    """One line per problem, naming the flag and the variable the value may have come from."""
    if isinstance(error, SettingsError):
        return [str(error)]
    return [_describe(problem) for problem in error.errors()]


def _describe(problem: ErrorDetails) -> str:
    if problem["type"] == "value_error":  # our validators' own words, without pydantic's prefix
        message = str(problem.get("ctx", {}).get("error", problem["msg"]))
    else:
        message = f"{problem['msg']}, got {problem['input']!r}"
    if not problem["loc"]:
        return message
    name = str(problem["loc"][0])
    return f"--{name.replace('_', '-')} (MNIST_SERVE_{name.upper()}): {message}"


def settings_as_environment(settings: Settings) -> dict[str, str]:
    """MNIST_SERVE_* variables that rebuild ``settings`` in each worker process."""
    environment: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, bool | list):
            value = json.dumps(value)
        environment[f"MNIST_SERVE_{name.upper()}"] = str(value)
    return environment


def uvicorn_options(settings: Settings) -> dict[str, object]:
    return {
        "host": settings.host,
        "port": settings.port,
        "http": ServingHttpProtocol,
        "loop": "uvloop",
        # Worker processes set up logging only from this, so pass ours rather than None.
        "log_config": logging_config(settings.log_level),
        "access_log": False,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
        "timeout_keep_alive": KEEP_ALIVE_TIMEOUT_S,
        "timeout_graceful_shutdown": settings.shutdown_grace_s,
        "backlog": BACKLOG,
    }


def single_process_server(settings: Settings) -> DrainingServer:
    """The app under a server whose readiness turns false on SIGTERM or SIGINT."""
    app = create_app(settings)
    server = app.state.server

    def start_draining() -> None:
        if not server.is_draining:
            logger.info("draining: readiness is now false; finishing accepted requests")
        server.is_draining = True

    return DrainingServer(uvicorn.Config(app, **uvicorn_options(settings)), on_exit=start_draining)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv)
    except (ValidationError, SettingsError) as error:
        # A configuration mistake, not a bug: say what is wrong, as argparse would.
        for problem in settings_problems(error):
            print(f"{PROG}: error: {problem}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR) from None
    configure_logging(settings.log_level)
    if settings.workers == 1:
        if os.environ.get(MULTIPROC_ENV):
            # prometheus-client is already in multiprocess mode: empty the last run's files,
            # or this run's /metrics would start from that run's counts.
            prepare_multiprocess_dir()
        single_process_server(settings).run()
        return
    # Several processes: each worker rebuilds the settings from the environment, and
    # metrics are aggregated across them through prometheus-client's multiprocess files.
    os.environ.update(settings_as_environment(settings))
    prepare_multiprocess_dir()
    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        workers=settings.workers,
        **uvicorn_options(settings),
    )


if __name__ == "__main__":
    main()
