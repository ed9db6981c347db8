"""Start ``mnist-serve`` for a run and stop it afterwards: the load test's own server."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

READY_PATH = "/v2/health/ready"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command() -> list[str]:
    """The ``mnist-serve`` console script next to this interpreter, else on PATH."""
    script = Path(sys.executable).parent / "mnist-serve"
    if script.exists():
        return [str(script)]
    found = shutil.which("mnist-serve")
    if found is None:
        raise FileNotFoundError("mnist-serve is not installed (pip install -e .)")
    return [found]


def is_ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(base_url + READY_PATH, timeout=1.0) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def wait_until_ready(base_url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Poll the readiness endpoint until 200, the process exits, or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mnist-serve exited with {process.returncode} before ready")
        if is_ready(base_url):
            return
        time.sleep(0.1)
    raise TimeoutError(f"mnist-serve at {base_url} not ready after {timeout_s:g} s")


@contextmanager
def running_server(
    models_dir: Path,
    log_path: Path,
    env: dict[str, str] | None = None,
    command: list[str] | None = None,
    timeout_s: float = 120.0,
) -> Iterator[str]:
    """Run ``command`` (default ``mnist-serve``) on a free loopback port; yield its base URL.

    Configuration is by ``MNIST_SERVE_*`` variables, as in the container; ``env``
    adds to or overrides them. ``{port}`` in an argument of ``command`` becomes the
    port. Output goes to ``log_path``. Stopped with SIGTERM.
    """
    port = free_port()
    server_env = {
        **os.environ,
        "MNIST_SERVE_MODELS_DIR": str(models_dir),
        "MNIST_SERVE_HOST": "127.0.0.1",
        "MNIST_SERVE_PORT": str(port),
        **(env or {}),
    }
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        arguments = [argument.format(port=port) for argument in command or serve_command()]
        process = subprocess.Popen(arguments, env=server_env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_ready(base_url, process, timeout_s)
            yield base_url
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
