"""Log lines are one JSON object each, for our loggers and uvicorn's."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import orjson
import pytest

from serving.logs import JsonFormatter, logging_config


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

    assert "mnist_serve.access: request status=200" in access


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
