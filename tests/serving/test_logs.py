"""Log lines are one JSON object each, for our loggers and uvicorn's."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from serving.logs import JsonFormatter, log_fields, logging_config
from tests.support import log_entries, running_server, wait_for


def record(message: str, *args: object, **fields: object) -> logging.LogRecord:
    made = logging.LogRecord("mnist_serve.test", logging.INFO, __file__, 1, message, args, None)
    if fields:
        made.fields = fields
    return made


def test_fields_become_top_level_keys() -> None:
    line = JsonFormatter().format(record("loaded %s", "tiny/1", model="tiny", images=3))

    entry = orjson.loads(line)
    assert entry["msg"] == "loaded tiny/1"
    assert (entry["level"], entry["logger"], entry["model"], entry["images"]) == (
        "info",
        "mnist_serve.test",
        "tiny",
        3,
    )
    assert entry["ts"].endswith("Z")


def test_exceptions_are_kept_in_the_same_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("failed")
        failed.exc_info = sys.exc_info()

    line = JsonFormatter().format(failed)

    assert "\n" not in line
    assert "ValueError: boom" in orjson.loads(line)["exc"]


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="log level"):
        logging_config("verbose")


# dictConfig changes the process's logging, so it runs in a child interpreter.
CHILD = textwrap.dedent(
    """
    import logging, sys
    from serving.logs import configure_logging
    configure_logging(sys.argv[1], json=sys.argv[2] == "json")
    logging.getLogger("mnist_serve.access").info("request", extra={"fields": {"status": 200}})
    logging.getLogger("mnist_serve.app").debug("details")
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    logging.getLogger("uvicorn.access").info("duplicate of our access line")
    logging.getLogger("some.library").info("chatter")
    """
)


def child_stderr(level: str, style: str = "json") -> list[str]:
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, level, style], capture_output=True, text=True, check=True
    )
    assert completed.stdout == ""
    return completed.stderr.splitlines()


def test_our_and_uvicorns_lines_are_json_on_stderr() -> None:
    entries = [orjson.loads(line) for line in child_stderr("info")]

    assert [(entry["logger"], entry["msg"]) for entry in entries] == [
        ("mnist_serve.access", "request"),
        ("uvicorn.error", "Started server process [42]"),
    ]
    assert entries[0]["status"] == 200


def test_debug_level_shows_debug_lines() -> None:
    messages = [orjson.loads(line)["msg"] for line in child_stderr("debug")]

    assert "details" in messages


def test_text_style_is_for_terminals() -> None:
    [access, _] = child_stderr("info", style="text")

    assert re.search(r" mnist_serve\.access: request status=200 pid=\d+$", access), access


SKIPPED_LOOKUPS = textwrap.dedent(
    """
    import logging, sys
    from serving.logs import configure_logging
    configure_logging("info")
    record = logging.getLogger("mnist_serve.access").makeRecord(
        "mnist_serve.access", logging.INFO, "(unknown file)", 0, "request", (), None
    )
    print(logging._srcfile, record.threadName, record.processName, record.process)
    """
)


def test_records_skip_the_caller_thread_and_process_lookups_our_lines_never_print() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", SKIPPED_LOOKUPS], capture_output=True, text=True, check=True
    )

    assert completed.stdout.split() == ["None"] * 4


def test_timestamps_are_milliseconds_in_utc() -> None:
    made = record("at a known instant")
    made.created = 1764493261.5076  # 2025-11-30T09:01:01.507Z

    assert orjson.loads(JsonFormatter().format(made))["ts"] == "2025-11-30T09:01:01.507Z"


# log_fields's direct path needs our logging configuration, and pytest hangs its own
# capture handlers on loggers, so these run in a child interpreter too.
DIRECT = textwrap.dedent(
    """
    import io, logging, sys
    from serving.logs import configure_logging, log_fields
    configure_logging("info")
    logger = logging.getLogger("mnist_serve.access")
    handler = logging.getLogger().handlers[0]
    fields = {"request_id": "req-1", "status": 200, "total_ms": 1.25}
    case = sys.argv[1]
    if case == "same line":
        logger.info("request", extra={"fields": fields})
    elif case == "handler level":
        handler.setLevel(logging.WARNING)
    elif case == "filter":
        logger.addFilter(lambda record: record.fields["status"] != 200)
    elif case == "broken stream":
        handler.setStream(io.StringIO()).close()  # setStream returns the old stream
        handler.stream.close()
        handler.handleError = lambda record: print("reported", record.getMessage())
    made = []
    factory = logging.getLogRecordFactory()
    logging.setLogRecordFactory(lambda *args, **kwargs: made.append(1) or factory(*args, **kwargs))
    log_fields(logger, logging.INFO, "request", fields)
    log_fields(logger, logging.DEBUG, "probe", fields)
    print("records", len(made))
    """
)


def run_log_fields(case: str) -> tuple[list[str], list[str]]:
    """(stdout lines, stderr lines) of DIRECT's ``case``."""
    completed = subprocess.run(
        [sys.executable, "-c", DIRECT, case], capture_output=True, text=True, check=True
    )
    return completed.stdout.splitlines(), completed.stderr.splitlines()


