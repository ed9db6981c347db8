"""Whether a request is alone on the server: what lets a lone request skip the batching
loop (``serving.api.common.is_alone``), and proof that requests arriving together are
still batched.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import urlopen

import numpy as np
import orjson
import uvicorn
import uvloop
from uvicorn.server import ServerState

from serving.__main__ import uvicorn_options
from serving.api.common import is_alone
from serving.protocol import ServingHttpProtocol
from serving.settings import Settings
from tests.serving.raw_http import SOCKET_TIMEOUT_S, expected_label, predict_request, read_response
from tests.support import running_server


async def alone_as_the_apps_saw(paths: list[str]) -> dict[str, bool]:
    """Send a GET for each path on its own connection, all before the loop runs; what
    :func:`is_alone` said in each request's app."""
    seen: dict[str, bool] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen[scope["path"]] = is_alone(scope)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    config = uvicorn.Config(app=app, **uvicorn_options(Settings()))
    config.load()
    state = ServerState()
    loop = asyncio.get_running_loop()
    connections = []
    for _ in paths:
        ours, peer = socket.socketpair()
        peer.settimeout(SOCKET_TIMEOUT_S)
        protocol = ServingHttpProtocol(config, state, app_state={})
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, ours)  # noqa: B023
        connections.append((transport, peer))
    for path, (_, peer) in zip(paths, connections, strict=True):
        peer.sendall(f"GET {path} HTTP/1.1\r\nhost: test\r\n\r\n".encode())
    for transport, peer in connections:
        status, _, _ = await asyncio.to_thread(read_response, peer, False)
        assert status == b"HTTP/1.1 204 No Content"
        transport.close()
        peer.close()
    return seen


def test_a_request_the_server_holds_alone_is_told_so() -> None:
    assert uvloop.run(alone_as_the_apps_saw(["/one"])) == {"/one": True}


def test_requests_arriving_together_are_not_alone_though_the_first_starts_by_itself() -> None:
    # Both heads are parsed, and both tasks made, before either app runs: the first
    # request's app must not take itself for the only one.
    seen = uvloop.run(alone_as_the_apps_saw(["/one", "/two"]))

    assert seen == {"/one": False, "/two": False}


def test_a_server_that_does_not_say_leaves_every_request_not_alone() -> None:
    assert is_alone({"type": "http", "extensions": {}}) is False
    assert is_alone({"type": "http"}) is False


CLIENTS = 32
REQUESTS_PER_CLIENT = 25


async def keep_asking(host: str, port: int, image: np.ndarray) -> None:
    """One keep-alive client: a request, its whole answer, the next request."""
    reader, writer = await asyncio.open_connection(host, port)
    request = b"".join(predict_request(image))
    label = expected_label(image)
    try:
        for _ in range(REQUESTS_PER_CLIENT):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            answer = orjson.loads(await reader.readexactly(length))
            assert answer["predictions"][0]["label"] == label
    finally:
        writer.close()


def test_concurrent_clients_are_batched_though_a_lone_request_skips_the_queue(
    tiny_repo: Path,
) -> None:
    # A lone request runs straight from its handler on an idle batcher. Were "lone" judged
    # by the requests already started, each request that arrived with others would find
    # itself alone, finish before the next started, and no batch would ever form again.
    env = {"MNIST_SERVE_ACCESS_LOG": "false", "MNIST_SERVE_INTRA_OP_THREADS": "1"}
    image = np.linspace(0, 1, 784, dtype=np.float32)
    with running_server(tiny_repo, env=env) as (url, _):
        parts = urlsplit(url)
        assert parts.hostname is not None
        assert parts.port is not None
        stats_path = f"{url}/v2/models/tiny/versions/2/stats"
        before = orjson.loads(urlopen(stats_path).read())["model_stats"][0]

        async def load() -> None:
            clients = [keep_asking(parts.hostname, parts.port, image) for _ in range(CLIENTS)]
            await asyncio.gather(*clients)

        uvloop.run(load())
        after = orjson.loads(urlopen(stats_path).read())["model_stats"][0]

    requests = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert requests == CLIENTS * REQUESTS_PER_CLIENT
    assert executions <= requests / 2, f"{requests} requests in {executions} batches"
