"""Optional API-key check, added only when ``api_key`` is set (no cost otherwise).

It sits inside CORS: browsers send no credentials on a preflight, and a page can read a
401 only if it carries CORS headers.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from serving.api.common import error_response, note_error
from serving.errors import Unauthorized

# Left open so probes and the page's static files work without a key.
_OPEN_PREFIXES = ("/v2/health/", "/static/", "/docs", "/redoc", "/openapi.json")
_OPEN_PATHS = {"/", "/favicon.ico"}


class ApiKeyMiddleware:
    """Require ``Authorization: Bearer <key>`` (or ``X-API-Key``) on inference and management."""

    def __init__(self, app: ASGIApp, *, api_key: str, protect_metrics: bool = False) -> None:
        self.app = app
        self._key = api_key.encode()
        self._protect_metrics = protect_metrics

    def _is_open(self, path: str) -> bool:
        if path == "/metrics":
            return not self._protect_metrics
        return path in _OPEN_PATHS or path.startswith(_OPEN_PREFIXES)

    def _presented_key(self, scope: Scope) -> bytes | None:
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                return value[7:].strip()
            if name == b"x-api-key":
                return value.strip()
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        presented = self._presented_key(scope)
        if presented is not None and hmac.compare_digest(presented, self._key):
            await self.app(scope, receive, send)
            return
        note_error(scope, Unauthorized.reason)
        refusal = error_response(
            401, "missing or invalid API key", headers={"WWW-Authenticate": "Bearer"}
        )
        await refusal(scope, receive, send)
