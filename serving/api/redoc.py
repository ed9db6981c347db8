"""The ReDoc page (``/redoc``), kept on the server as fastapi-offline keeps it.

fastapi-offline serves ReDoc's script from the app, but ReDoc's footer still loads its
logo from ``cdn.redoc.ly``: the one request the API docs would make to the internet,
and a broken picture where there is none. The page is fastapi-offline's own, with a
Content-Security-Policy that keeps images on this server; the browser refuses the logo
without asking, and ReDoc, told the picture failed, leaves it out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi.openapi.docs import get_redoc_html
from starlette.requests import Request
from starlette.responses import HTMLResponse

# Images only; the scripts, styles and the search's worker are as ReDoc needs them.
REDOC_POLICY = "img-src 'self' data:"


def redoc_page_for(assets_url: str) -> Callable[[Request], Awaitable[HTMLResponse]]:
    """The ``/redoc`` endpoint, its script and icon under ``assets_url`` (fastapi-offline's)."""

    async def redoc_page(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{request.app.openapi_url}",
            title=f"{request.app.title} - ReDoc",
            redoc_js_url=f"{root}{assets_url}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{assets_url}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = REDOC_POLICY
        return page

    return redoc_page
