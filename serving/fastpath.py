"""Inference POSTs dispatched straight to their handlers, ahead of FastAPI's own layers.

FastAPI's routing and dependency resolution cost ~0.1 ms per request, as much as
decoding, batching and encoding together, and its outer layers (its telemetry check,
Starlette's error middleware, its body limit) ~25 µs more. :class:`ServingApp` sends
the four inference paths down a second, short stack: our own middleware (request ids,
metrics, access log, CORS, API key, body limits: the very instances' classes and
settings the app was given) around :class:`InferenceEndpoint`, which calls the very
handlers the FastAPI routes call. Behaviour, errors and OpenAPI docs are the routers';
only the dispatch is shorter. Every other request goes through FastAPI untouched, and
so does every request when FastAPI's OpenTelemetry instrumentation is enabled at start
(a tracer, meter or logger provider is configured), so that no span is lost.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.api import v1, v2
from serving.api.common import serving_error_response, unexpected_error_response
from serving.errors import ServingError

if TYPE_CHECKING:
    from serving.app import Server

Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class InferenceRoute:
    """One inference path: its template (``path``, as on Starlette's ``Route``, so the
    access line's ``route`` reads it from ``scope["route"]`` alike) and its handler."""

    path: str
    handler: Handler
    pattern: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        # "{model}" -> "(?P<model>[^/]+)": the template is the one spelling of the path.
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.path)
        object.__setattr__(self, "pattern", re.compile(regex))


ROUTES: list[InferenceRoute] = [
    InferenceRoute("/v1/models/{model}/predict", lambda request, params: v1.predict(request)),
    InferenceRoute(
        "/v1/models/{model}/versions/{version}/predict",
        lambda request, params: v1.predict_version(request),
    ),
    InferenceRoute(
        "/v2/models/{model}/infer",
        lambda request, params: v2.model_infer(request, params["model"]),
    ),
    InferenceRoute(
        "/v2/models/{model}/versions/{version}/infer",
        lambda request, params: v2.model_version_infer(request, params["model"], params["version"]),
    ),
]


def match_inference_route(path: str) -> tuple[InferenceRoute, dict[str, str]] | None:
    for route in ROUTES:
        matched = route.pattern.fullmatch(path)
        if matched is not None:
            return route, matched.groupdict()
    return None


class InferenceEndpoint:
    """Answer one inference POST with the route :class:`ServingApp` matched; errors as
    the app's exception handlers answer them."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler: Handler = scope["route"].handler
        request = Request(scope, receive, send)
        try:
            response = await handler(request, scope["path_params"])
        except ServingError as error:
            response = serving_error_response(request, error)
        except Exception:  # the one boundary, as the app's last-resort handler is
            response = unexpected_error_response(request)
        await response(scope, receive, send)


class ServingApp(FastAPI):
    """FastAPI whose inference POSTs take the short stack (see the module's docstring).

    It adds no state of its own to construct, so :func:`as_serving_app` can give this
    class to a FastAPI that a factory built (fastapi-offline's ``FastAPIOffline``).
    """

    inference_stack: ASGIApp | None = None
    # create_app's Server, also at app.state.server: a plain attribute is read in 0.1 µs,
    # Starlette's State in 1.8, and the hot path asks four times a request.
    server: Server | None = None

    def build_inference_stack(self) -> None:
        """Call at start-up, once middleware is added and telemetry providers are set."""
        if _is_native_telemetry_enabled(self):
            self.inference_stack = None
            return
        stack: ASGIApp = InferenceEndpoint()
        for middleware in reversed(self.user_middleware):
            stack = middleware.cls(stack, *middleware.args, **middleware.kwargs)
        self.inference_stack = stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stack = self.inference_stack
        route = None
        if stack is not None and scope["type"] == "http" and scope["method"] == "POST":
            route = match_inference_route(scope["path"])
        if route is None:
            await super().__call__(scope, receive, send)
            return
        # What Starlette's router leaves in the scope for a matched route (the route's
        # template is what the access line reads).
        scope["app"] = self
        scope["route"], scope["path_params"] = route
        await stack(scope, receive, send)


def as_serving_app(app: FastAPI) -> ServingApp:
    app.__class__ = ServingApp
    assert isinstance(app, ServingApp)
    return app


def _is_native_telemetry_enabled(app: FastAPI) -> bool:
    """FastAPI's own check; True (keep every request on its stack) if it has none."""
    telemetry = getattr(app, "_native_telemetry", None)
    return telemetry is None or bool(telemetry.enabled())
