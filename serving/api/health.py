"""Liveness and readiness, as the V2 protocol names them (also what Kubernetes probes)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from serving.api.common import server_of

router = APIRouter(tags=["health"])


@router.get(
    "/v2/health/live",
    summary="Liveness: the process is up, its event loop answers, no model is wedged",
    responses={
        200: {"description": "Live"},
        503: {"description": "A batch has run past liveness_stall_s: restart the process"},
    },
)
async def live(request: Request) -> Response:
    if server_of(request).watchdog.is_live:
        return Response(b'{"live":true}', media_type="application/json")
    return Response(b'{"live":false}', status_code=503, media_type="application/json")


@router.get(
    "/v2/health/ready",
    summary="Readiness: every model is loaded and warm, and the server is not draining",
    responses={200: {"description": "Ready"}, 503: {"description": "Not ready or draining"}},
)
async def ready(request: Request) -> Response:
    server = server_of(request)
    is_ready = server.is_ready
    return Response(
        b'{"ready":true}' if is_ready else b'{"ready":false}',
        status_code=200 if is_ready else 503,
        media_type="application/json",
    )
