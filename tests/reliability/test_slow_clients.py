"""Slow and idle clients cannot hold a request or a connection for ever."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from serving.__main__ import KEEP_ALIVE_TIMEOUT_S
from tests.reliability.helpers import QUIET_ENV, scrape
from tests.support import log_entries, metric_value, running_server, wait_for

REQUEST_TIMEOUT_S = 1.0
BODY_BYTES = 10_000
# Far longer than any deadline under test: reaching it means the server never gave up.
PATIENCE_S = 30 + 3 * KEEP_ALIVE_TIMEOUT_S


@pytest.fixture(scope="module")
def server_url(tiny_repo: Path) -> Iterator[str]:
    env = {**QUIET_ENV, "MNIST_SERVE_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S)}
    with running_server(tiny_repo, env=env) as (url, _):
        yield url


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=PATIENCE_S)


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def dribble_until_answered(
    sock: socket.socket, data: bytes, interval_s: float
) -> tuple[int, bytes]:
    """Send ``data`` a byte at a time, one per ``interval_s``, until the server answers.

    Returns how many bytes went out and everything the server sent before closing.
    """
    deadline = time.monotonic() + PATIENCE_S
    for sent in range(len(data)):
        if time.monotonic() > deadline:
            break
        readable, _, _ = select.select([sock], [], [], interval_s)
        if readable:
            return sent, read_until_closed(sock)
        sock.sendall(data[sent : sent + 1])
    return len(data), b""


def read_one_response(sock: socket.socket) -> bytes:
    """One whole response (head and Content-Length body) from a kept-alive connection."""
    raw = b""
    while b"\r\n\r\n" not in raw or len(raw) < response_length(raw):
        raw += sock.recv(65536)
    return raw


def response_length(raw: bytes) -> int:
    head, _, _ = raw.partition(b"\r\n\r\n")
    _, headers, _ = split_response(raw)
    return len(head) + 4 + int(headers["content-length"])


def split_response(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    return status_line, headers, body


def test_body_dribbled_past_the_request_timeout_is_a_408(server_url: str) -> None:
    with connect(server_url) as sock:
        sock.sendall(
            b"POST /v2/models/tiny/infer HTTP/1.1\r\nhost: test\r\n"
            b"content-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % BODY_BYTES
        )
        sent, raw = dribble_until_answered(sock, b" " * BODY_BYTES, interval_s=0.05)

    status_line, headers, body = split_response(raw)
    assert status_line == "HTTP/1.1 408 Request Timeout"
    assert sent < BODY_BYTES  # answered while the body was still coming
    assert headers["connection"] == "close"
    assert "did not arrive within 1 s" in orjson.loads(body)["error"]
    assert httpx.get(f"{server_url}/v2/health/ready").status_code == 200


def test_idle_and_slow_connections_are_closed_after_the_keep_alive_timeout(
    server_url: str,
) -> None:
    silent, dribbling, idle = connect(server_url), connect(server_url), connect(server_url)
    idle.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: test\r\n\r\n")
    assert read_one_response(idle).startswith(b"HTTP/1.1 200 OK")  # then it stays open, idle
    head = b"GET /v2/health/live HTTP/1.1\r\nhost: test\r\n" + b"x-padding: 0\r\n" * 1000

    sent, dribbled_raw = dribble_until_answered(dribbling, head, interval_s=0.1)
    silent.settimeout(PATIENCE_S)
    idle.settimeout(PATIENCE_S)
    silent_raw, idle_raw = read_until_closed(silent), read_until_closed(idle)
    for sock in (silent, dribbling, idle):
        sock.close()

    assert sent < len(head)
    status_line, _, body = split_response(dribbled_raw)
    assert status_line == "HTTP/1.1 408 Request Timeout"
    assert "request headers did not arrive" in orjson.loads(body)["error"]
    assert silent_raw == b""  # closed without a word: it never asked anything
    assert idle_raw == b""


def test_a_head_timed_out_is_counted_and_logged_like_any_response(
    tiny_repo: Path, tmp_path: Path
) -> None:
    """The server's own 408 (no app ran) shows in the status counter and the access log,
    so a slowloris client can be seen; a connection that never began a request cannot."""
    log_path = tmp_path / "server.log"
    env = {**QUIET_ENV, "MNIST_SERVE_ACCESS_LOG": "true"}
    head = b"GET /v2/health/live HTTP/1.1\r\nhost: test\r\n" + b"x-padding: 0\r\n" * 1000
    with running_server(tiny_repo, env=env, log_path=log_path) as (url, _):
        silent, dribbling = connect(url), connect(url)
        _, dribbled_raw = dribble_until_answered(dribbling, head, interval_s=0.1)
        silent.settimeout(PATIENCE_S)
        assert read_until_closed(silent) == b""
        for sock in (silent, dribbling):
            sock.close()
        assert split_response(dribbled_raw)[0] == "HTTP/1.1 408 Request Timeout"
        samples = scrape(url)
        assert metric_value(samples, "mnist_serve_http_responses_total", status_code="408") == 1
        [line] = wait_for(
            lambda: [entry for entry in log_entries(log_path) if entry.get("status") == 408],
            timeout_s=10,
            what="the 408's access line",
        )

    assert (line["logger"], line["level"], line["msg"]) == ("mnist_serve.access", "info", "request")
    assert (line["error"], line["client"]) == ("head_timeout", "127.0.0.1")
    assert (line["method"], line["path"]) == (None, None)  # the request line may be partial
    assert line["total_ms"] >= KEEP_ALIVE_TIMEOUT_S * 1000 * 0.9
    assert len(line["request_id"]) == 16
