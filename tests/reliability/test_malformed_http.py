"""A request the HTTP parser cannot read gets a JSON 400, counted and logged like any
answer, and the server goes on serving."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from tests.reliability.helpers import QUIET_ENV, scrape
from tests.support import log_entries, metric_value, running_server, wait_for

PATIENCE_S = 30

# Each cannot be parsed as HTTP/1.1. A request id header the parser finished before the
# fault (it finishes a header when the next begins) must reach the access line.
MALFORMED_HEADS = {
    "bad request line": b"GET /v2/health/live HTTP/9\r\nhost: test\r\n\r\n",
    "bad header name": (
        b"GET /v2/health/live HTTP/1.1\r\nx-request-id: abc\r\nhost: t\r\nbad header: 1\r\n\r\n"
    ),
    "control byte in the path": b"GET /v2/\x01health HTTP/1.1\r\nhost: test\r\n\r\n",
}


def exchange(url: str, data: bytes) -> bytes:
    """Send ``data`` on a new connection; all the server sends before it closes."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=PATIENCE_S) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("head", MALFORMED_HEADS.values(), ids=MALFORMED_HEADS.keys())
def test_an_unparsable_request_gets_a_json_400_counted_and_logged(
    tiny_repo: Path, tmp_path: Path, head: bytes
) -> None:
    log_path = tmp_path / "server.log"
    env = {**QUIET_ENV, "MNIST_SERVE_ACCESS_LOG": "true"}
    with running_server(tiny_repo, env=env, log_path=log_path) as (url, _):
        raw = exchange(url, head)
        samples = scrape(url)
        [line] = wait_for(
            lambda: [entry for entry in log_entries(log_path) if entry.get("status") == 400],
            timeout_s=10,
            what="the 400's access line",
        )
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    entries = log_entries(log_path)

    response_head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = response_head.decode("latin-1").split("\r\n")
    headers = dict(header.lower().split(": ", 1) for header in header_lines)
    assert status_line == "HTTP/1.1 400 Bad Request"
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert "could not be parsed as HTTP/1.1" in orjson.loads(body)["error"]
    assert metric_value(samples, "mnist_serve_http_responses_total", status_code="400") == 1
    assert (line["logger"], line["msg"], line["error"]) == (
        "mnist_serve.access",
        "request",
        "malformed_http",
    )
    assert line["client"] == "127.0.0.1"
    if b"x-request-id: abc" in head:
        assert line["request_id"] == "abc"
    # The access line is the one report: uvicorn's own warning would repeat it, bare.
    assert [entry for entry in entries if entry["level"] in ("warning", "error")] == []
