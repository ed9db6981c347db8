"""Request bodies sent with a ``Content-Encoding``: inflated within the body limit."""

from __future__ import annotations

import zlib

from serving.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

# zlib window bits: gzip container, zlib container ("deflate" in HTTP means zlib).
_WINDOW_BITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decompress_body(body: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """The body as sent before ``Content-Encoding`` (gzip or deflate, as tritonclient offers).

    Inflates at most ``max_bytes``: a small compressed body cannot become a huge one.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in _WINDOW_BITS:
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding[:32]!r} is not supported; use gzip, deflate or none"
        )
    inflater = zlib.decompressobj(_WINDOW_BITS[encoding])
    try:
        inflated = inflater.decompress(body, max_bytes + 1)
    except zlib.error as error:
        raise InvalidInput(f"the body is not valid {encoding} data: {error}") from None
    if len(inflated) > max_bytes:
        raise PayloadTooLarge(
            f"the {encoding} body inflates past the {max_bytes}-byte limit (max_body_bytes)"
        )
    if not inflater.eof or inflater.unused_data:
        raise InvalidInput(f"the {encoding} body is truncated or has bytes after its end")
    return inflated
