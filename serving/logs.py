"""Logging: one JSON object per line on stderr, for our loggers and uvicorn's.

Structured fields travel in ``extra={"fields": {...}}`` and become top-level keys,
so an access line reads ``{"ts": ..., "level": "info", "logger": "mnist_serve.access",
"msg": "request", "request_id": ..., "status": 200, ...}``.

Uvicorn applies its ``log_config`` in the parent AND in every spawned worker, so the
CLI hands it ``logging_config(...)``; ``configure_logging`` applies the same dict here.

An access line is written per request, so its cost is on the hot path: the formatters
print no caller, thread or process, and :func:`formatter` tells ``logging`` not to look
them up (the Logging HOWTO's "Optimization"), which with the cached timestamp takes
about a third off each line.
"""

from __future__ import annotations

import functools
import logging
import logging.config
import time
from typing import Any

import orjson

LEVELS = ("debug", "info", "warning", "error")
OUR_LOGGERS = ("mnist_serve", "uvicorn", "uvicorn.error")
# Our middleware writes the access log (with request ids and timings); uvicorn's would repeat it.
QUIET_LOGGERS = ("uvicorn.access",)


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
    """``{"ts", "level", "logger", "msg", **fields, "exc"?}`` as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _utc_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """For a human at a terminal: the same content, ``key=value`` after the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return line


@functools.lru_cache(maxsize=4)
def _utc_second(seconds: int) -> str:
    """Formatted once per second, not once per line."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _utc_timestamp(created: float) -> str:
    seconds = int(created)
    milliseconds = int((created - seconds) * 1000)
    return f"{_utc_second(seconds)}.{milliseconds:03d}Z"


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
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            **{name: ours for name in OUR_LOGGERS},
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
