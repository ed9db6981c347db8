"""Locust traffic for mnist-serve: the real request mix, every answer checked against its label.

Run it through ``python -m loadtest`` (starts the server, writes the reports), or
directly: ``locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 --headless
-u 16 -r 16 -t 60s --summary-json summary.json``.

Each request sends real MNIST test images from the committed fixture. A request
fails when its status is not 200, its body is malformed, it answers for the wrong
number of images, or a served label differs from the label ONNX Runtime gives
offline for that image with the same model file (see ``expectations.py``). At the
end the served accuracy per model is reported and the thresholds decide the exit code.
"""

from __future__ import annotations

import json
import logging
import random
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, constant, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

from loadtest.expectations import (
    Expectation,
    latest_version,
    offline_expectation,
    offline_png_expectation,
)
from loadtest.fixtures import load_fixture
from loadtest.mix import DEFAULT_MIX, KINDS, parse_mix
from loadtest.payloads import Payload, PayloadBuilder
from loadtest.report import format_summary, summarise_stats
from loadtest.responses import Answer, BadResponse, parse_v1, parse_v2
from loadtest.tally import PNG, RAW, Tally
from loadtest.thresholds import THRESHOLDS_PATH, evaluate, load_thresholds

logger = logging.getLogger("loadtest")

V2_MAX_IMAGES = 4  # V2 clients (tritonclient) typically send a few images per call
_MISMATCHES_LOGGED = 5


@events.init_command_line_parser.add_listener
def add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("mnist-serve load test")
    group.add_argument(
        "--models",
        default="",
        env_var="LOADTEST_MODELS",
        help="Comma-separated models to call; default: every model GET /v1/models lists",
    )
    group.add_argument(
        "--models-dir",
        default="models",
        env_var="LOADTEST_MODELS_DIR",
        help="Model repository the offline ONNX Runtime answers come from",
    )
    group.add_argument(
        "--mix",
        default=DEFAULT_MIX,
        env_var="LOADTEST_MIX",
        help=f"Traffic weights, kind=weight for kinds {', '.join(KINDS)}",
    )
    group.add_argument(
        "--batch-max",
        type=int,
        default=32,
        env_var="LOADTEST_BATCH_MAX",
        help="Most images in a 'batch' (from 2) or 'octet' (from 1) request",
    )
    group.add_argument(
        "--thresholds-profile",
        default="default",
        env_var="LOADTEST_THRESHOLDS_PROFILE",
        help="Table of the thresholds file to apply",
    )
    group.add_argument(
        "--thresholds",
        default=str(THRESHOLDS_PATH),
        env_var="LOADTEST_THRESHOLDS",
        help="Thresholds file (TOML)",
    )
    for name, help_text in (
        ("max-failure-ratio", "Most failed requests / requests"),
        ("max-p99-ms", "Slowest allowed p99 over all requests, ms"),
        ("min-rps", "Fewest requests/s over the run"),
        ("max-accuracy-drop-points", "Raw pixels: served accuracy below offline ORT, points"),
        (
            "max-png-accuracy-drop-points",
            "PNG: served accuracy below offline raw-pixel ORT, points",
        ),
    ):
        group.add_argument(
            f"--{name}", type=float, default=None, help=f"{help_text} (overrides the file)"
        )
    group.add_argument(
        "--summary-json",
        default="",
        env_var="LOADTEST_SUMMARY_JSON",
        help="Write the run summary (stats, accuracy, violations) here",
    )


@dataclass
class Workload:
    """What one load-generating process sends and what it expects back."""

    builder: PayloadBuilder
    labels: list[int]
    expectations: dict[str, Expectation]
    png_expectations: dict[str, Expectation]
    kinds: list[str]
    weights: list[float]
    batch_max: int
    tally: Tally = field(default_factory=Tally)
    mismatches_logged: int = 0

    @property
    def models(self) -> list[str]:
        return list(self.expectations)


