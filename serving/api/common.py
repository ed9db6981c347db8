"""What every inference route does between decoding and encoding.

Routers decode and validate a body into images, then call :func:`infer`, which
applies the request's deadline, submits to the model's batcher, and records the
outcome in metrics and in ``request.state`` (for Server-Timing and access logs).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from serving.batch_result import BatchResult
from serving.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InvalidInput,
    Overloaded,
    PayloadTooLarge,
    ServingError,
)

if TYPE_CHECKING:
    from serving.app import Server
    from serving.repository import ServedModel

TIMEOUT_HEADER = "x-request-timeout-ms"
_DECIMAL_MILLISECONDS = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
# The scope extension ServingHttpProtocol sets to the live set of its server's request
# tasks, those created and not yet started included: read by :func:`is_alone`.
SERVER_TASKS = "mnist_serve.server_tasks"

logger = logging.getLogger("mnist_serve.app")

_OUTCOMES: dict[type[ServingError], str] = {
    Overloaded: "rejected",
    DeadlineExceeded: "timeout",
    InferenceFailed: "server_error",
}


@dataclass(frozen=True)
class InferenceRecord:
    """Where one request's time went; the middleware turns it into Server-Timing and logs."""

    model: str
    version: str
    images: int
    queue_s: float
    compute_s: float
    batch_images: int


