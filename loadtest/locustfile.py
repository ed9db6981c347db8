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
import sys
from pathlib import Path
from typing import Any

import gevent
import gevent.event
from locust import FastHttpUser, constant, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

from loadtest.expectations import Expectation
from loadtest.mix import DEFAULT_MIX, KINDS
from loadtest.payloads import Payload
from loadtest.report import format_summary, summarise_stats
from loadtest.responses import Answer, BadResponse, parse_v1, parse_v2
from loadtest.tally import PNG, RAW, Tally
from loadtest.thresholds import THRESHOLDS_PATH, Thresholds, evaluate, load_thresholds
from loadtest.workload import Workload, build_workload

logger = logging.getLogger("loadtest")

V2_MAX_IMAGES = 4  # V2 clients (tritonclient) typically send a few images per call
_MISMATCHES_LOGGED = 5
PREPARED_MESSAGE = "mnist_prepared"  # worker -> master: offline answers ready (data: errors)
_PREPARE_TIMEOUT_S = 300.0  # without --expect-workers-max-wait; a PNG run takes ~10 s


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
        "--offline-answers",
        default="",
        env_var="LOADTEST_OFFLINE_ANSWERS",
        help="Offline answers computed beforehand (python -m loadtest writes them); "
        "default: compute them from --models-dir at start",
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


def _state(environment: Environment) -> dict[str, Any]:
    """Per-process state hung on the environment (no module globals)."""
    if not hasattr(environment, "mnist_state"):
        environment.mnist_state = {
            "workload": None,
            "is_prepared": False,
            "limits": None,
            "setup_errors": [],
            "tally": Tally(),
        }
    return environment.mnist_state


@events.init.add_listener
def prepare_before_the_run(environment: Environment, **_kwargs: Any) -> None:
    """Prepare before Locust starts its run-time clock, so neither the run time nor the
    req/s include the seconds it takes: a local run here, and a headless master waits
    here until its workers have prepared."""
    runner = environment.runner
    if not isinstance(runner, WorkerRunner):
        check_thresholds(environment)
    if isinstance(runner, LocalRunner):
        prepare_workload(environment)
    elif isinstance(runner, WorkerRunner):
        errors = []
        if _can_prepare_now(environment):
            prepare_workload(environment)
            errors = _state(environment)["setup_errors"]
        # The master reports these errors: sent once, here, not with the stats as well.
        runner.send_message(PREPARED_MESSAGE, errors.copy())
        errors.clear()
    elif isinstance(runner, MasterRunner) and environment.parsed_options.headless:
        wait_for_prepared_workers(environment)
    # gevent's loop caches "now" and did not run while we prepared: without this, the
    # run-time timer Locust sets next counts from a stale now, and fires that much early.
    gevent.get_hub().loop.update_now()


def check_thresholds(environment: Environment) -> None:
    """Read the thresholds now, so a bad profile or file stops Locust before any load."""
    try:
        _state(environment)["limits"] = load_limits(environment.parsed_options)
    except ValueError as error:
        logger.error("load test: %s", error)
        sys.exit(2)  # the run could not be made


def load_limits(options: Any) -> Thresholds:
    return load_thresholds(
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


def _can_prepare_now(environment: Environment) -> bool:
    """A worker started with the answers or a host (the runner's, ``--processes``);
    one started by hand learns the host with the first test, and prepares then."""
    return bool(environment.parsed_options.offline_answers or environment.host)


def wait_for_prepared_workers(environment: Environment) -> None:
    """Block (the hub runs on) until ``--expect-workers`` workers have said they are prepared."""
    options, state = environment.parsed_options, _state(environment)
    prepared: set[str] = set()
    all_prepared = gevent.event.Event()

    def on_prepared(msg: Any, **_kwargs: Any) -> None:
        prepared.add(msg.node_id)
        state["setup_errors"].extend(msg.data)
        if len(prepared) >= options.expect_workers:
            all_prepared.set()

    environment.runner.register_message(PREPARED_MESSAGE, on_prepared)
    if not all_prepared.wait(timeout=options.expect_workers_max_wait or _PREPARE_TIMEOUT_S):
        logger.warning("%d of %d workers prepared", len(prepared), options.expect_workers)
    if state["setup_errors"]:
        gevent.spawn(environment.runner.quit)


@events.test_start.add_listener
def prepare(environment: Environment, **_kwargs: Any) -> None:
    """Each test (the web UI may run several) counts afresh, as Locust's stats do.

    A worker started by hand prepares here: the master's host and options come with it.
    """
    _state(environment)["tally"].clear()
    if isinstance(environment.runner, WorkerRunner):
        prepare_workload(environment)


def prepare_workload(environment: Environment) -> None:
    """Build this process's workload once; on failure report why and stop the run."""
    state = _state(environment)
    if state["is_prepared"]:
        return
    state["is_prepared"] = True
    try:
        state["workload"] = build_workload(environment.parsed_options, environment.host or "")
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
    limits: Thresholds = state["limits"]  # read in init, before the run
    summary = summarise_stats(environment.stats)
    summary["accuracy"] = state["tally"].rows()
    summary["thresholds"] = vars(limits)
    summary["violations"] = state["setup_errors"] + evaluate(summary, limits)
    if options.summary_json:
        Path(options.summary_json).write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("mnist-serve load test summary\n%s", format_summary(summary))
    # Set either way: left unset, Locust exits 1 on any failed request, even one allowed.
    environment.process_exit_code = 1 if summary["violations"] else 0
    if state["setup_errors"]:
        environment.process_exit_code = 2  # the run could not be made
