"""Per-request observability as one pure ASGI middleware: ids, counts, timings, access log.

Pure ASGI rather than ``BaseHTTPMiddleware``: it wraps ``send`` and nothing else, so
it costs a few microseconds a request (see tests/serving/test_middleware.py) where
``BaseHTTPMiddleware`` costs a task and a stream per request.

It leaves ``request_id``, ``start_time`` (``perf_counter``) and ``start_monotonic`` in
``scope["state"]`` (= ``request.state``). The handler side (``serving.api.common.infer``)
leaves an ``InferenceRecord`` in ``request.state.inference``; this reads its ``model``,
``version``, ``images``, ``queue_s``, ``compute_s`` and ``batch_images``. A failed
request leaves ``error`` (its error's short name) and, when its model was known,
``failed_model``; only failures pay for them.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from serving.logs import log_fields
from serving.metrics import ServingMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = b"x-request-id"
# A client's id is echoed in a header and a log line: printable ASCII, bounded length.
_VALID_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")
# Probes and scrapes arrive every few seconds: at info level they would drown the requests,
# and in the in-flight gauge an idle server would never read 0.
QUIET_PATHS = frozenset(
    {"/metrics", "/health", "/healthz", "/livez", "/readyz", "/v2/health/live", "/v2/health/ready"}
)

access_logger = logging.getLogger("mnist_serve.access")


def new_request_id() -> str:
    """16 hex characters: unique enough to find one request in the logs, short to read."""
    return os.urandom(8).hex()


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-ID`` if it is sane, else a new one."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if _VALID_REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return new_request_id()


def milliseconds(seconds: float) -> float:
    """``seconds`` in ms to 3 decimals (µs), as ``round(seconds * 1e3, 3)`` gives for a
    duration but in a third of its time: the access line has three of them."""
    return int(seconds * 1e6 + 0.5) / 1000


def server_timing(inference: Any, total_s: float) -> str:
    """``Server-Timing`` value in ms: queue and infer when a batch ran, total always."""
    total = f"total;dur={total_s * 1e3:.3f}"
    if inference is None:
        return total
    queue_ms = inference.queue_s * 1e3
    infer_ms = inference.compute_s * 1e3
    return f"queue;dur={queue_ms:.3f}, infer;dur={infer_ms:.3f}, {total}"


class ObservabilityMiddleware:
    """Request id in and out, in-flight gauge, responses by status, Server-Timing, access log."""

    def __init__(self, app: ASGIApp, *, metrics: ServingMetrics, access_log: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_from(scope["headers"])
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        # Where the request's clocks start: durations and deadlines in serving.api.common.
        state["start_time"] = started
        state["start_monotonic"] = time.monotonic()
        status = 0
        is_quiet = scope["path"] in QUIET_PATHS

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                timing = server_timing(state.get("inference"), time.perf_counter() - started)
                message = {
                    **message,
                    "headers": [
                        *message.get("headers", ()),
                        (REQUEST_ID_HEADER, request_id.encode("ascii")),
                        (b"server-timing", timing.encode("ascii")),
                    ],
                }
            await send(message)

        self.metrics.request_started(is_probe=is_quiet)
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if status == 0:  # Starlette's outermost handler will answer 500
                status = 500
            raise
        finally:
            self.metrics.request_ended(is_probe=is_quiet)
            if status:
                self.metrics.http_response(status)
            if self.access_log:
                self._log(scope, request_id, status, time.perf_counter() - started, is_quiet)

    def _log(
        self, scope: Scope, request_id: str, status: int, total_s: float, is_quiet: bool
    ) -> None:
        path = scope["path"]
        level = logging.DEBUG if is_quiet else logging.INFO
        if not access_logger.isEnabledFor(level):  # before building the fields
            return
        client = scope.get("client")
        fields: dict[str, Any] = {
            "request_id": request_id,
            "method": scope["method"],
            "path": path,
            "status": status or None,  # None: the client left before any response
            "total_ms": milliseconds(total_s),
            "client": client[0] if client else None,
        }
        route = scope.get("route")
        if route is not None:
            fields["route"] = getattr(route, "path", None)
        state = scope["state"]
        if status >= 400 or not status:  # what went wrong, and for which model
            _add_error_fields(fields, state)
        inference = state.get("inference")
        if inference is not None:
            fields.update(
                model=inference.model,
                version=inference.version,
                images=inference.images,
                batch_images=inference.batch_images,
                queue_ms=milliseconds(inference.queue_s),
                compute_ms=milliseconds(inference.compute_s),
            )
        log_fields(access_logger, level, "request", fields)


def report_protocol_answer(
    metrics: ServingMetrics,
    access_log: bool,
    status: int,
    reason: str,
    client: tuple[str, int] | None,
    headers: list[tuple[bytes, bytes]],
    waited_s: float,
) -> None:
    """Count and log what the HTTP server answered itself, with no app running, so no
    middleware saw it: a 408 to a request whose line and headers did not arrive in time,
    a 400 to one it could not parse (``serving.limits.HeadDeadlineProtocol.answer_alone``).
    Bind the first two arguments and leave it in the lifespan state under
    ``serving.limits.PROTOCOL_ANSWER_REPORTER``.

    Its line has no method or path (the request line may be cut short or unreadable) and
    no route, and its client is the connection's peer (no proxy header is read from a
    partial head).
    """
    metrics.http_response(status)
    if not access_log or not access_logger.isEnabledFor(logging.INFO):
        return
    fields = {
        "request_id": request_id_from(headers),
        "method": None,
        "path": None,
        "status": status,
        "total_ms": milliseconds(waited_s),
        "client": client[0] if client else None,
        "error": reason,
    }
    log_fields(access_logger, logging.INFO, "request", fields)


def _add_error_fields(fields: dict[str, Any], state: dict[str, Any]) -> None:
    """``model``/``version`` when the failed request was for a known model, and ``error``:
    the short name its handler left (``serving.api.common.note_error``)."""
    failed_model = state.get("failed_model")
    if failed_model is not None:
        fields["model"], fields["version"] = failed_model
    error = state.get("error")
    if error is not None:
        fields["error"] = error
