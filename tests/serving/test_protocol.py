"""The server's HTTP protocol: one write per response, and HTTP/1.1 as clients rely on it.

The transport is tested on a real uvloop socket transport, with a spy in between that
counts the writes reaching it; the protocol through the real server and raw sockets.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import orjson
import pytest
import uvicorn
import uvloop
from uvicorn.server import ServerState

from serving.__main__ import uvicorn_options
from serving.app import STATIC_DIR
from serving.protocol import FLUSH_AT_BYTES, CoalescingTransport, ServingHttpProtocol
from serving.settings import Settings
from tests.reliability.helpers import QUIET_ENV
from tests.serving.raw_http import (
    SOCKET_TIMEOUT_S,
    expected_label,
    predict_request,
    read_exactly,
    read_response,
)
from tests.support import running_server


class WriteSpy:
    """Forwards to a real transport and keeps each write it receives."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def spied_transport() -> tuple[CoalescingTransport, WriteSpy, socket.socket]:
    """A coalescing transport over a spied real socket transport, and the peer's socket."""
    ours, peer = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    spy = WriteSpy(transport)
    peer.settimeout(SOCKET_TIMEOUT_S)
    return CoalescingTransport(spy, loop), spy, peer  # type: ignore[arg-type]


Check = Callable[[CoalescingTransport, WriteSpy, socket.socket], Awaitable[None]]


def run_on_spied_transport(check: Check) -> None:
    """Run ``check(coalescing, spy, peer)`` on a fresh loop, then close both ends."""

    async def scenario() -> None:
        coalescing, spy, peer = await spied_transport()
        try:
            await check(coalescing, spy, peer)
        finally:
            peer.close()
            coalescing.close()

    uvloop.run(scenario())


def test_a_head_and_body_written_in_one_turn_reach_the_socket_as_one_write() -> None:
    async def check(coalescing: CoalescingTransport, spy: WriteSpy, peer: socket.socket) -> None:
        coalescing.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
        coalescing.write(b"body")
        assert spy.writes == []
        await asyncio.sleep(0)  # the end of this turn of the loop
        assert spy.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody"]
        assert read_exactly(peer, len(spy.writes[0])) == spy.writes[0]

    run_on_spied_transport(check)


def test_writes_of_later_turns_go_out_in_order() -> None:
    async def check(coalescing: CoalescingTransport, spy: WriteSpy, peer: socket.socket) -> None:
        for part in (b"one", b"two", b"three"):
            coalescing.write(part)
            await asyncio.sleep(0)
        assert spy.writes == [b"one", b"two", b"three"]
        assert read_exactly(peer, 11) == b"onetwothree"

    run_on_spied_transport(check)


def test_close_sends_what_is_held_before_closing() -> None:
    async def check(coalescing: CoalescingTransport, spy: WriteSpy, peer: socket.socket) -> None:
        coalescing.write(b"last answer")
        coalescing.close()
        assert spy.writes == [b"last answer"]
        await asyncio.sleep(0)
        assert read_exactly(peer, 11) == b"last answer"
        assert peer.recv(1) == b""  # then the connection ends

    run_on_spied_transport(check)


def test_writelines_and_the_end_of_writing_keep_the_order() -> None:
    async def check(coalescing: CoalescingTransport, spy: WriteSpy, peer: socket.socket) -> None:
        coalescing.writelines([b"head ", b"and body"])
        coalescing.write_eof()
        assert spy.writes == [b"head and body"]
        assert read_exactly(peer, 13) == b"head and body"
        # The end of the stream, after the data; the loop runs while the peer waits for it.
        assert await asyncio.to_thread(peer.recv, 1) == b""

    run_on_spied_transport(check)


def test_a_buffer_reused_after_its_write_does_not_change_what_is_sent() -> None:
    async def check(coalescing: CoalescingTransport, spy: WriteSpy, peer: socket.socket) -> None:
        buffer = bytearray(b"first")
        coalescing.write(buffer)
        buffer[:] = b"later"
        await asyncio.sleep(0)
        assert spy.writes == [b"first"]

    run_on_spied_transport(check)


def test_a_large_write_goes_out_at_once_to_meet_flow_control() -> None:
    async def check(coalescing: CoalescingTransport, spy: WriteSpy, peer: socket.socket) -> None:
        coalescing.write(b"h")
        coalescing.write(b"x" * FLUSH_AT_BYTES)
        assert [len(write) for write in spy.writes] == [1 + FLUSH_AT_BYTES]

    run_on_spied_transport(check)


def test_nothing_is_written_once_the_transport_is_closing() -> None:
    async def check(coalescing: CoalescingTransport, spy: WriteSpy, peer: socket.socket) -> None:
        coalescing.write(b"too late")
        spy.transport.abort()
        await asyncio.sleep(0)
        assert spy.writes == []

    run_on_spied_transport(check)


def test_everything_else_is_the_wrapped_transports() -> None:
    async def check(coalescing: CoalescingTransport, spy: WriteSpy, peer: socket.socket) -> None:
        assert coalescing.get_extra_info("socket") is spy.transport.get_extra_info("socket")
        assert coalescing.is_closing() is False
        coalescing.close()
        assert coalescing.is_closing() is True

    run_on_spied_transport(check)


# --- HTTP/1.1 through the real server -----------------------------------------------------


@pytest.fixture(scope="module")
def server_address(tiny_repo: Path) -> Iterator[tuple[str, int]]:
    with running_server(tiny_repo, env=QUIET_ENV) as (url, _):
        parts = urlsplit(url)
        assert parts.hostname is not None
        assert parts.port is not None
        yield parts.hostname, parts.port