def discover_models(host: str) -> list[str]:
    """Names from ``GET /v1/models``: ``{"models": [{"name": ...}, ...]}`` (or plain names)."""
    with urllib.request.urlopen(f"{host.rstrip('/')}/v1/models", timeout=10) as response:
        document = json.loads(response.read())
    entries = document.get("models", []) if isinstance(document, dict) else document
    names = [entry["name"] if isinstance(entry, dict) else str(entry) for entry in entries]
    if not names:
        raise RuntimeError(f"{host}/v1/models lists no models")
    return sorted(set(names))


def build_workload(environment: Environment) -> Workload:
    options = environment.parsed_options
    fixture = load_fixture()
    builder = PayloadBuilder(fixture.images)
    models = [name for name in options.models.split(",") if name] or discover_models(
        environment.host or ""
    )
    kinds, weights = parse_mix(options.mix)
    models_dir, pixels = Path(options.models_dir), fixture.pixels()
    versions = {model: latest_version(models_dir, model) for model in models}
    expectations = {
        model: offline_expectation(models_dir, model, version, pixels)
        for model, version in versions.items()
    }
    # PNG preprocessing of 2,000 pictures takes about half a second: only when sent.
    pngs = [builder.png(index) for index in range(len(builder))] if "png" in kinds else []
    png_expectations = {
        model: offline_png_expectation(models_dir, model, version, pngs)
        for model, version in versions.items()
        if pngs
    }
    for expectation in expectations.values():
        logger.info(
            "offline ORT: %s v%s is %.2f%% accurate on the %d fixture images",
            expectation.model,
            expectation.version,
            100.0 * (expectation.labels == fixture.labels).mean(),
            len(fixture.labels),
        )
    return Workload(
        builder=builder,
        labels=fixture.labels.tolist(),
        expectations=expectations,
        png_expectations=png_expectations,
        kinds=kinds,
        weights=weights,
        batch_max=options.batch_max,
    )


def _state(environment: Environment) -> dict[str, Any]:
    """Per-process state hung on the environment (no module globals)."""
    if not hasattr(environment, "mnist_state"):
        environment.mnist_state = {"workload": None, "setup_errors": [], "tally": Tally()}
    return environment.mnist_state


@events.test_start.add_listener
def prepare(environment: Environment, **_kwargs: Any) -> None:
    """Each test (the web UI may run several) counts afresh, as Locust's stats do."""
    state = _state(environment)
    state["tally"].clear()
    if isinstance(environment.runner, MasterRunner) or state["workload"] is not None:
        return
    try:
        state["workload"] = build_workload(environment)
    except Exception as error:  # setup boundary: report why the run cannot start, then stop
        logger.exception("load test setup failed")
        state["setup_errors"].append(f"setup failed: {error}")
        gevent.spawn(environment.runner.quit)


