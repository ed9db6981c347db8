"""HTTP/1.1 by hand over a socket, for tests of what reaches the wire (and in what order),
which an HTTP client would hide; requests go to the tiny repository's model."""

from __future__ import annotations

import socket

import numpy as np
import orjson

from tests.support import tiny_logits

SOCKET_TIMEOUT_S = 10.0


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"connection closed after {len(data)} of {size} bytes"
        data += chunk
    return data


Response = tuple[bytes, dict[str, str], bytes]


def read_response(sock: socket.socket, has_body: bool = True) -> Response:
    """One response off a keep-alive connection: (status line, headers, body)."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, f"connection closed inside a response head: {head!r}"
        head += chunk
    status, *lines = head[:-4].split(b"\r\n")
    headers = {
        name.decode().lower(): value.decode().strip()
        for name, value in (line.split(b":", 1) for line in lines)
    }
    length = int(headers.get("content-length", "0")) if has_body else 0
    return status, headers, read_exactly(sock, length)


def predict_request(image: np.ndarray, extra_headers: bytes = b"") -> tuple[bytes, bytes]:
    body = orjson.dumps({"images": image.reshape(1, 784).tolist()})
    head = (
        b"POST /v1/models/tiny/predict HTTP/1.1\r\nhost: test\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n%s\r\n"
        % (len(body), extra_headers)
    )
    return head, body


def expected_label(image: np.ndarray) -> int:
    return int(np.argmax(tiny_logits(image.reshape(1, 784), seed=1)))  # latest: version 2
