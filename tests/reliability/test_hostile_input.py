"""Hostile input: fuzzed requests, path tricks, decompression bombs, huge bodies."""

from __future__ import annotations

import http.client
import re
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.reliability.helpers import (
    QUIET_ENV,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
    write_report,
)
from tests.support import running_server, write_tiny_model

MIB = 1024 * 1024
# Every check schemathesis has but "schema-valid request rejected": the schema cannot say
# that data must hold N x 784 numbers in [0, 1].
FUZZ_CONFIG = """
[parameters]
"path.model" = "tiny"
"path.version" = "1"

[checks]
positive_data_acceptance.enabled = false
"""
FUZZ_EXAMPLES = 60


def test_fuzzing_the_whole_schema_finds_no_server_error_or_schema_violation(
    tiny_repo: Path, tmp_path: Path
) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(FUZZ_CONFIG)
    schemathesis = Path(sys.executable).parent / "st"
    # Model control stays off: load/unload are fuzzed as the 403s they are, and the
    # models stay loaded so every other operation reaches real decoding and inference.
    with running_server(tiny_repo, env=QUIET_ENV) as (url, _):
        run = subprocess.run(
            [
                str(schemathesis),
                "--config-file",
                str(config),
                "run",
                f"{url}/openapi.json",
                "--max-examples",
                str(FUZZ_EXAMPLES),
                "--generation-deterministic",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=tmp_path,  # st writes its cache where it runs
        )

    cases = re.search(r"(\d+) generated", run.stdout)
    operations = re.search(r"Tested: (\d+)", run.stdout)
    write_report(
        "reliability-fuzz.txt",
        f"schemathesis over the whole OpenAPI schema: {cases and cases.group(1)} test cases, "
        f"{operations and operations.group(1)} operations, {FUZZ_EXAMPLES} examples each",
    )
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    assert "passed" in run.stdout


# --- names that try to leave the model repository --------------------------------------


@pytest.fixture(scope="module")
def walled_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository, and beside it a valid model that must stay out of reach."""
    root = tmp_path_factory.mktemp("walled")
    write_tiny_model(root / "repo", "tiny")
    write_tiny_model(root / "outside", "evil")
    return root / "repo"


ESCAPES = [
    ("POST", "/v2/repository/models/..%2Foutside%2Fevil/load"),
    ("POST", "/v2/repository/models/..%2F..%2Foutside%2Fevil/load"),
    ("POST", "/v2/repository/models/%2E%2E%2Foutside%2Fevil/load"),
    ("POST", "/v2/repository/models/..%252Foutside%252Fevil/load"),
    ("POST", "/v2/repository/models/..%5Coutside%5Cevil/load"),
    ("POST", "/v2/repository/models/..%2F..%2Fetc/load"),
    ("POST", "/v2/repository/models/%2Fetc%2Fpasswd/load"),
    ("POST", "/v2/repository/models/../outside/evil/load"),
    ("POST", "/v2/repository/models/..%2Foutside%2Fevil/unload"),
    ("POST", "/v1/models/..%2Fx/predict"),
    ("POST", "/v1/models/..%2Foutside%2Fevil/predict"),
    ("POST", "/v2/models/..%2Foutside%2Fevil/infer"),
    ("POST", "/v2/models/tiny/versions/..%2F1/infer"),
    ("GET", "/v2/models/..%2Foutside%2Fevil"),
    ("GET", "/v2/models/tiny/versions/..%2F..%2F..%2Foutside/stats"),
    ("GET", "/v1/models/..%2F..%2Foutside%2Fevil"),
    ("GET", "/static/..%2Fapp.py"),
    ("GET", "/static/../app.py"),
    ("GET", "/static/%2E%2E/settings.py"),
]


def raw_request(url: str, method: str, path: str) -> int:
    """Send ``path`` exactly as written (no client-side normalisation); return the status."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request(method, path, body=b"{}", headers={"content-type": "application/json"})
        return connection.getresponse().status
    finally:
        connection.close()


def test_names_that_leave_the_repository_are_refused_and_reach_nothing(
    walled_repo: Path,
) -> None:
    env = {**QUIET_ENV, "MNIST_SERVE_MODEL_CONTROL": "true"}
    with running_server(walled_repo, env=env) as (url, _):
        statuses = {path: raw_request(url, method, path) for method, path in ESCAPES}
        index = httpx.post(f"{url}/v2/repository/index").json()
        evil = httpx.get(f"{url}/v2/models/evil")

    assert {path: status for path, status in statuses.items() if not 400 <= status < 500} == {}
    assert {entry["name"] for entry in index} == {"tiny"}
    assert evil.status_code == 404


# --- decompression bombs and huge bodies -------------------------------------------------


def png(width: int, height: int, rows: Iterator[bytes]) -> bytes:
    """A 1-bit greyscale PNG from its filtered rows (compressed as they come)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for row in rows) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def lying_header_bomb() -> bytes:
    """A few hundred bytes claiming 100,000 x 100,000 pixels."""
    return png(100_000, 100_000, iter([b"\x00" * 64]))


def real_bomb(side: int) -> bytes:
    """A valid picture of side x side pixels, of ink lines: tens of kB, not side**2 bytes."""
    row = b"\x00" + b"\xf0" * (side // 8)
    return png(side, side, (row for _ in range(side)))


BOMBS = {
    # Pillow's own guard refuses anything over twice its MAX_IMAGE_PIXELS (~179 M pixels)
    # as it opens it; the answer still names the service's limit.
    "lying-header-10G-pixels": (lying_header_bomb, "over 178956970 pixels; the limit is 25000000"),
    "real-400M-pixels": (lambda: real_bomb(20_000), "over 178956970 pixels; the limit is 25000000"),
    # Under Pillow's radar: the service's max_image_pixels (25 M) refuses it.
    "real-36M-pixels": (
        lambda: real_bomb(6_000),
        "6000x6000 is 36000000 pixels; the limit is 25000000",
    ),
}


# Pillow decodes a 1-bit picture one byte a pixel: decoding the smallest bomb (6000 x 6000)
# takes 36 MB at once. Refusing one must not raise the server's peak by half of that.
PEAK_GROWTH_LIMIT_BYTES = 6_000 * 6_000 // 2


def post_picture(url: str, picture: bytes) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/models/tiny/predict",
        content=picture,
        headers={"content-type": "image/png"},
        timeout=60,
    )


@pytest.mark.parametrize("name", BOMBS)
def test_decompression_bomb_is_refused_without_decoding_it(tiny_repo: Path, name: str) -> None:
    make_picture, message = BOMBS[name]
    picture = make_picture()
    with running_server(tiny_repo, env=QUIET_ENV) as (url, process):
        # A picture decoded and one refused first, so what a first request allocates
        # once (decoding threads, buffers) is already in the peak.
        warm_ups = [post_picture(url, real_bomb(64)), post_picture(url, picture[:100])]
        # The peak, not the memory after the answer: a server that decodes the picture
        # and frees it again before answering must fail.
        reset_peak_rss(process.pid)
        rss_before = rss_bytes(process.pid)
        response = post_picture(url, picture)
        peak_growth_bytes = peak_rss_bytes(process.pid) - rss_before

    assert [warm_up.status_code for warm_up in warm_ups] == [200, 400]
    assert len(picture) < 200_000
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert peak_growth_bytes < PEAK_GROWTH_LIMIT_BYTES  # never decoded


def test_huge_declared_body_is_refused_before_it_is_sent(tiny_repo: Path) -> None:
    with running_server(tiny_repo, env=QUIET_ENV) as (url, _):
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        connection.putrequest("POST", "/v2/models/tiny/infer")
        connection.putheader("content-type", "application/json")
        connection.putheader("content-length", str(10**12))
        connection.endheaders()  # and not one byte of the terabyte
        response = connection.getresponse()
        body = response.read()
        connection.close()

    assert response.status == 413
    assert b"byte limit (max_body_bytes)" in body
