"""The body's deadline: ``receive_by``'s timer alone on an event loop, and the protocol's
mark that a body has arrived whole (the 408 end to end is in
tests/reliability/test_slow_clients.py)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
import uvicorn
import uvloop
from uvicorn.server import ServerState

from serving.__main__ import uvicorn_options
from serving.limits import is_body_received, receive_by
from serving.protocol import ServingHttpProtocol
from serving.settings import Settings

MESSAGE = {"type": "http.request", "body": b"{}", "more_body": False}


async def arrives_after(delay_s: float) -> dict[str, object]:
    await asyncio.sleep(delay_s)
    return MESSAGE


async def never_arrives() -> dict[str, object]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def test_a_message_in_time_is_returned_and_its_timer_cancelled() -> None:
    async def scenario() -> tuple[object, int]:
        loop = asyncio.get_running_loop()
        message = await receive_by(lambda: arrives_after(0.001), loop.time() + 5, loop)
        return message, asyncio.current_task().cancelling()  # type: ignore[union-attr]

    assert asyncio.run(scenario()) == (MESSAGE, 0)


def test_a_message_past_the_deadline_gives_none_and_leaves_the_task_uncancelled() -> None:
    async def scenario() -> tuple[object, int, str]:
        loop = asyncio.get_running_loop()
        message = await receive_by(never_arrives, loop.time() + 0.01, loop)
        await asyncio.sleep(0)  # the task still runs: it is not cancelled
        return message, asyncio.current_task().cancelling(), "went on"  # type: ignore[union-attr]

    assert asyncio.run(scenario()) == (None, 0, "went on")


def test_a_cancellation_from_elsewhere_is_not_mistaken_for_the_deadline() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        waiting = asyncio.ensure_future(receive_by(never_arrives, loop.time() + 5, loop))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(scenario())


def test_a_cancellation_from_elsewhere_at_the_deadline_still_cancels() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 0.01
        waiting = asyncio.ensure_future(receive_by(never_arrives, deadline, loop))
        loop.call_at(deadline, waiting.cancel)  # after receive_by's own timer, same instant
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(scenario())


async def body_received_when_the_app_starts(packets: list[bytes]) -> tuple[bool, bytes]:
    """Send a POST in ``packets`` to the server's protocol; what its app saw at its start
    (the BODY_RECEIVED extension) and the body it then read."""
    seen: list[bool] = []
    bodies: list[bytes] = []
    started = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(is_body_received(scope))
        started.set()
        message = await receive()
        bodies.append(message["body"])
        while message.get("more_body"):
            message = await receive()
            bodies[-1] += message["body"]
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    config = uvicorn.Config(app=app, **uvicorn_options(Settings()))
    config.load()
    ours, peer = socket.socketpair()
    peer.settimeout(10)
    loop = asyncio.get_running_loop()
    protocol = ServingHttpProtocol(config, ServerState(), app_state={})
    transport, _ = await loop.connect_accepted_socket(lambda: protocol, ours)
    try:
        peer.sendall(packets[0])
        await asyncio.wait_for(started.wait(), 10)  # the app runs before the rest is sent
        for packet in packets[1:]:
            peer.sendall(packet)
        answer = await asyncio.to_thread(peer.recv, 4096)
        assert answer.startswith(b"HTTP/1.1 204")
    finally:
        transport.close()
        peer.close()
    return seen[0], bodies[0]


HEAD = b"POST /v1/models/tiny/predict HTTP/1.1\r\nhost: test\r\ncontent-length: 10\r\n\r\n"


def test_a_request_arriving_whole_is_marked_received_before_its_app_starts() -> None:
    result = uvloop.run(body_received_when_the_app_starts([HEAD + b"0123456789"]))

    assert result == (True, b"0123456789")


def test_a_body_still_arriving_when_the_app_starts_is_not_marked_received() -> None:
    result = uvloop.run(body_received_when_the_app_starts([HEAD + b"01234", b"56789"]))

    assert result == (False, b"0123456789")