def without_timestamp(line: str) -> dict[str, object]:
    entry = orjson.loads(line)
    assert entry.pop("ts").endswith("Z")
    return entry


def test_log_fields_writes_the_line_logging_would_without_making_a_record() -> None:
    printed, [by_logging, direct] = run_log_fields("same line")

    assert without_timestamp(direct) == without_timestamp(by_logging)
    assert without_timestamp(direct)["request_id"] == "req-1"
    assert printed == ["records 0"]  # and the DEBUG line was not written


def test_log_fields_respects_the_handlers_level() -> None:
    assert run_log_fields("handler level") == (["records 0"], [])


def test_log_fields_lets_logging_apply_a_filter() -> None:
    assert run_log_fields("filter") == (["records 1"], [])


def test_log_fields_reports_a_broken_stream_and_carries_on() -> None:
    printed, _ = run_log_fields("broken stream")

    assert printed == ["reported request", "records 1"]


def test_log_fields_goes_through_logging_when_another_handler_listens(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mnist_serve.access")

    log_fields(logging.getLogger("mnist_serve.access"), logging.INFO, "request", {"status": 200})

    [record] = [record for record in caplog.records if record.name == "mnist_serve.access"]
    assert record.fields == {"status": 200}


# A process forked after logging is configured must not print its parent's pid.
FORKED = textwrap.dedent(
    """
    import logging, os
    from serving.logs import configure_logging, log_fields
    configure_logging("info")
    access = logging.getLogger("mnist_serve.access")
    log_fields(access, logging.INFO, "parent", {})
    child = os.fork()
    if child == 0:
        log_fields(access, logging.INFO, "child, direct", {})
        logging.getLogger("mnist_serve.app").info("child, through logging")
        os._exit(0)
    os.waitpid(child, 0)
    print(os.getpid(), child)
    """
)


def test_a_forked_child_logs_its_own_pid_not_its_parents() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", FORKED], capture_output=True, text=True, check=True
    )

    parent, child = map(int, completed.stdout.split())
    entries = [orjson.loads(line) for line in completed.stderr.splitlines()]
    assert {entry["msg"]: entry["pid"] for entry in entries} == {
        "parent": parent,
        "child, direct": child,
        "child, through logging": child,
    }


def parent_pid(pid: int) -> int:
    """From /proc/<pid>/stat: the fields after the parenthesised name are state, ppid, ..."""
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def wait_for_lines(
    log_path: Path, count: int, is_wanted: Callable[[dict[str, Any]], bool], what: str
) -> list[dict[str, Any]]:
    """Poll a server's log until at least ``count`` of its lines are wanted; return those."""

    def wanted_lines() -> list[dict[str, Any]]:
        lines = [entry for entry in log_entries(log_path) if is_wanted(entry)]
        return lines if len(lines) >= count else []

    return wait_for(wanted_lines, timeout_s=60, what=what)


def test_each_worker_of_a_two_worker_server_logs_its_own_pid(
    tiny_repo: Path, tmp_path: Path
) -> None:
    log_path = tmp_path / "server.log"
    env = {"MNIST_SERVE_WORKERS": "2"}
    with running_server(tiny_repo, env=env, log_path=log_path) as (url, server):
        ready = wait_for_lines(
            log_path, 2, lambda entry: entry["msg"].startswith("ready: "), "both workers ready"
        )
        for _ in range(10):
            httpx.get(f"{url}/v1/models", timeout=10)
        accessed = wait_for_lines(
            log_path, 10, lambda entry: entry.get("path") == "/v1/models", "the access lines"
        )
        workers = {entry["pid"]: parent_pid(entry["pid"]) for entry in ready}
        [started] = [e for e in log_entries(log_path) if e["msg"].startswith("Started parent")]

    assert len(workers) == 2
    assert set(workers.values()) == {server.pid}  # each a child of the server process
    assert {entry["pid"] for entry in accessed} <= set(workers)
    assert started["pid"] == server.pid  # the supervisor's own lines carry its pid
