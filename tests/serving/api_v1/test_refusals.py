"""v1 refusals: a bad body, an unsupported or compressed one, one over a limit, is a 4xx
naming the problem, never a 500; and good requests still work after bad ones."""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serving.app import create_app
from serving.settings import Settings
from tests.serving.api_v1.helpers import (
    JSON,
    OCTET,
    PNG,
    PREDICT,
    assert_error,
    assert_predictions_match,
    png_of_digit,
    random_images,
)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"images": [[0.5, 0.5', "body is not valid JSON"),
        (b'{"images": [[NaN]]}', "body is not valid JSON"),
        (b'{"pictures": []}', 'expected a JSON object {"images": [...]}'),
        (b'{"images": []}', "images: expected at least one image, got none"),
        (orjson.dumps({"images": [[0.5] * 783]}), "images[0]: expected 784 numbers or 28x28"),
        (orjson.dumps({"images": [[[0.5] * 28] * 27 + [[0.5] * 27]]}), "images[0][27]: is a list"),
        (orjson.dumps({"images": [[0.5] * 783 + [None]]}), "images[0][783]: expected a number"),
        (orjson.dumps({"images": [[0.5] * 783 + [True]]}), "got a boolean (true)"),
        (orjson.dumps({"images": [[0.5] * 783 + ["1"]]}), "got a string ('1')"),
        (orjson.dumps({"images": [[0.5] * 783 + [255]]}), "images[0]: pixel 783 is 255"),
        (orjson.dumps({"images": [[0.5] * 783 + [-1]]}), "pixels must be in [0, 1]"),
    ],
)
def test_bad_json_is_a_400_naming_the_problem(
    client: TestClient, body: bytes, message: str
) -> None:
    assert_error(client.post(PREDICT, content=body, headers=JSON), 400, message)


def test_too_many_images_is_a_400_naming_the_limit(tiny_repo: Path) -> None:
    settings = Settings(models_dir=tiny_repo, max_images_per_request=2, max_queue_size=64)
    with TestClient(create_app(settings)) as small_client:
        body = orjson.dumps({"images": random_images(3).tolist()})
        json_response = small_client.post(PREDICT, content=body, headers=JSON)
        octet_response = small_client.post(PREDICT, content=bytes(784 * 3), headers=OCTET)
        files = [("file", (f"{index}.png", png_of_digit(), "image/png")) for index in range(3)]
        multipart_response = small_client.post(PREDICT, files=files)

    assert_error(json_response, 400, "images: 3 images exceed the limit of 2 images per request")
    assert_error(octet_response, 400, "images: 3 images exceed the limit of 2 images per request")
    assert_error(multipart_response, 400, "Maximum number of files is 2")


@pytest.mark.parametrize("length", [0, 100, 784 + 1])
def test_octet_length_not_a_multiple_of_784_is_a_400(client: TestClient, length: int) -> None:
    response = client.post(PREDICT, content=bytes(length), headers=OCTET)

    assert_error(
        response,
        400,
        f"positive multiple of 784 bytes (N images of 28x28 uint8 pixels), got {length} bytes",
    )


