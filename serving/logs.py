"""Logging: one JSON object per line on stderr, for our loggers and uvicorn's.

Structured fields travel in ``extra={"fields": {...}}`` and become top-level keys,
so an access line reads ``{"ts": ..., "level": "info", "logger": "mnist_serve.access",
"pid": 4242, "msg": "request", "request_id": ..., "status": 200, ...}``. ``pid`` tells
the workers of ``--workers N`` (and their supervisor) apart.

Uvicorn applies its ``log_config`` in the parent AND in every spawned worker, so the
CLI hands it ``logging_config(...)``; ``configure_logging`` applies the same dict here.

An access line is written per request, so its cost is on the hot path: the formatters
print no caller, thread or process name, and :func:`formatter` tells ``logging`` not to
look them up (the Logging HOWTO's "Optimization"), which with the cached timestamp takes
about a third off each line. The pid they print is looked up once per process.
"""

from __future__ import annotations

import functools
import logging
import logging.config
import os
import time
from typing import Any

import orjson

LEVELS = ("debug", "info", "warning", "error")
OUR_LOGGERS = ("mnist_serve", "uvicorn", "uvicorn.error")
# Our middleware writes the access log (with request ids and timings); uvicorn's would repeat it.
QUIET_LOGGERS = ("uvicorn.access",)
# uvicorn's warning for a request its parser could not read: the access line written for
# its 400 (``malformed_http``, with client and request id) says the same, and more. With
# the access log off it is counted in the metrics, as every other request is.
UVICORN_MALFORMED_HTTP_WARNING = "Invalid HTTP request received."

# This process's id, on every line. os.getpid() is a system call (~0.2 µs, as much as
# the rest of the line's fixed keys), so it is looked up once, and again in a forked
# child, which would otherwise print its parent's. uvicorn spawns its workers: each
# imports this module afresh.
_pid = os.getpid()


def _note_pid_after_fork() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_note_pid_after_fork)


def skip_unused_record_fields() -> None:
    """Stop ``logging`` computing, per record, the fields our formatters never print.

    The caller's file and line cost a stack walk; thread and process names, lookups.
    """
    logging._srcfile = None  # documented switch: no findCaller stack walk per record
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def formatter(json: bool = True, use_colors: bool | None = None) -> logging.Formatter:
    """The ``dictConfig`` factory of our formatters; it runs in every worker process.

    ``use_colors``: uvicorn sets it on the formatters it knows by name; ours have none.
    """
    skip_unused_record_fields()
    return JsonFormatter() if json else TextFormatter()


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "pid", "msg", **fields, "exc"?}`` as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        exc = self.formatException(record.exc_info) if record.exc_info else None
        fields = getattr(record, "fields", None)
        return self.format_line(
            record.created, record.levelname, record.name, record.getMessage(), fields, exc
        )

    @staticmethod
    def format_line(
        created: float,
        level_name: str,
        logger_name: str,
        message: str,
        fields: dict[str, Any] | None = None,
        exc: str | None = None,
    ) -> str:
        """The line :meth:`format` writes, from its parts rather than a ``LogRecord``."""
        entry: dict[str, Any] = {
            "ts": _utc_timestamp(created),
            "level": level_name.lower(),
            "logger": logger_name,
            "pid": _pid,
            "msg": message,
        }
        if fields:
            entry.update(fields)
        if exc is not None:
            entry["exc"] = exc
        return orjson.dumps(entry, default=str).decode()


def log_fields(logger: logging.Logger, level: int, message: str, fields: dict[str, Any]) -> None:
    """``logger.log(level, message, extra={"fields": fields})``, cheaply when logging is ours.

    A record that would reach only one plain stream handler with a :class:`JsonFormatter`
    (the configuration :func:`logging_config` makes) is written to that handler's stream
    directly, as the same line, without building a ``LogRecord`` and walking ``logging``'s
    machinery: 13 µs instead of 25 for an access line. Any other configuration (another
    handler, a filter, a test's log capture) gets the ordinary ``logger.log``.
    """
    if not logger.isEnabledFor(level):
        return
    handler = _sole_json_stream_handler(logger)
    if handler is None:
        logger.log(level, message, extra={"fields": fields})
        return
    if level < handler.level:
        return
    line = JsonFormatter.format_line(
        time.time(), logging.getLevelName(level), logger.name, message, fields
    )
    handler.acquire()
    try:
        handler.stream.write(line + handler.terminator)
        handler.flush()
    except Exception:  # as StreamHandler.emit: report on stderr, never fail the caller
        handler.handleError(logger.makeRecord(logger.name, level, "", 0, message, (), None))
    finally:
        handler.release()


def _sole_json_stream_handler(logger: logging.Logger) -> logging.StreamHandler | None:
    """The one handler ``logger``'s records reach, if it is a plain ``StreamHandler``
    with a :class:`JsonFormatter` and there is no filter anywhere on the way."""
    found: logging.Handler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if found is not None:
                return None
            found = handler
        current = current.parent if current.propagate else None
    if (
        type(found) is not logging.StreamHandler
        or found.filters
        or type(found.formatter) is not JsonFormatter
    ):
        return None
    return found


class TextFormatter(logging.Formatter):
    """For a human at a terminal: the same content, ``key=value`` after the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        # The line before any traceback, which ``format`` appends to it.
        line = super().formatMessage(record)
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return f"{line} pid={_pid}"


@functools.lru_cache(maxsize=4)
def _utc_second(seconds: int) -> str:
    """Formatted once per second, not once per line."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _utc_timestamp(created: float) -> str:
    seconds = int(created)
    milliseconds = int((created - seconds) * 1000)
    return f"{_utc_second(seconds)}.{milliseconds:03d}Z"


class WithoutMalformedHttpWarning(logging.Filter):
    """Drops uvicorn's one-line warning for malformed HTTP, which the access line repeats."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != UVICORN_MALFORMED_HTTP_WARNING


def logging_config(level: str = "info", json: bool = True) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict; pass it to ``uvicorn.run(log_config=...)``."""
    if level.lower() not in LEVELS:
        raise ValueError(f"log level must be one of {LEVELS}, not {level!r}")
    factory = {"()": f"{formatter.__module__}.{formatter.__name__}", "json": json}
    ours = {"level": level.upper(), "handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        # uvicorn looks these two names up when use_colors is given.
        "formatters": {"default": factory, "access": factory},
        "filters": {
            "without_malformed_http_warning": {
                "()": f"{__name__}.{WithoutMalformedHttpWarning.__name__}"
            }
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            **{name: ours for name in OUR_LOGGERS},
            "uvicorn.error": {**ours, "filters": ["without_malformed_http_warning"]},
            **{
                name: {"level": "WARNING", "handlers": [], "propagate": True}
                for name in QUIET_LOGGERS
            },
        },
        # Other libraries' warnings still reach stderr, in the same format.
        "root": {"level": "WARNING", "handlers": ["stderr"]},
    }


def configure_logging(level: str = "info", json: bool = True) -> None:
    """JSON lines (or text, ``json=False``) on stderr for ``mnist_serve.*`` and uvicorn."""
    logging.config.dictConfig(logging_config(level, json))