class MnistTrafficUser(FastHttpUser):
    """One client sending the weighted mix of request kinds, back to back, to every model."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.workload: Workload | None = _state(self.environment)["workload"]
        self.rng = random.Random()

    @task
    def send_one_request(self) -> None:
        workload = self.workload
        if workload is None:  # setup failed; the runner is quitting
            raise StopUser()
        kind = self.rng.choices(workload.kinds, workload.weights)[0]
        model = self.rng.choice(workload.models)
        payload = self._payload(workload, kind, model)
        headers = payload.headers
        with self.client.post(
            payload.path,
            data=payload.body,
            headers=headers,
            name=f"{kind} {model}",
            catch_response=True,
        ) as response:
            problem = self._check(workload, kind, model, payload, response)
            if problem:
                response.failure(problem)
            else:
                response.success()

    def _payload(self, workload: Workload, kind: str, model: str) -> Payload:
        builder, count = workload.builder, len(workload.builder)
        sizes = {
            "batch": (2, workload.batch_max),
            "octet": (1, workload.batch_max),
            "v2_fp32": (1, V2_MAX_IMAGES),
            "v2_uint8": (1, V2_MAX_IMAGES),
        }
        low, high = sizes.get(kind, (1, 1))
        indices = tuple(self.rng.sample(range(count), self.rng.randint(low, high)))
        if kind in ("json", "batch"):
            return builder.v1_json(model, indices)
        if kind == "octet":
            return builder.v1_octet(model, indices)
        if kind == "png":
            return builder.v1_png(model, indices[0])
        return builder.v2_json(model, indices, "FP32" if kind == "v2_fp32" else "UINT8")

    def _check(
        self, workload: Workload, kind: str, model: str, payload: Payload, response: Any
    ) -> str | None:
        """Why the response is wrong, or None; tallies the served accuracy either way."""
        if response.status_code != 200:
            detail = response.error if response.status_code == 0 else response.content[:200]
            return f"HTTP {response.status_code}: {detail!r}"
        parse = parse_v2 if kind.startswith("v2") else parse_v1
        try:
            answer = parse(response.content or b"", len(payload.indices))
        except BadResponse as error:
            return f"malformed response: {error}"
        expectation = workload.expectations[model]
        if answer.version is not None and answer.version != expectation.version:
            return f"served version {answer.version}, offline answers are for {expectation.version}"
        return self._tally(workload, kind, expectation, payload, answer)

    def _tally(
        self,
        workload: Workload,
        kind: str,
        expectation: Expectation,
        payload: Payload,
        answer: Answer,
    ) -> str | None:
        path = PNG if kind == "png" else RAW
        checked = workload.png_expectations[expectation.model] if path == PNG else expectation
        tally: Tally = _state(self.environment)["tally"]
        disagreements = []
        for index, served in zip(payload.indices, answer.labels, strict=True):
            true, offline = workload.labels[index], int(expectation.labels[index])
            tally.record(expectation.model, path, served=served, true=true, offline=offline)
            if checked.accepts(index, served):
                tally.record_agreement(expectation.model, path)
            else:
                disagreements.append((index, served, int(checked.labels[index])))
        if not disagreements:
            return None
        if workload.mismatches_logged < _MISMATCHES_LOGGED:
            workload.mismatches_logged += 1
            logger.warning(
                "%s %s: (fixture index, served, offline) %s", kind, expectation.model, disagreements
            )
        # One stable message, so Locust groups these failures in one row.
        return "served label differs from the offline ONNX Runtime label"


@events.init.add_listener
def connect_tallies(environment: Environment, **_kwargs: Any) -> None:
    """Workers send their accuracy counts with each stats report; the master adds them up."""
    state = _state(environment)

    def send_tally(data: dict[str, Any], **_kwargs: Any) -> None:
        data["mnist_tally"] = state["tally"].to_wire()
        data["mnist_setup_errors"] = list(state["setup_errors"])
        state["tally"].clear()
        state["setup_errors"].clear()

    def receive_tally(data: dict[str, Any], **_kwargs: Any) -> None:
        state["tally"].merge_wire(data.get("mnist_tally", {}))
        state["setup_errors"].extend(data.get("mnist_setup_errors", []))

    # These two events do not pass the environment: the closures carry its state.
    environment.events.report_to_master.add_listener(send_tally)
    environment.events.worker_report.add_listener(receive_tally)


@events.quitting.add_listener
def judge(environment: Environment, **_kwargs: Any) -> None:
    """Master or local runner: summarise, apply the thresholds, set the exit code."""
    if isinstance(environment.runner, WorkerRunner):
        return
    options = environment.parsed_options
    state = _state(environment)
    limits = load_thresholds(
        options.thresholds_profile,
        Path(options.thresholds),
        {
            "max_failure_ratio": options.max_failure_ratio,
            "max_p99_ms": options.max_p99_ms,
            "min_rps": options.min_rps,
            "max_accuracy_drop_points": options.max_accuracy_drop_points,
            "max_png_accuracy_drop_points": options.max_png_accuracy_drop_points,
        },
    )
    summary = summarise_stats(environment.stats)
    summary["accuracy"] = state["tally"].rows()
    summary["thresholds"] = vars(limits)
    summary["violations"] = state["setup_errors"] + evaluate(summary, limits)
    if options.summary_json:
        Path(options.summary_json).write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("mnist-serve load test summary\n%s", format_summary(summary))
    if summary["violations"]:
        environment.process_exit_code = 1
