"""Compressed bodies: gzip and deflate are inflated within the body limit; a bomb is a
413, a broken stream a 400, an unknown Content-Encoding a 415."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import pytest

from serving.codecs import compression
from serving.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from tests.serving.codecs.v2.helpers import an_input, json_body


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("GZip", gzip.compress)],
)
def test_compressed_body_is_inflated(encoding: str, compress: Any) -> None:
    body = json_body(inputs=[an_input()])

    assert compression.decompress_body(compress(body), encoding, max_bytes=len(body)) == body


@pytest.mark.parametrize("encoding", [None, "identity"])
def test_uncompressed_body_is_passed_through(encoding: str | None) -> None:
    assert compression.decompress_body(b"{}", encoding, max_bytes=1) == b"{}"


def test_body_inflating_past_the_limit_is_413() -> None:
    bomb = gzip.compress(b"\x00" * 1_000_000)

    with pytest.raises(PayloadTooLarge, match="inflates past the 4096-byte limit"):
        compression.decompress_body(bomb, "gzip", max_bytes=4096)


@pytest.mark.parametrize(
    "compressed",
    [b"not gzip", gzip.compress(b"{}")[:-4], gzip.compress(b"{}") + b"junk"],
    ids=["not gzip", "cut short", "bytes after its end"],
)
def test_broken_compressed_body_is_invalid_input(compressed: bytes) -> None:
    with pytest.raises(InvalidInput, match="gzip"):
        compression.decompress_body(compressed, "gzip", max_bytes=4096)


def test_unknown_content_encoding_is_415() -> None:
    with pytest.raises(UnsupportedMediaType, match="'br'"):
        compression.decompress_body(b"...", "br", max_bytes=4096)
