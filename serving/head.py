"""HEAD answered wherever GET is, as HTTP asks of every server (RFC 9110, 9.3.2).

FastAPI's routes match only the methods they declare, so ``HEAD /v2/health/ready``
would be a 405 and a health checker that probes with HEAD would see a healthy server
as down. Inside every other middleware, a HEAD is handed to the routes as a GET and
its answer's body is dropped: the status and headers (``Content-Length`` too) are the
GET's. Outside, the access log, metrics and the HTTP server still see a HEAD.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGetMiddleware:
    """Route a HEAD as its GET and send the GET's status and headers without a body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_headers_only)