@pytest.fixture
def connection(server_address: tuple[str, int]) -> Iterator[socket.socket]:
    with socket.create_connection(server_address, timeout=SOCKET_TIMEOUT_S) as sock:
        yield sock


def test_a_head_request_gets_its_headers_and_the_connection_stays_usable(
    connection: socket.socket,
) -> None:
    script = STATIC_DIR / "app.js"
    connection.sendall(b"HEAD /static/app.js HTTP/1.1\r\nhost: test\r\n\r\n")
    status, headers, _ = read_response(connection, has_body=False)
    assert status == b"HTTP/1.1 200 OK"
    assert int(headers["content-length"]) == script.stat().st_size

    connection.sendall(b"GET /static/app.js HTTP/1.1\r\nhost: test\r\n\r\n")
    status, _, body = read_response(connection)
    assert status == b"HTTP/1.1 200 OK"
    assert body == script.read_bytes()


def test_expect_100_continue_is_answered_before_the_body_is_sent(
    connection: socket.socket,
) -> None:
    image = np.linspace(0, 1, 784, dtype=np.float32)
    head, body = predict_request(image, b"expect: 100-continue\r\n")
    connection.sendall(head)
    assert read_response(connection, has_body=False)[0] == b"HTTP/1.1 100 Continue"

    connection.sendall(body)
    status, _, answer = read_response(connection)
    assert status == b"HTTP/1.1 200 OK"
    assert orjson.loads(answer)["predictions"][0]["label"] == expected_label(image)


def test_pipelined_requests_are_answered_in_order(connection: socket.socket) -> None:
    rng = np.random.default_rng(7)
    images = [rng.random(784, dtype=np.float32) for _ in range(3)]
    connection.sendall(b"".join(b"".join(predict_request(image)) for image in images))
    for image in images:
        status, _, answer = read_response(connection)
        assert status == b"HTTP/1.1 200 OK"
        assert orjson.loads(answer)["predictions"][0]["label"] == expected_label(image)


def test_connection_close_gets_the_whole_answer_then_the_end(
    connection: socket.socket,
) -> None:
    image = np.full(784, 0.5, dtype=np.float32)
    connection.sendall(b"".join(predict_request(image, b"connection: close\r\n")))
    status, headers, answer = read_response(connection)
    assert status == b"HTTP/1.1 200 OK"
    assert headers["connection"] == "close"
    assert orjson.loads(answer)["predictions"][0]["label"] == expected_label(image)
    assert connection.recv(1) == b""


def test_the_server_speaks_through_the_coalescing_transport(tiny_repo: Path) -> None:
    options = uvicorn_options(Settings(models_dir=tiny_repo))
    assert options["http"] is ServingHttpProtocol

    async def scenario() -> None:
        config = uvicorn.Config(app=lambda scope, receive, send: None, **options)
        config.load()
        protocol = ServingHttpProtocol(config, ServerState(), app_state={})
        ours, peer = socket.socketpair()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, ours)
        assert isinstance(protocol.transport, CoalescingTransport)
        assert protocol.transport.get_extra_info("socket") is transport.get_extra_info("socket")
        transport.close()
        peer.close()

    uvloop.run(scenario())


class SpiedProtocol(ServingHttpProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.spy = WriteSpy(transport)
        super().connection_made(self.spy)  # type: ignore[arg-type]


async def writes_when_an_answer_was_sent(*, is_another_in_flight: bool) -> int:
    """Writes on an answering connection's socket when its app returned from sending.

    With ``is_another_in_flight`` a request on another connection is held meanwhile.
    """
    is_held, release = asyncio.Event(), asyncio.Event()
    protocols: dict[str, SpiedProtocol] = {}
    writes: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/hold":
            is_held.set()
            await release.wait()
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"2")],
        }
        await send(start)
        await send({"type": "http.response.body", "body": b"ok"})
        # Work here (the access line, metrics) runs with no await before the app returns.
        if scope["path"] == "/answer":
            writes.append(len(protocols["answer"].spy.writes))

    config = uvicorn.Config(app=app, **uvicorn_options(Settings()))
    config.load()
    state = ServerState()

    async def connect(path: str) -> tuple[asyncio.BaseTransport, socket.socket]:
        protocols[path.strip("/")] = protocol = SpiedProtocol(config, state, app_state={})
        ours, peer = socket.socketpair()
        peer.settimeout(SOCKET_TIMEOUT_S)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, ours)
        peer.sendall(f"GET {path} HTTP/1.1\r\nhost: test\r\n\r\n".encode())
        return transport, peer

    connections = []
    if is_another_in_flight:
        connections.append(await connect("/hold"))
        await asyncio.wait_for(is_held.wait(), SOCKET_TIMEOUT_S)
        assert len(state.tasks) == 1
    connections.append(await connect("/answer"))
    release.set()
    for transport, peer in connections:
        status, _, body = await asyncio.to_thread(read_response, peer)
        assert (status, body) == (b"HTTP/1.1 200 OK", b"ok")
        transport.close()
        peer.close()
    return writes[0]


def test_an_answer_alone_leaves_before_the_apps_after_work() -> None:
    assert uvloop.run(writes_when_an_answer_was_sent(is_another_in_flight=False)) == 1


def test_with_other_requests_in_flight_an_answer_leaves_at_the_end_of_the_turn() -> None:
    assert uvloop.run(writes_when_an_answer_was_sent(is_another_in_flight=True)) == 0
