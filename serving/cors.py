"""CORS, added only when ``cors_allow_origins`` is set: Starlette's, whose refused
preflight says which part was refused and why in the service's JSON error body.

Starlette answers a refused preflight with plain text ("Disallowed CORS origin"), the
one 4xx of the service that a client could not read as ``{"error": "..."}``.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from serving.api.common import error_response
from serving.errors import quoted

_REFUSED_PREFIX = "Disallowed CORS "
# Headers of Starlette's plain-text answer that the JSON one sets itself.
_BODY_HEADERS = {"content-length", "content-type"}


class JsonCorsMiddleware(CORSMiddleware):
    """Starlette's CORS middleware; a refused preflight is a JSON 400 naming what was refused."""

    def preflight_response(self, request_headers: Headers) -> Response:
        answer = super().preflight_response(request_headers)
        if answer.status_code != 400:
            return answer
        refused = bytes(answer.body).decode().removeprefix(_REFUSED_PREFIX).split(", ")
        reasons = [self._reason(part, request_headers) for part in refused]
        headers = {
            name: value for name, value in answer.headers.items() if name not in _BODY_HEADERS
        }
        return error_response(400, "CORS preflight refused: " + "; ".join(reasons), headers)

    def _reason(self, part: str, request_headers: Headers) -> str:
        """Why one part of a preflight (origin, method, headers, private-network) was refused."""
        if part == "origin":
            origin = request_headers["origin"]
            return f"origin {quoted(origin)} is not one of cors_allow_origins"
        if part == "method":
            method = request_headers["access-control-request-method"]
            return f"method {quoted(method)} is not one of {', '.join(self.allow_methods)}"
        if part == "headers":
            asked = request_headers.get("access-control-request-headers", "")
            return f"headers {quoted(asked)} are not all allowed"
        if part == "private-network":
            return "private network access is not allowed"
        return part