@pytest.mark.parametrize(
    ("picture", "message"),
    [
        (b"definitely not a png", "image: not a picture in a supported format"),
        (b"", "image: not a picture"),
        (png_of_digit()[: len(png_of_digit()) // 2], "image: cannot be decoded"),
    ],
)
def test_bad_picture_is_a_400(client: TestClient, picture: bytes, message: str) -> None:
    response = client.post(PREDICT, content=picture, headers={"content-type": "image/png"})

    assert_error(response, 400, message)


def test_blank_picture_has_no_ink(client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.new("L", (40, 40), 255).save(buffer, "PNG")

    response = client.post(
        PREDICT, content=buffer.getvalue(), headers={"content-type": "image/png"}
    )

    assert_error(response, 400, "image has no ink")


def test_bad_file_in_multipart_is_named(client: TestClient) -> None:
    files = [
        ("first", ("good.png", png_of_digit(), "image/png")),
        ("second", ("bad.png", b"junk", "image/png")),
    ]

    response = client.post(PREDICT, files=files)

    assert_error(response, 400, "file 1 (second='bad.png'): image: not a picture")


def test_multipart_without_files_is_a_400(client: TestClient) -> None:
    response = client.post(PREDICT, data={"note": "no files here"}, files={"x": ("", b"")})

    assert response.status_code == 400


def test_malformed_multipart_is_a_400(client: TestClient) -> None:
    response = client.post(
        PREDICT, content=b"--abc\r\n", headers={"content-type": "multipart/form-data"}
    )

    assert_error(response, 400, "multipart body:")


def test_multipart_cut_short_is_a_400_not_fewer_predictions(client: TestClient) -> None:
    def file_part(name: str) -> bytes:
        disposition = f'Content-Disposition: form-data; name="{name}"; filename="{name}.png"'
        return f"--cut\r\n{disposition}\r\n\r\n".encode() + png_of_digit() + b"\r\n"

    # Two whole file parts, but no closing "--cut--": the second part never ended.
    body = file_part("first") + file_part("second")

    response = client.post(
        PREDICT, content=body, headers={"content-type": "multipart/form-data; boundary=cut"}
    )

    assert_error(response, 400, "multipart body: it ends before its closing boundary")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_unsupported_content_type_is_a_415_listing_the_accepted_ones(
    client: TestClient, content_type: str
) -> None:
    response = client.post(PREDICT, content=b"{}", headers={"content-type": content_type})

    assert_error(response, 415, f"Content-Type '{content_type}' is not supported; send one of:")
    assert "application/json, application/octet-stream, image/png" in response.json()["error"]


def test_missing_content_type_is_a_415(client: TestClient) -> None:
    assert_error(client.post(PREDICT, content=b"{}"), 415, "no Content-Type; send one of")


def gzip_octet_body_of_whole_images() -> bytes:
    """Two images' pixels gzipped into a body whose length is itself a multiple of 784."""
    rng = np.random.default_rng(0)
    for size in range(2 * 784, 3 * 784):  # random bytes do not compress: ~size + 20
        body = gzip.compress(rng.integers(0, 256, size, dtype=np.uint8).tobytes(), mtime=0)
        if len(body) % 784 == 0:
            return body
    raise AssertionError("no gzip body of a whole number of images")


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (OCTET, gzip_octet_body_of_whole_images()),
        (JSON, gzip.compress(orjson.dumps({"images": random_images(1).tolist()}))),
        ({**PNG, "content-encoding": "deflate"}, zlib.compress(png_of_digit())),
    ],
    ids=["octet", "json", "png"],
)
def test_compressed_body_is_a_415_not_read_as_it_is(
    client: TestClient, headers: dict[str, str], body: bytes
) -> None:
    headers = {"content-encoding": "gzip"} | headers

    response = client.post(PREDICT, content=body, headers=headers)

    assert_error(response, 415, "Content-Encoding")


def test_body_over_the_limit_is_a_413(tiny_repo: Path) -> None:
    settings = Settings(models_dir=tiny_repo, max_body_bytes=784 * 2)
    with TestClient(create_app(settings)) as small_client:
        too_big = small_client.post(PREDICT, content=bytes(784 * 3), headers=OCTET)
        just_fits = small_client.post(PREDICT, content=bytes(784 * 2), headers=OCTET)

    assert_error(too_big, 413, "over the 1568-byte limit")
    assert just_fits.status_code == 200


def test_good_requests_still_work_after_bad_ones(client: TestClient) -> None:
    images = random_images(2, seed=9)
    bad_bodies = [
        (b"{", JSON),
        (orjson.dumps({"images": [[0.5] * 783 + [None]]}), JSON),
        (bytes(5), OCTET),
        (b"junk", {"content-type": "image/png"}),
    ]
    for body, headers in bad_bodies:
        assert client.post(PREDICT, content=body, headers=headers).status_code == 400

    response = client.post(PREDICT, content=orjson.dumps({"images": images.tolist()}), headers=JSON)

    assert response.status_code == 200
    assert_predictions_match(response.json(), images)