def error_response(
    status_code: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    """The one error body every endpoint answers with: ``{"error": "..."}``."""
    return Response(
        orjson.dumps({"error": message}),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


def serving_error_response(request: Request, error: ServingError) -> Response:
    """The answer to a :class:`ServingError`, a 4xx counted for its model if it has one."""
    note_error(request.scope, error.reason)
    if 400 <= error.status_code < 500:
        count_client_error(request, server_of(request))
    return error_response(error.status_code, error.message, error.headers)


def note_error(scope: Scope, reason: str) -> None:
    """Leave an error's short name for the access line (``error``); only errors pay it."""
    scope.setdefault("state", {})["error"] = reason


def note_failed_model(request: Request, model: ServedModel) -> None:
    """Leave the model a failed request was for, for the access line (a success's model
    comes from its ``InferenceRecord``)."""
    request.scope["state"]["failed_model"] = (model.name, model.version)


def unexpected_error_response(request: Request) -> Response:
    """The last-resort 500: the traceback goes to the log (with the request id), not the client.

    Call it from an ``except`` block or an exception handler, where the error is current.
    """
    request_id = request.scope.get("state", {}).get("request_id")
    note_error(request.scope, "internal")
    logger.exception(
        "unhandled error on %s %s (request %s)", request.method, request.url.path, request_id
    )
    return error_response(500, "internal server error; the server log has the details")


def server_of(request: Request) -> Server:
    return request.app.server  # create_app's ServingApp; the same object as app.state.server


async def read_body(request: Request) -> bytes:
    """The whole body, refused with 413 as soon as it passes ``max_body_bytes``.

    The limit is enforced on the wire by ``serving.limits.BodyLimitMiddleware``; this
    checks again so a router works the same when mounted without it.
    """
    body = await request.body()
    limit = server_of(request).settings.max_body_bytes
    if len(body) > limit:
        raise PayloadTooLarge(f"request body over the {limit}-byte limit (max_body_bytes)")
    return body


def request_deadline(request: Request, timeout_s: float | None = None) -> float:
    """The ``time.monotonic()`` instant this request must finish by: the smallest of the
    server's ``request_timeout_s``, the ``X-Request-Timeout-Ms`` header and ``timeout_s``."""
    limit_s = server_of(request).settings.request_timeout_s
    header = request.headers.get(TIMEOUT_HEADER)
    if header is not None:
        # Decimal digits only: float() would also take "1_000", "1e3", "inf" and "nan".
        if not _DECIMAL_MILLISECONDS.fullmatch(header.strip()):
            raise InvalidInput(
                "header X-Request-Timeout-Ms: expected milliseconds as a decimal number, "
                f"got {header!r}"
            )
        header_ms = float(header)
        if not header_ms > 0:
            raise InvalidInput(f"header X-Request-Timeout-Ms: must be > 0, got {header!r}")
        limit_s = min(limit_s, header_ms / 1000)
    if timeout_s is not None:
        if not timeout_s > 0:
            raise InvalidInput(f"timeout must be > 0, got {timeout_s!r} s")
        limit_s = min(limit_s, timeout_s)
    started = request.scope.get("state", {}).get("start_monotonic")
    return (time.monotonic() if started is None else started) + limit_s


async def infer(
    request: Request,
    model: ServedModel,
    images: np.ndarray,
    *,
    endpoint: str,
    timeout_s: float | None = None,
) -> BatchResult:
    """Run validated images (N, 1, 28, 28) through the model's batcher, counting the outcome."""
    server = server_of(request)
    started = time.perf_counter()
    deadline = request_deadline(request, timeout_s)
    request.state.is_counted = True
    try:
        result = await _submit(server, model, images, deadline, is_alone=is_alone(request.scope))
        check_outputs(model, result.outputs, len(images))
    except ServingError as error:
        count_failure(request, model, error, endpoint=endpoint, started=started)
        raise
    request.state.inference = InferenceRecord(
        model.name,
        model.version,
        len(images),
        result.queue_s,
        result.compute_s,
        result.batch_images,
    )
    _finish(request, server, model, endpoint, "success", len(images), started, result)
    return result


async def _submit(
    server: Server, model: ServedModel, images: np.ndarray, deadline: float, *, is_alone: bool
) -> BatchResult:
    """Submit to the model's batcher; if a reload retired it while this request was read,
    its replacement (same name and version) answers instead of a refusal."""
    try:
        return await model.batcher.submit(images, deadline=deadline, is_alone=is_alone)
    except Overloaded as error:
        if error.reason != "shutting_down" or server.is_draining:
            raise
        replacement = server.repository.get(model.name, model.version)  # 404 once unloaded
        if replacement is model:
            raise
        return await replacement.batcher.submit(images, deadline=deadline, is_alone=is_alone)


def count_failure(
    request: Request,
    model: ServedModel,
    error: ServingError,
    *,
    endpoint: str,
    started: float | None = None,
) -> None:
    """Count a request for ``model`` that ``error`` ended, in the queue or while its
    pictures were decoded: refused (counted by reason too), timed out, or failed."""
    server = server_of(request)
    request.state.is_counted = True
    note_failed_model(request, model)
    if isinstance(error, Overloaded):
        server.metrics.request_rejected(
            model=model.name, version=model.version, reason=error.reason
        )
    outcome = _OUTCOMES.get(type(error), "server_error")
    _finish(
        request,
        server,
        model,
        endpoint,
        outcome,
        0,
        time.perf_counter() if started is None else started,
    )


def server_extension(scope: Scope, name: str) -> Any:
    """What the HTTP server put in the scope's ``extensions`` under ``name``, or None."""
    extensions = scope.get("extensions")
    return None if extensions is None else extensions.get(name)


def is_alone(scope: Scope) -> bool:
    """Whether the HTTP server says it holds no request but this one, started or not
    (:data:`SERVER_TASKS`); False under a server that does not say."""
    tasks = server_extension(scope, SERVER_TASKS)
    return tasks is not None and len(tasks) <= 1


def check_outputs(model: ServedModel, outputs: np.ndarray, images: int) -> None:
    """A model whose output breaks its card must fail the request, not answer it wrongly."""
    spec = model.card.outputs[0]
    expected = (images, *spec.shape[1:])
    if outputs.shape != expected:
        raise InferenceFailed(
            f"model {model.name!r} version {model.version} returned {spec.name!r} of shape "
            f"{list(outputs.shape)} for {images} image(s); its card says {list(expected)}"
        )


def _finish(
    request: Request,
    server: Server,
    model: ServedModel,
    endpoint: str,
    outcome: str,
    images: int,
    started: float,
    result: BatchResult | None = None,
) -> None:
    request_started = request.scope.get("state", {}).get("start_time", started)
    server.metrics.request_finished(
        model=model.name,
        version=model.version,
        endpoint=endpoint,
        outcome=outcome,
        images=images,
        duration_s=time.perf_counter() - request_started,
        queue_s=None if result is None else result.queue_s,
        compute_s=None if result is None else result.compute_s,
    )


def count_client_error(request: Request, server: Server) -> None:
    """Count a 4xx for a model that exists (decoding failed before :func:`infer` ran).

    Only names the repository knows become labels, so clients cannot add series.
    """
    if getattr(request.state, "is_counted", False):
        return
    name = request.path_params.get("model")
    path = request.url.path
    if not name or not path.startswith(("/v1/models/", "/v2/models/")):
        return
    try:
        model = server.repository.get(name, request.path_params.get("version"))
    except ServingError:
        return
    request.state.is_counted = True
    note_failed_model(request, model)
    endpoint = "v1" if path.startswith("/v1/") else "v2"
    _finish(request, server, model, endpoint, "client_error", 0, time.perf_counter())
