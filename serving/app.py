"""``create_app(settings)``: builds the FastAPI app; models load in its lifespan.

Importing this module does no work: no model is loaded, no port opened, no
environment read until ``create_app`` is called.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException
from starlette.types import Scope

from serving.api import health, v1, v2
from serving.api.common import (
    error_response,
    note_error,
    serving_error_response,
    unexpected_error_response,
)
from serving.api.redoc import redoc_page_for
from serving.auth import ApiKeyMiddleware
from serving.cors import JsonCorsMiddleware
from serving.decode_pool import DecodePool
from serving.errors import InvalidInput, ServingError
from serving.fastpath import ServingApp, as_serving_app
from serving.head import HeadAsGetMiddleware
from serving.limits import PROTOCOL_ANSWER_REPORTER, BodyLimitMiddleware
from serving.metrics import ServingMetrics, render_metrics
from serving.middleware import ObservabilityMiddleware, report_protocol_answer
from serving.repository import ModelRepository
from serving.runtime import ModelLoadError, usable_cpus
from serving.settings import Settings
from serving.stall import StallWatchdog

logger = logging.getLogger("mnist_serve.app")

STATIC_DIR = Path(__file__).parent / "static"
DOCS_ASSETS_URL = "/docs-assets"
# The access line's ``error`` for Starlette's own refusals (its router's, mostly).
HTTP_ERROR_REASONS = {404: "no_route", 405: "method_not_allowed"}


def package_version() -> str:
    try:
        return version("mnist-serve")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass(eq=False)
class Server:
    """Everything a request handler needs, hung on ``app.state.server``."""

    settings: Settings
    repository: ModelRepository
    metrics: ServingMetrics
    decode_pool: DecodePool
    watchdog: StallWatchdog
    is_draining: bool = False

    @property
    def is_ready(self) -> bool:
        return not self.is_draining and self.repository.is_ready


class PageFiles(StaticFiles):
    """The try-it page's files, revalidated on every load (ETag, Last-Modified): after an
    upgrade a browser never pairs a cached old app.js with the new index.html."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        return response


def create_app(settings: Settings | None = None) -> ServingApp:
    """A new app with its own settings, repository and metrics registry."""
    settings = settings if settings is not None else Settings()
    metrics = ServingMetrics()
    repository = ModelRepository(settings, metrics)
    watchdog = StallWatchdog(
        repository,
        metrics,
        ready_after_s=settings.request_timeout_s,
        live_after_s=settings.liveness_stall_s,
    )
    server = Server(settings, repository, metrics, _decode_pool(settings), watchdog)

    @asynccontextmanager
    async def lifespan(app: ServingApp) -> AsyncIterator[dict[str, Any]]:
        try:
            await server.repository.load_all()
        except ModelLoadError as error:
            logger.error("cannot start: %s", error)  # one clear line above the traceback
            raise
        app.build_inference_stack()
        server.watchdog.start()
        # Objects alive now (models, sessions, app) live for the whole run: keep them out
        # of the collector's scans, which otherwise add milliseconds to tail latency.
        gc.collect()
        gc.freeze()
        logger.info("ready: serving %s", ", ".join(server.repository.names()))
        # The lifespan state, which the HTTP protocol sees: where its own answers (408, 400)
        # are reported.
        yield {
            PROTOCOL_ANSWER_REPORTER: functools.partial(
                report_protocol_answer, server.metrics, settings.access_log
            )
        }
        server.is_draining = True
        await server.watchdog.stop()
        await server.repository.close()
        server.decode_pool.close()
        server.metrics.flush()  # the last requests' updates, before a worker's files close

    app = as_serving_app(
        FastAPIOffline(
            static_url=DOCS_ASSETS_URL,
            redoc_url=None,  # ours, below: the same page, its images kept on this server
            title="mnist-serve",
            version=package_version(),
            summary="Dynamically batched MNIST inference on ONNX Runtime: v1 API and KServe V2.",
            lifespan=lifespan,
        )
    )
    app.state.server = app.server = server
    _add_error_handlers(app)
    app.include_router(health.router)
    app.include_router(v1.router)
    app.include_router(v2.router)
    app.add_api_route("/redoc", redoc_page_for(DOCS_ASSETS_URL), include_in_schema=False)
    _add_operational_routes(app, server)
    _add_middleware(app, settings, metrics)
    return app


def _decode_pool(settings: Settings) -> DecodePool:
    """Pictures decode on at most one thread per usable CPU (split across workers)."""
    threads = settings.decode_threads or max(1, usable_cpus() // settings.workers)
    return DecodePool(
        threads,
        settings.max_waiting_decodes,
        overload_status_code=settings.overload_status_code,
    )


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServingError)
    async def serving_error(request: Request, error: ServingError) -> Response:
        return serving_error_response(request, error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        note_error(request.scope, InvalidInput.reason)
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            for problem in error.errors()
        )
        return error_response(400, f"invalid request: {problems}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        message = error.detail if isinstance(error.detail, str) else str(error.detail)
        note_error(request.scope, HTTP_ERROR_REASONS.get(error.status_code, "http_error"))
        if error.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /docs"
        elif error.status_code == 405 and error.headers and "Allow" in error.headers:
            message = (
                f"method {request.method} is not allowed on {request.url.path}; "
                f"allowed: {error.headers['Allow']}"
            )
        return error_response(error.status_code, message, error.headers)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> Response:
        return unexpected_error_response(request)


def _add_operational_routes(app: FastAPI, server: Server) -> None:
    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics (text format)",
        response_class=PlainTextResponse,
    )
    async def metrics() -> Response:
        body, content_type = render_metrics(server.metrics)
        return Response(body, media_type=content_type)

    page_files = PageFiles(directory=STATIC_DIR)

    @app.get("/", include_in_schema=False)
    async def index(request: Request) -> Response:
        return await page_files.get_response("index.html", request.scope)  # 304 if unchanged

    app.mount("/static", page_files, name="static")


def _add_middleware(app: FastAPI, settings: Settings, metrics: ServingMetrics) -> None:
    """Outermost last: observability sees every response, including 401 and 413; CORS is
    outside the API key, so preflights (never credentialed) pass and 401s carry its headers.
    """
    app.add_middleware(HeadAsGetMiddleware)
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.request_timeout_s,
    )
    if settings.api_key is not None:
        app.add_middleware(
            ApiKeyMiddleware,
            api_key=settings.api_key.get_secret_value(),
            protect_metrics=settings.api_key_protects_metrics,
        )
    if settings.cors_allow_origins:
        app.add_middleware(
            JsonCorsMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["Server-Timing", "X-Request-ID", "Retry-After"],
        )
    app.add_middleware(ObservabilityMiddleware, metrics=metrics, access_log=settings.access_log)
